"""The Debian package (docs/debian-package.md): what scripts/build-deb puts
in it, what lintian says of it, and an install, remove and purge in a
throwaway Debian 12 root made with debootstrap, which must leave that root
as it was.

The package is built once per session; the root is made once per session
too and deleted at the end.  Both need root; without root or the tools they
are skipped, except under CI=true (conftest.need)."""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import socket
import struct
import subprocess
import tarfile
import tempfile
import tomllib

import pytest

from conftest import CHECKOUT, need

pytestmark = pytest.mark.mta

PROJECT = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
SCRIPTS = sorted(PROJECT["scripts"])
VENV = "usr/lib/sendgate/venv"
UNITS = sorted(p.name for p in (CHECKOUT / "config/systemd").iterdir())
MAN_PAGES = sorted(p.name for p in (CHECKOUT / "man").iterdir())
# The Python distributions pyproject.toml requires, and theirs.
BUNDLED = ["aiosmtpd", "atpublic", "attrs", "prometheus_client", "pymilter", "pyyaml", "sendgate", "uvloop"]


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="session")
def members(deb) -> dict[str, tarfile.TarInfo]:
    """The package's files by path (without the leading ./)."""
    with tempfile.TemporaryFile() as fp:
        subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=fp, check=True)
        fp.seek(0)
        with tarfile.open(fileobj=fp) as tar:
            return {m.name.removeprefix("./").rstrip("/"): m for m in tar.getmembers() if m.name != "./"}


def read_member(deb: pathlib.Path, path: str) -> str:
    return run("sh", "-c", f"dpkg-deb --fsys-tarfile '{deb}' | tar -xO './{path}'").stdout


def test_control_fields(deb):
    fields = {name: run("dpkg-deb", "--field", str(deb), name).stdout.strip()
              for name in ("Package", "Version", "Architecture", "Depends", "Recommends")}
    depends = {d.split(" (")[0] for d in fields.pop("Depends").split(", ")}
    assert fields == {"Package": "sendgate", "Version": VERSION,
                      "Architecture": run("dpkg", "--print-architecture").stdout.strip(), "Recommends": "postfix"}
    # The venv's interpreter, pymilter's library, the maintainer scripts' adduser.
    assert depends == {"adduser", "python3.11", "libc6", "libmilter1.0.1"}


def test_files_outside_the_virtualenv(members):
    outside = sorted(p for p, m in members.items() if not p.startswith(VENV) and not m.isdir())
    assert outside == sorted(
        ["etc/sendgate/sendgate.yaml"]
        + [f"lib/systemd/system/{unit}" for unit in UNITS]
        + [f"usr/bin/{name}" for name in SCRIPTS]
        + ["usr/lib/tmpfiles.d/sendgate.conf"]
        + [f"usr/share/doc/sendgate/{name}" for name in
           ("README.md.gz", "bundled-python-packages.txt", "changelog.gz", "copyright", "debian-package.md.gz")]
        + [f"usr/share/man/man{page[-1]}/{page}.gz" for page in MAN_PAGES])


def test_commands_are_the_console_scripts_of_pyproject(members):
    links = {p: m.linkname for p, m in members.items() if p.startswith("usr/bin/")}
    assert links == {f"usr/bin/{name}": f"../lib/sendgate/venv/bin/{name}" for name in SCRIPTS}
    for name in SCRIPTS:
        assert members[f"{VENV}/bin/{name}"].mode == 0o755


def test_virtualenv_holds_the_requirements_and_nothing_of_the_build(deb, members):
    dists = sorted(re.sub(r"-[^-]+\.dist-info$", "", pathlib.PurePath(p).name).lower()
                   for p in members if p.endswith(".dist-info"))
    assert dists == BUNDLED
    assert members[f"{VENV}/bin/python3.11"].linkname == "../../../../bin/python3.11"
    assert not [p for p in members if "__pycache__" in p or p.endswith(".pyc") or p.startswith("opt/")]
    # PyYAML without its own copy of libyaml (debian/rules).
    assert not [p for p in members if re.search(r"/_yaml\..*\.so$", p)]
    assert "home = /usr/bin" in read_member(deb, f"{VENV}/pyvenv.cfg")
    for name in SCRIPTS:
        assert read_member(deb, f"{VENV}/bin/{name}").startswith(f"#!/{VENV}/bin/python3.11\n")


def test_bundled_list_names_every_distribution(deb):
    lines = read_member(deb, "usr/share/doc/sendgate/bundled-python-packages.txt").splitlines()
    names = sorted(line.split(" ")[0].lower().replace("-", "_") for line in lines[1:])
    assert names == BUNDLED
    assert all(re.fullmatch(r"\S+ \S+: .+", line) for line in lines[1:]), lines


def test_the_only_conffile_is_the_example_configuration(deb, tmp_path):
    subprocess.run(["dpkg-deb", "--control", str(deb), str(tmp_path)], check=True)
    assert (tmp_path / "conffiles").read_text() == "/etc/sendgate/sendgate.yaml\n"
    assert read_member(deb, "etc/sendgate/sendgate.yaml") == (CHECKOUT / "config/sendgate.yaml").read_text()


@pytest.mark.parametrize("unit", UNITS)
def test_units_run_the_packaged_programs(deb, members, unit):
    source = (CHECKOUT / "config/systemd" / unit).read_text()
    packaged = read_member(deb, f"lib/systemd/system/{unit}")
    assert packaged == source.replace("/opt/sendgate/venv/bin/", "/usr/bin/")
    for program in re.findall(r"^ExecStart=(\S+)", packaged, re.M):
        assert program.removeprefix("/") in members, program


def test_lintian_reports_no_error_and_the_guide_explains_each_warning(deb):
    need(shutil.which("lintian") is not None, "lintian is not installed (scripts/build-deb installs it)")
    result = run("lintian", str(deb), timeout=600)
    tags = re.findall(r"^([EWIPX]): sendgate: (\S+)", result.stdout, re.M)
    assert [tag for level, tag in tags if level == "E"] == [], result.stdout
    guide = (CHECKOUT / "docs/debian-package.md").read_text()
    assert sorted({tag for _, tag in tags if tag not in guide}) == []


# --- install, remove and purge in a throwaway root --------------------------

# Files that differ after a purge as they should: the shadow tools keep the
# previous passwd, group, shadow and gshadow as FILE-, dpkg its previous
# status and diversions as FILE-old, and dpkg.log records what was done.
CHANGED_BY_DESIGN = {"etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-",
                     "var/lib/dpkg/status-old", "var/lib/dpkg/diversions-old", "var/log/dpkg.log"}


def snapshot(root: pathlib.Path) -> dict[str, tuple]:
    """Every file, link and directory under root but /proc, /dev and /tmp:
    mode and owner, and the content's digest or the link's target."""
    entries = {}
    for directory, dirs, files in os.walk(root):
        here = pathlib.Path(directory)
        if here == root:
            dirs[:] = [d for d in dirs if d not in ("proc", "dev", "tmp")]
        for name in dirs + files:
            path = here / name
            st = path.lstat()
            if path.is_symlink():
                what = os.readlink(path)
            elif path.is_file():
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = None
            entries[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, what)
    return entries


class Root:
    def __init__(self, path: pathlib.Path):
        self.path = path

    def run(self, command: str) -> subprocess.CompletedProcess:
        return run("chroot", str(self.path), "sh", "-c", command, timeout=300)

    def ok(self, command: str) -> str:
        result = self.run(command)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
        return result.stdout


@pytest.fixture(scope="session")
def debian_root(deb):
    need(shutil.which("debootstrap") is not None, "debootstrap is not installed")
    path = pathlib.Path(tempfile.mkdtemp(prefix="sendgate-deb-root-", dir="/var/tmp"))
    path.chmod(0o755)  # its /, which the daemons enter as the service user
    try:
        # What the package depends on, and Postfix for setup-postfix.
        result = run("debootstrap", "--variant=minbase", "--include=python3.11,libmilter1.0.1,adduser,postfix",
                     "bookworm", str(path), "http://deb.debian.org/debian", timeout=1200)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        shutil.copy(deb, path / "tmp/sendgate.deb")
        yield Root(path)
    finally:
        shutil.rmtree(path)


def run_daemon(root: Root, program: str, socket_path: str, log: pathlib.Path, talk):
    """Start program from the package in root as root (it drops to the
    service user itself), wait until it logs that it listens, call
    talk(host path of its socket), stop it with SIGTERM; return talk's
    result and the log."""
    config = root.path / "tmp/smoke.yaml"
    config.write_text((root.path / "etc/sendgate/sendgate.yaml").read_text()
                      .replace("log_destination: syslog", "log_destination: stderr"))
    (root.path / "run/sendgate").mkdir(exist_ok=True)
    host_socket = root.path / socket_path.lstrip("/")
    with open(log, "w") as fp:
        proc = subprocess.Popen(["chroot", str(root.path), program, "--config", "/tmp/smoke.yaml"],
                                stdout=fp, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            if "listening on" in log.read_text() or proc.poll() is not None:
                break
            proc_wait(proc, 0.1)
        assert "listening on" in log.read_text(), log.read_text()
        result = talk(str(host_socket))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return result, log.read_text()


def proc_wait(proc: subprocess.Popen, seconds: float) -> None:
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass


def smtp_greeting(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(60)
        s.connect(path)
        return s.recv(1000)


def milter_negotiation(path: str) -> tuple:
    """SMFIC_OPTNEG, protocol version 6; the milter's answer: its command
    letter and version."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(60)
        s.connect(path)
        body = b"O" + struct.pack(">III", 6, 0x1FF, 0x1FFFFF)
        s.sendall(struct.pack(">I", len(body)) + body)
        reply = s.recv(4 + struct.unpack(">I", s.recv(4))[0])
        return reply[:1], struct.unpack(">I", reply[1:5])[0]


def test_install_remove_purge_leave_the_root_as_it_was(debian_root, tmp_path):
    root = debian_root
    before = snapshot(root.path)
    postfix_before = root.ok("postconf -n; postconf -M")
    diversions_before = root.ok("dpkg-divert --list | sort")

    root.ok("dpkg -i /tmp/sendgate.deb")
    user = root.ok("getent passwd sendgate").strip().split(":")
    assert (user[0], user[5], user[6]) == ("sendgate", "/nonexistent", "/usr/sbin/nologin")
    assert int(user[2]) < 1000
    assert root.ok("id -gn sendgate").strip() == "sendgate"
    # Postfix, /usr/sbin/sendmail and the unit links are as they were.
    assert root.ok("postconf -n; postconf -M") == postfix_before
    assert root.ok("dpkg-divert --list | sort") == diversions_before
    installed = snapshot(root.path)
    for path in ("usr/sbin/sendmail", "usr/bin/mailq", "usr/bin/newaliases"):
        assert installed[path] == before[path]
    assert not [p for p in installed if p.startswith("etc/systemd/system/") and "sendgate" in p]
    assert root.ok("ls /lib/systemd/system | grep sendgate").split() == UNITS
    assert root.ok("sendgate check-config --no-mta && echo ok") == "ok\n"
    # The packaged daemons run: the submit daemon on uvloop, answering as
    # it does without its MTA (Postfix is not running in the root).
    greeting, log = run_daemon(root, "sendgate-submitd", "/run/sendgate/submit.sock", tmp_path / "submitd.log",
                               smtp_greeting)
    assert greeting == (b"421 4.3.0 mail.example.org Service not available: "
                        b"the mail system is not reachable, try again later\r\n")
    assert "sendgate/submit" in log and "(event loop: uvloop)" in log and "connect uid=0 " in log, log

    # The administrator's steps that reach outside the package.
    root.ok("sendgate setup-postfix --domain example.org && sendgate install-shim")
    # The milter (pymilter on libmilter) negotiating with an MTA, on the
    # socket directory setup-postfix made.
    negotiated, log = run_daemon(root, "sendgate-milter", "/var/spool/postfix/sendgate/milter.sock",
                                 tmp_path / "milter.log", milter_negotiation)
    assert negotiated == (b"O", 6), log
    assert "running as sendgate " in log, log
    assert root.ok("dpkg-divert --list | grep 'by sendgate$' | sort") == "".join(
        f"diversion of {p} to {p}.sendgate-orig by sendgate\n"
        for p in ("/usr/bin/mailq", "/usr/bin/newaliases", "/usr/sbin/sendmail"))

    # An upgrade (here: the same version again) keeps what the
    # administrator did.
    root.ok("dpkg -i /tmp/sendgate.deb")
    assert root.ok("dpkg-divert --list | grep -c 'by sendgate$'") == "3\n"
    assert root.ok("postconf -M sendgate/unix") != ""
    assert root.ok("/usr/sbin/sendmail --help").startswith("NAME\n")

    removal = root.ok("dpkg -r sendgate")
    assert "restored /usr/sbin/sendmail (diversion removed)" in removal
    assert "postfix: removed the sendgate service" in removal
    assert root.ok("dpkg-divert --list | sort") == diversions_before
    assert root.ok("postconf -n; postconf -M") == postfix_before
    removed = snapshot(root.path)
    for path in ("usr/sbin/sendmail", "usr/bin/mailq", "usr/bin/newaliases"):
        assert removed[path] == before[path]
    # Kept until purge: the configuration, the user, dpkg's record of a
    # package whose configuration is kept (its postrm runs the purge) and
    # deb-systemd-helper's of the units (the purge clears it).
    assert sorted(p for p in removed if p not in before) == sorted(
        ["etc/sendgate", "etc/sendgate/sendgate.yaml", "var/lib/dpkg/info/sendgate.list",
         "var/lib/dpkg/info/sendgate.postrm", "run/sendgate", "run/sendgate/submit.sock"]
        + [f"var/lib/systemd/deb-systemd-helper-enabled/{unit}.dsh-also" for unit in UNITS])
    assert root.run("getent passwd sendgate").returncode == 0

    root.ok("dpkg -P sendgate")
    after = snapshot(root.path)
    assert root.run("getent passwd sendgate").returncode == 2
    assert root.run("getent group sendgate").returncode == 2
    differ = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert [p for p in differ if p not in CHANGED_BY_DESIGN] == []
