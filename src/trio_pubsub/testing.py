"""A test kit: hypothesis strategies for subjects and patterns, and helpers.

Needs the ``testing`` extra (``hypothesis``). The strategies make what the
broker accepts: tokens without dots or whitespace, subjects of literal
tokens, patterns where a token may be ``*`` and the last ``>``; and matching
pairs (:func:`subjects_matching`, :func:`patterns_matching`) for properties
such as "every subject a pattern matches reaches its subscription". Nothing
they make starts with the token ``_INBOX``, reserved for reply subjects.
:func:`reference_match` is a matcher written apart from the broker's routing,
to compare routing tables with. See :doc:`/how-to/property-test-routing`.

For handlers, :func:`serving` runs a :class:`~trio_pubsub.Router` for the body
of an ``async with``, waits until it is idle, and records its dead letters.
"""

from __future__ import annotations

import typing
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import trio
import trio.testing
from hypothesis import strategies as st

from . import (
    Broker,
    HandlerStatistics,
    Message,
    Router,
    SlowConsumerError,
    Subscription,
    validate_pattern,
    validate_subject,
)

if typing.TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from hypothesis.strategies import SearchStrategy

__all__ = [
    "Recording",
    "Serving",
    "drain",
    "patterns",
    "patterns_matching",
    "patterns_near",
    "recorder",
    "reference_match",
    "serving",
    "subjects",
    "subjects_matching",
    "subjects_near",
    "tokens",
]

T = TypeVar("T")

_RESERVED = "_INBOX"
_WILDCARDS = ("*", ">")


def _is_token(text: str) -> bool:
    return (
        bool(text)
        and text not in _WILDCARDS
        and "." not in text
        and not any(c.isspace() for c in text)
    )


def tokens(
    *,
    vocabulary: Sequence[str] | None = None,
    alphabet: str | SearchStrategy[str] | None = None,
    max_size: int = 8,
) -> SearchStrategy[str]:
    """Literal tokens: non-empty, without ``.`` or whitespace, not ``*`` or ``>``.

    Args:
        vocabulary: Draw from these tokens only (a small vocabulary makes
            subjects and patterns match often). Each must be a valid token.
        alphabet: Otherwise, the characters of generated tokens (as
            ``hypothesis.strategies.text`` takes them); by default any
            character but ``.``, whitespace, controls and surrogates, so that
            tokens such as ``a*``, ``>>`` or ``日本`` come up (the broker takes
            them as literals; NATS refuses ``*`` or ``>`` inside a token in
            what it subscribes to).
        max_size: The longest generated token.

    Raises:
        ValueError: a vocabulary token is not a valid literal token.
    """
    if vocabulary is not None:
        words: list[object] = list(vocabulary)
        for word in words:
            if not isinstance(word, str) or not _is_token(word):
                raise ValueError(f"{word!r} is not a literal token")
        if not words:
            raise ValueError("the vocabulary is empty")
        return st.sampled_from(typing.cast("list[str]", words))
    characters = (
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=".")
        if alphabet is None
        else alphabet
    )
    return st.text(characters, min_size=1, max_size=max_size).filter(_is_token)


def subjects(
    *,
    tokens: SearchStrategy[str] | None = None,
    min_depth: int = 1,
    max_depth: int = 6,
) -> SearchStrategy[str]:
    """Literal subjects of ``min_depth`` to ``max_depth`` tokens.

    Args:
        tokens: Where the tokens come from (default: :func:`tokens`).
        min_depth: The fewest tokens (>= 1).
        max_depth: The most tokens.
    """
    drawn = _tokens_or_default(tokens)
    return (
        st.lists(drawn, min_size=max(1, min_depth), max_size=max_depth)
        .filter(lambda parts: parts[0] != _RESERVED)
        .map(".".join)
    )


@st.composite
def patterns(  # noqa: D417 (draw is hypothesis's: callers never pass it)
    draw: st.DrawFn,
    *,
    tokens: SearchStrategy[str] | None = None,
    min_depth: int = 1,
    max_depth: int = 6,
    single: bool = True,
    multi: bool = True,
) -> str:
    """Patterns of ``min_depth`` to ``max_depth`` tokens.

    Args:
        tokens: Where the literal tokens come from (default: :func:`tokens`).
        min_depth: The fewest tokens (>= 1).
        max_depth: The most tokens.
        single: Whether a token may be ``*`` (about half of them are).
        multi: Whether the last token may be ``>`` (in about half of them).
    """
    literal = _tokens_or_default(tokens)
    depth = draw(st.integers(max(1, min_depth), max_depth))
    parts = [
        "*" if single and draw(st.booleans()) else draw(literal) for _ in range(depth)
    ]
    if multi and draw(st.booleans()):
        parts[-1] = ">"
    if parts[0] == _RESERVED:
        parts[0] = "*"
    return ".".join(parts)


def subjects_matching(
    pattern: str,
    *,
    tokens: SearchStrategy[str] | None = None,
    max_tail: int = 3,
) -> SearchStrategy[str]:
    """Subjects that ``pattern`` matches.

    A token for each ``*``, 1 to ``max_tail`` tokens for a final ``>``.

    Raises:
        InvalidSubjectError: ``pattern`` breaks the grammar (at the call).
    """
    validate_pattern(pattern)
    return _subjects_matching(pattern, _tokens_or_default(tokens), max_tail)


@st.composite
def _subjects_matching(
    draw: st.DrawFn, pattern: str, literal: SearchStrategy[str], max_tail: int
) -> str:
    parts: list[str] = []
    for token in pattern.split("."):
        if token == "*":
            parts.append(draw(literal))
        elif token == ">":
            parts.extend(draw(st.lists(literal, min_size=1, max_size=max_tail)))
        else:
            parts.append(token)
    return ".".join(parts)


def patterns_matching(
    subject: str, *, single: bool = True, multi: bool = True
) -> SearchStrategy[str]:
    """Patterns that match ``subject``.

    Some of its tokens turned to ``*``, and perhaps its end (one token or
    more) to ``>``.

    Raises:
        InvalidSubjectError: ``subject`` is not a valid literal subject (at
            the call).
    """
    validate_subject(subject)
    return _patterns_matching(subject, single, multi)


@st.composite
def _patterns_matching(draw: st.DrawFn, subject: str, single: bool, multi: bool) -> str:
    parts = subject.split(".")
    pattern = ["*" if single and draw(st.booleans()) else part for part in parts]
    if multi and draw(st.booleans()):
        keep = draw(st.integers(0, len(parts) - 1))
        pattern = [*pattern[:keep], ">"]
    return ".".join(pattern)


def subjects_near(
    pattern: str,
    *,
    tokens: SearchStrategy[str] | None = None,
    max_tail: int = 3,
) -> SearchStrategy[str]:
    """Near misses: subjects ``pattern`` does not match, one step from one it does.

    A subject it matches, then one change: a literal token of the pattern
    replaced by another, one token too few, or (without a final ``>``) one
    too many. For properties such as "what should not arrive does not".

    Raises:
        InvalidSubjectError: ``pattern`` breaks the grammar (at the call).
        ValueError: ``pattern`` is ``>``, which matches every subject.
    """
    validate_pattern(pattern)
    if pattern == ">":
        raise ValueError("pattern '>' matches every subject: nothing is a near miss")
    return _subjects_near(pattern, _tokens_or_default(tokens), max_tail)


@st.composite
def _subjects_near(
    draw: st.DrawFn, pattern: str, literal: SearchStrategy[str], max_tail: int
) -> str:
    parts = draw(_subjects_matching(pattern, literal, max_tail)).split(".")
    wanted = pattern.split(".")
    literals = [i for i, token in enumerate(wanted) if token not in _WILDCARDS]
    changes = [
        *(["swap"] if literals else []),
        *(["short"] if len(wanted) > 1 else []),
        *(["long"] if wanted[-1] != ">" else []),
    ]
    change = draw(st.sampled_from(changes))
    if change == "swap":
        at = draw(st.sampled_from(literals))
        parts[at] = draw(literal.filter(lambda t: t not in (wanted[at], _RESERVED)))
    elif change == "short":
        parts = parts[: len(wanted) - 1]
    else:
        parts.append(draw(literal))
    return ".".join(parts)


def patterns_near(
    subject: str,
    *,
    tokens: SearchStrategy[str] | None = None,
    single: bool = True,
    multi: bool = True,
) -> SearchStrategy[str]:
    """Near misses: patterns that do not match ``subject``, one step from one that does.

    A pattern that matches it (see :func:`patterns_matching`), then one
    change: a token made a literal other than the subject's, one token too
    many, or (for a subject of two tokens or more) one too few.

    Raises:
        InvalidSubjectError: ``subject`` is not a valid literal subject (at
            the call).
    """
    validate_subject(subject)
    return _patterns_near(subject, _tokens_or_default(tokens), single, multi)


@st.composite
def _patterns_near(
    draw: st.DrawFn,
    subject: str,
    literal: SearchStrategy[str],
    single: bool,
    multi: bool,
) -> str:
    given = subject.split(".")
    changes = ["swap", "long", *(["short"] if len(given) > 1 else [])]
    change = draw(st.sampled_from(changes))
    if change == "swap":
        parts = draw(_patterns_matching(subject, single, multi)).split(".")
        at = draw(st.integers(0, len(parts) - 1))
        if parts[at] == ">":  # it stood for the rest: keep it after the change
            parts[at:] = [given[at], ">"]
        parts[at] = draw(literal.filter(lambda t: t not in (given[at], _RESERVED)))
    else:
        # Every token, or all but the last, as patterns_matching would make
        # them, without a final '>' (it would match a longer subject)
        whole = draw(_patterns_matching(subject, single, multi=False)).split(".")
        if change == "long":
            parts = [*whole, "*" if single and draw(st.booleans()) else draw(literal)]
        else:
            parts = whole[:-1]
    return ".".join(parts)


def reference_match(pattern: str, subject: str) -> bool:
    """Whether ``pattern`` matches ``subject`` by the NATS rules, plainly.

    Written apart from the broker's trie and cache, token by token, for
    tests to compare routing with. It does not check the grammar.
    """
    pattern_tokens = pattern.split(".")
    subject_tokens = subject.split(".")
    for index, token in enumerate(pattern_tokens):
        if token == ">" and index == len(pattern_tokens) - 1:
            return len(subject_tokens) > index
        if index >= len(subject_tokens):
            return False
        if token != "*" and token != subject_tokens[index]:
            return False
    return len(subject_tokens) == len(pattern_tokens)


def drain(sub: Subscription[T]) -> list[Message[T]]:
    """Take every message ``sub`` holds now, without waiting.

    Stops at the first that is not there, and at the end of the stream
    (closed, drained, cut off): what a test wants to look at after publishing.
    """
    taken: list[Message[T]] = []
    while True:
        try:
            taken.append(sub.receive_nowait())
        except (
            trio.WouldBlock,
            trio.EndOfChannel,
            trio.ClosedResourceError,
            SlowConsumerError,
        ):
            return taken


class Recording(Generic[T]):
    """What :func:`recorder` yields: every message on its pattern, in order."""

    def __init__(self, sub: Subscription[T]) -> None:
        self._sub = sub
        self._messages: list[Message[T]] = []
        self._dropped: int | None = None  # once the block has been left

    def _stop(self) -> None:
        """The block is being left: keep what the subscription holds."""
        self._messages.extend(drain(self._sub))
        self._dropped = self._sub.statistics().dropped

    @property
    def messages(self) -> list[Message[T]]:
        """The messages recorded so far (a new list each time).

        After the ``async with`` block, what it had recorded when it left.

        Raises:
            AssertionError: the recording's buffer overflowed and dropped
                some: raise ``max_buffer_size``, or read more often.
        """
        dropped = self._dropped
        if dropped is None:
            self._messages.extend(drain(self._sub))
            dropped = self._sub.statistics().dropped
        if dropped:
            raise AssertionError(
                f"the recorder on {self._sub.pattern!r} dropped {dropped} "
                "message(s): raise its max_buffer_size"
            )
        return list(self._messages)

    @property
    def payloads(self) -> list[T]:
        """The payloads of :attr:`messages`."""
        return [message.payload for message in self.messages]

    @property
    def subjects(self) -> list[str]:
        """The subjects of :attr:`messages`."""
        return [message.subject for message in self.messages]


@asynccontextmanager
async def recorder(
    broker: Broker[T], pattern: str, *, max_buffer_size: int = 100_000
) -> AsyncIterator[Recording[T]]:
    """Record every message on ``pattern`` for the body of an ``async with``.

    A subscription of its own (named ``recorder``) that nobody needs to read:
    :attr:`Recording.messages` takes what it holds when asked. It never makes a
    publisher wait; if it overflows, reading it raises instead of losing
    messages silently. The recording can be read after the block, as
    pytest's ``caplog`` is: it keeps what it had recorded when it left.
    """
    async with broker.subscribe(
        pattern, name="recorder", max_buffer_size=max_buffer_size
    ) as sub:
        recording = Recording(sub)
        try:
            yield recording
        finally:
            recording._stop()


class Serving(Generic[T]):
    """What :func:`serving` yields: the router at work, and what it gave up on."""

    def __init__(self, router: Router[T], dead: Recording[T] | None) -> None:
        self.router = router
        """The router it runs."""
        self._dead = dead

    async def idle(self, *, tick: float = 0.01) -> None:
        """Wait until the handlers hold nothing: every message has its outcome.

        Idle means no message in an attempt, in a retry's wait or waiting for
        its key, and none in the handlers' subscriptions. Checked whenever
        every task is blocked, and every ``tick`` seconds of the trio clock
        (retries wait on it; with an autojump clock, it costs no real time).
        A handler that never finishes keeps it waiting: bound it in trio's
        way, ``with trio.fail_after(seconds): await serving.idle()``.
        """
        names = {stats.name for stats in self.router.statistics()}
        while True:
            await trio.testing.wait_all_tasks_blocked()
            busy = any(stats.in_flight for stats in self.router.statistics())
            held = any(
                info.statistics.pending
                for info in self.router.broker.subscriptions()
                if info.name in names
            )
            if not busy and not held:
                return
            await trio.sleep(tick)

    @property
    def dead_letters(self) -> list[Message[T]]:
        """The dead letters published so far, in order.

        Raises:
            RuntimeError: :func:`serving` was not given ``dead_letter``.
        """
        if self._dead is None:
            raise RuntimeError("serving(router, dead_letter=PREFIX) records them")
        return self._dead.messages

    def statistics(self, name: str) -> HandlerStatistics:
        """The counters of the handler named ``name``.

        Raises:
            KeyError: no handler has that name.
        """
        for stats in self.router.statistics():
            if stats.name == name:
                return stats
        raise KeyError(name)


@asynccontextmanager
async def serving(
    router: Router[T], *, dead_letter: str | None = None
) -> AsyncIterator[Serving[T]]:
    """Run ``router`` for the body of an ``async with``; stop it at the end.

    The body starts once every handler is subscribed. Leaving the block
    calls :meth:`~trio_pubsub.Router.stop` and waits for what the handlers
    hold to be finished, as ``serve`` does. With ``dead_letter`` (the
    handlers' prefix), the dead letters on ``<dead_letter>.>`` are recorded
    (:attr:`Serving.dead_letters`).
    """
    async with (
        recorder(router.broker, f"{dead_letter}.>")
        if dead_letter is not None
        else _no_recording() as dead,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(router.serve)
        try:
            yield Serving(router, dead)
        finally:
            router.stop()


@asynccontextmanager
async def _no_recording() -> AsyncIterator[None]:
    yield None


def _tokens_or_default(
    strategy: SearchStrategy[str] | None,
) -> SearchStrategy[str]:
    return tokens() if strategy is None else strategy
