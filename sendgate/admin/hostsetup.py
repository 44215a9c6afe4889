"""Wiring sendgate into an existing Postfix host, and taking it out again.

`sendgate setup-postfix` does the file and Postfix steps of the install
guide (README, "Install on an existing Postfix host"); everything is
relative to --root so that the same steps run on a scratch tree in the
tests:

1. /etc/sendgate/sendgate.yaml from the example, with myorigin set (kept
   when it exists);
2. the systemd units into /etc/systemd/system, and the spool directory's
   tmpfiles.d entry into /etc/tmpfiles.d (created at once on the live root:
   docs/spool.md);
3. Postfix, as that sendgate.yaml names things: the submit daemon's
   smtpd service in master.cf (named after submit_upstream, in public/,
   XCLIENT allowed there alone, milter_local_daemon_name as the milter's
   daemon name; the entry comes from sendgate/postfix.py) and, in main.cf,
   milter_socket in smtpd_milters with milter_default_action = tempfail,
   and authorized_submit_users = root (Postfix's own sendmail, postdrop
   and sendmail -bs then refuse every other user: no way around the policy).
   The main.cf values it replaces are saved in
   /etc/sendgate/postfix-before.conf;
4. `--undo` removes the service, restores the saved main.cf values and
   removes the units and the tmpfiles.d entry; the configuration file and the
   spool (with any messages still waiting) are left in place.

It does not start anything, create users or replace /usr/sbin/sendmail:
those steps are the administrator's (see the guide).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from sendgate import config
from sendgate.postfix import PostconfError, Service, postconf, sendgate_service, service_name

MAIN_SETTINGS = ("smtpd_milters", "milter_default_action", "milter_protocol", "authorized_submit_users")
UNITS = ("sendgate-submitd.socket", "sendgate-submitd.service", "sendgate-milter.service")
CONFIG = "/etc/sendgate/sendgate.yaml"
TMPFILES = "/etc/tmpfiles.d/sendgate.conf"
PACKAGED_TMPFILES = "/usr/lib/tmpfiles.d/sendgate.conf"


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
    return sendgate_service(service_name(cfg.submit_upstream), cfg.milter_local_daemon_name)


def _example(name: str) -> str:
    """A file of config/, as installed with the package under share/sendgate,
    with the unit files' program paths pointing at this installation."""
    with open(os.path.join(sys.prefix, "share/sendgate", name), encoding="utf-8") as fp:
        return fp.read().replace("/opt/sendgate/venv", sys.prefix)


def setup(root: str, domain: str) -> list[str]:
    done = []
    etc = _at(root, "/etc/sendgate")
    os.makedirs(etc, exist_ok=True)
    config_path = _at(root, CONFIG)
    if not os.path.exists(config_path):
        text = _example("sendgate.yaml").replace("example.org", domain)
        with open(config_path, "w", encoding="utf-8") as fp:
            fp.write(text)
        os.chmod(config_path, 0o644)
        done.append(f"wrote {config_path}")
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
        explicit = [line for line in _postconf(root, "-n").splitlines() if line.split(" = ")[0] in MAIN_SETTINGS]
        with open(saved, "w", encoding="utf-8") as fp:
            fp.write("".join(line + "\n" for line in explicit))
        done.append(f"saved the main.cf values it changes in {saved}")
    milters = _postconf(root, "-h", "smtpd_milters").strip()
    if cfg.milter_socket not in milters.replace(",", " ").split():
        milters = f"{milters} {cfg.milter_socket}".strip()
    # Postfix's own sendmail, postdrop and -bs refuse every user but root:
    # the users' sendmail is sendgate's, through the submit socket.
    _postconf(root, "-e", f"smtpd_milters={milters}", "milter_default_action=tempfail", "milter_protocol=6",
              "authorized_submit_users=root")
    service = _service(cfg)
    _postconf(root, "-M", f"{service.key}={service.entry()}")
    _postconf(root, "-P", *service.postconf_parameters())
    done.append(f"postfix: added the {service.name} service and the milter (run `postfix reload`)")
    done.append("postfix: authorized_submit_users = root (Postfix's own sendmail and postdrop: root only)")
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
    saved = _at(root, "/etc/sendgate/postfix-before.conf")
    if os.path.exists(saved):
        with open(saved, encoding="utf-8") as fp:
            values = dict(line.rstrip("\n").split(" = ", 1) for line in fp if " = " in line)
        if values:
            _postconf(root, "-e", *(f"{k}={v}" for k, v in values.items()))
        unset = [name for name in MAIN_SETTINGS if name not in values]
        _postconf(root, "-X", *unset)
        os.unlink(saved)
        done.append("postfix: restored " + ", ".join(MAIN_SETTINGS))
    for path in [_at(root, f"/etc/systemd/system/{unit}") for unit in UNITS] + [_at(root, TMPFILES)]:
        if os.path.exists(path):
            os.unlink(path)
            done.append(f"removed {path}")
    return done

