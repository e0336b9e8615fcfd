"""Subject and pattern grammar: the only module that knows '.', '*', '>' and '_INBOX'.

A subject is a non-empty string of non-empty tokens separated by ``.``, with no
whitespace anywhere. A pattern is a subject in which a token may be exactly ``*``
(one token) or exactly ``>`` (one or more trailing tokens, last position only).
Parsing returns the token tuple that the trie is keyed by; every rejection raises
:class:`InvalidSubjectError` naming the input and the rule, before anything else
happens.

Subjects whose first token is ``_INBOX`` are reply subjects: the rule that no
subscription may listen there, and no one publish there but on a reply of
one's own, lives here with the rest of the grammar (:func:`is_reserved`,
:func:`reserved_pattern`).
"""

from __future__ import annotations

import re
from typing import Final

from ._errors import InvalidSubjectError

SEPARATOR: Final = "."
ONE: Final = "*"
REST: Final = ">"
REPLY_ROOT: Final = "_INBOX"
"""The first token of every reply subject, reserved for them."""


def is_reserved(subject: str) -> bool:
    """Whether ``subject`` (a str) lies under the reserved ``_INBOX`` token."""
    return subject.startswith(REPLY_ROOT) and (
        len(subject) == len(REPLY_ROOT) or subject[len(REPLY_ROOT)] == SEPARATOR
    )


def reserved_pattern(pattern: str) -> InvalidSubjectError:
    """The error for a subscription on reply subjects."""
    return InvalidSubjectError(
        pattern,
        f"subjects under {REPLY_ROOT}. are reply subjects, routed only to the "
        "request that made them: no subscription can listen on them",
        kind="pattern",
    )


# re's \s and str.isspace() share CPython's definition of whitespace
# (Py_UNICODE_ISSPACE); a test checks that over every code point.
_WHITESPACE: Final = re.compile(r"\s")


def _check_str(text: object, kind: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{kind} must be a str, not {type(text).__name__}: {text!r}")
    return text


def _split(text: str, kind: str) -> tuple[str, ...]:
    """Split ``text`` into tokens, enforcing the rules shared by both kinds."""
    if not text:
        raise InvalidSubjectError(text, "must not be empty", kind=kind)
    if _WHITESPACE.search(text) is not None:
        raise InvalidSubjectError(text, "must not contain whitespace", kind=kind)
    tokens = tuple(text.split(SEPARATOR))
    if "" in tokens:
        raise InvalidSubjectError(text, "empty token", kind=kind)
    return tokens


def parse_subject(subject: object) -> tuple[str, ...]:
    """Return the tokens of a literal subject, or raise."""
    text = _check_str(subject, "subject")
    tokens = _split(text, "subject")
    if ONE in tokens or REST in tokens:
        raise InvalidSubjectError(
            text, "wildcards '*' and '>' are only allowed in patterns, not in a subject"
        )
    return tokens


def parse_pattern(pattern: object) -> tuple[str, ...]:
    """Return the tokens of a pattern, or raise."""
    text = _check_str(pattern, "pattern")
    tokens = _split(text, "pattern")
    if REST in tokens[:-1]:
        raise InvalidSubjectError(
            text, "'>' is only allowed as the last token", kind="pattern"
        )
    return tokens


def parse_queue(queue: object) -> str | None:
    """Return a queue group name (or ``None``) as given, or raise.

    A queue name is any non-empty ``str`` without whitespace; dots and
    wildcard characters are ordinary characters in it.
    """
    if queue is None:
        return None
    if not isinstance(queue, str):
        raise TypeError(
            f"queue must be a str or None, not {type(queue).__name__}: {queue!r}"
        )
    if not queue:
        raise ValueError("invalid queue name '': must not be empty")
    if _WHITESPACE.search(queue) is not None:
        raise ValueError(f"invalid queue name {queue!r}: must not contain whitespace")
    return queue


def tokens_match(pattern: tuple[str, ...], subject: tuple[str, ...]) -> bool:
    """Match parsed tokens directly: the reference the trie is tested against."""
    for index, token in enumerate(pattern):
        if token == REST:
            return len(subject) > index
        if index >= len(subject) or (token != ONE and token != subject[index]):
            return False
    return len(subject) == len(pattern)


def validate_subject(subject: str) -> None:
    """Check that ``subject`` is a valid literal subject, as ``publish`` requires.

    Args:
        subject: A subject such as ``"orders.42.created"``.

    Raises:
        TypeError: ``subject`` is not a ``str``.
        InvalidSubjectError: it is empty, contains whitespace, has an empty token,
            or has a ``*`` or ``>`` token.
    """
    parse_subject(subject)


def validate_pattern(pattern: str) -> None:
    """Check that ``pattern`` is a valid subscription pattern.

    Args:
        pattern: A pattern such as ``"orders.*.created"`` or ``"orders.>"``.

    Raises:
        TypeError: ``pattern`` is not a ``str``.
        InvalidSubjectError: it is empty, contains whitespace, has an empty token,
            or has a ``>`` token that is not the last one.
    """
    parse_pattern(pattern)


def subject_matches(pattern: str, subject: str) -> bool:
    """Tell whether a message published on ``subject`` reaches ``pattern``.

    ``*`` matches exactly one token and ``>`` one or more trailing tokens; any other
    token, including ones that merely contain ``*`` or ``>``, matches only itself.

    Args:
        pattern: A valid pattern.
        subject: A valid literal subject.

    Returns:
        ``True`` when the pattern matches the subject.

    Raises:
        TypeError: either argument is not a ``str``.
        InvalidSubjectError: ``pattern`` is not a valid pattern, or ``subject`` is
            not a valid literal subject.
    """
    return tokens_match(parse_pattern(pattern), parse_subject(subject))
