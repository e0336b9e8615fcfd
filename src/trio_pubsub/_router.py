"""Router: handlers that finish the job, on the broker's public API alone.

A handler is an async callable taking one message. The router gives each
handler a subscription of its own (``BLOCK`` by default: a handler must not
lose what it was given), takes messages from it, and runs each through its
attempts: a failed attempt is retried after an exponential, capped, jittered
delay on the trio clock (:class:`Retry`); ``timeout`` bounds each attempt;
after the last failed attempt the message goes to the dead letters
(``dead_letter``), or is counted as failed. Every outcome is counted, and
``received == handled + failed + dead_lettered + duplicates + in_flight``
holds at every moment.
"""

from __future__ import annotations

import math
import random
import typing
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import attrs
import trio

from ._broker import Broker  # noqa: TC001 (the API reference resolves it)
from ._log import RateLimitedWarning
from ._message import Message
from ._options import check_int, check_name, check_timeout
from ._policy import OverflowPolicy
from ._subject import validate_pattern, validate_subject

T = TypeVar("T")

Handler = Callable[[Message[T]], Awaitable[None]]

# The headers a dead letter carries besides the original ones.
DEAD_HANDLER: typing.Final = "dead-letter-handler"
DEAD_ATTEMPTS: typing.Final = "dead-letter-attempts"
DEAD_ERROR_TYPE: typing.Final = "dead-letter-error-type"
DEAD_ERROR: typing.Final = "dead-letter-error"
DEAD_SUBJECT: typing.Final = "dead-letter-subject"
_MAX_ERROR = 500  # characters of the error's message kept in a dead letter


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


NO_RETRY: typing.Final = Retry(attempts=1, backoff=0.0, max_backoff=0.0)


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
    """Messages skipped as repeats (always 0 until ``dedupe`` exists)."""
    in_flight: int
    """Messages taken and not yet finished."""


class _Handler(Generic[T]):
    """One registered handler, its options and its counters."""

    def __init__(
        self,
        fn: Handler[T],
        pattern: str,
        *,
        name: str,
        queue: str | None,
        concurrency: int,
        retry: Retry,
        timeout: float | None,
        dead_letter: str | None,
        max_buffer_size: int | None,
        policy: OverflowPolicy,
    ) -> None:
        self.fn = fn
        self.pattern = pattern
        self.name = name
        self.queue = queue
        self.concurrency = concurrency
        self.retry = retry
        self.timeout = timeout
        self.dead_letter = dead_letter
        self.max_buffer_size = max_buffer_size
        self.policy = policy
        self.received = self.handled = self.retried = 0
        self.failed = self.dead_lettered = self.in_flight = 0
        self.warn = RateLimitedWarning()

    def settle(
        self, outcome: typing.Literal["handled", "failed", "dead_lettered"]
    ) -> None:
        """One message in flight has its outcome.

        The one place that keeps the law: a message leaves ``in_flight`` for
        exactly one outcome counter.
        """
        self.in_flight -= 1
        if outcome == "handled":
            self.handled += 1
        elif outcome == "dead_lettered":
            self.dead_lettered += 1
        else:
            self.failed += 1

    def statistics(self) -> HandlerStatistics:
        return HandlerStatistics(
            name=self.name,
            received=self.received,
            handled=self.handled,
            retried=self.retried,
            failed=self.failed,
            dead_lettered=self.dead_lettered,
            duplicates=0,
            in_flight=self.in_flight,
        )


class Router(Generic[T]):
    """Handlers for the messages of ``broker``, with retries and dead letters.

    Register handlers with :meth:`handler`, then run them with ``await
    nursery.start(router.serve)``; :meth:`stop` ends them once what they
    were given is done.
    """

    def __init__(self, broker: Broker[T]) -> None:
        self._broker = broker
        self._handlers: list[_Handler[T]] = []
        self._subscriptions: list[typing.Any] = []
        self._serving = False
        self._stopping = False

    def handler(
        self,
        pattern: str,
        *,
        name: str | None = None,
        queue: str | None = None,
        concurrency: int = 1,
        retry: Retry | None = None,
        timeout: float | None = None,
        dead_letter: str | None = None,
        max_buffer_size: int | None = None,
        policy: OverflowPolicy = OverflowPolicy.BLOCK,
    ) -> Callable[[Handler[T]], Handler[T]]:
        """Register the decorated async function as a handler of ``pattern``.

        Args:
            pattern: What its subscription listens on.
            name: Its name, in statistics, logs and dead letters (default: the
                function's qualified name); names are unique in a router.
            queue: A queue group to join, as for ``subscribe``.
            concurrency: How many messages it handles at once (int >= 1).
            retry: How failed attempts are retried (default: not at all).
            timeout: The longest an attempt may take, in seconds (> 0); one
                that takes longer is cancelled and counts as failed
                (``trio.TooSlowError``). ``None``: no limit.
            dead_letter: A subject prefix: a message given up on is published
                on ``<dead_letter>.<its subject>``, with its payload and
                headers and the ``dead-letter-*`` headers. ``None``: it is
                counted as ``failed`` and logged.
            max_buffer_size: Its subscription's buffer (``None``: the broker's).
            policy: Its subscription's policy (``BLOCK`` by default).

        Returns:
            The decorator, which returns the function unchanged.

        Raises:
            TypeError, ValueError, InvalidSubjectError: a bad option, or the
                name is taken; checked here, at the call.
            RuntimeError: the router is serving already.
        """
        validate_pattern(pattern)
        if dead_letter is not None:
            validate_subject(dead_letter)
        check_int("concurrency", concurrency)
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be a trio_pubsub.Retry, not {retry!r}")
        seconds = check_timeout("timeout", timeout)
        checked_name = check_name(name)
        if self._serving:
            raise RuntimeError("handlers are registered before serve() starts")

        def register(fn: Handler[T]) -> Handler[T]:
            label = checked_name or str(getattr(fn, "__qualname__", repr(fn)))
            if any(known.name == label for known in self._handlers):
                raise ValueError(f"a handler named {label!r} is registered already")
            self._handlers.append(
                _Handler(
                    fn,
                    pattern,
                    name=label,
                    queue=queue,
                    concurrency=concurrency,
                    retry=NO_RETRY if retry is None else retry,
                    timeout=seconds,
                    dead_letter=dead_letter,
                    max_buffer_size=max_buffer_size,
                    policy=policy,
                )
            )
            return fn

        return register

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the handlers until :meth:`stop` and what they hold is done.

        Use ``await nursery.start(router.serve)``: it returns once every
        handler's subscription is entered. Cancelling it cancels the attempts
        in flight; each message cancelled so is counted as ``failed``. A
        router serves once.

        Raises:
            RuntimeError: it is serving, or has served, already.
        """
        if self._serving:
            raise RuntimeError("this router is serving already")
        self._serving = True
        try:
            async with trio.open_nursery() as nursery:
                for handler in self._handlers:
                    await nursery.start(self._run, handler)
                task_status.started()
        finally:
            self._subscriptions.clear()

    def stop(self) -> None:
        """Take no new messages; let ``serve`` return once what is held is done.

        Idempotent; before ``serve`` has started, it makes ``serve`` return
        at once after subscribing.
        """
        self._stopping = True
        for sub in self._subscriptions:
            sub.drain()

    def statistics(self) -> tuple[HandlerStatistics, ...]:
        """A snapshot of each handler's counters, in registration order."""
        return tuple(handler.statistics() for handler in self._handlers)

    async def _run(
        self, handler: _Handler[T], *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Take the handler's messages and run each through its attempts."""
        limiter = trio.CapacityLimiter(handler.concurrency)
        async with (
            self._broker.subscribe(
                handler.pattern,
                queue=handler.queue,
                max_buffer_size=handler.max_buffer_size,
                policy=handler.policy,
                name=handler.name,
            ) as sub,
            trio.open_nursery() as workers,
        ):
            self._subscriptions.append(sub)
            if self._stopping:
                sub.drain()
            task_status.started()
            async for message in sub:
                handler.received += 1
                handler.in_flight += 1
                slot = object()  # (messages compare by value: not a borrower)
                try:
                    await limiter.acquire_on_behalf_of(slot)
                except BaseException:
                    handler.settle("failed")  # cancelled before its first attempt
                    raise
                workers.start_soon(self._handle, handler, message, limiter, slot)

    async def _handle(
        self,
        handler: _Handler[T],
        message: Message[T],
        limiter: trio.CapacityLimiter,
        slot: object,
    ) -> None:
        """Every attempt for ``message``, then its one outcome."""
        try:
            await self._attempts(handler, message)
        except BaseException:
            handler.settle("failed")  # cancelled (or interrupted) before an outcome
            raise
        finally:
            limiter.release_on_behalf_of(slot)

    async def _attempts(self, handler: _Handler[T], message: Message[T]) -> None:
        retry = handler.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                if handler.timeout is None:
                    await handler.fn(message)
                else:
                    with trio.fail_after(handler.timeout):
                        await handler.fn(message)
            except Exception as error:
                if isinstance(error, retry.retry_on) and attempt < retry.attempts:
                    handler.retried += 1
                    await trio.sleep(retry.delay(attempt))
                    continue
                await self._give_up(handler, message, attempt, error)
                return
            handler.settle("handled")
            return

    async def _give_up(
        self, handler: _Handler[T], message: Message[T], attempts: int, error: Exception
    ) -> None:
        """The last attempt failed: a dead letter, or a failure, logged."""
        if handler.dead_letter is None:
            handler.settle("failed")
            handler.warn(
                "handler %r gave up on a message on %r after %d attempt(s): %s: %s",
                handler.name,
                message.subject,
                attempts,
                type(error).__name__,
                error,
            )
            return
        headers = {
            **message.headers,
            DEAD_HANDLER: handler.name,
            DEAD_ATTEMPTS: str(attempts),
            DEAD_ERROR_TYPE: type(error).__qualname__,
            DEAD_ERROR: str(error)[:_MAX_ERROR],
            DEAD_SUBJECT: message.subject,
        }
        try:
            await self._broker.publish(
                f"{handler.dead_letter}.{message.subject}",
                message.payload,
                headers=headers,
            )
        except Exception as failure:
            handler.settle("failed")
            handler.warn(
                "handler %r could not publish a dead letter for %r: %s",
                handler.name,
                message.subject,
                failure,
            )
            return
        handler.settle("dead_lettered")
        handler.warn(
            "handler %r sent a message on %r to %r after %d attempt(s): %s: %s",
            handler.name,
            message.subject,
            handler.dead_letter,
            attempts,
            type(error).__name__,
            error,
        )
