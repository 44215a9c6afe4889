"""Milters that do nothing: the anchors for milter throughput.

null_milter.py SOCKET            overrides no callback, so pymilter
                                 negotiates every optional step away: the
                                 MTA connects, negotiates, and asks at end
                                 of message only.
null_milter.py SOCKET every-step takes every step and answers each one, as
                                 a milter that negotiates nothing does.
null_milter.py SOCKET sendgate-steps
                                 takes the steps sendgate-milter takes, in
                                 its style: MAIL, RCPT and header fields
                                 without replies (@Milter.noreply), then
                                 end of message (bench/bench.py's anchor).
SOCKET is a libmilter socket spec such as unix:/path/to/socket.
"""

import os
import sys

import Milter


class NullMilter(Milter.Base):
    pass


class EveryStepMilter(Milter.Base):
    def connect(self, hostname, family, hostaddr):
        return Milter.CONTINUE

    def hello(self, hostname):
        return Milter.CONTINUE

    def envfrom(self, mailfrom, *params):
        return Milter.CONTINUE

    def envrcpt(self, to, *params):
        return Milter.CONTINUE

    def data(self):
        return Milter.CONTINUE

    def header(self, name, value):
        return Milter.CONTINUE

    def eoh(self):
        return Milter.CONTINUE

    def body(self, chunk):
        return Milter.CONTINUE


class SendgateStepsMilter(Milter.Base):
    @Milter.noreply
    def envfrom(self, mailfrom, *params):
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, to, *params):
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name, value):
        return Milter.CONTINUE

    def eom(self):
        return Milter.CONTINUE


VARIANTS = {(): NullMilter, ("every-step",): EveryStepMilter, ("sendgate-steps",): SendgateStepsMilter}


def main() -> None:
    Milter.factory = VARIANTS[tuple(sys.argv[2:])]
    os.umask(0o111)   # the MTA's user must connect
    Milter.runmilter("null", sys.argv[1], timeout=600)


if __name__ == "__main__":
    main()
