"""Private sendgate stacks under one directory, for trying sendgate out and
for the tests: common.py (sendgate's own part: layout, configuration,
daemons), postfix.py and sendmail.py (one MTA each), deliver.py and
syslog.py (the Sendmail stack's delivery agent and log).  `sendgate stack`
(sendgate/admin/cli.py) chooses the MTA.

Kept empty: Sendmail runs `python -m sendgate.stack.deliver` once per
recipient, which imports this package first.
"""
