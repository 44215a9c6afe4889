"""Wiring sendgate into an existing Postfix host, and taking it out again.

`sendgate setup-postfix` does the file and Postfix steps of the install
guide (README, "Install on an existing Postfix host"); everything is
relative to --root so that the same steps run on a scratch tree in the
tests:

1. /etc/sendgate/sendgate.yaml from the example (kept when it exists), with
   myhostname and myorigin as the host's Postfix has them (`postconf -xh`;
   a myorigin naming a file, Debian's /etc/mailname, is that file's first
   line; --domain overrides myorigin) and without the example's sample
   sender_login_maps grants;
2. the systemd units into /etc/systemd/system, and the spool directory's
   tmpfiles.d entry into /etc/tmpfiles.d (created at once on the live root:
   docs/spool.md);
3. Postfix, as that sendgate.yaml names things: the submit daemon's
   smtpd service in master.cf (named after submit_upstream, in public/,
   XCLIENT allowed there alone, milter_local_daemon_name as the milter's
   daemon name, submit_upstream_session_limit as its process limit, so
   that the daemon's share is all the service has; the entry comes from
   sendgate/postfix.py) and, in main.cf,
   milter_socket in smtpd_milters (relative to queue_directory when it is
   below it, so that Debian's chrooted smtpd finds it), before the first
   signing milter listed there (signing_milters: OpenDKIM, dkimpy-milter,
   OpenARC, rspamd), whose signature must cover the fields the milter
   adds, else at the end; every other milter keeps its place, with
   milter_default_action = tempfail,
   and authorized_submit_users = root (Postfix's own sendmail, postdrop
   and sendmail -bs then refuse every other user: no way around the policy).
   The main.cf values it replaces are saved in
   /etc/sendgate/postfix-before.conf;
4. the milter socket's directory (Debian: /var/spool/postfix/sendgate),
   owner milter_user, group milter_socket_group, mode 2750: only Postfix
   reaches the socket, and the milter needs no group of its own;
5. with --submission, network submission on port 587: the `submission`
   inet service of sendgate/postfix.py (STARTTLS required with main.cf's
   certificate, SASL AUTH with main.cf's SASL server, only authenticated
   clients, the milter's policy as for the submit socket); refused when
   main.cf names no certificate or master.cf has a submission service of
   its own.  /etc/sendgate/postfix-submission records that it was added;
6. `--undo` removes the services, restores the saved main.cf values and
   removes the units, the tmpfiles.d entry and the socket directory it made; the configuration file and the
   spool (with any messages still waiting) are left in place.

It does not start anything, create users or replace /usr/sbin/sendmail:
those steps are the administrator's (see the guide).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys

from sendgate import config
from sendgate.postfix import (PostconfError, Service, milter_entry, postconf, sendgate_service, service_name,
                              submission_service, with_milter_first)

MAIN_SETTINGS = ("smtpd_milters", "milter_default_action", "milter_protocol", "authorized_submit_users")
UNITS = ("sendgate-submitd.socket", "sendgate-submitd.service", "sendgate-milter.service")
CONFIG = "/etc/sendgate/sendgate.yaml"
TMPFILES = "/etc/tmpfiles.d/sendgate.conf"
PACKAGED_TMPFILES = "/usr/lib/tmpfiles.d/sendgate.conf"
SUBMISSION_ADDED = "/etc/sendgate/postfix-submission"
MILTER_DIRECTORY_ADDED = "/etc/sendgate/milter-directory"


class SetupError(Exception):
    pass


def _at(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _postconf(root: str, *args: str) -> str:
    try:
        return postconf(_at(root, "/etc/postfix"), *args)
    except PostconfError as err:
        raise SetupError(str(err)) from None


def _service(cfg: config.Config) -> Service:
    return sendgate_service(service_name(cfg.submit_upstream), cfg.milter_local_daemon_name,
                            maxproc=cfg.submit_upstream_session_limit)


def _example(name: str) -> str:
    """A file of config/, as installed with the package under share/sendgate,
    with the unit files' program paths pointing at this installation."""
    with open(os.path.join(sys.prefix, "share/sendgate", name), encoding="utf-8") as fp:
        return fp.read().replace("/opt/sendgate/venv", sys.prefix)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fp:
        return fp.read()


def host_names(root: str) -> tuple[str, str]:
    """myhostname and myorigin as the Postfix under root uses them."""
    myhostname, myorigin = _postconf(root, "-xh", "myhostname", "myorigin").splitlines()
    if myorigin.startswith("/"):  # Postfix reads the name from the file (Debian: /etc/mailname)
        try:
            with open(_at(root, myorigin), encoding="utf-8") as fp:
                myorigin = (fp.readline().strip() or myhostname)
        except OSError as err:
            raise SetupError(f"myorigin = {myorigin}: {err.strerror}") from None
    return myhostname, myorigin


def host_config(example: str, myhostname: str, myorigin: str) -> str:
    """The example configuration with this host's names, and no login granted
    any address beyond login@myorigin: the example's sender_login_maps
    entries name sample accounts, which may be real ones here."""
    out, in_map = [], False
    for line in example.splitlines(keepends=True):
        if in_map and line.startswith((" ", "\t")):
            continue
        in_map = False
        if line.startswith("myhostname:"):
            line = f"myhostname: {myhostname}\n"
        elif line.startswith("myorigin:"):
            line = f"myorigin: {myorigin}\n"
        elif line.startswith("sender_login_maps:"):
            in_map = True
            line = "sender_login_maps: {}  # e.g. alice: [alice@example.org, alice+*@example.org]\n"
        out.append(line)
    return "".join(out)


def _milter_directory(root: str, cfg: config.Config) -> list[str]:
    """The directory of milter_socket: owner milter_user, group
    milter_socket_group, mode 2750 (docs/threat-model.md).  One that setup
    made is recorded in /etc/sendgate/milter-directory for the undo."""
    directory = os.path.dirname(cfg.milter_socket.removeprefix("unix:"))
    try:
        uid = pwd.getpwnam(cfg.milter_user).pw_uid
        gid = grp.getgrnam(cfg.milter_socket_group).gr_gid
    except KeyError as err:
        raise SetupError(f"milter_socket's directory {directory}: no account {err.args[0].split(':')[-1].strip()}"
                         " (scripts/bootstrap creates the user sendgate; Postfix the group postfix)") from None
    path = _at(root, directory)
    done = []
    if not os.path.isdir(path):
        os.makedirs(path)
        with open(_at(root, MILTER_DIRECTORY_ADDED), "w", encoding="utf-8") as fp:
            fp.write(directory + "\n")
        done.append(f"made {path}")
    os.chown(path, uid, gid)
    os.chmod(path, 0o2750)
    done.append(f"{path}: {cfg.milter_user}:{cfg.milter_socket_group} mode 2750 (the milter's socket, "
                f"for {cfg.milter_socket_group} alone)")
    return done


def _remove_milter_directory(root: str) -> list[str]:
    added = _at(root, MILTER_DIRECTORY_ADDED)
    if not os.path.exists(added):
        return []
    with open(added, encoding="utf-8") as fp:
        path = _at(root, fp.read().strip())
    os.unlink(added)
    if not os.path.isdir(path):
        return []
    entries = os.listdir(path)
    if any(not stat.S_ISSOCK(os.lstat(os.path.join(path, name)).st_mode) for name in entries):
        return [f"kept {path}: it holds more than the milter's socket"]
    for name in entries:
        os.unlink(os.path.join(path, name))
    os.rmdir(path)
    return [f"removed {path}"]


def _check_submission(root: str) -> Service | None:
    """The submission service to add, None when setup added it before;
    SetupError when it cannot be added."""
    service = submission_service("submission")
    if os.path.exists(_at(root, SUBMISSION_ADDED)):
        return None
    if _postconf(root, "-M", service.key).strip():
        raise SetupError(f"--submission: master.cf has a {service.key} service already; not changing it")
    cert, key = _postconf(root, "-xh", "smtpd_tls_cert_file", "smtpd_tls_key_file").splitlines()
    if not cert or not key:
        raise SetupError("--submission: main.cf names no smtpd_tls_cert_file and smtpd_tls_key_file "
                         "(the certificate the service offers before AUTH)")
    return service


def setup(root: str, domain: str | None = None, submission: bool = False) -> list[str]:
    done = []
    new_submission = _check_submission(root) if submission else None
    etc = _at(root, "/etc/sendgate")
    os.makedirs(etc, exist_ok=True)
    config_path = _at(root, CONFIG)
    example = _example("sendgate.yaml")
    # The Debian package ships the example as its conffile: a copy nobody
    # has changed is not an administrator's configuration, and gets the
    # host's names like a missing one.
    pristine = os.path.exists(config_path) and _read(config_path) == example
    if not os.path.exists(config_path) or pristine:
        myhostname, myorigin = host_names(root)
        text = host_config(example, myhostname, domain or myorigin)
        with open(config_path, "w", encoding="utf-8") as fp:
            fp.write(text)
        os.chmod(config_path, 0o644)
        done.append(f"wrote {config_path}" + (" (the packaged example, with this host's names)" if pristine else ""))
    cfg = config.load(config_path)
    units = _at(root, "/etc/systemd/system")
    os.makedirs(units, exist_ok=True)
    for unit in UNITS:
        with open(os.path.join(units, unit), "w", encoding="utf-8") as fp:
            fp.write(_example(f"systemd/{unit}"))
        done.append(f"installed {os.path.join(units, unit)}")
    tmpfiles = _at(root, PACKAGED_TMPFILES)
    if not os.path.exists(tmpfiles):  # the Debian package ships its own (docs/debian-package.md)
        tmpfiles = _at(root, TMPFILES)
        os.makedirs(os.path.dirname(tmpfiles), exist_ok=True)
        with open(tmpfiles, "w", encoding="utf-8") as fp:
            fp.write(_example("tmpfiles.d/sendgate.conf"))
        done.append(f"installed {tmpfiles}")
    if root == "/" and shutil.which("systemd-tmpfiles"):
        subprocess.run(["systemd-tmpfiles", "--create", tmpfiles], check=True)
        done.append(f"created the spool {cfg.spool_directory}")
    saved = os.path.join(etc, "postfix-before.conf")
    if not os.path.exists(saved):
        # Only what main.cf sets explicitly: undo removes the rest again.
        explicit = [line for line in _postconf(root, "-n").splitlines() if line.split("=")[0].strip() in MAIN_SETTINGS]
        with open(saved, "w", encoding="utf-8") as fp:
            fp.write("".join(line + "\n" for line in explicit))
        done.append(f"saved the main.cf values it changes in {saved}")
    done.extend(_milter_directory(root, cfg))
    milters, queue = _postconf(root, "-xh", "smtpd_milters", "queue_directory").splitlines()
    rooted = "unix:" + _at(root, cfg.milter_socket.removeprefix("unix:"))
    entry = milter_entry(rooted, queue)
    entry = cfg.milter_socket if entry == rooted else entry
    milters = with_milter_first(milters, entry, {entry, cfg.milter_socket}, cfg.signing_milters)
    # Postfix's own sendmail, postdrop and -bs refuse every user but root:
    # the users' sendmail is sendgate's, through the submit socket.
    _postconf(root, "-e", f"smtpd_milters={milters}", "milter_default_action=tempfail", "milter_protocol=6",
              "authorized_submit_users=root")
    service = _service(cfg)
    _postconf(root, "-M", f"{service.key}={service.entry()}")
    _postconf(root, "-P", *service.postconf_parameters())
    done.append(f"postfix: added the {service.name} service and the milter (run `postfix reload`)")
    done.append("postfix: authorized_submit_users = root (Postfix's own sendmail and postdrop: root only)")
    if new_submission is not None:
        _postconf(root, "-M", f"{new_submission.key}={new_submission.entry()}")
        _postconf(root, "-P", *new_submission.postconf_parameters())
        with open(_at(root, SUBMISSION_ADDED), "w", encoding="utf-8") as fp:
            fp.write(new_submission.key + "\n")
        done.append(f"postfix: added the {new_submission.key} service: STARTTLS, then SASL AUTH (port 587)")
    return done


def undo(root: str) -> list[str]:
    """Take out what setup() put in.  The service is the one sendgate.yaml
    names (the file setup() wrote or kept; the defaults when it is gone)."""
    done = []
    config_path = _at(root, CONFIG)
    cfg = config.load(config_path) if os.path.exists(config_path) else config.parse("", config_path)
    service = _service(cfg)
    if _postconf(root, "-M", service.key).strip():
        _postconf(root, "-MX", service.key)
        done.append(f"postfix: removed the {service.name} service")
    # Postfix's master closes the service's socket at the next reload but
    # leaves the file in public/; nothing may connect to it any more.
    socket_path = _at(root, cfg.submit_upstream.removeprefix("unix:"))
    if os.path.exists(socket_path) and stat.S_ISSOCK(os.lstat(socket_path).st_mode):
        os.unlink(socket_path)
        done.append(f"removed {socket_path}")
    added = _at(root, SUBMISSION_ADDED)
    if os.path.exists(added):
        with open(added, encoding="utf-8") as fp:
            key = fp.read().strip()
        if _postconf(root, "-M", key).strip():
            _postconf(root, "-MX", key)
        os.unlink(added)
        done.append(f"postfix: removed the {key} service")
    saved = _at(root, "/etc/sendgate/postfix-before.conf")
    if os.path.exists(saved):
        with open(saved, encoding="utf-8") as fp:
            # postconf -n writes an empty value as "name =", without the space.
            values = {name.strip(): value.strip() for name, _, value in (line.partition("=") for line in fp)
                      if name.strip()}
        if values:
            _postconf(root, "-e", *(f"{k}={v}" for k, v in values.items()))
        unset = [name for name in MAIN_SETTINGS if name not in values]
        _postconf(root, "-X", *unset)
        os.unlink(saved)
        done.append("postfix: restored " + ", ".join(MAIN_SETTINGS))
    done.extend(_remove_milter_directory(root))
    for path in [_at(root, f"/etc/systemd/system/{unit}") for unit in UNITS] + [_at(root, TMPFILES)]:
        if os.path.exists(path):
            os.unlink(path)
            done.append(f"removed {path}")
    return done

