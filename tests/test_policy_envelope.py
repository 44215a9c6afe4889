"""sendgate.policy.envelope: recipients from the header (RCPTHDR; the rules are in its docstring).

Each case is a header as the client sent it, the RCPT addresses given with
it, and the exact Extraction or HeaderError wanted.  Headers go through
split_message, so folding and names are exactly what the daemons will see.
"""

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sendgate.policy.addresses import normalize_addr
from sendgate import replies
from sendgate.policy.envelope import Extraction, HeaderError, recipients_from_header
from sendgate.policy.message import Field, split_message

DOMAIN = "example.com"


def H(*lines: str | bytes) -> list[Field]:
    """A header from its lines (str, or bytes for non-UTF-8 content)."""
    data = b"".join((line if isinstance(line, bytes) else line.encode()) + b"\r\n" for line in lines)
    header, body = split_message(data + b"\r\nbody\r\n")
    assert body == b"body\r\n"
    return header


def X(recipients, remove=(), resent=False) -> Extraction:
    return Extraction(tuple(recipients), tuple(remove), resent)


CASES = [
    # --- Rule 1: no Resent-To/Cc/Bcc: To, Cc, Bcc. ---------------------------
    pytest.param(H("From: me@example.com", "To: a@x.org"), (), X(["a@x.org"]), id="to-only"),
    pytest.param(
        H("From: me@example.com", "To: a@x.org", "Cc: b@x.org", "Bcc: c@x.org", "Subject: hi"),
        (),
        X(["a@x.org", "b@x.org", "c@x.org"], remove=[3]),
        id="to-cc-bcc",
    ),
    pytest.param(
        H("Bcc: c@x.org", "To: a@x.org", "Cc: b@x.org"),
        (),
        X(["c@x.org", "a@x.org", "b@x.org"], remove=[0]),
        id="header-order",
    ),
    pytest.param(
        H("To: a@x.org", "Subject: s", "To: b@x.org", "Cc: c@x.org", "Cc: d@x.org"),
        (),
        X(["a@x.org", "b@x.org", "c@x.org", "d@x.org"]),
        id="every-occurrence",
    ),
    pytest.param(
        H("TO: a@x.org", "cc: b@x.org", "bCc: c@x.org"),
        (),
        X(["a@x.org", "b@x.org", "c@x.org"], remove=[2]),
        id="names-any-case",
    ),
    pytest.param(
        H("To: Alice <alice@x.org>,", "  Bob", "   <bob@x.org>, (comment)", "\tcarol@x.org"),
        (),
        X(["alice@x.org", "bob@x.org", "carol@x.org"]),
        id="folded-to",
    ),
    pytest.param(
        H("To:", " a@x.org,", "\tb@x.org"), (), X(["a@x.org", "b@x.org"]), id="folded-value-starts-next-line"
    ),
    pytest.param(H("From: me@example.com", "Bcc: a@x.org"), (), X(["a@x.org"], remove=[1]), id="bcc-only"),
    pytest.param(
        H("Bcc: a@x.org", "Subject: s", "Bcc: b@x.org"),
        (),
        X(["a@x.org", "b@x.org"], remove=[0, 2]),
        id="bcc-several-removed",
    ),
    pytest.param(H("Bcc:", "To: a@x.org"), (), X(["a@x.org"], remove=[0]), id="bcc-empty-removed"),
    pytest.param(
        H("To: undisclosed-recipients:;", "Bcc: a@x.org, b@x.org"),
        (),
        X(["a@x.org", "b@x.org"], remove=[1]),
        id="undisclosed-plus-bcc",
    ),
    pytest.param(
        H("To: Team: a@x.org, Bob <b@x.org>;, c@x.org"),
        (),
        X(["a@x.org", "b@x.org", "c@x.org"]),
        id="group-expanded",
    ),
    pytest.param(
        H("To: alice, Bob <bob>, carol@x.org"),
        (),
        X(["alice@example.com", "bob@example.com", "carol@x.org"]),
        id="unqualified-qualified",
    ),
    pytest.param(
        H("To: a@Example.ORG", "Cc: a@example.org, A@example.org"),
        (),
        X(["a@Example.ORG", "A@example.org"]),
        id="duplicates-domain-case",
    ),
    pytest.param(
        H("To: alice", "Cc: alice@EXAMPLE.com"),
        (),
        X(["alice@example.com"]),
        id="duplicate-after-qualification",
    ),
    pytest.param(
        H("To: a@x.org, c@x.org", "Bcc: z@x.org"),
        ("z@x.org", "b@x.org", "B@x.org", "b@X.ORG"),
        X(["z@x.org", "b@x.org", "B@x.org", "a@x.org", "c@x.org"], remove=[1]),
        id="extra-first-union",
    ),
    pytest.param(H("To: undisclosed-recipients:;"), ("r@x.org",), X(["r@x.org"]), id="extra-only"),
    pytest.param(H("Subject: no recipients here"), ("r@x.org",), X(["r@x.org"]), id="extra-no-to-field"),
    pytest.param(
        H("From: <<broken", "Reply-To: also (broken", "Sender: ,,>", "To: a@x.org"),
        (),
        X(["a@x.org"]),
        id="unused-fields-not-parsed",
    ),
    pytest.param(
        H("Resent-From: r@example.com", "Resent-Date: Mon, 1 Jan 2024 00:00:00 +0000", "To: a@x.org"),
        (),
        X(["a@x.org"]),
        id="resent-from-alone-is-normal-mode",
    ),
    pytest.param(
        H("X-Resent-To: x@x.org", "Apparently-To: y@x.org", "To: a@x.org"),
        (),
        X(["a@x.org"]),
        id="not-resent-fields",
    ),
    pytest.param(
        H(b"To: J\xf6rg <j@x.org>, m\xfcller@x.org"),
        (),
        X(["j@x.org", "m\udcfcller@x.org"]),
        id="non-utf8-name-and-local-accepted",
    ),
    pytest.param(H("To: 用户@例子.广告"), (), X(["用户@例子.广告"]), id="smtputf8"),
    # --- Rule 2: resent mode. ------------------------------------------------
    pytest.param(
        H(
            "Resent-From: r@example.com",
            "Resent-To: new@x.org",
            "Resent-Bcc: hidden@x.org",
            "From: me@example.com",
            "To: ((old, not parsed",
            "Bcc: old-bcc@x.org",
        ),
        (),
        X(["new@x.org", "hidden@x.org"], remove=[2], resent=True),
        id="resent-block-top",
    ),
    pytest.param(
        H(
            "Resent-From: r2@example.com",
            "Resent-To: newest@x.org",
            "Resent-Bcc: hidden2@x.org",
            "Received: from b by c; Mon, 1 Jan 2024 00:00:00 +0000",
            "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000",
            "Resent-From: r1@example.com",
            "Resent-To: older@x.org",
            "Resent-Bcc: hidden1@x.org",
            "Return-Path: <r0@example.com>",
            "Resent-To: oldest@x.org",
            "From: me@example.com",
            "To: a@x.org",
        ),
        (),
        X(["newest@x.org", "hidden2@x.org"], remove=[2], resent=True),
        id="several-blocks-topmost",
    ),
    pytest.param(
        H(
            "Received: from b by c; Mon, 1 Jan 2024 00:00:00 +0000",
            "Resent-Cc: newest@x.org",
            "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000",
            "Resent-To: older@x.org",
            "Resent-To: older-twice@x.org",
        ),
        (),
        X(["newest@x.org"], resent=True),
        id="several-blocks-older-not-checked",
    ),
    pytest.param(
        H(
            "Return-Path: <x@y>",
            "Resent-Date: Mon, 1 Jan 2024 00:00:00 +0000",
            "Resent-From: r@example.com",
            "Resent-Message-ID: <1@example.com>",
            "Resent-Cc: c@x.org",
            "Resent-Bcc: b@x.org",
            "Resent-To: t@x.org",
            "To: a@x.org",
        ),
        (),
        X(["c@x.org", "b@x.org", "t@x.org"], remove=[5], resent=True),
        id="full-block-header-order",
    ),
    pytest.param(
        H("From: me@example.com", "To: a@x.org", "Subject: s", "Resent-From: r@example.com", "Resent-To: new"),
        (),
        X(["new@example.com"], resent=True),
        id="single-block-at-bottom",
    ),
    pytest.param(
        H("Resent-To: a@x.org", "Received: x", "Resent-To: b@x.org"),
        (),
        X(["a@x.org"], resent=True),
        id="only-trace-and-resent",
    ),
    pytest.param(
        H("RESENT-TO: a@x.org", "resent-bcc: b@x.org", "To: c@x.org"),
        (),
        X(["a@x.org", "b@x.org"], remove=[1], resent=True),
        id="resent-names-any-case",
    ),
    pytest.param(
        H("Resent-To: Team: a@x.org;", "Resent-Cc: undisclosed-recipients:;", "Resent-Bcc: alice"),
        ("a@X.org",),
        X(["a@X.org", "alice@example.com"], remove=[2], resent=True),
        id="resent-groups-extra-qualify",
    ),
    # RFC 822 style: scattered among ordinary fields, one of each at most.
    pytest.param(
        H(
            "Resent-From: r@example.com",
            "From: me@example.com",
            "Resent-To: t@x.org",
            "To: a@x.org",
            "Resent-Bcc: b@x.org",
            "Subject: s",
            "Resent-Cc: c@x.org",
        ),
        (),
        X(["t@x.org", "b@x.org", "c@x.org"], remove=[4], resent=True),
        id="rfc822-scattered-one-set",
    ),
    pytest.param(
        H(
            "Resent-To: t@x.org",
            "Received: x",
            "From: me@example.com",
            "Resent-Cc: c@x.org",
        ),
        (),
        X(["t@x.org", "c@x.org"], resent=True),
        id="rfc822-top-and-bottom-runs",
    ),
    # --- Only the seven RFC 5322 resent fields count (issue 18). -----------
    pytest.param(
        H("Resent-Foo: x", "From: Alice <alice@example.org>", "To: a@x.org"),
        (),
        X(["a@x.org"]),
        id="made-up-resent-prefix-is-ordinary",
    ),
    pytest.param(
        H("Resent-From: r@x.org", "Resent-Foo: x", "Resent-To: a@x.org", "Resent-Foo: y", "To: c@x.org"),
        (),
        X(["a@x.org"], resent=True),
        id="made-up-resent-fields-not-in-block",
    ),
    # --- Adjacent blocks, no trace field between them. ----------------------
    pytest.param(
        H("Resent-From: new@x.org", "Resent-Date: d2", "Resent-To: a@x.org", "Resent-Bcc: h@x.org",
          "Resent-From: old@x.org", "Resent-Date: d1", "Resent-To: b@x.org", "Resent-Bcc: o@x.org",
          "To: c@x.org"),
        (),
        X(["a@x.org", "h@x.org"], remove=[3], resent=True),
        id="adjacent-blocks-split",
    ),
    pytest.param(
        H("Resent-Date: d3", "Resent-From: n@x.org", "Resent-To: a@x.org",
          "Resent-Date: d2", "Resent-From: m@x.org", "Resent-To: b@x.org",
          "Resent-Date: d1", "Resent-From: o@x.org", "Resent-To: c@x.org", "To: z@x.org"),
        (),
        X(["a@x.org"], resent=True),
        id="three-adjacent-blocks",
    ),
    pytest.param(
        H("Resent-To: a@x.org", "Resent-From: n@x.org", "Resent-Date: d2", "Resent-To: b@x.org",
          "Resent-From: o@x.org", "Resent-Date: d1", "To: z@x.org"),
        (),
        X(["a@x.org"], resent=True),
        id="adjacent-blocks-to-first",
    ),
]


@pytest.mark.parametrize("header, extra, want", CASES)
def test_recipients_from_header(header, extra, want):
    assert recipients_from_header(header, DOMAIN, extra) == want


ERROR_CASES = [
    # --- Rule 2: ambiguous resent fields. -----------------------------------
    pytest.param(
        H("Resent-From: r@example.com", "Resent-To: a@x.org", "Resent-To: b@x.org", "To: c@x.org"),
        HeaderError("Resent-To", "ambiguous resent block: field appears twice"),
        id="block-resent-to-twice",
    ),
    pytest.param(
        H("Resent-Date: d1", "Resent-To: a@x.org", "resent-date: d2", "Received: x", "Resent-To: b@x.org"),
        HeaderError("resent-date", "ambiguous resent block: field appears twice"),
        id="block-resent-date-twice",
    ),
    pytest.param(
        H("From: me@example.com", "Resent-To: a@x.org", "Resent-To: b@x.org"),
        HeaderError("Resent-To", "ambiguous resent block: field appears twice"),
        id="bottom-block-twice",
    ),
    pytest.param(
        H("Resent-From: n@x.org", "Resent-Date: d2", "Resent-To: a@x.org", "Resent-From: o@x.org",
          "Resent-Date: d1", "To: z@x.org"),
        HeaderError("Resent-From", "ambiguous resent block: field appears twice"),
        id="adjacent-blocks-two-cuts",
    ),
    pytest.param(
        H("Resent-From: n@x.org", "Resent-Date: d2", "Resent-To: a@x.org", "Resent-To: b@x.org",
          "Resent-From: o@x.org", "Resent-Date: d1", "Resent-To: c@x.org", "To: z@x.org"),
        HeaderError("Resent-To", "ambiguous resent block: field appears twice"),
        id="adjacent-blocks-no-cut",
    ),
    pytest.param(
        H("Resent-From: n@x.org", "Resent-To: a@x.org", "Resent-From: o@x.org", "Resent-To: b@x.org",
          "To: z@x.org"),
        HeaderError("Resent-From", "ambiguous resent block: field appears twice"),
        id="adjacent-blocks-without-date",
    ),
    pytest.param(
        H(
            "Resent-From: r@example.com",
            "Resent-To: a@x.org",
            "From: me@example.com",
            "Resent-From: s@example.com",
            "Subject: s",
            "Resent-Cc: b@x.org",
        ),
        HeaderError("Resent-From", "ambiguous resent fields"),
        id="rfc822-scattered-repeated",
    ),
    pytest.param(
        H(
            "Resent-To: a@x.org",
            "To: b@x.org",
            "Resent-Cc: c@x.org",
            "Resent-CC: d@x.org",
            "Subject: s",
            "Resent-To: e@x.org",
        ),
        HeaderError("Resent-CC", "ambiguous resent fields"),
        id="rfc822-first-repeat-named",
    ),
    # --- Rule 4: syntax errors in fields used. ------------------------------
    pytest.param(
        H("To: a@x.org", "Cc: Alice <a@x.org"),
        HeaderError("Cc", "unbalanced angle bracket"),
        id="syntax-cc",
    ),
    pytest.param(
        H("TO: John Smith"),
        HeaderError("TO", "display name without address"),
        id="syntax-name-as-written",
    ),
    pytest.param(
        H("To: a@x.org", "Bcc: b@"),
        HeaderError("Bcc", "missing domain after @"),
        id="syntax-bcc",
    ),
    pytest.param(
        H("To: a@x.org,", " (unterminated"),
        HeaderError("To", "unterminated comment"),
        id="syntax-folded",
    ),
    pytest.param(
        H("Resent-To: a@x.org", "Resent-Cc: G: H: b@x.org;;", "To: c@x.org"),
        HeaderError("Resent-Cc", "nested group"),
        id="syntax-resent-cc",
    ),
    # --- Rule 5: no recipient. -------------------------------------------------
    pytest.param(
        H("From: me@example.com", "Subject: s"),
        HeaderError("To", "no recipients found in the message header"),
        id="no-to-field",
    ),
    pytest.param(
        H("To:", "Cc: (nobody)"),
        HeaderError("To", "no recipients found in the message header"),
        id="empty-fields",
    ),
    pytest.param(
        H("To: undisclosed-recipients:;", "Bcc:"),
        HeaderError("To", "no recipients found in the message header"),
        id="undisclosed-only",
    ),
    pytest.param(
        H("Resent-From: r@example.com", "Resent-Bcc:", "To: a@x.org"),
        HeaderError("Resent-To", "no recipients found in the message header"),
        id="resent-no-recipients",
    ),
    pytest.param(
        H("Resent-From: r@example.com", "Received: x", "Resent-To: old@x.org", "To: a@x.org"),
        HeaderError("Resent-To", "no recipients found in the message header"),
        id="topmost-block-without-recipients",
    ),
    # --- Rule 6: non-UTF-8 domain. -------------------------------------------
    pytest.param(
        H("To: a@x.org", b"Cc: b@\xe9x.org"),
        HeaderError("Cc", "address is not valid UTF-8"),
        id="non-utf8-domain",
    ),
    pytest.param(
        H(b"Resent-To: G: b@x.\xff;"),
        HeaderError("Resent-To", "address is not valid UTF-8"),
        id="non-utf8-domain-in-group",
    ),
]


@pytest.mark.parametrize("header, want", ERROR_CASES)
def test_header_error(header, want):
    with pytest.raises(HeaderError) as info:
        recipients_from_header(header, DOMAIN)
    assert (info.value.field, info.value.reason, str(info.value)) == (want.field, want.reason, str(want))


def test_no_recipients_with_empty_extra_still_errors():
    with pytest.raises(HeaderError) as info:
        recipients_from_header(H("To: undisclosed-recipients:;"), DOMAIN, ())
    assert str(info.value) == "To: no recipients found in the message header"


def test_header_error_shape():
    err = HeaderError("Resent-To", "ambiguous resent fields")
    assert isinstance(err, ValueError)
    assert (err.field, err.reason) == ("Resent-To", "ambiguous resent fields")
    assert str(err) == "Resent-To: ambiguous resent fields"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.field, copy.reason, str(copy)) == (err.field, err.reason, str(err))


REPLY_CASES = [
    pytest.param(HeaderError("Resent-To", "ambiguous resent fields"), "554 5.6.0 Resent-To: ambiguous resent fields",
                 id="resent"),
    pytest.param(HeaderError("To", "no recipients found in the message header"),
                 "554 5.6.0 To: no recipients found in the message header", id="none"),
]


@pytest.mark.parametrize("err, want", REPLY_CASES)
def test_reply_names_the_field(err, want):
    assert str(replies.R554_HEADER.format(detail=str(err))) == want


def test_accepts_tuple_header():
    header = tuple(H("To: a@x.org", "Bcc: b@x.org"))
    assert recipients_from_header(header, DOMAIN) == X(["a@x.org", "b@x.org"], remove=[1])


# --- Property tests. -----------------------------------------------------------

_LOCAL = st.one_of(
    st.from_regex(r"[A-Za-z0-9+_-]{1,8}(\.[A-Za-z0-9]{1,5})?", fullmatch=True),
    st.sampled_from(['"john doe"', '"a@b"', '"x,y"']),
)
_DOMAIN = st.one_of(
    st.from_regex(r"[A-Za-z0-9]{1,6}(\.[A-Za-z]{2,4}){0,2}", fullmatch=True),
    st.just("[192.0.2.1]"),
    st.just(""),            # unqualified
)


@st.composite
def _mailbox(draw):
    local = draw(_LOCAL)
    domain = draw(_DOMAIN)
    addr = local + "@" + domain if domain else local
    form = draw(st.sampled_from(["bare", "angle", "named", "quoted-name", "comment"]))
    return {
        "bare": addr,
        "angle": f"<{addr}>",
        "named": f"Some Body <{addr}>",
        "quoted-name": f'"Body, Some" <{addr}>',
        "comment": f"{addr} (who, <me>)",
    }[form]


@st.composite
def _value(draw):
    items = draw(
        st.lists(
            st.one_of(
                _mailbox(),
                st.lists(_mailbox(), max_size=3).map(lambda ms: "Team: " + ", ".join(ms) + ";"),
                st.just(""),        # empty element
            ),
            max_size=4,
        )
    )
    separator = draw(st.sampled_from([", ", ",\n ", ",\r\n\t"]))
    return separator.join(items)


_NAMES = ["To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc", "Resent-From", "Received", "From", "Subject"]
_FIELDS = st.lists(st.tuples(st.sampled_from(_NAMES), _value()).map(lambda t: Field(*t)), max_size=8)
_EXTRA = st.lists(st.sampled_from(["r@x.org", "R@X.ORG", "other@example.com"]), max_size=3)


def _appears(addr: str, text: str, domain: str) -> bool:
    """addr is in text, the domain compared case-insensitively, or it is an
    unqualified local part of text qualified with domain."""
    local, _, dom = addr.rpartition("@")
    lowered = text.lower()
    start = 0
    while (at := text.find(local + "@", start)) >= 0:
        end = at + len(local) + 1
        if lowered[end:end + len(dom)] == dom.lower():
            return True
        start = at + 1
    return dom == domain and local in text


@settings(max_examples=500, deadline=None)
@given(_FIELDS, _EXTRA)
def test_property_recipients_come_from_header_or_extra(header, extra):
    try:
        result = recipients_from_header(header, DOMAIN, extra)
    except HeaderError as err:
        assert err.field and err.reason
        return
    text = "\n".join(f"{f.name}: {f.value}" for f in header)
    for addr in result.recipients:
        assert addr in extra or _appears(addr, text, DOMAIN), addr
    keys = [normalize_addr(a) for a in result.recipients]
    assert len(keys) == len(set(keys))
    assert list(result.remove) == sorted(set(result.remove))
    for i in result.remove:
        assert header[i].name in ("Resent-Bcc" if result.resent else "Bcc",)


_ANY_TEXT = st.text(
    st.one_of(st.sampled_from(list('<>()[]":;@,.\\ \t\n\r\x00aZ\udcff')), st.characters(blacklist_categories=())),
    max_size=40,
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_NAMES), _ANY_TEXT).map(lambda t: Field(*t)), max_size=6))
def test_property_only_header_error(header):
    try:
        result = recipients_from_header(header, DOMAIN)
    except HeaderError as err:
        assert str(err).startswith(err.field + ": ")
    else:
        assert result.recipients
