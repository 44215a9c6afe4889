"""The policy milter: RFC 6409 fix-ups and sender rules inside the MTA.

Named sendgate.milter, not milter, because pymilter's C extension is itself
the top-level module `milter`.
"""
