"""The `sendgate` administration command: cli.py parses it and runs one of
hostsetup.py (setup-postfix), install.py (install-shim), status.py (status,
check-config), manpages.py (man-pages) or a stack (sendgate/stack/)."""
