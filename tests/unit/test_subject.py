"""The subject grammar of SPEC.md, table-driven, including NATS edge cases."""

from __future__ import annotations

import sys

import pytest

from trio_pubsub import (
    InvalidSubjectError,
    subject_matches,
    validate_pattern,
    validate_subject,
)

VALID_SUBJECTS = [
    "a",
    "orders.42.created",
    "a*",  # a token that merely contains '*' is a literal
    "*b.c",
    "a.>>",
    "x>.y",
    "Orders.ÉTÉ.日本",
    "a-b_c:d/e",
    "a" * 10_000,
    ".".join(["t"] * 1_000),
]

INVALID_SUBJECTS = [
    ("", "must not be empty"),
    ("a..b", "empty token"),
    (".a", "empty token"),
    ("a.", "empty token"),
    (".", "empty token"),
    ("a b", "whitespace"),
    ("a.b\t", "whitespace"),
    ("a\n", "whitespace"),
    ("a\u00a0b", "whitespace"),  # no-break space
    ("a\u2003b", "whitespace"),  # em space
    ("*", "wildcards"),
    ("a.*", "wildcards"),
    ("a.>", "wildcards"),
    (">", "wildcards"),
    ("a.*.b", "wildcards"),
]

VALID_PATTERNS = [
    *VALID_SUBJECTS,
    "*",
    ">",
    "a.*",
    "a.>",
    "*.>",
    "*.*.*",
    "a.*.b.>",
    "a*.>>.*",
]

INVALID_PATTERNS = [
    ("", "must not be empty"),
    ("a..b", "empty token"),
    ("a.", "empty token"),
    (".>", "empty token"),
    ("a .b", "whitespace"),
    ("a.\u3000", "whitespace"),  # ideographic space
    (">.a", "'>' is only allowed as the last token"),
    ("a.>.b", "'>' is only allowed as the last token"),
    (">.>", "'>' is only allowed as the last token"),
]


@pytest.mark.parametrize("subject", VALID_SUBJECTS)
def test_valid_subject(subject: str) -> None:
    """Valid literal subjects pass, whatever their length or unicode."""
    validate_subject(subject)


@pytest.mark.parametrize(("subject", "rule"), INVALID_SUBJECTS)
def test_invalid_subject_names_input_and_rule(subject: str, rule: str) -> None:
    """An invalid subject raises InvalidSubjectError with the input and the rule."""
    with pytest.raises(InvalidSubjectError) as info:
        validate_subject(subject)
    assert info.value.subject == subject
    assert rule in info.value.reason
    assert repr(subject) in str(info.value)
    assert str(info.value).startswith("invalid subject ")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("pattern", VALID_PATTERNS)
def test_valid_pattern(pattern: str) -> None:
    """Valid patterns pass, wildcards included."""
    validate_pattern(pattern)


@pytest.mark.parametrize(("pattern", "rule"), INVALID_PATTERNS)
def test_invalid_pattern_names_input_and_rule(pattern: str, rule: str) -> None:
    """An invalid pattern raises InvalidSubjectError with the input and the rule."""
    with pytest.raises(InvalidSubjectError) as info:
        validate_pattern(pattern)
    assert info.value.subject == pattern
    assert rule in info.value.reason
    assert str(info.value).startswith(f"invalid pattern {pattern!r}: ")


@pytest.mark.parametrize("bad", [None, b"a.b", 1, ["a"], ("a",)])
def test_non_str_is_a_type_error(bad: object) -> None:
    """Anything but a str is a TypeError naming the value, not a ValueError."""
    for check in (validate_subject, validate_pattern):
        with pytest.raises(TypeError, match="must be a str") as info:
            check(bad)  # type: ignore[arg-type]
        assert not isinstance(info.value, ValueError)
    with pytest.raises(TypeError):
        subject_matches(bad, "a")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        subject_matches("a", bad)  # type: ignore[arg-type]


def test_whitespace_rule_is_exactly_str_isspace() -> None:
    """Every code point for which str.isspace() is true is rejected, and no other."""
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if char in ".*>":
            continue
        if char.isspace():
            with pytest.raises(InvalidSubjectError, match="whitespace"):
                validate_subject(f"a{char}b")
        elif 0xD800 <= code <= 0xDFFF or code % 97 == 0:
            # surrogates and a sample of the rest: the full loop of validations
            # is slow, the isspace() branch above is complete.
            validate_subject(f"a{char}b")


MATCHES = [
    # pattern, subject, expected
    ("a.b", "a.b", True),
    ("a.b", "a.c", False),
    ("a.b", "a", False),
    ("a.b", "a.b.c", False),
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    ("a.>", "a.b", True),
    ("a.>", "a.b.c", True),
    ("a.>", "a", False),
    (">", "a", True),
    (">", "a.b.c.d", True),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*.>", "a", False),
    ("*.>", "a.b", True),
    ("*.>", "a.b.c", True),
    ("*.*", "a.b", True),
    ("*.b.*", "a.b.c", True),
    ("*.b.*", "a.x.c", False),
    ("a*", "a*", True),  # literal token containing '*'
    ("a*", "ab", False),
    ("a*.b", "a.b", False),
    (">>", ">>", True),
    (">>", "a", False),
    ("a.>>", "a.b", False),
    ("Orders.*", "orders.x", False),  # case-sensitive
    ("日本.*", "日本.東京", True),
]


@pytest.mark.parametrize(("pattern", "subject", "expected"), MATCHES)
def test_subject_matches(pattern: str, subject: str, expected: bool) -> None:
    """subject_matches follows the NATS rules for '*', '>' and literal tokens."""
    assert subject_matches(pattern, subject) is expected


def test_subject_matches_rejects_wildcard_subject() -> None:
    """The subject argument must be literal: a wildcard there is an error."""
    with pytest.raises(InvalidSubjectError, match="only allowed in patterns"):
        subject_matches("a.*", "a.*")


def test_subject_matches_rejects_bad_pattern() -> None:
    """An invalid pattern raises, naming the pattern."""
    with pytest.raises(InvalidSubjectError, match=r"invalid pattern 'a\.>\.b'"):
        subject_matches("a.>.b", "a.x.b")
