"""`sendgate install-shim` / `uninstall-shim` in a scratch root (never the
real /usr/sbin): the MTA's programs are kept and come back byte for byte,
the launchers work, and newaliases reaches the MTA's own sendmail instead
of looping back into ours."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess
import tempfile

import pytest

from conftest import DOMAIN, VENV_BIN, delivered, need, program, run_as, unique_marker

# Postfix's layout: one sendmail binary, mailq and newaliases link to it.
FAKE_SENDMAIL = "#!/bin/sh\necho \"mta-sendmail $0 $*\" >> \"$(dirname \"$0\")/../../calls\"\n"


@pytest.fixture
def scratch():
    need(os.geteuid() == 0, "install-shim is run as root, as an administrator would")
    root = pathlib.Path(tempfile.mkdtemp(prefix="sendgate-root-", dir="/tmp"))
    root.chmod(0o755)
    for d in ("usr/sbin", "usr/bin"):
        (root / d).mkdir(parents=True, mode=0o755)
    (root / "usr/sbin/sendmail").write_text(FAKE_SENDMAIL)
    (root / "usr/sbin/sendmail").chmod(0o755)
    (root / "usr/bin/mailq").symlink_to("../sbin/sendmail")
    (root / "usr/bin/newaliases").symlink_to("../sbin/sendmail")
    (root / "calls").touch(mode=0o666)
    (root / "calls").chmod(0o666)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def sendgate(*args):
    return subprocess.run([program("sendgate"), *args], capture_output=True, text=True, timeout=60)


def snapshot(root: pathlib.Path) -> dict[str, tuple]:
    out = {}
    for path in sorted((root / "usr").rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        rel = str(path.relative_to(root))
        out[rel] = ("link", os.readlink(path)) if path.is_symlink() else ("file", path.read_bytes(),
                                                                           stat.S_IMODE(path.lstat().st_mode))
    return out


@pytest.mark.parametrize("dpkg", [pytest.param(True, id="dpkg-divert"), pytest.param(False, id="rename")])
def test_install_and_uninstall_are_reversible(scratch, dpkg):
    if dpkg:
        need(shutil.which("dpkg-divert") is not None, "dpkg-divert is missing")
        (scratch / "var/lib/dpkg").mkdir(parents=True)
    before = snapshot(scratch)
    installed = sendgate("install-shim", "--root", str(scratch))
    assert installed.returncode == 0, installed.stderr
    kept = "diverted {t} to {t}.sendgate-orig" if dpkg else f"renamed {scratch}{{t}} to {scratch}{{t}}.sendgate-orig"
    assert installed.stdout.splitlines() == [
        line for t in ("/usr/sbin/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases")
        for line in (kept.format(t=t), f"installed {scratch}{t}")]
    for target in ("usr/sbin/sendmail", "usr/bin/mailq", "usr/bin/newaliases"):
        path = scratch / target
        mode = path.lstat().st_mode
        assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o755  # no set-id bit, a plain file
        text = path.read_text()
        shebang = text.splitlines()[0]
        assert shebang.startswith(f"#!{VENV_BIN}/python") and shebang.endswith(" -IS")
        assert f"# mta-sendmail: {scratch}/usr/sbin/sendmail.sendgate-orig\n" in text
    assert (scratch / "usr/sbin/sendmail.sendgate-orig").read_text() == FAKE_SENDMAIL
    assert os.readlink(scratch / "usr/bin/newaliases.sendgate-orig") == "../sbin/sendmail"
    if dpkg:
        listed = subprocess.run(["dpkg-divert", f"--root={scratch}", "--list", "sendgate"],
                                capture_output=True, text=True).stdout
        assert len(listed.splitlines()) == 3

    assert sendgate("install-shim", "--root", str(scratch)).stdout == "nothing to do\n"

    removed = sendgate("uninstall-shim", "--root", str(scratch))
    assert removed.returncode == 0, removed.stderr
    assert snapshot(scratch) == before
    assert sendgate("uninstall-shim", "--root", str(scratch)).stdout == "nothing to do\n"


def test_uninstall_leaves_a_foreign_file_alone(scratch):
    assert sendgate("install-shim", "--root", str(scratch)).returncode == 0
    (scratch / "usr/bin/mailq").unlink()
    (scratch / "usr/bin/mailq").write_text("someone else's\n")
    result = sendgate("uninstall-shim", "--root", str(scratch))
    assert (result.returncode, result.stderr) == (
        1, f"sendgate: uninstall-shim: {scratch}/usr/bin/mailq is not sendgate's launcher; not removing it\n")
    assert (scratch / "usr/bin/mailq").read_text() == "someone else's\n"


def test_launchers_send_mail_and_reach_the_mta(stack, scratch, request):
    m = unique_marker(request)
    assert sendgate("install-shim", "--root", str(scratch)).returncode == 0
    env = {**stack.env(), "PATH": f"{scratch}/usr/bin:{scratch}/usr/sbin:/usr/bin:/bin"}

    sent = run_as("sgtest3", [f"{scratch}/usr/sbin/sendmail", "-t", "-i"],
                  f"To: bob@example.net\nSubject: {m}\n\nvia the launcher\n".encode(), env)
    assert (sent.returncode, sent.stderr) == (0, b"")
    (item,) = delivered(stack, m)
    assert item.one("Return-Path") == f"<sgtest3@{DOMAIN}>"

    # The default newaliases command is `newaliases`, which is now the
    # launcher: the MTA's kept sendmail runs with -bi, once.
    aliases = run_as("sgtest3", [f"{scratch}/usr/bin/newaliases"], env=env)
    assert (aliases.returncode, aliases.stderr) == (0, b"")
    assert (scratch / "calls").read_text() == f"mta-sendmail {scratch}/usr/sbin/sendmail.sendgate-orig -bi\n"


@pytest.mark.parametrize("dpkg", [pytest.param(True, id="dpkg-divert"), pytest.param(False, id="rename")])
@pytest.mark.parametrize("name", ["mailq", "newaliases"])
def test_kept_links_run_the_mtas_sendmail_under_their_name(scratch, dpkg, name):
    """Postfix's mailq and newaliases are links to ../sbin/sendmail, which
    is the launcher once installed; the kept ones still reach the MTA's
    sendmail, named as the mode it reads from argv[0].  The kept sendmail
    here is bash, which shows the argv[0] it was given as $0."""
    if dpkg:
        need(shutil.which("dpkg-divert") is not None, "dpkg-divert is missing")
        (scratch / "var/lib/dpkg").mkdir(parents=True)
    (scratch / "usr/sbin/sendmail").unlink()
    shutil.copy("/bin/bash", scratch / "usr/sbin/sendmail")
    before = snapshot(scratch)
    assert sendgate("install-shim", "--root", str(scratch)).returncode == 0
    kept = scratch / f"usr/bin/{name}.sendgate-orig"
    assert os.readlink(kept) == "../sbin/sendmail"  # as the package made it
    result = run_as("sgtest3", [str(kept), "-c", 'echo "$0"'])
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{name}\n".encode(), b"")
    assert sendgate("uninstall-shim", "--root", str(scratch)).returncode == 0
    assert snapshot(scratch) == before
