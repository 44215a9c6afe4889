"""The configuration schema and loader: one YAML file, every key declared once.

Each key is declared below, once, with its type, default, a one-line
meaning and the programs that read it; the reference table in
docs/configuration.md (``sendgate config-doc``) and the CONFIGURATION
section of each program's manual page (sendgate/admin/manpages.py) are
generated from this list, and tests fail when they differ.  Unknown keys
and bad values are fatal: ConfigError names the file, the line and the key,
and every program that reads the file exits 78 (EX_CONFIG) on it.

Keys are named component_feature and reuse Postfix's names where the
meaning is the same (myhostname, myorigin).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Callable

import yaml

DEFAULT_PATH = "/etc/sendgate/sendgate.yaml"


class ConfigError(Exception):
    """A configuration problem, with the place it was found."""

    def __init__(self, path: str, line: int | None, key: str | None, reason: str):
        self.path, self.line, self.key, self.reason = path, line, key, reason
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")


# --- value checkers: each takes the YAML value and returns the Python value or
# raises ValueError with the reason ---------------------------------------------

def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _path(value: Any) -> str:
    text = _str(value)
    if not text.startswith("/"):
        raise ValueError(f"expected an absolute path, got {text!r}")
    return text


def _optional_path(value: Any) -> str:
    return "" if value == "" else _path(value)


def _socket_spec(value: Any) -> str:
    text = _str(value)
    if not text.startswith("unix:/"):
        raise ValueError(f"expected unix:/absolute/path, got {text!r}")
    return text


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive whole number, got {value!r}")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number, 0 or more, got {value!r}")
    return value


def _redis_url(value: Any) -> str:
    text = _str(value)
    if not text.startswith(("redis://", "rediss://", "unix:///")):
        raise ValueError(f"expected redis://HOST:PORT/DB, rediss://... or unix:///path, got {text!r}")
    return text


def _listen(value: Any) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else _str(value)
    host, _, port = text.rpartition(":")
    if text and not (port.isdigit() and 0 < int(port) < 65536 and (not host or all(part for part in host.split(".")))):
        raise ValueError(f"expected PORT or ADDRESS:PORT, got {value!r}")
    return text


def _mode(value: Any) -> int:
    # parse() hands this check the scalar as written: YAML 1.1 reads 0666
    # as octal but 666 as decimal, and a mode is clearer kept as text.
    if isinstance(value, str) and len(value) == 4 and value[0] == "0" and all(c in "01234567" for c in value):
        return int(value, 8)
    raise ValueError(f"expected an octal file mode such as 0666, got {value!r}")


def _enum(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value
    check.__doc__ = " | ".join(choices)
    return check


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return tuple(value)


def _login_map(value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of login to a list of addresses, got {value!r}")
    out = {}
    for login, addrs in value.items():
        if not isinstance(login, str):
            raise ValueError(f"expected a login name as key, got {login!r}")
        if isinstance(addrs, str):
            addrs = [addrs]
        out[login] = _str_list(addrs)
    return out


# The programs that read sendgate.yaml, by the names Key.programs uses,
# and the command each one is.
PROGRAMS = {
    "submitd": "sendgate-submitd",
    "milter": "sendgate-milter",
    "sendmail": "sendgate-sendmail",
    "admin": "sendgate",
}


@dataclass(frozen=True)
class Key:
    name: str
    check: Callable[[Any], Any]
    default: Any
    doc: str
    type_doc: str
    programs: tuple[str, ...]   # of PROGRAMS: the programs that act on this key

    @property
    def shown_default(self) -> str:
        """The default as the reference and the manual pages print it."""
        default = format(self.default, "04o") if self.check is _mode else self.default
        return "(empty)" if default in ("", (), {}) else str(default)


SCHEMA: tuple[Key, ...] = (
    Key("myhostname", _str, "", "Host name used in greetings and Message-IDs; empty means the system's host name.", "string", ("submitd", "milter", "sendmail")),
    Key("myorigin", _str, "", "Domain appended to unqualified addresses and used for a local user's address; empty means myhostname.", "string", ("submitd", "milter", "sendmail")),
    Key("submit_socket", _path, "/run/sendgate/submit.sock", "Unix socket where sendgate-submitd listens and the sendmail command connects.", "path", ("submitd", "sendmail", "admin")),
    Key("submit_socket_mode", _mode, 0o666, "File mode of submit_socket; 0666 lets every local user submit.", "octal mode", ("submitd", "admin")),
    Key("submit_socket_group", _str, "", "Group of submit_socket; empty keeps the group of the user that starts the daemon.", "group", ("submitd",)),
    Key("submit_user", _str, "sendgate", "Account sendgate-submitd runs as after binding its socket; with submit_groups it must reach submit_upstream.", "login", ("submitd",)),
    Key("submit_groups", _str_list, ("postdrop",), "Supplementary groups sendgate-submitd takes when started as root: the group that reaches submit_upstream (Postfix's public/ is group postdrop; empty for Sendmail). The systemd unit gives them with SupplementaryGroups= instead; submit_user itself is in no such group, so the milter, which runs as the same user, holds none.", "list of groups", ("submitd",)),
    Key("submit_upstream", _socket_spec, "unix:/var/spool/postfix/public/sendgate", "The MTA's dedicated submission service, reachable only by submit_user.", "unix:path", ("submitd", "admin")),
    Key("postfix_config_directory", _path, "/etc/postfix", "Postfix's configuration directory, for `sendgate status` and `check-config`.", "path", ("admin",)),
    Key("submit_upstream_protocol", _enum("xclient", "header"), "xclient", "How the login is passed to the MTA: xclient (Postfix XCLIENT LOGIN=) or header (Sendmail: an X-Sendgate-Login: field the milter trusts only on milter_local_daemon_name).", "xclient | header", ("submitd",)),
    Key("submit_upstream_timeout", _positive_int, 300, "Seconds to wait for each reply of the MTA (end of data included).", "seconds", ("submitd",)),
    Key("submit_upstream_cache_size", _count, 16, "Most MTA sessions kept open, unused, for the next clients (the MTA holds a process for each); 0: one new MTA session per client session.", "count", ("submitd",)),
    Key("submit_upstream_cache_time_limit", _positive_int, 5, "Seconds an unused MTA session is kept; keep it below the MTA's idle timeout (Postfix: smtpd_timeout, 10s under stress).", "seconds", ("submitd",)),
    Key("submit_upstream_reuse_count_limit", _positive_int, 100, "Most messages one MTA session carries before it is closed.", "count", ("submitd",)),
    Key("submit_upstream_reuse_time_limit", _positive_int, 300, "Seconds after which an MTA session is no longer reused.", "seconds", ("submitd",)),
    Key("submit_timeout", _positive_int, 300, "Seconds a client may stay idle between commands inside a transaction (MAIL to the end of data).", "seconds", ("submitd",)),
    Key("submit_idle_timeout", _positive_int, 20, "Seconds a client may stay idle before its first MAIL and between transactions (it holds no MTA session then); then 421 4.4.2. Never longer than submit_timeout.", "seconds", ("submitd",)),
    Key("submit_message_size_limit", _positive_int, 10240000, "Largest message accepted, in bytes; SIZE advertises the smaller of this and the MTA's.", "bytes", ("submitd",)),
    Key("submit_recipient_limit", _positive_int, 1000, "Most recipients in one message, from RCPT and from the header together.", "count", ("submitd",)),
    Key("submit_allow_users", _str_list, (), "Logins that may submit; empty (with submit_allow_groups empty) means every user.", "list of logins", ("submitd",)),
    Key("submit_allow_groups", _str_list, (), "Groups whose members may submit (from the user database).", "list of groups", ("submitd",)),
    Key("submit_deny_users", _str_list, ("nobody",), "Logins that may never submit, whatever the allow lists say.", "list of logins", ("submitd",)),
    Key("submit_deny_groups", _str_list, (), "Groups whose members may never submit.", "list of groups", ("submitd",)),
    Key("submit_sessions_per_uid", _positive_int, 100, "Most sessions one uid may have open at once.", "count", ("submitd",)),
    Key("submit_session_limit", _positive_int, 500, "Most sessions open at once, all users together.", "count", ("submitd",)),
    Key("submit_transactions_per_uid", _positive_int, 10, "Most transactions (MAIL to the end of data) one uid may have in progress at once; each holds an MTA session. One more is refused at MAIL with 451 4.3.2.", "count", ("submitd",)),
    Key("submit_upstream_session_limit", _positive_int, 50, "Most MTA sessions sendgate-submitd holds at once, in transactions and kept (submit_upstream_cache_size) together; a MAIL beyond it gets 451 4.3.2. setup-postfix makes it the sendgate service's process limit (master.cf maxproc); keep it below Postfix's default_process_limit.", "count", ("submitd", "admin")),
    Key("submit_data_buffer_per_uid", _positive_int, 20480000, "Most bytes of unfinished message data one uid's sessions hold in memory together; a session beyond it gets 452 4.3.1 at its end of data. Keep it at least submit_message_size_limit.", "bytes", ("submitd",)),
    Key("submit_data_buffer_limit", _positive_int, 102400000, "Most bytes of unfinished message data held in memory, all users together; beyond it: 452 4.3.1.", "bytes", ("submitd",)),
    Key("submit_message_rate_limit", _count, 0, "Most messages one uid may submit per submit_rate_window; 0 means no limit.", "count", ("submitd",)),
    Key("submit_rate_window", _positive_int, 60, "The window of submit_message_rate_limit.", "seconds", ("submitd",)),
    Key("submit_command_length_limit", _positive_int, 2048, "Longest SMTP command line accepted, in bytes.", "bytes", ("submitd",)),
    Key("submit_session_timeout", _positive_int, 3600, "Longest a session may last, however busy.", "seconds", ("submitd",)),
    Key("submit_shutdown_timeout", _positive_int, 30, "On SIGTERM, how long sessions in the middle of a message may take to finish.", "seconds", ("submitd",)),
    Key("submit_metrics_listen", _listen, "", "Serve Prometheus metrics of sendgate-submitd here (PORT means 127.0.0.1:PORT); empty: off.", "PORT or ADDRESS:PORT", ("submitd",)),
    Key("milter_socket", _socket_spec, "unix:/var/spool/postfix/sendgate/milter.sock", "Unix socket where sendgate-milter listens for the MTA; under Postfix's queue_directory a chrooted smtpd reaches it too.", "unix:path", ("milter", "admin")),
    Key("milter_socket_group", _str, "postfix", "The MTA's group: with milter_user the only one that may enter milter_socket's directory (mode 2750, set-gid, made by setup-postfix).", "group", ("milter", "admin")),
    Key("milter_user", _str, "sendgate", "Account sendgate-milter runs as.", "login", ("milter",)),
    Key("milter_metrics_listen", _listen, "", "Serve Prometheus metrics of sendgate-milter here (PORT means 127.0.0.1:PORT); empty: off.", "PORT or ADDRESS:PORT", ("milter",)),
    Key("milter_loopback_clients", _enum("identify", "refuse", "relay"), "identify", "A client on 127.0.0.0/8 or ::1 without a login: identify (the kernel's owner of its socket is its login, the submission policy applies; not found: 451), refuse (550), or relay (passed on, no fix-ups).", "identify | refuse | relay", ("milter",)),
    Key("signing_milters", _str_list, ("inet:localhost:8891", "inet:127.0.0.1:8891", "*opendkim*", "inet:localhost:8892", "inet:127.0.0.1:8892", "*dkimpy-milter*", "inet:localhost:8894", "inet:127.0.0.1:8894", "*openarc*", "inet:localhost:11332", "inet:127.0.0.1:11332", "*rspamd*"), "Milters that sign (DKIM, ARC), as shell-style patterns of their smtpd_milters words: setup-postfix puts milter_socket before the first one named, and check-config reports one that runs before it (its signature would not cover the fields sendgate adds). Defaults: OpenDKIM (port 8891, its sockets), dkimpy-milter (8892), OpenARC (8894), rspamd (11332).", "list of patterns", ("admin",)),
    Key("milter_local_daemon_name", _str, "sendgate-local", "The {daemon_name} of the MTA service fed by sendgate-submitd.", "string", ("milter", "admin")),
    Key("sasl_realms", _str_list, (), "SASL realms of the local users: a SASL login user@REALM with REALM listed is the local login user (Postfix's smtpd_sasl_local_domain, or the realm the SASL server appends); other logins with a realm stay as they are.", "list of realms", ("milter",)),
    Key("fixup_date", _bool, True, "Add Date: to submitted mail that has none (Resent-Date: when resent).", "boolean", ("milter",)),
    Key("fixup_message_id", _bool, True, "Add Message-ID: to submitted mail that has none (Resent-Message-ID: when resent).", "boolean", ("milter",)),
    Key("fixup_from", _bool, True, "Add From: with the user's address to submitted mail that has none.", "boolean", ("milter",)),
    Key("fixup_sender", _bool, True, "Add Sender: when the user is not the single From: mailbox, replacing a Sender: that is not the user.", "boolean", ("milter",)),
    Key("fixup_qualify", _bool, True, "Append @myorigin to addresses without a domain in From:, To:, Cc:, Sender:, Reply-To: and their Resent- forms.", "boolean", ("milter",)),
    Key("fixup_bcc", _bool, True, "Remove Bcc: (Resent-Bcc: of the newest block when resent) from submitted mail.", "boolean", ("milter",)),
    Key("sender_login_maps", _login_map, {}, "Addresses each login may send as (exact, *@domain, login+*@domain); a login not listed may use login@myorigin.", "login: [address, ...]", ("submitd", "milter")),
    Key("sender_trusted_users", _str_list, (), "Logins that may use any envelope sender and any From:.", "list of logins", ("submitd", "milter")),
    Key("sender_mismatch_action", _enum("reject", "rewrite", "sender"), "reject", "An envelope sender the user does not own: reject it (553), rewrite it to the user's address, or accept it and name the user in Sender:.", "reject | rewrite | sender", ("submitd", "milter")),
    Key("from_mismatch_action", _enum("sender", "reject"), "sender", "A From: mailbox the user does not own: accept and add Sender: (RFC 6409 §8.1), or reject the message (550).", "sender | reject", ("milter",)),
    Key("sender_allow_null", _bool, True, "Whether users may submit with the null envelope sender <> (bounces, vacation replies).", "boolean", ("submitd", "milter")),
    Key("rate_window", _positive_int, 3600, "Length of the rate-limit window in seconds; counters start again at zero in each window.", "seconds", ("milter",)),
    Key("rate_message_limit", _count, 1000, "Most messages one authenticated user may send per rate_window, over all paths; 0 means no limit.", "count", ("milter",)),
    Key("rate_recipient_limit", _count, 5000, "Most recipients, summed over messages, one authenticated user may send to per rate_window; 0 means no limit.", "count", ("milter",)),
    Key("rate_store", _enum("memory", "redis"), "memory", "Where sendgate-milter keeps the rate counters: memory (this process) or redis (shared by several milters).", "memory | redis", ("milter",)),
    Key("rate_redis_url", _redis_url, "redis://127.0.0.1:6379/0", "The Redis server for rate_store: redis, with unix:///path for a unix socket.", "URL", ("milter",)),
    Key("rate_redis_password_file", _optional_path, "", "A file whose first line is the Redis password (requirepass), readable by milter_user alone: the secret stays out of sendgate.yaml, which every user may read; empty: none (or in rate_redis_url).", "path", ("milter", "admin")),
    Key("spool_directory", _path, "/var/spool/sendgate/deferred", "Where the sendmail command saves a message it could not hand over and sendgate-submitd sends it again as the file's owner (owner submit_user, mode 3777; docs/spool.md); missing or not writable: ~/dead.letter.", "path", ("sendmail", "submitd", "admin")),
    Key("spool_retry_interval", _positive_int, 60, "Seconds between sendgate-submitd's passes over spool_directory; an entry that failed again waits this times 2 per failure, at most an hour.", "seconds", ("submitd",)),
    Key("spool_user_size_limit", _positive_int, 51200000, "Most bytes of one user's spool entries read in one pass; a bigger entry is set aside, never sent.", "bytes", ("submitd",)),
    Key("sendmail_mailq_command", _str, "postqueue -p", "What `mailq` and `sendmail -bp` run: a program and its arguments, split on spaces.", "command", ("sendmail",)),
    Key("sendmail_newaliases_command", _str, "newaliases", "What `newaliases`, `sendmail -bi` and `-I` run; when it is the sendmail command itself, the MTA's sendmail kept by install-shim runs with -bi.", "command", ("sendmail",)),
    Key("sendmail_flush_command", _str, "postqueue -f", "What `sendmail -q` runs to deliver the queued mail now.", "command", ("sendmail",)),
    Key("log_destination", _enum("syslog", "stderr"), "syslog", "Where the daemons log: syslog (facility mail) or stderr (for journald or a log file).", "syslog | stderr", ("submitd", "milter")),
    Key("syslog_socket", _path, "/dev/log", "The syslog daemon's socket, for log_destination: syslog.", "path", ("submitd", "milter")),
)

KEYS = {k.name: k for k in SCHEMA}


@dataclass(frozen=True)
class Config:
    """Validated settings; attribute names are the keys."""

    values: dict
    path: str

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def hostname(self) -> str:
        return self.values["myhostname"] or socket.gethostname()

    @property
    def domain(self) -> str:
        return self.values["myorigin"] or self.hostname

    def sender_rules(self):
        from sendgate.policy.sender import Mismatch, SenderRules
        return SenderRules(domain=self.domain, login_maps=self.sender_login_maps,
                           trusted=frozenset(self.sender_trusted_users), allow_null_sender=self.sender_allow_null,
                           envelope_mismatch=Mismatch(self.sender_mismatch_action),
                           from_mismatch=Mismatch(self.from_mismatch_action))

    def admission_rules(self):
        from sendgate.policy.admission import AdmissionRules
        return AdmissionRules(
            allow_users=frozenset(self.submit_allow_users), deny_users=frozenset(self.submit_deny_users),
            allow_groups=frozenset(self.submit_allow_groups), deny_groups=frozenset(self.submit_deny_groups),
            sessions_per_uid=self.submit_sessions_per_uid, session_limit=self.submit_session_limit,
            message_rate_limit=self.submit_message_rate_limit, rate_window=self.submit_rate_window,
            transactions_per_uid=self.submit_transactions_per_uid,
            upstream_session_limit=self.submit_upstream_session_limit,
            data_per_uid=self.submit_data_buffer_per_uid, data_limit=self.submit_data_buffer_limit)

    def fixup_settings(self):
        from sendgate.policy.fixups import FixupSettings
        return FixupSettings(hostname=self.hostname, domain=self.domain, add_date=self.fixup_date,
                             add_message_id=self.fixup_message_id, add_from=self.fixup_from,
                             set_sender=self.fixup_sender, qualify=self.fixup_qualify, remove_bcc=self.fixup_bcc)


def defaults() -> dict:
    return {k.name: k.default for k in SCHEMA}


def keys_of(program: str) -> tuple[Key, ...]:
    """The keys one program of PROGRAMS reads, in schema order."""
    return tuple(k for k in SCHEMA if program in k.programs)


def parse(text: str, path: str) -> Config:
    """Validate YAML text; raise ConfigError naming path, line and key."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(path, line, None, f"not valid YAML: {getattr(err, 'problem', err)}") from None
    values = defaults()
    if root is None:
        return Config(values, path)
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(path, root.start_mark.line + 1, None, "expected a mapping of key: value")
    constructor = yaml.SafeLoader("")
    seen: dict[str, int] = {}
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        name = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
        if name not in KEYS:
            raise ConfigError(path, line, name, "unknown key")
        if name in seen:
            raise ConfigError(path, line, name, f"duplicate key (first set on line {seen[name]})")
        seen[name] = line
        if KEYS[name].check is _mode and isinstance(value_node, yaml.ScalarNode):
            raw = value_node.value
        else:
            raw = constructor.construct_object(value_node, deep=True)
        try:
            values[name] = KEYS[name].check(raw)
        except ValueError as err:
            raise ConfigError(path, value_node.start_mark.line + 1, name, str(err)) from None
    return Config(values, path)


def load(path: str = DEFAULT_PATH) -> Config:
    try:
        with open(path, encoding="utf-8") as fp:
            text = fp.read()
    except OSError as err:
        raise ConfigError(path, None, None, f"cannot read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, None, "not valid UTF-8") from None
    return parse(text, path)


def render(values: dict) -> str:
    """YAML text for the given keys, in schema order (used by `stack up`)."""
    lines = []
    for key in SCHEMA:
        if key.name not in values:
            continue
        value = values[key.name]
        if key.check is _mode:
            value = format(value, "04o")
        lines.append(yaml.safe_dump({key.name: value}, default_flow_style=False, sort_keys=False).rstrip())
    return "\n".join(lines) + "\n"


def reference_markdown() -> str:
    """The configuration reference, generated from SCHEMA."""
    out = ["# sendgate.yaml reference", "",
           "Generated from `sendgate/config.py` by `sendgate config-doc`; do not edit by hand.", "",
           "| key | type | default | read by | meaning |", "|---|---|---|---|---|"]
    for key in SCHEMA:
        shown = key.shown_default if key.shown_default == "(empty)" else f"`{key.shown_default}`"
        readers = ", ".join(PROGRAMS[p] for p in key.programs)
        out.append(f"| `{key.name}` | {key.type_doc} | {shown} | {readers} | {key.doc} |")
    return "\n".join(out) + "\n"
