"""The policy engine: pure functions, no I/O.

Nothing under sendgate.policy may import sockets, asyncio, aiosmtpd, Milter,
pwd, os or logging; tests/test_policy_purity.py enforces this.  Daemons collect
facts, call in here, and apply the verdicts and edits that come back.
"""
