"""Router: handlers that finish the job, on the broker's public API alone.

A handler is an async callable taking one message. The router gives each
handler a subscription of its own (``BLOCK`` by default: a handler must not
lose what it was given) and workers that take messages from it and run each
through the handler's chain (:mod:`._handling`): deduplication, dead letters,
retries, middleware, a timeout per attempt. Every outcome is counted, and
``received == handled + failed + dead_lettered + duplicates + in_flight``
holds at every moment.

The router's own code is protected from Ctrl-C (trio delivers it at the next
checkpoint instead), so that an interrupt cannot fall between taking a
message and counting it, nor between a nursery's body and its exit; the
chain, handlers included, runs unprotected, as any code does.
"""

from __future__ import annotations

import collections
import typing
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import trio
from trio.lowlevel import disable_ki_protection, enable_ki_protection

from ._broker import Broker  # noqa: TC001 (the API reference resolves it)
from ._errors import SlowConsumerError
from ._handling import (
    Counters,
    DeadLettered,
    Dedupe,
    Duplicate,
    Handler,
    HandlerStatistics,
    Leased,
    Middleware,
    Outcome,
    Retry,
    Source,
    chain,
    dead_headers,
    dead_lettering,
    deduplicating,
    failure,
    retrying,
    timing_out,
)
from ._message import Message
from ._options import check_int, check_name, check_timeout
from ._policy import OverflowPolicy
from ._subject import validate_pattern, validate_subject

if typing.TYPE_CHECKING:
    from ._subscription import Subscription

T = TypeVar("T")

Key = Callable[[Message[T]], Hashable]

_DEAD_LETTER_PAUSE = 30.0  # seconds before a message whose dead letter failed is back


@disable_ki_protection
async def _attempt(run: Handler[T], counters: Counters, message: Message[T]) -> Outcome:
    """Run ``message`` through its chain: its outcome (Ctrl-C as anywhere)."""
    try:
        await run(message)
    except Duplicate:
        return "duplicates"
    except DeadLettered:
        return "dead_lettered"
    except Exception as raised:
        error, attempts = failure(raised)
        counters.log("given up", message, attempts, error)
        return "failed"
    return "handled"


class _Handler(Generic[T]):
    """One registered handler: its options and its counters."""

    def __init__(
        self,
        fn: Handler[T],
        pattern: str,
        *,
        name: str,
        queue: str | None,
        concurrency: int,
        key: Key[T] | None,
        retry: Retry | None,
        timeout: float | None,
        dead_letter: str | None,
        dedupe: Dedupe | None,
        middleware: list[Middleware[T]],
        max_buffer_size: int | None,
        policy: OverflowPolicy,
        source: Source[T] | None = None,
    ) -> None:
        self.fn = fn
        self.source = source
        self.pattern = pattern
        self.queue = queue
        self.concurrency = concurrency
        self.key = key
        self.retry = retry
        self.timeout = timeout
        self.dead_letter = dead_letter
        self.dedupe = dedupe
        self.middleware = middleware
        self.max_buffer_size = max_buffer_size
        self.policy = policy
        self.counters = Counters(name)

    @property
    def name(self) -> str:
        return self.counters.name

    def build(self, broker: Broker[T], shared: list[Middleware[T]]) -> Handler[T]:
        """The handler's chain, outermost step first (see :mod:`._handling`)."""
        steps: list[Middleware[T]] = []
        if self.dedupe is not None:
            steps.append(deduplicating(self.dedupe))
        durable = self.source is not None  # (it retries and keeps dead letters)
        if self.dead_letter is not None and not durable:
            steps.append(dead_lettering(broker, self.dead_letter, self.counters))
        if self.retry is not None and self.retry.attempts > 1 and not durable:
            steps.append(retrying(self.retry, self.counters))
        steps += shared
        steps += self.middleware
        if self.timeout is not None:
            steps.append(timing_out(self.timeout))
        return chain(self.fn, steps)


class Router(Generic[T]):
    """Handlers for the messages of ``broker``, with retries and dead letters.

    Register handlers with :meth:`handler`, then run them with ``await
    nursery.start(router.serve)``; :meth:`stop` ends them once what they
    were given is done.
    """

    def __init__(self, broker: Broker[T]) -> None:
        self._broker = broker
        self._handlers: list[_Handler[T]] = []
        self._wrappers: list[Callable[[str], Middleware[T]]] = []
        self._subscriptions: list[Subscription[T]] = []
        self._readers: list[trio.CancelScope] = []  # of source= handlers
        self._serving = False
        self._stopping = False

    @property
    def broker(self) -> Broker[T]:
        """The broker whose messages the handlers take."""
        return self._broker

    def use(self, wrap: Callable[[str], Middleware[T]]) -> None:
        """Run middleware around every attempt of every handler.

        ``wrap`` is called once per handler, with the handler's name, when
        :meth:`serve` starts, and returns that handler's middleware (so a
        step that logs or measures knows whose attempt it sees). Router-wide
        middleware runs outside each handler's own ``middleware``, in the
        order of the calls. The metrics extras use it.

        Raises:
            TypeError: ``wrap`` is not callable.
            RuntimeError: the router is serving already.
        """
        if not callable(wrap):
            raise TypeError(
                f"use() takes a function of a handler's name that returns its "
                f"middleware, not {wrap!r}"
            )
        self._check_not_serving()
        self._wrappers.append(wrap)

    def handler(
        self,
        pattern: str | None = None,
        *,
        source: Source[T] | None = None,
        name: str | None = None,
        queue: str | None = None,
        concurrency: int = 1,
        key: Key[T] | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        dead_letter: str | None = None,
        dedupe: str | Dedupe | None = None,
        middleware: typing.Sequence[Middleware[T]] = (),
        max_buffer_size: int | None = None,
        policy: OverflowPolicy = OverflowPolicy.BLOCK,
    ) -> Callable[[Handler[T]], Handler[T]]:
        """Register the decorated async function as a handler of ``pattern``.

        Args:
            pattern: What its subscription listens on.
            source: Instead of a subscription, a durable source
                (``trio_pubsub.nats.Consumer``): the handler takes its
                messages, acks each it handled, naks a failed one with the
                ``retry`` delay (the source's delivery count is the attempt,
                so retries survive a crash), and after the last attempt
                publishes the dead letter through the source (durably), then
                terminates the message. While an attempt runs, it tells the
                source every third of its ``ack_wait`` that it is still at
                work. A delivery handed back for a retry counts in
                ``retried`` and no longer in ``received``. ``queue``, ``key``,
                ``max_buffer_size`` and ``policy`` do not apply.
            name: Its name, in statistics, logs and dead letters (default: the
                function's qualified name); names are unique in a router.
            queue: A queue group to join, as for ``subscribe``.
            concurrency: How many messages it handles at once (int >= 1).
            key: A function of a message: messages with equal keys are
                handled one at a time, in the order they arrived, retries
                included; different keys concurrently, up to ``concurrency``.
                Besides its subscription's buffer, the handler then holds up
                to ``max(concurrency, max_buffer_size)`` messages waiting for
                their key; when that many wait, it takes no more, and ``BLOCK``
                pushes back on publishers. A key function that raises fails
                its message (counted, logged). With ``concurrency=1`` every
                message is handled in arrival order anyway, and the key is
                not computed.
            retry: How failed attempts are retried (default: not at all).
            timeout: The longest an attempt of the handler may take, in
                seconds (> 0); one that takes longer is cancelled and fails
                with ``trio.TooSlowError``. ``None``: no limit.
            dead_letter: A subject prefix: a message given up on is published
                on ``<dead_letter>.<its subject>``, with its payload and
                headers and the ``dead-letter-*`` headers. ``None``: it is
                counted as ``failed`` and logged.
            dedupe: A header name, or a :class:`Dedupe` for its window: a
                message whose value there was handled within the window is
                skipped and counted in ``duplicates``.
            middleware: Async callables ``(message, call_next)`` around each
                attempt, the first outermost (inside the router's own).
            max_buffer_size: Its subscription's buffer (``None``: the broker's).
            policy: Its subscription's policy (``BLOCK`` by default).

        Returns:
            The decorator, which returns the function unchanged.

        Raises:
            TypeError, ValueError, InvalidSubjectError: a bad option, or the
                name is taken; checked here, at the call.
            RuntimeError: the router is serving already.
        """
        if (pattern is None) == (source is None):
            raise TypeError("give a handler a pattern or a source=, one of them")
        if source is not None:
            _check_source(source, queue, key, max_buffer_size, policy)
            pattern = source.pattern
        assert pattern is not None
        validate_pattern(pattern)
        if dead_letter is not None:
            validate_subject(dead_letter)
        check_int("concurrency", concurrency)
        if key is not None and not callable(key):
            raise TypeError(f"key must be a function of a message, not {key!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be a trio_pubsub.Retry, not {retry!r}")
        if isinstance(dedupe, str):
            dedupe = Dedupe(dedupe)
        elif dedupe is not None and not isinstance(dedupe, Dedupe):
            raise TypeError(
                f"dedupe must be a header name, a trio_pubsub.Dedupe or None, "
                f"not {dedupe!r}"
            )
        steps = list(typing.cast("typing.Iterable[object]", middleware))
        if not all(callable(step) for step in steps):
            raise TypeError(
                f"middleware must be a sequence of async callables, not {middleware!r}"
            )
        seconds = check_timeout("timeout", timeout)
        checked_name = check_name(name)
        self._check_not_serving()

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
                    key=key,
                    retry=retry,
                    timeout=seconds,
                    dead_letter=dead_letter,
                    dedupe=dedupe,
                    middleware=typing.cast("list[Middleware[T]]", steps),
                    max_buffer_size=max_buffer_size,
                    policy=policy,
                    source=source,
                )
            )
            return fn

        return register

    def _check_not_serving(self) -> None:
        if self._serving:
            raise RuntimeError("handlers are registered before serve() starts")

    @enable_ki_protection
    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the handlers until :meth:`stop` and what they hold is done.

        Use ``await nursery.start(router.serve)``: it returns once every
        handler's subscription is entered. Cancelling it cancels the attempts
        in flight; each message cancelled so, and each one waiting for its
        key, is counted as ``failed``. A router serves once. It also returns
        when the broker closes and the handlers have finished what they hold.

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
        for reading in self._readers:
            reading.cancel()

    def statistics(self) -> tuple[HandlerStatistics, ...]:
        """A snapshot of each handler's counters, in registration order."""
        return tuple(handler.counters.statistics() for handler in self._handlers)

    @enable_ki_protection
    async def _run(
        self, handler: _Handler[T], *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Subscribe for the handler, then run its workers until the end."""
        shared = [wrap(handler.name) for wrap in self._wrappers]
        run = handler.build(self._broker, shared)
        if handler.source is not None:
            task_status.started()
            await _from_source(handler, handler.source, run, self)
            return
        async with self._broker.subscribe(
            handler.pattern,
            queue=handler.queue,
            max_buffer_size=handler.max_buffer_size,
            policy=handler.policy,
            name=handler.name,
        ) as sub:
            self._subscriptions.append(sub)
            if self._stopping:
                sub.drain()
            task_status.started()
            counters = handler.counters
            if handler.key is not None and handler.concurrency > 1:
                await _by_key(handler.key, handler.concurrency, sub, run, counters)
            elif handler.concurrency == 1:  # (in order already: a key adds nothing)
                await _work(sub, run, counters)
            else:
                async with trio.open_nursery() as workers:
                    for _ in range(handler.concurrency):
                        workers.start_soon(_work, sub, run, counters)


def _cut_off(counters: Counters, sub: Subscription[typing.Any]) -> None:
    counters.warn(
        "handler %r: its subscription was cut off (%s policy); it takes no more",
        counters.name,
        sub.policy.name,
    )


@enable_ki_protection
async def _work(sub: Subscription[T], run: Handler[T], counters: Counters) -> None:
    """Take messages from ``sub`` and settle each, until it ends."""
    try:
        async for message in sub:
            counters.take()
            try:
                outcome = await _attempt(run, counters, message)
            except BaseException:
                counters.settle("failed")  # cancelled, or interrupted
                raise
            counters.settle(outcome)
    except SlowConsumerError:
        _cut_off(counters, sub)


class _Keys(Generic[T]):
    """What a handler with ``key=`` holds: each key's messages, in order.

    ``waiting`` holds each key that has messages taken and not settled: the
    first one of a key is in an attempt, the others wait behind it. A key is
    handed to a worker (put in ``ready``) once, when it starts waiting; that
    worker handles its messages until none is left. ``held`` counts the
    messages in ``waiting``; the reader takes no more while ``hold`` are.
    """

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.held = 0
        self.waiting: dict[Hashable, collections.deque[Message[T]]] = {}
        self.room: trio.Event | None = None  # set when held falls below hold
        self.ready: collections.deque[Hashable] = collections.deque()
        self.idle = trio.lowlevel.ParkingLot()  # workers with no key to handle
        self.done = False  # the reader has finished: idle workers end

    def hand_over(self, label: Hashable) -> None:
        """``label`` has a message waiting and no worker: wake one for it."""
        self.ready.append(label)
        self.idle.unpark()

    def finish(self) -> None:
        self.done = True
        self.idle.unpark_all()

    def settled(self) -> None:
        """A message held here has its outcome: room for one more."""
        self.held -= 1
        if self.room is not None:
            self.room.set()
            self.room = None

    async def wait_for_room(self, below: int) -> None:
        """Wait until fewer than ``below`` messages are held."""
        while self.held >= below:
            self.room = trio.Event()
            await self.room.wait()


@enable_ki_protection
async def _by_key(
    key: Key[T],
    concurrency: int,
    sub: Subscription[T],
    run: Handler[T],
    counters: Counters,
) -> None:
    """Take messages from ``sub``; handle each key's in order, keys at once.

    One reader (this task) takes from the subscription, so that each key's
    messages are queued in the order they arrived; ``concurrency`` workers
    handle them. It takes what the subscription holds in one batch, up to
    the room left.
    """
    keys: _Keys[T] = _Keys(max(concurrency, sub.max_buffer_size))
    waiting = keys.waiting
    try:
        async with trio.open_nursery() as workers:
            for _ in range(concurrency):
                workers.start_soon(_work_by_key, keys, run, counters)
            try:
                while True:
                    await keys.wait_for_room(keys.hold)
                    try:
                        batch = await sub.receive_batch(keys.hold - keys.held)
                    except (trio.EndOfChannel, SlowConsumerError) as end:
                        if isinstance(end, SlowConsumerError):
                            _cut_off(counters, sub)
                        break
                    for message in batch:
                        counters.take()
                        try:
                            label = key(message)
                            queue = waiting.get(label)
                        except Exception as error:
                            counters.log("its key function failed", message, 0, error)
                            counters.settle("failed")
                            continue
                        keys.held += 1
                        if queue is None:
                            waiting[label] = collections.deque((message,))
                            keys.hand_over(label)
                        else:
                            queue.append(message)
                await keys.wait_for_room(1)  # every message taken is settled
            finally:
                keys.finish()
    finally:
        for queue in waiting.values():  # cancelled before their attempt
            for _ in queue:
                counters.settle("failed")
        waiting.clear()


@enable_ki_protection
async def _work_by_key(keys: _Keys[T], run: Handler[T], counters: Counters) -> None:
    """Handle the messages of each key handed here, in order, until none is left."""
    waiting, ready = keys.waiting, keys.ready
    while True:
        if not ready:
            if keys.done:
                return
            await keys.idle.park()
            continue
        label = ready.popleft()
        queue = waiting[label]
        while queue:
            message = queue.popleft()
            try:
                outcome = await _attempt(run, counters, message)
            except BaseException:
                counters.settle("failed")  # cancelled, or interrupted
                keys.settled()
                raise
            counters.settle(outcome)
            keys.settled()
        del waiting[label]


def _check_source(
    source: object,
    queue: str | None,
    key: object,
    max_buffer_size: int | None,
    policy: OverflowPolicy,
) -> None:
    for needed in ("pattern", "ack_wait", "dead_letter", "__aiter__"):
        if not hasattr(source, needed):
            raise TypeError(
                f"source must be a durable source such as a "
                f"trio_pubsub.nats.Consumer, not {source!r}"
            )
    if queue is not None or key is not None or max_buffer_size is not None:
        raise ValueError(
            "queue, key and max_buffer_size are options of a subscription: "
            "not of a handler with source= (its consumer's durable name shares "
            "its messages between processes)"
        )
    if policy is not OverflowPolicy.BLOCK:
        raise ValueError("policy applies to a subscription, not to source=")


@enable_ki_protection
async def _from_source(
    handler: _Handler[T], source: Source[T], run: Handler[T], router: Router[T]
) -> None:
    """``concurrency`` workers take leases from ``source`` in turn, until stopped.

    A worker takes the next lease only when it is free, so no lease waits
    for a worker; :meth:`Router.stop` cancels the taking, never an attempt.
    """
    leases = source.__aiter__()
    turn = trio.Lock()  # one worker takes from the source at a time
    async with trio.open_nursery() as workers:
        for _ in range(handler.concurrency):
            workers.start_soon(
                _work_on_leases, handler, source, run, leases, turn, router
            )


@enable_ki_protection
async def _work_on_leases(
    handler: _Handler[T],
    source: Source[T],
    run: Handler[T],
    leases: typing.AsyncIterator[Leased[T]],
    turn: trio.Lock,
    router: Router[T],
) -> None:
    counters = handler.counters
    while True:
        with trio.CancelScope() as taking:
            router._readers.append(taking)
            if router._stopping:
                taking.cancel()
            async with turn:
                try:
                    lease = await leases.__anext__()
                except StopAsyncIteration:
                    return
                counters.take()
        router._readers.remove(taking)
        if taking.cancelled_caught:
            return  # stopped: take no more
        try:
            outcome = await _lease_attempt(handler, source, run, lease)
        except BaseException:
            counters.settle("failed")  # cancelled: the source delivers it again
            raise
        counters.settle(outcome)


@disable_ki_protection
async def _lease_attempt(
    handler: _Handler[T], source: Source[T], run: Handler[T], lease: Leased[T]
) -> Outcome:
    """One delivery: the attempt, with progress told meanwhile, then settled."""
    message = lease.message
    failed: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_tell_progress, lease, source.ack_wait / 3)
        try:
            await run(message)
        except Duplicate:
            nursery.cancel_scope.cancel()
            await _settled(lease.ack())
            return "duplicates"
        except Exception as error:
            failed = error
        nursery.cancel_scope.cancel()
    if failed is None:
        await lease.ack()
        return "handled"
    return await _after_failure(handler, source, lease, failed)


async def _settled(settlement: typing.Awaitable[None]) -> None:
    """Await a settlement even inside a scope cancelled to stop the progress."""
    with trio.CancelScope(shield=True):
        await settlement


async def _after_failure(
    handler: _Handler[T], source: Source[T], lease: Leased[T], error: Exception
) -> Outcome:
    """A failed delivery: handed back for a retry, or given up on."""
    counters = handler.counters
    message = lease.message
    attempt = lease.deliveries
    retry = handler.retry
    if (
        retry is not None
        and isinstance(error, retry.retry_on)
        and attempt < retry.attempts
    ):
        counters.log("attempt failed, retried", message, attempt, error, retried=True)
        await lease.nak(retry.delay(attempt))
        return "handed_back"
    if handler.dead_letter is None:
        counters.log("given up", message, attempt, error)
        await lease.term()
        return "failed"
    try:
        await source.dead_letter(
            f"{handler.dead_letter}.{message.subject}",
            message.payload,
            dead_headers(message, handler.name, attempt, error),
        )
    except Exception as unsent:
        # Not kept as a dead letter: not terminated either, so that the source
        # keeps it (and delivers it again, after a pause).
        counters.log(
            f"could not store its dead letter ({unsent!r}); handed back",
            message,
            attempt,
            error,
        )
        await lease.nak(_DEAD_LETTER_PAUSE)
        return "failed"
    counters.log(f"given up, sent to {handler.dead_letter!r}", message, attempt, error)
    await lease.term()
    return "dead_lettered"


async def _tell_progress(lease: Leased[typing.Any], every: float) -> None:
    """Tell the source, every ``every`` seconds, that the attempt goes on."""
    while True:
        await trio.sleep(every)
        await lease.in_progress()
