"""check-config on rate_store: redis: a store other local users can write
(and so block someone) is a problem line, exit 78."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from conftest import program


def check(config):
    result = subprocess.run([program("sendgate"), "check-config", "--no-mta", str(config)],
                            capture_output=True, text=True, timeout=60)
    return result.returncode, result.stderr


@pytest.mark.parametrize("url,file_mode,socket_mode,expected", [
    pytest.param("redis://127.0.0.1:6379/0", 0o644, None,
                 "rate store: 127.0.0.1:6379 without a password: any local user can write the rate counters "
                 "(use a unix socket only sendgate reaches, or requirepass)", id="tcp-no-auth"),
    pytest.param("redis://:secret@127.0.0.1:6380/0", 0o644, None,
                 "rate store: {config} is readable by every user and rate_redis_url holds the password: "
                 "anyone can write the rate counters", id="inline-password-world-readable"),
    pytest.param("redis://:secret@127.0.0.1:6380/0", 0o640, None, None, id="inline-password-private-file"),
    pytest.param("unix://{sock}", 0o644, 0o777,
                 "rate store: {sock} is open to every user (mode 0777): anyone can write the rate counters "
                 "(set unixsocketperm 770 and a group only sendgate is in)", id="unix-socket-world"),
    pytest.param("unix://{sock}", 0o644, 0o770, None, id="unix-socket-group-only"),
])
def test_open_rate_store(tmp_path, url, file_mode, socket_mode, expected):
    sock = tmp_path / "redis.sock"
    if socket_mode is not None:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(sock))
        os.chmod(sock, socket_mode)
    config = tmp_path / "sendgate.yaml"
    config.write_text(f"rate_store: redis\nrate_redis_url: {url.format(sock=sock)}\n")
    os.chmod(config, file_mode)
    want = (0, "") if expected is None else (
        78, f"sendgate: {config}: " + expected.format(config=config, sock=sock) + "\n")
    assert check(config) == want


def test_memory_store_is_not_checked(tmp_path):
    config = tmp_path / "sendgate.yaml"
    config.write_text("rate_store: memory\n")
    assert check(config) == (0, "")


@pytest.mark.parametrize("mode,expected", [
    pytest.param(0o600, None, id="private"),
    pytest.param(0o640, None, id="group-readable"),
    pytest.param(0o644, "rate store: {secret} is readable by every user (mode 0644): anyone can write the rate "
                 "counters (chmod 0600, owner sendgate)", id="world-readable"),
    pytest.param(None, "rate store: rate_redis_password_file {secret}: No such file or directory", id="missing"),
])
def test_password_file(tmp_path, mode, expected):
    """A TCP store with the password in a file of its own: the URL carries
    none, and only the file's mode decides."""
    secret = tmp_path / "redis-password"
    if mode is not None:
        secret.write_text("s3cret\n")
        os.chmod(secret, mode)
    config = tmp_path / "sendgate.yaml"
    config.write_text(f"rate_store: redis\nrate_redis_url: redis://127.0.0.1:6380/0\n"
                      f"rate_redis_password_file: {secret}\n")
    want = (0, "") if expected is None else (78, f"sendgate: {config}: " + expected.format(secret=secret) + "\n")
    assert check(config) == want
