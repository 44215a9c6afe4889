"""`sendgate install-shim` and `sendgate uninstall-shim`: put the sendmail
command in place of the MTA's /usr/sbin/sendmail, /usr/bin/mailq and
/usr/bin/newaliases, and take it out again.

Each of the three becomes a small launcher script (mode 0755, root, no
set-id bit) that starts Python with -I -S, so that a cron job or PHP's
mail() does not pay for site-packages scanning, and imports the installed
sendgate.  The MTA's programs are kept as PATH.sendgate-orig:

* on Debian (dpkg-divert present and ROOT/var/lib/dpkg a directory), with
  `dpkg-divert --package sendgate --rename --divert PATH.sendgate-orig`, so
  that an upgrade of the MTA package puts its new files there too, not over
  the launchers; uninstall removes the diversions, which renames the
  originals back;
* elsewhere by renaming them, and back.

The launchers name the MTA's sendmail (`# mta-sendmail: PATH`): the sendmail
command runs it for -bp, -bi and -q when the configured command would run
the launcher itself (Postfix's newaliases is a link to its sendmail).

Postfix's kept mailq.sendgate-orig and newaliases.sendgate-orig are its
relative links to ../sbin/sendmail, which is now the launcher; they are left
as the package made them (a package upgrade writes them again, and
uninstall must give back the tree as it was).  Instead the launcher, run
under a name ending in .sendgate-orig (the path the kernel passes to the
interpreter, so a caller's argv[0] does not matter), runs the MTA's kept
sendmail with argv[0] set to the name without the suffix: Postfix's and
Sendmail's sendmail choose mailq or newaliases mode from that name.

Both commands are idempotent, touch only files they recognise as their
own, and take --root DIR to work on a scratch tree (the tests do).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

TARGETS = ("/usr/sbin/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases")
SUFFIX = ".sendgate-orig"
MARKER = "# sendgate.sendmail_shim launcher"
PACKAGE = "sendgate"


class InstallError(Exception):
    """install-shim or uninstall-shim cannot go on; str() says why."""


def launcher(python: str, site_dir: str, mta_sendmail: str) -> str:
    return (f"#!{python} -IS\n"
            f"{MARKER}, written by `sendgate install-shim`; `sendgate uninstall-shim` restores the MTA's program.\n"
            f"# mta-sendmail: {mta_sendmail}\n"
            "import sys\n"
            f"if sys.argv[0].endswith({SUFFIX!r}):\n"
            "    # Reached through a kept original that links to this path (Postfix's\n"
            "    # mailq and newaliases link to ../sbin/sendmail): the MTA's sendmail,\n"
            "    # under the name it reads its mode from.\n"
            "    import os\n"
            f"    os.execv({mta_sendmail!r}, [os.path.basename(sys.argv[0])[:-{len(SUFFIX)}], *sys.argv[1:]])\n"
            f"sys.path.insert(0, {site_dir!r})\n"
            "from sendgate.sendmail_shim.main import command\n"
            "command()\n")


def is_ours(path: str) -> bool:
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    with open(path, "rb") as fp:
        return MARKER.encode() in fp.read(512)


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fp:
        return fp.read()


def _use_dpkg(root: str) -> bool:
    return shutil.which("dpkg-divert") is not None and os.path.isdir(os.path.join(root, "var/lib/dpkg"))


def _dpkg_divert(root: str, *args: str) -> str:
    command = ["dpkg-divert", f"--root={root}", *args] if root != "/" else ["dpkg-divert", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise InstallError(f"{' '.join(command)}: {(result.stderr or result.stdout).strip()}")
    return result.stdout.strip()


def _diverted_by_us(root: str, target: str) -> bool:
    return _dpkg_divert(root, "--listpackage", target) == PACKAGE


def _write_launcher(path: str, text: str) -> None:
    temp = f"{path}.sendgate-new"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o755)
    with os.fdopen(fd, "w", encoding="utf-8") as fp:
        fp.write(text)
    os.chmod(temp, 0o755)
    os.rename(temp, path)


def install(root: str = "/", python: str | None = None, site_dir: str | None = None) -> list[str]:
    """Install the launchers under root; return one line per thing done."""
    import sendgate
    python = python or sys.executable
    site_dir = site_dir or os.path.dirname(os.path.dirname(os.path.abspath(sendgate.__file__)))
    mta_sendmail = os.path.join(root, TARGETS[0].lstrip("/")) + SUFFIX
    text = launcher(python, site_dir, mta_sendmail)
    dpkg = _use_dpkg(root)
    done = []
    for target in TARGETS:
        path = os.path.join(root, target.lstrip("/"))
        if not os.path.isdir(os.path.dirname(path)):
            raise InstallError(f"{os.path.dirname(path)}: no such directory")
        if dpkg:
            if not _diverted_by_us(root, target):
                _dpkg_divert(root, "--package", PACKAGE, "--rename", "--divert", target + SUFFIX, "--add", target)
                done.append(f"diverted {target} to {target + SUFFIX}")
        elif _exists(path) and not is_ours(path):
            if _exists(path + SUFFIX):
                raise InstallError(f"{path + SUFFIX} exists already; not overwriting it")
            os.rename(path, path + SUFFIX)
            done.append(f"renamed {path} to {path + SUFFIX}")
        if _exists(path) and not is_ours(path):
            raise InstallError(f"{path} is still there after diverting it; not overwriting it")
        if not is_ours(path) or _read(path) != text:
            _write_launcher(path, text)
            done.append(f"installed {path}")
    return done


def uninstall(root: str = "/") -> list[str]:
    """Remove the launchers under root and put the originals back."""
    dpkg = _use_dpkg(root)
    done = []
    for target in TARGETS:
        path = os.path.join(root, target.lstrip("/"))
        if is_ours(path):
            os.unlink(path)
            done.append(f"removed {path}")
        elif _exists(path) and (dpkg and _diverted_by_us(root, target) or _exists(path + SUFFIX)):
            raise InstallError(f"{path} is not sendgate's launcher; not removing it")
        if dpkg and _diverted_by_us(root, target):
            _dpkg_divert(root, "--package", PACKAGE, "--rename", "--remove", target)
            done.append(f"restored {target} (diversion removed)")
        elif not dpkg and _exists(path + SUFFIX):
            os.rename(path + SUFFIX, path)
            done.append(f"restored {path}")
    return done
