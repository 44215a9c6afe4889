"""The sendmail command line: Sendmail's and Postfix's options parsed into
Options (the manual in main.py lists them), command-line recipients as
addresses, and the Envelope the options ask for.
"""

import os

from sendgate.sendmail_shim.client import EX_USAGE, Envelope, Failure, login_name
from sendgate.wiredata import xtext

# Options that take an argument (joined or the next word), Sendmail's and
# Postfix's set together.  -b, -o and -e take theirs joined only.
WITH_ARGUMENT = set("ABCDFLMNOQRVXdfhpr")
FLAGS = set("GIUcimnstvx")


class Options:
    def __init__(self) -> None:
        self.mode = "m"
        self.extract = False
        self.ignore_dots = False
        self.sender = None
        self.full_name = None
        self.notify = None
        self.ret = None
        self.envid = None
        self.body = None
        self.smtputf8 = False
        self.verbose = False
        self.recipients: list[str] = []


def usage(why: str) -> Failure:
    return Failure(EX_USAGE, "usage", why)


def parse_args(argv: list[str]) -> Options:
    opts = Options()
    prog = os.path.basename(argv[0]) if argv else "sendmail"
    if prog == "mailq":
        opts.mode = "p"
    elif prog == "newaliases":
        opts.mode = "i"
    words = argv[1:]
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            opts.recipients.extend(words[i:])
            break
        if not word.startswith("-") or word == "-":
            opts.recipients.append(word)
            continue
        j = 1
        while j < len(word):
            letter = word[j]
            rest = word[j + 1:]
            if letter in "boe":
                if letter == "b" and not rest:
                    raise usage("-b needs a mode letter")
                take_joined(opts, letter, rest)
                break
            if letter == "q":
                opts.mode = "q"   # -q, -q<interval>, -qR..., -qI...: run the queue now
                break
            if letter in WITH_ARGUMENT:
                if not rest:
                    if i >= len(words):
                        raise usage(f"option -{letter} needs an argument")
                    rest = words[i]
                    i += 1
                take_argument(opts, letter, rest)
                break
            if letter not in FLAGS:
                raise usage(f"unknown option -{letter}")
            take_flag(opts, letter)
            j += 1
    return opts


def take_joined(opts: Options, letter: str, rest: str) -> None:
    if letter == "b":
        if rest not in ("m", "s", "p", "i", "v"):
            raise usage(f"-b{rest} is not supported")
        opts.mode = rest
    elif letter == "o" and rest[:1] == "i":
        # -oi, and Sendmail's -oiTrue; Postfix, too, looks at the letter only.
        opts.ignore_dots = True
    # Any other -oX (-oem, -odi, -oA..., -om) and -eX: error and delivery
    # modes of Sendmail; the submit server always answers synchronously.


def take_argument(opts: Options, letter: str, value: str) -> None:
    if letter in "fr":
        opts.sender = "" if value in ("<>", "") else value.strip("<>")
    elif letter == "F":
        opts.full_name = value
    elif letter == "N":
        words = [w.strip().lower() for w in value.split(",")]
        if words != ["never"] and not all(w in ("success", "delay", "failure") for w in words):
            raise usage(f"bad -N value {value!r}: use never, or success,delay,failure")
        opts.notify = ",".join(w.upper() for w in words)
    elif letter == "R":
        if value.lower() not in ("full", "hdrs"):
            raise usage(f"bad -R value {value!r}: use full or hdrs")
        opts.ret = value.upper()
    elif letter == "V":
        opts.envid = value
    elif letter == "B":
        if value.upper() not in ("7BIT", "8BITMIME"):
            raise usage(f"bad -B value {value!r}: use 7BIT or 8BITMIME")
        opts.body = value.upper()
    # -A -C -D -L -M -O -Q -X -d -h -p: Sendmail configuration, logging and
    # debugging switches; accepted for compatibility and ignored.


def take_flag(opts: Options, letter: str) -> None:
    if letter == "t":
        opts.extract = True
    elif letter == "i":
        opts.ignore_dots = True
    elif letter == "U":
        opts.smtputf8 = True
    elif letter == "v":
        opts.verbose = True
    elif letter == "I":
        opts.mode = "i"
    # -G -c -m -n -s -x: gateway, connection caching, metoo, no aliasing:
    # accepted for compatibility and ignored.


def split_recipients(words: list[str]) -> list[str]:
    """argv words as addresses: comma lists split, `Name <addr>` reduced."""
    out = []
    for word in words:
        for part in split_commas(word):
            part = part.strip()
            if "<" in part and part.endswith(">"):
                part = part[part.rindex("<") + 1:-1]
            if part:
                out.append(part)
    return out


def split_commas(text: str) -> list[str]:
    parts, current, quoted, angle = [], [], False, 0
    for c in text:
        if c == '"':
            quoted = not quoted
        elif c == "<" and not quoted:
            angle += 1
        elif c == ">" and not quoted and angle:
            angle -= 1
        elif c == "," and not quoted and not angle:
            parts.append("".join(current))
            current = []
            continue
        current.append(c)
    parts.append("".join(current))
    return parts


def envelope_for(opts: Options, recipients: list[str]) -> Envelope:
    """The MAIL and RCPT parameters the options ask for, around recipients."""
    mail = ["RCPTHDR"] if opts.extract else []
    mail += [f"BODY={opts.body}"] if opts.body else []
    mail += [f"RET={opts.ret}"] if opts.ret else []
    mail += [f"ENVID={xtext(opts.envid)}"] if opts.envid else []
    sender = opts.sender if opts.sender is not None else login_name()
    # An address that is not ASCII needs SMTPUTF8 whether or not -U asked.
    if opts.smtputf8 or not all(a.isascii() for a in [sender, *recipients]):
        mail.append("SMTPUTF8")
    rcpt = [f"NOTIFY={opts.notify}"] if opts.notify else []
    return Envelope(sender, recipients, opts.extract, mail, rcpt)
