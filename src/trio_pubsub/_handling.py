"""What a handler's message goes through: middleware, and the built-in steps.

A middleware is an async callable ``(message, call_next)`` that calls
``await call_next(message)`` to go on (or does not, to skip it). The router
composes each handler's chain once, outermost first::

    dedupe -> dead letter -> retry -> the router's middleware
           -> the handler's middleware -> timeout -> the handler

The built-in steps are middleware like any other; they tell the router a
message's outcome by what they raise (:class:`Duplicate`, :class:`DeadLettered`,
:class:`GaveUp`), which only the router catches: the steps that raise them sit
outside every user middleware. A chain that returns handled the message.
"""

from __future__ import annotations

import math
import random
import typing
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import attrs
import trio

from ._log import RateLimitedWarning
from ._message import Message
from ._options import check_int

if typing.TYPE_CHECKING:
    from ._broker import Broker

T = TypeVar("T")

Handler: typing.TypeAlias = Callable[[Message[T]], Awaitable[None]]
"""An async callable taking one message; it handled it by returning."""

Middleware: typing.TypeAlias = Callable[
    [Message[T], Callable[[Message[T]], Awaitable[None]]], Awaitable[None]
]
"""An async callable ``(message, call_next)`` around a handler's attempts."""

# The headers a dead letter carries besides the original ones.
DEAD_HANDLER: typing.Final = "dead-letter-handler"
DEAD_ATTEMPTS: typing.Final = "dead-letter-attempts"
DEAD_ERROR_TYPE: typing.Final = "dead-letter-error-type"
DEAD_ERROR: typing.Final = "dead-letter-error"
DEAD_SUBJECT: typing.Final = "dead-letter-subject"
_MAX_ERROR = 500  # characters of the error's message kept in a dead letter

Outcome = typing.Literal[
    "handled", "failed", "dead_lettered", "duplicates", "handed_back"
]

T_co = TypeVar("T_co", covariant=True)


class Leased(typing.Protocol[T_co]):
    """A message lent by a durable source: settle it with one of its methods."""

    @property
    def message(self) -> Message[T_co]:
        """The message."""
        ...

    @property
    def deliveries(self) -> int:
        """How many times the source has delivered it, this one included."""
        ...

    async def ack(self) -> None:
        """Done: never again."""

    async def nak(self, delay: float | None = None) -> None:
        """Again, after ``delay`` seconds."""

    async def term(self) -> None:
        """Given up on: never again."""

    async def in_progress(self) -> None:
        """Still at work on it: do not deliver it again yet."""


class Source(typing.Protocol[T]):
    """Where a handler takes its messages from instead of a subscription.

    (``trio_pubsub.nats.Consumer``, a durable JetStream consumer.)
    """

    @property
    def pattern(self) -> str:
        """What it delivers."""
        ...

    @property
    def ack_wait(self) -> float:
        """Seconds it waits for a settlement before delivering again."""
        ...

    def __aiter__(self) -> typing.AsyncIterator[Leased[T]]:
        """Its messages, as they come."""
        ...

    async def dead_letter(
        self, subject: str, payload: T, headers: typing.Mapping[str, str]
    ) -> None:
        """Keep a message given up on, durably, on ``subject``."""


def _attempts(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    check_int(attribute.name, value)


def _seconds(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or value < 0
    ):
        raise ValueError(
            f"{attribute.name} must be a number of seconds >= 0, not {value!r}"
        )


def _retry_on(_: object, attribute: attrs.Attribute[typing.Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(
        isinstance(kind, type) and issubclass(kind, Exception) for kind in value
    ):
        raise TypeError(f"retry_on must be a tuple of Exception classes, not {value!r}")


@attrs.frozen
class Retry:
    """How a handler retries a message whose attempt failed.

    The delay before attempt ``n + 1`` is ``backoff * 2 ** (n - 1)`` seconds,
    at most ``max_backoff``; with ``jitter``, a random point in its upper half
    (so that many failing handlers do not retry in step). Delays run on the
    trio clock.

    Args:
        attempts: How many attempts in all (an int >= 1; 1: no retry).
        backoff: The first delay, in seconds (>= 0).
        max_backoff: The longest delay, in seconds (>= ``backoff``).
        jitter: Whether each delay is drawn from its upper half.
        retry_on: The exceptions that are retried; any other ends the
            message's attempts at once.

    Raises:
        TypeError, ValueError: a value is of the wrong type or out of range.
    """

    attempts: int = attrs.field(default=3, validator=_attempts)
    backoff: float = attrs.field(default=0.1, validator=_seconds)
    max_backoff: float = attrs.field(default=30.0, validator=_seconds)
    jitter: bool = attrs.field(
        default=True, validator=attrs.validators.instance_of(bool)
    )
    retry_on: tuple[type[BaseException], ...] = attrs.field(
        default=(Exception,), validator=_retry_on
    )

    def __attrs_post_init__(self) -> None:
        if self.max_backoff < self.backoff:
            raise ValueError(
                f"max_backoff ({self.max_backoff!r}) must be >= backoff "
                f"({self.backoff!r})"
            )

    def delay(self, attempt: int, draw: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1)."""
        full = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return full * (0.5 + draw() / 2) if self.jitter else full


def _header(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{attribute.name} must be a non-empty str, not {value!r}")


def _positive(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    _seconds(_, attribute, value)
    if typing.cast("float", value) <= 0:
        raise ValueError(f"{attribute.name} must be > 0, not {value!r}")


@attrs.frozen
class Dedupe:
    """Skip repeats: a message whose ``header`` value was handled lately.

    A value is remembered once a message carrying it was handled (its
    handler returned), for ``max_age`` seconds of the trio clock and among
    the latest ``max_entries`` values: the window is bounded both ways. A
    message without the header is handled as usual. A repeat that arrives
    while the first is in an attempt waits for that one's outcome.

    The defaults: 10,000 values, 120 seconds (JetStream's default duplicate
    window is two minutes too).

    Args:
        header: The header whose value identifies a message.
        max_entries: How many values the window holds (an int >= 1).
        max_age: How long a value is remembered, in seconds (> 0).
    """

    header: str = attrs.field(validator=_header)
    max_entries: int = attrs.field(default=10_000, validator=_attempts)
    max_age: float = attrs.field(default=120.0, validator=_positive)


@attrs.frozen(kw_only=True)
class HandlerStatistics:
    """A snapshot of one handler's counters (:meth:`Router.statistics`).

    ``received == handled + failed + dead_lettered + duplicates + in_flight``
    at every moment.
    """

    name: str
    """The handler's name."""
    received: int
    """Messages taken from its subscription."""
    handled: int
    """Messages an attempt handled (the handler returned)."""
    retried: int
    """Attempts after the first (not messages)."""
    failed: int
    """Messages given up on without a dead letter, or cancelled."""
    dead_lettered: int
    """Messages given up on and published on the dead letters' subject."""
    duplicates: int
    """Messages skipped as repeats (``dedupe``)."""
    in_flight: int
    """Messages taken and not yet finished."""


class Counters:
    """One handler's counters, its name and its rate-limited warnings."""

    __slots__ = (
        "dead_lettered",
        "duplicates",
        "failed",
        "handled",
        "in_flight",
        "name",
        "received",
        "retried",
        "warn",
        "warn_retry",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.received = self.handled = self.retried = self.failed = 0
        self.dead_lettered = self.duplicates = self.in_flight = 0
        # two sources: a flood of retried attempts hides no message given up on
        self.warn = RateLimitedWarning()
        self.warn_retry = RateLimitedWarning()

    def take(self) -> None:
        """A message is taken: received, and in flight until :meth:`settle`."""
        self.received += 1
        self.in_flight += 1

    def settle(self, outcome: Outcome) -> None:
        """One message in flight has its outcome.

        The one place that keeps the law: a message leaves ``in_flight`` for
        exactly one outcome counter. A delivery handed back to its source for
        a retry (``handed_back``) is counted in ``retried`` and no longer in
        ``received``: its redelivery will be.
        """
        self.in_flight -= 1
        if outcome == "handled":
            self.handled += 1
        elif outcome == "failed":
            self.failed += 1
        elif outcome == "dead_lettered":
            self.dead_lettered += 1
        elif outcome == "duplicates":
            self.duplicates += 1
        else:
            self.received -= 1
            self.retried += 1

    def statistics(self) -> HandlerStatistics:
        return HandlerStatistics(
            name=self.name,
            received=self.received,
            handled=self.handled,
            retried=self.retried,
            failed=self.failed,
            dead_lettered=self.dead_lettered,
            duplicates=self.duplicates,
            in_flight=self.in_flight,
        )

    def log(
        self,
        what: str,
        message: Message[typing.Any],
        attempt: int,
        error: BaseException,
        *,
        retried: bool = False,
    ) -> None:
        """One structured, rate-limited line about ``message``'s attempt."""
        warn = self.warn_retry if retried else self.warn
        warn(
            "handler %r: %s (subject %r, attempt %d): %s: %s",
            self.name,
            what,
            message.subject,
            attempt,
            type(error).__name__,
            error,
            extra={
                "handler": self.name,
                "subject": message.subject,
                "attempt": attempt,
                "error_type": type(error).__qualname__,
            },
        )


# -- outcomes the built-in steps raise, and only the router catches ----------


class Duplicate(Exception):
    """The message repeats one handled within the dedupe window."""


class DeadLettered(Exception):
    """The message was given up on and published as a dead letter."""


class GaveUp(Exception):
    """The message's last attempt failed with ``error`` after ``attempts``."""

    def __init__(self, error: Exception, attempts: int) -> None:
        super().__init__(error, attempts)
        self.error = error
        self.attempts = attempts


def dead_headers(
    message: Message[typing.Any], name: str, attempts: int, error: Exception
) -> dict[str, str]:
    """A dead letter's headers: the message's own, and the ``dead-letter-*`` ones."""
    return {
        **message.headers,
        DEAD_HANDLER: name,
        DEAD_ATTEMPTS: str(attempts),
        DEAD_ERROR_TYPE: type(error).__qualname__,
        DEAD_ERROR: str(error)[:_MAX_ERROR],
        DEAD_SUBJECT: message.subject,
    }


def failure(error: Exception) -> tuple[Exception, int]:
    """The error and the attempts made, from what a chain raised."""
    if isinstance(error, GaveUp):
        return error.error, error.attempts
    return error, 1


# -- the built-in steps --------------------------------------------------------


def retrying(retry: Retry, counters: Counters) -> Middleware[typing.Any]:
    """Retry failed attempts as ``retry`` says; raise :class:`GaveUp` at the end."""

    async def retry_step(
        message: Message[typing.Any],
        call_next: Callable[[Message[typing.Any]], Awaitable[None]],
    ) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await call_next(message)
            except Exception as error:
                if not isinstance(error, retry.retry_on) or attempt >= retry.attempts:
                    raise GaveUp(error, attempt) from error
                counters.log(
                    "attempt failed, retried", message, attempt, error, retried=True
                )
                counters.retried += 1
                await trio.sleep(retry.delay(attempt))
            else:
                return

    return retry_step


def timing_out(seconds: float) -> Middleware[typing.Any]:
    """Cancel an attempt that takes longer than ``seconds``: ``TooSlowError``.

    (``trio.fail_after`` written out: a cancel scope alone, without the
    generator of a context manager around it, costs half as much.)
    """

    async def timeout_step(
        message: Message[typing.Any],
        call_next: Callable[[Message[typing.Any]], Awaitable[None]],
    ) -> None:
        with trio.CancelScope(deadline=trio.current_time() + seconds) as scope:
            await call_next(message)
        if scope.cancelled_caught:
            raise trio.TooSlowError

    return timeout_step


def dead_lettering(
    broker: Broker[typing.Any], prefix: str, counters: Counters
) -> Middleware[typing.Any]:
    """Publish a message given up on as ``<prefix>.<subject>``: :class:`DeadLettered`.

    If the dead letter cannot be published (the broker closed, say), the
    message's failure goes on to the router, which counts it as failed.
    """

    async def dead_letter_step(
        message: Message[typing.Any],
        call_next: Callable[[Message[typing.Any]], Awaitable[None]],
    ) -> None:
        try:
            await call_next(message)
        except Exception as raised:
            error, attempts = failure(raised)
            headers = dead_headers(message, counters.name, attempts, error)
            try:
                await broker.publish(
                    f"{prefix}.{message.subject}", message.payload, headers=headers
                )
            except Exception as unsent:
                counters.log(
                    f"could not publish its dead letter ({unsent!r})",
                    message,
                    attempts,
                    error,
                )
                raise raised from unsent
            counters.log(f"given up, sent to {prefix!r}", message, attempts, error)
            raise DeadLettered from error

    return dead_letter_step


class _Window:
    """The values handled lately, oldest first, bounded by count and age.

    ``running`` holds the values in an attempt now; a repeat that finds its
    value there makes the event it waits on (none is made otherwise).
    """

    def __init__(self, dedupe: Dedupe) -> None:
        self.max_entries = dedupe.max_entries
        self.max_age = dedupe.max_age
        self.handled_at: dict[str, float] = {}  # (insertion order: oldest first)
        self.running: dict[str, trio.Event | None] = {}

    def forget_old(self, now: float) -> None:
        handled_at, oldest = self.handled_at, now - self.max_age
        while handled_at:
            first = next(iter(handled_at))
            if len(handled_at) <= self.max_entries and handled_at[first] > oldest:
                return
            del handled_at[first]

    async def wait_for(self, value: str) -> None:
        """Wait while ``value`` is in an attempt (its outcome decides)."""
        while value in self.running:
            event = self.running[value]
            if event is None:
                event = self.running[value] = trio.Event()
            await event.wait()

    def finish(self, value: str, handled: bool) -> None:
        event = self.running.pop(value)
        if handled:
            now = trio.current_time()
            self.handled_at.pop(value, None)  # (to the end: the newest)
            self.handled_at[value] = now
            self.forget_old(now)
        if event is not None:
            event.set()


def deduplicating(dedupe: Dedupe) -> Middleware[typing.Any]:
    """Skip a message whose ``dedupe.header`` value was handled lately."""
    window = _Window(dedupe)
    header = dedupe.header

    async def dedupe_step(
        message: Message[typing.Any],
        call_next: Callable[[Message[typing.Any]], Awaitable[None]],
    ) -> None:
        value = message.headers.get(header)
        if value is None:
            await call_next(message)
            return
        if value in window.running:
            await window.wait_for(value)
        if value in window.handled_at:
            window.forget_old(trio.current_time())
            if value in window.handled_at:
                raise Duplicate(value)
        window.running[value] = None
        handled = False
        try:
            await call_next(message)
            handled = True
        finally:
            window.finish(value, handled)

    return dedupe_step


class _Bound(Generic[T]):
    """``call_next`` for one middleware: the rest of the chain."""

    __slots__ = ("middleware", "rest")

    def __init__(self, middleware: Middleware[T], rest: Handler[T]) -> None:
        self.middleware = middleware
        self.rest = rest

    def __call__(self, message: Message[T]) -> Awaitable[None]:
        return self.middleware(message, self.rest)


def chain(handler: Handler[T], middleware: list[Middleware[T]]) -> Handler[T]:
    """``handler`` wrapped in ``middleware``, the first one outermost."""
    call = handler
    for step in reversed(middleware):
        call = _Bound(step, call)
    return call
