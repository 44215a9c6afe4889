"""A Debian 12 host under real systemd, for the host-level suite
(tests/test_host_guide.py, docs/host-tests.md).

The root is built once with debootstrap (minbase, systemd, Postfix as a
stock "Internet Site" listening on loopback only, the run-time packages of
scripts/debian-packages) and kept in ROOT_CACHE under a key made of what
goes into it.  A test run boots a copy of it with

    systemd-nspawn --boot --register=no --keep-unit --private-network

so the container has only its own loopback: mail never leaves it, and pip
inside installs from a wheel house built here (pip.conf: no index).
Commands run inside with `nsenter -t <container PID 1> -a`, with a clean
environment, as root or, through setpriv, as an ordinary user.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

CHECKOUT = pathlib.Path(__file__).resolve().parent.parent
ROOT_CACHE = pathlib.Path("/var/cache/sendgate-host")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
HOSTNAME = "host"
MAILNAME = "host.example.org"
USERS = ("alice", "bob")
# What the root holds besides debootstrap's minbase: systemd to boot, and
# Postfix with the packages a host keeps for itself.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "ca-certificates", "python3", "procps")
CLEAN_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
             "LANG=C.UTF-8", "TERM=dumb")


def _inputs() -> list[pathlib.Path]:
    return [CHECKOUT / "scripts/debian-packages", CHECKOUT / "pyproject.toml", pathlib.Path(__file__)]


def cache_key() -> str:
    digest = hashlib.sha256()
    for path in _inputs():
        digest.update(path.read_bytes())
    return f"{SUITE}-{digest.hexdigest()[:16]}"


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done


def _chroot(root: pathlib.Path, script: str) -> None:
    _run("chroot", str(root), "/usr/bin/env", "-i", *CLEAN_ENV, "DEBIAN_FRONTEND=noninteractive",
         "/bin/sh", "-ec", script, timeout=1200)


def _wheelhouse(target: pathlib.Path) -> None:
    """Wheels of everything `scripts/bootstrap` installs (pip, setuptools,
    wheel and sendgate's dependencies), built with Debian's Python 3.11 so
    they fit the root's."""
    with tempfile.TemporaryDirectory(prefix="sendgate-wheels-") as scratch:
        venv = pathlib.Path(scratch) / "venv"
        _run("/usr/bin/python3", "-m", "venv", str(venv))
        _run(str(venv / "bin/pip"), "wheel", "-q", "--wheel-dir", str(target), "pip", "setuptools", "wheel",
             str(CHECKOUT), timeout=900)
    for own in target.glob("sendgate-*.whl"):
        own.unlink()  # bootstrap builds sendgate from the checkout


def build(root: pathlib.Path) -> None:
    root.mkdir(parents=True)
    _run("debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(root), MIRROR,
         timeout=1800)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt")
    (root / "etc/hostname").write_text(HOSTNAME + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {MAILNAME} {HOSTNAME}\n")
    # Nothing starts inside the chroot while packages are installed.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    runtime = " ".join((CHECKOUT / "scripts/debian-packages").read_text().split())
    _chroot(root, f"""
        echo "postfix postfix/main_mailer_type select Internet Site" | debconf-set-selections
        echo "postfix postfix/mailname string {MAILNAME}" | debconf-set-selections
        echo "postfix postfix/protocols select all" | debconf-set-selections
        apt-get update -q
        apt-get install -y -q --no-install-recommends postfix {runtime}
        postconf -e inet_interfaces=loopback-only
        test "$(postconf -xh inet_protocols)" = all
        apt-get clean
        for user in {' '.join(USERS)}; do useradd --create-home --shell /bin/sh "$user"; done
        """)
    policy.unlink()
    wheels = root / "var/cache/sendgate-wheels"
    _wheelhouse(wheels)
    (root / "etc/pip.conf").write_text(f"[global]\nno-index = true\nfind-links = /{wheels.relative_to(root)}\n")


def cached_root() -> pathlib.Path:
    """The built root for this checkout's inputs, building it when missing
    (a failed build leaves nothing behind)."""
    final = ROOT_CACHE / cache_key()
    if final.exists():
        return final
    ROOT_CACHE.mkdir(parents=True, exist_ok=True)
    partial = ROOT_CACHE / (final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        build(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(final)
    for old in ROOT_CACHE.iterdir():
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def checkout_files() -> list[str]:
    """The checkout as it is (tracked and new files, not ignored ones):
    what the guide's `from this checkout` means."""
    listed = _run("git", "-C", str(CHECKOUT), "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return [name for name in listed.stdout.split("\0") if name and (CHECKOUT / name).exists()]


class Host:
    """A booted copy of the cached root."""

    def __init__(self) -> None:
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="sendgate-host-", dir="/var/tmp"))
        self.dir.chmod(0o755)  # mkdtemp's 0700 would shut every user but root out of /
        self.root = self.dir / "root"
        self.log = self.dir / "console.log"
        self.nspawn: subprocess.Popen | None = None
        self.pid1 = 0

    def boot(self, source: pathlib.Path, timeout: float = 120) -> None:
        _run("cp", "-a", "--reflink=auto", str(source), str(self.root), timeout=600)
        self.root.chmod(0o755)
        target = self.root / "root/sendgate"
        for name in checkout_files():
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(CHECKOUT / name, destination, follow_symlinks=False)
        with open(self.log, "wb") as console:
            self.nspawn = subprocess.Popen(
                ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--private-network", "--quiet",
                 f"--machine=sendgate-{os.getpid()}", "-D", str(self.root)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.pid1:
            self._alive()
            children = pathlib.Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            if pids:
                self.pid1 = int(pids[0])
            elif time.monotonic() > deadline:
                raise RuntimeError(f"the container did not start:\n{self.console()}")
            else:
                time.sleep(0.2)
        while True:
            state = self.sh("systemctl is-system-running --wait", check=False, timeout=timeout).stdout.strip()
            if state in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the container did not finish booting ({state}):\n{self.console()}")
            time.sleep(0.5)
        self.state = state

    def _alive(self) -> None:
        if self.nspawn is not None and self.nspawn.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited ({self.nspawn.returncode}):\n{self.console()}")

    def console(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def sh(self, command: str, user: str = "root", input: str | bytes | None = None, check: bool = True,
           timeout: float = 300) -> subprocess.CompletedProcess:
        """Run command with /bin/sh inside the container, as user (root, or
        an ordinary user through setpriv, in their home)."""
        text = not isinstance(input, bytes)
        done = subprocess.run(self.argv(command, user), input=input, capture_output=True, text=text,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{command!r} as {user} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    def argv(self, command: str, user: str = "root") -> list[str]:
        """The command line that runs command inside, as user."""
        self._alive()
        prefix = ["nsenter", "-t", str(self.pid1), "-a", "--", "/usr/bin/env", "-i", *CLEAN_ENV]
        if user != "root":
            prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--reset-env"]
            command = f"cd && {command}"
        return [*prefix, "/bin/sh", "-c", command]

    def path(self, inside: str) -> pathlib.Path:
        return self.root / inside.lstrip("/")

    def shutdown(self) -> None:
        if self.nspawn is not None and self.nspawn.poll() is None:
            subprocess.run(["nsenter", "-t", str(self.pid1), "-a", "systemctl", "poweroff"], capture_output=True,
                           timeout=60)
            try:
                self.nspawn.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
