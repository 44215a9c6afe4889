"""A pymilter milter that does nothing: the anchor for milter throughput.

It overrides no callback, so pymilter negotiates every optional step away
and the MTA only opens the connection, negotiates, and asks at end of
message.  Usage: null_milter.py unix:/path/to/socket
"""

import os
import sys

import Milter


class NullMilter(Milter.Base):
    pass


def main() -> None:
    Milter.factory = NullMilter
    os.umask(0o111)   # the MTA's user must connect
    Milter.runmilter("null", sys.argv[1], timeout=600)


if __name__ == "__main__":
    main()
