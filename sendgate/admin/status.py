"""What `sendgate status` and `sendgate check-config` look at.

Each check returns Findings: a line of what is, and whether it is a
problem.  The MTA side is read as it is actually configured (postconf), not
as our configuration file says it should be, because that is what decides
whether policy can be bypassed.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
import time
from dataclasses import dataclass

from sendgate.daemon import socket_directory_problem
from sendgate.postfix import (PostconfError, greeting, milter_entry, milter_path_seen, milter_words, postconf,
                              process_limit, service_name, signer_before, smtpd_services)


@dataclass(frozen=True)
class Finding:
    text: str
    problem: bool = False

    def __str__(self) -> str:
        return ("problem: " if self.problem else "") + self.text


def _mode(path: str) -> str:
    st = os.stat(path)
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"mode {stat.S_IMODE(st.st_mode):04o} {owner}:{group}"


def open_sessions(path: str) -> int:
    """Connections accepted on the unix socket at path (from /proc/net/unix:
    accepted sockets carry the listener's name, state 03 = connected)."""
    count = 0
    with open("/proc/net/unix", encoding="ascii", errors="replace") as fp:
        next(fp)
        for line in fp:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and fields[5] == "03":
                count += 1
    return count


def submit_daemon(cfg) -> list[Finding]:
    path = cfg.submit_socket
    if not os.path.exists(path):
        return [Finding(f"submitd: down: no socket {path}", True)]
    out = [Finding(f"submitd: socket {path} {_mode(path)}")]
    if stat.S_IMODE(os.stat(path).st_mode) != cfg.submit_socket_mode:
        out.append(Finding(f"submitd: {path} has mode {stat.S_IMODE(os.stat(path).st_mode):04o}, "
                           f"submit_socket_mode says {cfg.submit_socket_mode:04o}", True))
    sessions = open_sessions(path)
    answer = greeting(path)
    if answer is None:
        out.append(Finding(f"submitd: down: nothing answers on {path}", True))
    elif answer.startswith("220 "):
        out.append(Finding(f"submitd: up, {sessions} session(s) open, the MTA answers"))
    else:
        out.append(Finding(f"submitd: up, {sessions} session(s) open, but: {answer}", True))
    return out


def spool_queue(cfg) -> list[Finding]:
    """The spool (docs/spool.md): its mode, how many messages wait, the oldest."""
    from sendgate import spool
    path = cfg.spool_directory
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        count, oldest, aside = spool.summary(path)
    except OSError as err:
        return [Finding(f"spool: {path}: {err.strerror}; failed messages go to ~/dead.letter")]
    out = [Finding(f"spool: {path} {_mode(path)}")]
    if mode != spool.DIRECTORY_MODE:
        out.append(Finding(f"spool: {path} has mode {mode:04o}, expected {spool.DIRECTORY_MODE:04o}", True))
    since = "" if oldest is None else ", oldest saved " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(oldest))
    out.append(Finding(f"spool: {count} message(s) waiting{since}; {aside} set aside"))
    return out


def milter_daemon(cfg) -> list[Finding]:
    path = cfg.milter_socket.removeprefix("unix:")
    if not os.path.exists(path):
        return [Finding(f"milter: down: no socket {path}", True)]
    out = [Finding(f"milter: socket {path} {_mode(path)}")]
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
        out.append(Finding("milter: up"))
    except PermissionError:
        out.append(Finding("milter: socket present (not allowed to connect to it as this user)"))
    except OSError as err:
        out.append(Finding(f"milter: down: {path}: {err.strerror}", True))
    problem = socket_directory_problem(path, cfg.milter_user, cfg.milter_socket_group)
    if problem:
        out.append(Finding(f"milter: {problem}", True))
    return out


def our_milters(cfg, queue: str, milters: str) -> list[str]:
    """The words of an smtpd_milters value that name sendgate's milter."""
    entry, path = milter_entry(cfg.milter_socket, queue), cfg.milter_socket.removeprefix("unix:")
    return [word for word in milter_words(milters)
            if word in (entry, cfg.milter_socket) or milter_path_seen(word, queue, False) == path]


def milter_order(cfg, where: str, milters: str, ours: set[str]) -> list[Finding]:
    """A signing milter (signing_milters) before sendgate's: it signs the
    message as the client sent it, without the fields the milter adds."""
    signer = signer_before(milters, ours, cfg.signing_milters)
    if signer is None:
        return []
    return [Finding(f"{where} runs the signing milter {signer} before sendgate's (smtpd_milters = {milters}): "
                    "its signature does not cover the Date, Message-ID, From and Sender sendgate adds "
                    "(put sendgate's milter first; setup-postfix does)", True)]


def milter_reach(cfg, queue: str, master: str, parameters: str, milters: str) -> list[Finding]:
    """Per smtpd service of master.cf: does it name the milter, and is the
    socket's directory where that service looks (a chrooted smtpd sees only
    queue_directory)?  Checked on the directory, so that it holds before the
    milter first starts.  A service's own -o smtpd_milters is checked for a
    signer before the milter as well (main.cf's value is, by postfix())."""
    path = cfg.milter_socket.removeprefix("unix:")
    out = []
    for service in smtpd_services(master, parameters, milters):
        where = f"postfix: service {service.key}" + (" (chrooted)" if service.chrooted else "")
        ours = our_milters(cfg, queue, service.milters)
        if ours and service.milters != milters:
            out.extend(milter_order(cfg, where, service.milters, set(ours)))
        if not ours and service.exposed:
            out.append(Finding(f"{where} runs without the milter (smtpd_milters = {service.milters or '(empty)'}): "
                               "mail through it passes without sendgate's policy", True))
        for word in ours:
            seen = milter_path_seen(word, queue, service.chrooted)
            if _same_directory(os.path.dirname(seen), os.path.dirname(path)):
                out.append(Finding(f"{where} reaches the milter at {path}"))
            else:
                out.append(Finding(f"{where} looks for the milter at {seen}: it cannot reach {path} (put the "
                                   f"socket under {queue} and name it relative to it)", True))
    return out


def _same_directory(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def rate_store(cfg) -> list[Finding]:
    """rate_store: redis reachable by other local users is a way to block
    them (HSET sendgate:rate:alice:... m 999999): a TCP server without a
    password, a unix socket other users may connect to, or a password
    written into the URL of a configuration file every user can read, or
    into a rate_redis_password_file they can read."""
    if cfg.rate_store != "redis":
        return []
    from urllib.parse import urlsplit
    url = urlsplit(cfg.rate_redis_url)
    if cfg.rate_redis_password_file:
        path = cfg.rate_redis_password_file
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError as err:
            return [Finding(f"rate store: rate_redis_password_file {path}: {err.strerror}", True)]
        if mode & 0o004:
            return [Finding(f"rate store: {path} is readable by every user (mode {mode:04o}): anyone can write "
                            f"the rate counters (chmod 0600, owner {cfg.milter_user})", True)]
        return [Finding(f"rate store: redis at {url.hostname or url.path}, password from {path} ({_mode(path)})")]
    if url.scheme == "unix":
        try:
            mode = stat.S_IMODE(os.stat(url.path).st_mode)
        except OSError as err:
            return [Finding(f"rate store: {url.path}: {err.strerror}", True)]
        if mode & 0o006:
            return [Finding(f"rate store: {url.path} is open to every user (mode {mode:04o}): anyone can write "
                            "the rate counters (set unixsocketperm 770 and a group only sendgate is in)", True)]
    elif url.password:
        if stat.S_IMODE(os.stat(cfg.path).st_mode) & 0o004:
            return [Finding(f"rate store: {cfg.path} is readable by every user and rate_redis_url holds the "
                            "password: anyone can write the rate counters", True)]
    else:
        return [Finding(f"rate store: {url.hostname}:{url.port or 6379} without a password: any local user can "
                        "write the rate counters (use a unix socket only sendgate reaches, or requirepass)", True)]
    return [Finding(f"rate store: redis at {url.hostname or url.path}")]


def submit_users(value: str) -> list[Finding]:
    """authorized_submit_users as postconf -h prints it: root alone (or
    nobody) keeps Postfix's own sendmail, postdrop and -bs from being a way
    around the submit socket's policy."""
    users = value.replace(",", " ").split()
    if all(user in ("root", "!static:all") for user in users) and users:
        return [Finding(f"postfix: authorized_submit_users = {value.strip()}")]
    return [Finding(f"postfix: authorized_submit_users = {value.strip() or '(empty)'}: users other than root can "
                    "submit with Postfix's own sendmail and postdrop, around sendgate's policy "
                    "(set authorized_submit_users = root)", True)]


def service_processes(cfg, name: str, limit: int | None) -> list[Finding]:
    """The sendgate service's process limit against the daemon's share:
    fewer processes than submit_upstream_session_limit and the daemon's
    sessions beyond them wait for Postfix (docs/threat-model.md)."""
    want = cfg.submit_upstream_session_limit
    if limit is None or limit == 0 or limit >= want:
        return []
    return [Finding(f"postfix: service {name}/unix runs at most {limit} processes (maxproc), fewer than "
                    f"submit_upstream_session_limit = {want}: the submit daemon's MTA sessions beyond them wait "
                    f"(set its maxproc to {want}; setup-postfix does)", True)]


def postfix(cfg) -> list[Finding]:
    """Postfix as configured: the milter attached and failing closed, the
    submit daemon's service in public/ with XCLIENT, XCLIENT nowhere else."""
    directory = cfg.postfix_config_directory
    try:
        milters, action, xclient, queue, submitters, processes = postconf(
            directory, "-h", "smtpd_milters", "milter_default_action", "smtpd_authorized_xclient_hosts",
            "queue_directory", "authorized_submit_users", "default_process_limit").splitlines()
        services = postconf(directory, "-P")
        master = postconf(directory, "-M")
    except PostconfError as err:
        said = err.said.splitlines()[-1] if err.said else "postconf failed"
        return [Finding(f"postfix: cannot read the configuration in {directory}: {said}", True)]
    except (OSError, ValueError) as err:
        return [Finding(f"postfix: cannot read the configuration in {directory}: {err}", True)]
    out = [Finding(f"postfix: {directory}: smtpd_milters = {milters}; milter_default_action = {action}")]
    entry = milter_entry(cfg.milter_socket, queue)
    if not {entry, cfg.milter_socket} & set(milter_words(milters)):
        out.append(Finding(f"postfix: smtpd_milters does not name {entry}: "
                           "SMTP mail passes without sendgate's policy", True))
    else:
        out.extend(milter_order(cfg, "postfix: main.cf", milters, set(our_milters(cfg, queue, milters))))
        out.extend(milter_reach(cfg, queue, master, services, milters))
    if action not in ("tempfail", "reject", "shutdown"):
        out.append(Finding(f"postfix: milter_default_action = {action}: mail passes without policy while "
                           "the milter is down (set tempfail)", True))
    if xclient.strip():
        out.append(Finding(f"postfix: smtpd_authorized_xclient_hosts = {xclient} in main.cf: every smtpd "
                           "service trusts XCLIENT; allow it only on the sendgate service", True))
    out.extend(submit_users(submitters))
    upstream = cfg.submit_upstream.removeprefix("unix:")
    name = service_name(cfg.submit_upstream)
    own = [line for line in services.splitlines() if line.startswith(f"{name}/unix/")]
    others = [line for line in services.splitlines()
              if "/smtpd_authorized_xclient_hosts = " in line and not line.startswith(f"{name}/unix/")
              and line.split(" = ", 1)[1].strip()]
    if not any("/smtpd_authorized_xclient_hosts = " in line for line in own):
        out.append(Finding(f"postfix: service {name}/unix has no smtpd_authorized_xclient_hosts: "
                           "the submit daemon cannot pass the login", True))
    for line in others:
        out.append(Finding(f"postfix: {line}: anyone who reaches that service can claim any login", True))
    out.extend(service_processes(cfg, name, process_limit(master, f"{name}/unix", processes)))
    public = os.path.join(queue, "public")
    if os.path.dirname(upstream) != public:
        out.append(Finding(f"postfix: submit_upstream {upstream} is not in {public}/", True))
    elif os.path.isdir(public):
        st = os.stat(public)
        if stat.S_IMODE(st.st_mode) & 0o007:
            out.append(Finding(f"postfix: {public} is open to every user ({_mode(public)}): "
                               "anyone could reach the XCLIENT service", True))
        else:
            out.append(Finding(f"postfix: service {name}/unix in {public}/ ({_mode(public)})"))
    return out
