"""Real callers of sendmail(1), driven for real through the stack.

Each case runs a program the way it runs in the wild (its exact argv, its
line endings, its headers), as an unprivileged user, with the sendgate
command as the `sendmail` it finds, and asserts what Postfix delivered:
who got a copy, the header fields that matter, and the body byte for byte.
"""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import DOMAIN, delivered, need, program, unique_marker
from sendmail_helpers import public_dir, run_caller  # noqa: F401  (fixture)

USER = "sgtest3"
ME = f"sendgate test user {USER} <{USER}@{DOMAIN}>"


def cronie(stack, pub, m):
    # cronie's do_command.c: this argv, this header, job output as the body.
    message = (f'From: "(Cron Daemon)" <{USER}>\nTo: a@example.net, b@example.net\n'
               f"Subject: Cron <{USER}@host> echo {m}\nMIME-Version: 1.0\n"
               "Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n"
               "Auto-Submitted: auto-generated\nPrecedence: bulk\nX-Cron-Env: <SHELL=/bin/sh>\n\n"
               "r\u00e9sultat du job\n").encode()
    argv = ["sendmail", "-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", USER]
    return run_caller(stack, pub, USER, argv, message)


def debian_cron(stack, pub, m):
    # Debian's cron: no -t, MAILTO on argv as one comma list, no From: of its own.
    message = f"To: a@example.net,b@example.net\nSubject: {m}\n\njob output\n".encode()
    argv = ["sendmail", "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "a@example.net,b@example.net"]
    return run_caller(stack, pub, USER, argv, message)


def php_shell(stack, pub, m):
    # PHP's mail(): popen("sendmail -t -i") through /bin/sh, CRLF everywhere.
    message = f"To: bob@example.net\r\nSubject: {m}\r\n\r\nline one\r\n.\r\nline three\r\n".encode()
    return run_caller(stack, pub, USER, ["sh", "-c", "sendmail -t -i"], message)


def php_cli(stack, pub, m):
    need(shutil.which("php") is not None, "php-cli is not installed (scripts/debian-packages-test)")
    code = f'exit(mail("bob@example.net", "{m}", "line one\\n.\\nline three", "Cc: carol@example.net") ? 0 : 1);'
    return run_caller(stack, pub, USER, ["php", "-n", "-d", "sendmail_path=sendmail -t -i", "-r", code])


def mutt(stack, pub, m):
    # mutt: `sendmail -oem -oi -- rcpts`, with write_bcc the Bcc: is in the text.
    need(shutil.which("mutt") is not None, "mutt is not installed (scripts/debian-packages-test)")
    settings = ('set sendmail="sendmail"; set write_bcc=yes; set record=""; '
                f'set from="{USER}@{DOMAIN}"; set use_from=yes')
    argv = ["mutt", "-n", "-F", "/dev/null", "-e", settings, "-s", m, "-b", "hidden@example.net",
            "--", "bob@example.net"]
    return run_caller(stack, pub, USER, argv, b"mutt body\n")


def bsd_mailx(stack, pub, m):
    need(shutil.which("bsd-mailx") is not None, "bsd-mailx is not installed (scripts/debian-packages-test)")
    mailrc = pub / "mailrc"
    mailrc.write_text(f"set sendmail={pub}/bin/send-mail\n")
    mailrc.chmod(0o644)
    return run_caller(stack, pub, USER, ["bsd-mailx", "-s", m, "sgtest4"], b"mailx body\n",
                      {"MAILRC": str(mailrc)})


def git_send_email(stack, pub, m):
    need(os.path.exists("/usr/lib/git-core/git-send-email"), "git-email is not installed (scripts/debian-packages-test)")
    work = pub / f"git-{m}"
    work.mkdir()
    os.chown(work, *_ids(USER))
    script = (f"cd {work} && git init -q r && cd r && echo hi > f && git add f && "
              f"git commit -qm '{m}' && git format-patch -q -1 -o {work}/p && "
              "git send-email --sendmail-cmd=sendmail --to=bob@example.net --bcc=hidden@example.net "
              f"--from={USER}@{DOMAIN} --confirm=never --suppress-cc=all --quiet {work}/p/*.patch")
    ident = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
             for what, value in (("NAME", "Tester"), ("EMAIL", f"{USER}@{DOMAIN}"))}
    return run_caller(stack, pub, USER, ["sh", "-c", script], env=ident)


def at_job(stack, pub, m):
    # atd: `sendmail -i <owner>` with a bare login, as the job's owner.
    message = f"Subject: Output from your job {m}\nTo: sgtest4\n\njob done\n".encode()
    return run_caller(stack, pub, USER, ["sendmail", "-i", "sgtest4"], message)


def python_popen(stack, pub, m):
    script = (
        "import email.message, subprocess, sys\n"
        "msg = email.message.EmailMessage()\n"
        f"msg['To'] = 'Bob <bob@example.net>'\nmsg['Subject'] = '{m}'\n"
        "msg.set_content('gr\\u00fc\\u00dfe\\n')\n"
        "p = subprocess.Popen(['sendmail', '-t', '-oi'], stdin=subprocess.PIPE)\n"
        "p.communicate(msg.as_bytes())\nsys.exit(p.returncode)\n")
    return run_caller(stack, pub, USER, [program("python"), "-c", script])


def smtp_bs(stack, pub, m):
    # Symfony Mailer's default: an SMTP client talking to `sendmail -bs`.
    script = (
        "import smtplib, socket, subprocess, sys\n"
        "ours, theirs = socket.socketpair()\n"
        "proc = subprocess.Popen(['sendmail', '-bs'], stdin=theirs, stdout=theirs)\n"
        "theirs.close()\n"
        "client = smtplib.SMTP()\nclient.sock = ours\n"
        "assert client.getreply()[0] == 220\n"
        "client.ehlo('[127.0.0.1]')\n"
        f"msg = 'From: {USER}@{DOMAIN}\\r\\nTo: bob@example.net\\r\\nSubject: {m}\\r\\n\\r\\nhi\\r\\n.dot\\r\\n'\n"
        f"refused = client.sendmail('{USER}@{DOMAIN}', ['bob@example.net', 'carol@example.net'], msg)\n"
        "client.quit()\n"
        "sys.exit(1 if refused else proc.wait(30))\n")
    return run_caller(stack, pub, USER, [program("python"), "-c", script])


def symfony_mailer(stack, pub, m):
    # Symfony Mailer's SendmailTransport in its default mode, `sendmail -bs`.
    autoload = "/usr/share/php/Symfony/Component/Mailer/autoload.php"
    need(os.path.exists(autoload), "php-symfony-mailer is not installed (scripts/debian-packages-test)")
    code = (f"require '{autoload}';"
            "$t = new Symfony\\Component\\Mailer\\Transport\\SendmailTransport('sendmail -bs');"
            f"$e = (new Symfony\\Component\\Mime\\Email())->from('{USER}@{DOMAIN}')->to('bob@example.net')"
            f"->bcc('hidden@example.net')->subject('{m}')->text('symfony body');"
            "(new Symfony\\Component\\Mailer\\Mailer($t))->send($e);")
    return run_caller(stack, pub, USER, ["php", "-r", code])


def _ids(user):
    import pwd
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


CALLERS = [
    pytest.param(cronie, {"to": ["a@example.net", "b@example.net"], "From": f'"(Cron Daemon)" <{USER}@{DOMAIN}>',
                          "body": "r\u00e9sultat du job\n".encode()}, id="cronie"),
    pytest.param(debian_cron, {"to": ["a@example.net", "b@example.net"], "From": f"CronDaemon <{USER}@{DOMAIN}>",
                               "body": b"job output\n"}, id="debian-cron"),
    pytest.param(php_shell, {"to": ["bob@example.net"], "From": ME, "body": b"line one\n.\nline three\n"},
                 id="php-sh-c-crlf"),
    pytest.param(php_cli, {"to": ["bob@example.net", "carol@example.net"], "From": ME,
                           "body": b"line one\n.\nline three\n"}, id="php-cli-mail"),
    pytest.param(mutt, {"to": ["bob@example.net", "hidden@example.net"], "Bcc": None, "body": b"mutt body\n"},
                 id="mutt-bcc"),
    pytest.param(bsd_mailx, {"to": [f"sgtest4@{DOMAIN}"], "From": ME, "body": b"mailx body\n"}, id="bsd-mailx"),
    pytest.param(git_send_email, {"to": ["bob@example.net", "hidden@example.net"], "Bcc": None},
                 id="git-send-email"),
    pytest.param(at_job, {"to": [f"sgtest4@{DOMAIN}"], "From": ME, "body": b"job done\n"}, id="at-job"),
    pytest.param(python_popen, {"to": ["bob@example.net"], "From": ME}, id="python-popen"),
    pytest.param(symfony_mailer, {"to": ["bob@example.net", "hidden@example.net"], "From": f"{USER}@{DOMAIN}"},
                 id="symfony-mailer-bs"),
    pytest.param(smtp_bs, {"to": ["bob@example.net", "carol@example.net"], "From": f"{USER}@{DOMAIN}",
                           "body": b"hi\n.dot\n"}, id="smtp-client-on-bs"),
]


@pytest.mark.parametrize("drive,want", CALLERS)
def test_real_caller(stack, public_dir, request, drive, want):  # noqa: F811
    m = unique_marker(request)
    result = drive(stack, public_dir, m)
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    copies = delivered(stack, m, count=len(want["to"]))
    assert sorted(c.one("X-Original-To") for c in copies) == want["to"]
    for item in copies:
        assert item.one("Return-Path") == f"<{USER}@{DOMAIN}>"
        assert m in item.one("Subject")
        assert item.all("Bcc") == []
        if "From" in want:
            assert item.one("From") == want["From"]
        if "body" in want:
            assert item.raw.split(b"\n\n", 1)[1] == want["body"]
