"""RFC 5322 address lists (From, To, Cc, Bcc, Reply-To, Sender, Resent-*).

parse_address_list(value) takes a field value as sendgate.policy.message
makes it (text decoded as UTF-8 with surrogateescape, folded lines joined
with "\\n" plus the continuation's white space) and returns Mailbox and Group
objects.  It never does I/O and never looks anything up: it only reads the
syntax, and leaves every judgement about the addresses to the caller.

Grammar accepted (RFC 5322 §3.4 with the obsolete forms of §4.4 that real
mail still carries, and RFC 6532 8-bit text):

    address-list = [element] *("," [element])      ; empty elements tolerated
    element      = mailbox / group
    group        = phrase ":" [mailbox *("," [mailbox])] [";"]
    mailbox      = [phrase] "<" [route ":"] addr-spec ">" / addr-spec
    addr-spec    = local-part ["@" domain]          ; no domain: unqualified
    local-part   = word *("." / word), no two words side by side
    domain       = atom *("." atom) / "[" dtext... "]"
    route        = "@" domain *("," ["@" domain])   ; accepted, then dropped

White space, folding and comments (nested, with quoted pairs) may stand
between any two tokens and are dropped.

Decisions (where the RFC leaves room or real mail differs from it):

* Text: any character that is not ASCII (UTF-8 text, and surrogate-escaped
  bytes of a non-UTF-8 header) is atom text.  Lone surrogates are kept, never
  an error: whether a non-UTF-8 address is acceptable is the caller's call.
* Control characters: NUL is an error everywhere.  A line break is allowed
  only as folding ("\\n" or "\\r\\n" followed by a space or tab).  Other C0
  controls (except tab) and DEL are errors outside quoted strings and
  comments; inside them they are obs-qtext/obs-ctext and kept.
* A backslash outside a quoted string, comment or domain literal is an error
  (it is not atext; Sendmail's "\\user" is for aliases, not for headers).
* Display names: words are joined as written, with one space wherever white
  space or a comment separated them; quoted strings lose their quotes and
  quoted pairs are resolved; RFC 2047 encoded words are left as they are.
  A comment is never taken as a display name.
* Local parts are kept as written minus white space and comments: a quoted
  local part keeps its quotes and backslashes.  Dots are not checked (a
  leading, trailing or doubled dot is kept; the MTA decides), but two words
  side by side ("John Smith@x") are an error.
* A lone word or dotted word ("alice", "a.b") is an unqualified address; a
  phrase of several words with no address ("John Smith") is an error.
* Domains must be atoms separated by single dots, or one domain literal
  (white space inside the literal is dropped).  "a@b." and "a@b..c" are
  errors.
* A group must have a name.  A missing ";" at the very end of the value is
  tolerated ("undisclosed-recipients:" is read as an empty group).
* "<>" (an empty angle address) is an error: it is not a recipient or author.

Hostile input: the tokenizer is a loop over compiled regular expressions
(no recursion; comment nesting is a counter) and the parser has a fixed
depth, so any input is read in time linear in its length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, NamedTuple


class AddressSyntaxError(ValueError):
    """An address field that cannot be parsed; str() is a short reason."""


@dataclass(frozen=True)
class Mailbox:
    display_name: str   # decoded, without quotes; '' if none
    local_part: str     # as written; a quoted local part keeps its quotes
    domain: str         # as written; '' when unqualified

    @property
    def addr_spec(self) -> str:
        return self.local_part + "@" + self.domain if self.domain else self.local_part


@dataclass(frozen=True)
class Group:
    display_name: str
    members: tuple[Mailbox, ...]


# --------------------------------------------------------------------------
# Tokenizer

# Token kinds.  Specials are their own character.
ATOM = "atom"
QUOTED = "quoted"
DOMLIT = "domain-literal"
END = "end"
_SPECIALS = "<>:;@,."


class _Token(NamedTuple):
    kind: str
    value: str      # atom text; quoted-string content decoded; literal as written
    raw: str        # as written, minus folding (quoted strings keep quotes)
    space: bool     # white space or a comment came before it


# atext plus any non-ASCII character (RFC 6532).  Excludes space, C0, DEL,
# specials and the characters that open something else.
_ATOM_RE = re.compile(r'[^ ()<>\[\]:;@\\,."\x00-\x1f\x7f]+')
_WSP_RE = re.compile(r"[ \t]+")
# Runs of plain text inside a quoted string, a comment, a domain literal.
_QTEXT_RE = re.compile(r'[^"\\\r\n\x00]+')
_CTEXT_RE = re.compile(r"[^()\\\r\n\x00]+")
_DTEXT_RE = re.compile(r"[^\[\]\\ \t\r\n\x00-\x1f\x7f]+")


def _control(c: str) -> AddressSyntaxError:
    if c == "\x00":
        return AddressSyntaxError("NUL character")
    return AddressSyntaxError(f"control character 0x{ord(c):02x}")


def _fold(s: str, i: int) -> int:
    """s[i] is CR or LF: if it starts folding (a line break followed by a
    space or tab), return the index of that white space; else raise."""
    j = i + 2 if s.startswith("\r\n", i) else i + 1
    if s[i] == "\r" and j == i + 1:
        raise _control("\r")            # CR alone
    if j < len(s) and s[j] in " \t":
        return j
    raise AddressSyntaxError("line break not followed by white space")


def _quoted_pair(s: str, i: int) -> str:
    """s[i] is a backslash: return the quoted character, checking it."""
    if i + 1 >= len(s):
        raise EOFError
    c = s[i + 1]
    if c in "\x00\r\n":
        raise _control(c)
    return c


def _quoted_string(s: str, i: int) -> tuple[str, str, int]:
    """s[i] is '"'.  Return (content, raw, end index)."""
    value: list[str] = []
    raw: list[str] = ['"']
    i += 1
    n = len(s)
    while True:
        m = _QTEXT_RE.match(s, i)
        if m:
            value.append(m.group())
            raw.append(m.group())
            i = m.end()
        if i >= n:
            raise AddressSyntaxError("unterminated quoted string")
        c = s[i]
        if c == '"':
            raw.append('"')
            return "".join(value), "".join(raw), i + 1
        if c == "\\":
            try:
                q = _quoted_pair(s, i)
            except EOFError:
                raise AddressSyntaxError("unterminated quoted string") from None
            value.append(q)
            raw.append("\\" + q)
            i += 2
        elif c in "\r\n":
            i = _fold(s, i)             # the line break goes, the WSP stays
        else:
            raise _control(c)


def _comment(s: str, i: int) -> int:
    """s[i] is '('.  Skip the comment, nested ones included; return the
    index after it.  Nesting is a counter, never recursion."""
    depth = 0
    n = len(s)
    while True:
        if i >= n:
            raise AddressSyntaxError("unterminated comment")
        c = s[i]
        if c == "(":
            depth += 1
            i += 1
        elif c == ")":
            depth -= 1
            i += 1
            if depth == 0:
                return i
        elif c == "\\":
            try:
                _quoted_pair(s, i)
            except EOFError:
                raise AddressSyntaxError("unterminated comment") from None
            i += 2
        elif c in "\r\n":
            i = _fold(s, i)
        elif c == "\x00":
            raise _control(c)
        else:
            m = _CTEXT_RE.match(s, i)
            assert m is not None
            i = m.end()


def _domain_literal(s: str, i: int) -> tuple[str, int]:
    """s[i] is '['.  Return (literal without white space, end index)."""
    out: list[str] = ["["]
    i += 1
    n = len(s)
    while True:
        if i >= n:
            raise AddressSyntaxError("unterminated domain literal")
        c = s[i]
        if c == "]":
            out.append("]")
            return "".join(out), i + 1
        if c == "[":
            raise AddressSyntaxError("'[' inside domain literal")
        if c == "\\":                   # obs-dtext quoted pair, kept as written
            try:
                out.append("\\" + _quoted_pair(s, i))
            except EOFError:
                raise AddressSyntaxError("unterminated domain literal") from None
            i += 2
        elif c in " \t":
            i += 1
        elif c in "\r\n":
            i = _fold(s, i)
        else:
            m = _DTEXT_RE.match(s, i)
            if m is None:
                raise _control(c)
            out.append(m.group())
            i = m.end()


def _tokens(s: str) -> Iterator[_Token]:
    """Yield the tokens of s, then one END token.  White space, folding and
    comments are dropped but recorded in the next token's .space."""
    i = 0
    n = len(s)
    space = False
    while i < n:
        c = s[i]
        m = _ATOM_RE.match(s, i)
        if m:
            yield _Token(ATOM, m.group(), m.group(), space)
            i = m.end()
            space = False
        elif c in _SPECIALS:
            yield _Token(c, c, c, space)
            i += 1
            space = False
        elif c in " \t":
            i = _WSP_RE.match(s, i).end()  # type: ignore[union-attr]
            space = True
        elif c in "\r\n":
            i = _fold(s, i)
        elif c == "(":
            i = _comment(s, i)
            space = True
        elif c == '"':
            value, raw, i = _quoted_string(s, i)
            yield _Token(QUOTED, value, raw, space)
            space = False
        elif c == "[":
            literal, i = _domain_literal(s, i)
            yield _Token(DOMLIT, literal, literal, space)
            space = False
        elif c == ")":
            raise AddressSyntaxError("unbalanced parenthesis")
        elif c == "]":
            raise AddressSyntaxError("unbalanced square bracket")
        elif c == "\\":
            raise AddressSyntaxError("backslash outside quoted string")
        else:
            raise _control(c)
    yield _Token(END, "", "", space)


class _Lexer:
    """One token of lookahead over _tokens()."""

    def __init__(self, s: str) -> None:
        self._it = _tokens(s)
        self._next = next(self._it)

    def peek(self) -> _Token:
        return self._next

    def take(self) -> _Token:
        tok = self._next
        if tok.kind != END:
            self._next = next(self._it)
        return tok


# --------------------------------------------------------------------------
# Parser

_WORDS = (ATOM, QUOTED, ".")


def _describe(tok: _Token) -> str:
    """A token as an error message names it."""
    if tok.kind == END:
        return "end of field"
    if tok.kind in (ATOM, QUOTED):
        return "word"
    if tok.kind == DOMLIT:
        return "domain literal"
    return f"'{tok.kind}'"


def _run(lex: _Lexer) -> list[_Token]:
    """Take a run of words and dots: a phrase or a local part, which one
    depends on what follows."""
    run = []
    while lex.peek().kind in _WORDS:
        run.append(lex.take())
    return run


def _phrase(run: list[_Token]) -> str:
    out: list[str] = []
    for tok in run:
        if tok.space and out:
            out.append(" ")
        out.append(tok.value)
    return "".join(out)


def _local_part(run: list[_Token], bare: bool = False) -> str:
    """The local part a run of words and dots spells: words joined by dots,
    at least one word, never two words side by side.  bare: the run stands
    alone (no '@' follows), so several words read as a display name."""
    if not run:
        raise AddressSyntaxError("missing local part before @")
    has_word = False
    prev_word = False
    for tok in run:
        word = tok.kind != "."
        if word and prev_word:
            if bare:
                raise AddressSyntaxError("display name without address")
            if tok.space:
                raise AddressSyntaxError("unquoted space in local part")
            raise AddressSyntaxError("words not separated by a dot in local part")
        has_word = has_word or word
        prev_word = word
    if not has_word:
        raise AddressSyntaxError("invalid local part")
    return "".join(tok.raw for tok in run)


def _domain(lex: _Lexer) -> str:
    """After '@': a dotted domain or a domain literal."""
    tok = lex.peek()
    if tok.kind == DOMLIT:
        return lex.take().value
    if tok.kind == ".":
        raise AddressSyntaxError("invalid domain")
    if tok.kind != ATOM:
        raise AddressSyntaxError("missing domain after @")
    labels = [lex.take().value]
    while lex.peek().kind == ".":
        lex.take()
        if lex.peek().kind != ATOM:
            raise AddressSyntaxError("invalid domain")
        labels.append(lex.take().value)
    return ".".join(labels)


def _route(lex: _Lexer) -> None:
    """Obsolete source route after '<' (RFC 5322 §4.4 obs-route):
    "@a,@b:" -- read and dropped."""
    while True:
        if lex.take().kind != "@":
            raise AddressSyntaxError("invalid route")
        _domain(lex)
        while lex.peek().kind == ",":
            lex.take()
        kind = lex.peek().kind
        if kind == ":":
            lex.take()
            return
        if kind != "@":
            raise AddressSyntaxError("invalid route")


def _angle_addr(lex: _Lexer, name: str) -> Mailbox:
    """After the phrase, at '<': "<" [route] addr-spec ">"."""
    lex.take()
    if lex.peek().kind == "@":
        _route(lex)
    run = _run(lex)
    tok = lex.peek()
    if tok.kind == "@":
        local = _local_part(run)
        lex.take()
        domain = _domain(lex)
    elif run:
        local, domain = _local_part(run), ""        # "Name <alice>"
    elif tok.kind == ">":
        raise AddressSyntaxError("empty angle address")
    else:
        local, domain = "", ""                     # reported just below
    tok = lex.peek()
    if tok.kind in (END, "<"):
        raise AddressSyntaxError("unbalanced angle bracket")
    if tok.kind != ">" or not local:
        raise AddressSyntaxError(f"unexpected {_describe(tok)} in angle address")
    lex.take()
    return Mailbox(name, local, domain)


def parse_address_list(value: str) -> list[Mailbox | Group]:
    """Parse the value of an address field (From, To, Cc, Bcc, Reply-To,
    Sender, Resent-*).  Raises AddressSyntaxError.  An empty value (or one of
    only white space and comments) gives []."""
    lex = _Lexer(value)
    result: list[Mailbox | Group] = []
    group: tuple[str, list[Mailbox]] | None = None   # the open group, if any

    while True:
        tok = lex.peek()
        if tok.kind == END:
            break
        if tok.kind == ",":                 # empty element (obs-addr-list)
            lex.take()
            continue
        if tok.kind == ";":
            if group is None:
                raise AddressSyntaxError("';' outside a group")
            lex.take()
            result.append(Group(group[0], tuple(group[1])))
            group = None
            after = lex.peek()
            if after.kind == ",":
                lex.take()
            elif after.kind != END:
                raise AddressSyntaxError("text after group")
            continue

        run = _run(lex)
        tok = lex.peek()
        if tok.kind == "<":
            mailbox = _angle_addr(lex, _phrase(run))
            after_what = "angle address"
        elif tok.kind == ":":
            if group is not None:
                raise AddressSyntaxError("nested group")
            if not run:
                raise AddressSyntaxError("missing group name")
            lex.take()
            group = (_phrase(run), [])
            continue
        elif tok.kind == "@":
            local = _local_part(run)
            lex.take()
            mailbox = Mailbox("", local, _domain(lex))
            after_what = "address"
        elif not run:
            if tok.kind == ">":
                raise AddressSyntaxError("unbalanced angle bracket")
            raise AddressSyntaxError(f"unexpected {_describe(tok)}")
        elif tok.kind in (",", ";", END):
            # A lone word is an unqualified address; several are a display
            # name whose address is missing.
            mailbox = Mailbox("", _local_part(run, bare=True), "")
            after_what = "address"
        else:
            # Only a domain literal or '>' can follow a run of words here.
            if tok.kind == ">":
                raise AddressSyntaxError("unbalanced angle bracket")
            raise AddressSyntaxError(f"unexpected {_describe(tok)}")

        if group is not None:
            group[1].append(mailbox)
        else:
            result.append(mailbox)

        # After a mailbox: ',' or the end (or ';' closing the open group).
        after = lex.peek()
        if after.kind == ",":
            lex.take()
        elif after.kind == END or (after.kind == ";" and group is not None):
            pass
        elif after.kind == ">":
            raise AddressSyntaxError("unbalanced angle bracket")
        elif after.kind == ";":
            raise AddressSyntaxError("';' outside a group")
        else:
            raise AddressSyntaxError(f"text after {after_what}")

    if group is not None:                   # tolerated: ';' missing at the end
        result.append(Group(group[0], tuple(group[1])))
    return result


def mailboxes(value: str) -> list[Mailbox]:
    """parse_address_list flattened: group members expanded; an empty group
    adds none."""
    out: list[Mailbox] = []
    for item in parse_address_list(value):
        if isinstance(item, Group):
            out.extend(item.members)
        else:
            out.append(item)
    return out


def _split_addr(addr_spec: str) -> tuple[str, str | None]:
    """(local part, domain or None): the domain follows the last '@' that is
    outside a quoted string and outside a domain literal."""
    at = -1
    quoted = False
    bracket = False
    i = 0
    n = len(addr_spec)
    while i < n:
        c = addr_spec[i]
        if c == "\\" and (quoted or bracket):
            i += 2
            continue
        if quoted:
            quoted = c != '"'
        elif bracket:
            bracket = c != "]"
        elif c == '"':
            quoted = True
        elif c == "[":
            bracket = True
        elif c == "@":
            at = i
        i += 1
    if at < 0:
        return addr_spec, None
    return addr_spec[:at], addr_spec[at + 1:]


def qualify(addr_spec: str, domain: str) -> str:
    """addr_spec with "@domain" appended when it has no domain (RFC 6409
    §4.2, Postfix's append_at_myorigin); the null address '' stays as it is.
    The one rule for envelope paths (sendgate.policy.sender) and header
    mailboxes (envelope, fixups, submission) alike: an '@' inside a quoted
    local part is not a domain."""
    if not addr_spec or _split_addr(addr_spec)[1] is not None:
        return addr_spec
    return f"{addr_spec}@{domain}"


def normalize_addr(addr_spec: str) -> str:
    """Key for duplicate detection: the local part exactly as written (RFC
    5321 §2.4: it may be case-sensitive) and the domain lower-cased."""
    local, domain = _split_addr(addr_spec)
    if domain is None:
        return local
    return local + "@" + domain.lower()
