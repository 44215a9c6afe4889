"""A whole SMTP dialogue written at once, then the client's end of input
(a half-close, or the end of -bs's standard input): every command before
the end is answered and acted on, a message whose end of data was sent is
delivered, and `sendmail -bs` exits with what the server said (issue 18)."""

from __future__ import annotations

import re

import pytest

from conftest import DOMAIN, delivered, program, run_as, unique_marker

USER = "sgtest2"
OTHER = "sgtest4"

# As the user: connect to the submit socket, write the dialogue in the
# given pieces (no waiting for replies), half-close, print what came back.
SOCKET_CLIENT = """
import socket, sys
pieces = [bytes.fromhex(p) for p in sys.argv[2:]]
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
for piece in pieces:
    s.sendall(piece)
s.shutdown(socket.SHUT_WR)
out = b""
while True:
    data = s.recv(65536)
    if not data:
        break
    out += data
sys.stdout.buffer.write(out)
"""


def dialogue(marker: str, sender: str = f"{USER}@{DOMAIN}", end: bytes = b".\r\n", quit: bool = True) -> list[bytes]:
    """The client's lines, one piece per command (the message is one piece)."""
    message = (f"From: {sender}\r\nTo: bob@example.net\r\nSubject: {marker}\r\n\r\nbody\r\n").encode() + end
    return [b"EHLO client.example\r\n", f"MAIL FROM:<{sender}>\r\n".encode(), b"RCPT TO:<bob@example.net>\r\n",
            b"DATA\r\n", message] + ([b"QUIT\r\n"] if quit else [])


def codes(output: bytes) -> list[str]:
    """The final line's code of each reply."""
    return [line[:3] for line in output.decode().split("\r\n") if re.match(r"\d{3} ", line)]


ACCEPTED = ["220", "250", "250", "250", "354", "250"]


@pytest.mark.parametrize("batched,quit", [
    pytest.param(True, True, id="one-write-then-quit"),
    pytest.param(True, False, id="one-write-no-quit"),
    pytest.param(False, True, id="a-write-per-command"),
])
def test_socket_answers_everything_before_the_half_close(stack, request, batched, quit):
    m = unique_marker(request)
    lines = dialogue(m, quit=quit)
    pieces = [b"".join(lines)] if batched else lines
    result = run_as(USER, [program("python"), "-c", SOCKET_CLIENT, stack.socket, *(p.hex() for p in pieces)])
    assert result.returncode == 0, result.stderr
    assert codes(result.stdout) == ACCEPTED + (["221"] if quit else [])
    assert delivered(stack, m)[0].one("Subject") == m


def run_bs(stack, script: bytes, redirect: bool):
    """sendmail -bs as the user: the dialogue from a file (`< file`) or a pipe."""
    if not redirect:
        return run_as(USER, [program("sendgate-sendmail"), "-bs"], script, stack.env())
    command = f"cat > $HOME/bs-input && exec {program('sendgate-sendmail')} -bs < $HOME/bs-input"
    return run_as(USER, ["sh", "-c", command], script, stack.env())


@pytest.mark.parametrize("redirect", [pytest.param(True, id="stdin-a-file"), pytest.param(False, id="stdin-a-pipe")])
def test_bs_delivers_a_whole_dialogue(stack, request, redirect):
    m = unique_marker(request)
    result = run_bs(stack, b"".join(dialogue(m)), redirect)
    assert (result.returncode, result.stderr) == (0, b"")
    assert codes(result.stdout) == ACCEPTED + ["221"]
    assert delivered(stack, m)[0].one("Subject") == m


@pytest.mark.parametrize("sender,end,status,said", [
    pytest.param(f"{OTHER}@{DOMAIN}", b".\r\n", 77, "553 5.7.1", id="mail-refused"),
    pytest.param(f"{USER}@{DOMAIN}", b"", 75, None, id="end-of-data-never-sent"),
])
def test_bs_exits_non_zero_when_the_server_did_not_accept(stack, request, sender, end, status, said):
    m = unique_marker(request)
    result = run_bs(stack, b"".join(dialogue(m, sender=sender, end=end, quit=False)), redirect=True)
    assert result.returncode == status, result.stderr
    if said:
        assert result.stderr.decode().startswith(f"sendmail: -bs: the server said: {said} "), result.stderr
    else:
        assert result.stderr == b"sendmail: -bs: the session ended before the server accepted the message\n"
    assert delivered(stack, m, timeout=3) == []
