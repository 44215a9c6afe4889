"""scripts/install-packages (the package step of scripts/bootstrap): a host
gets only what sendgate needs at run time, and an installed Postfix's
debconf answers are never changed.  apt-get, dpkg-query and
debconf-set-selections are stand-ins on PATH that record their calls."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

CHECKOUT = pathlib.Path(__file__).resolve().parent.parent
RUNTIME = (CHECKOUT / "scripts/debian-packages").read_text().split()
TEST = (CHECKOUT / "scripts/debian-packages-test").read_text().split()
# What the tests, the benchmarks and the private stacks drive; none of it runs sendgate.
TEST_TOOLS = {"postfix", "sasl2-bin", "libsasl2-modules", "openssl", "redis-server", "m4", "libwrap0", "mutt",
              "bsd-mailx", "git-email", "php-cli", "libmailtools-perl", "php-symfony-mailer", "hyperfine", "msmtp",
              "time", "debootstrap", "opendkim", "opendkim-tools", "systemd-container"}
PRESEED = "debconf: postfix postfix/main_mailer_type select No configuration"

FAKES = {
    "dpkg-query": '#!/bin/sh\nfor p in $FAKE_INSTALLED; do [ "$p" = "$3" ] && { printf "install ok installed"; exit 0; }; done\n'
                  'exit 1\n',
    "debconf-set-selections": '#!/bin/sh\nsed "s/^/debconf: /" >> "$FAKE_LOG"\n',
    "apt-get": '#!/bin/sh\necho "apt-get $*" >> "$FAKE_LOG"\n',
}


def test_runtime_list_holds_no_test_tool():
    assert set(RUNTIME) & TEST_TOOLS == set()
    assert set(RUNTIME) & set(TEST) == set()
    assert set(TEST) == TEST_TOOLS


def install(tmp_path, installed, *args):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "log"
    log.touch()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_INSTALLED": " ".join(installed), "FAKE_LOG": str(log)}
    result = subprocess.run([CHECKOUT / "scripts/install-packages", *args], env=env, capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")
    return log.read_text().splitlines()


def apt(*packages):
    return ["apt-get update -q", "apt-get install -y -q --no-install-recommends " + " ".join(packages)]


@pytest.mark.parametrize("args,installed,calls", [
    pytest.param((), ["postfix"], apt(*RUNTIME), id="host-runtime-only"),
    pytest.param((), [], apt(*RUNTIME), id="host-without-postfix-no-preseed-no-postfix"),
    pytest.param((), RUNTIME, [], id="host-complete-nothing-done"),
    pytest.param(("--test",), [], [PRESEED, *apt(*RUNTIME, *TEST)], id="test-preseeds-a-new-postfix"),
    pytest.param(("--test",), ["postfix", *RUNTIME], apt(*(p for p in TEST if p != "postfix")),
                 id="test-keeps-an-installed-postfixs-answers"),
    pytest.param(("--test",), [*RUNTIME, *TEST], [], id="test-complete-nothing-done"),
])
def test_packages_and_debconf(tmp_path, args, installed, calls):
    assert install(tmp_path, installed, *args) == calls
