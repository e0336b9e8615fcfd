"""Reaching a broker's trio run from other threads.

A broker is bound to no trio run, so it learns one: the run it was created
in, or else the one in which it last entered a subscription, or was first
awaited in ``publish`` or ``async with``. ``TrioRun`` keeps that run's token
and calls into it from another thread with ``trio.from_thread.run``, refusing
first what would deadlock (a call from the run's own thread) or cannot work
(no run learned yet).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import typing

import trio

from ._errors import BrokerClosedError
from ._log import logger

if typing.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

R = typing.TypeVar("R")
T = typing.TypeVar("T")


class TrioRun:
    """The trio run a broker belongs to, as far as it knows."""

    __slots__ = ("token",)

    def __init__(self) -> None:
        self.token: trio.lowlevel.TrioToken | None = None
        self.learn()

    def learn(self) -> bool:
        """Remember the trio run this is called from (outside one: keep the last).

        Returns whether it is another run than the one remembered before.
        """
        with contextlib.suppress(RuntimeError):
            token = trio.lowlevel.current_trio_token()
            if token is not self.token:
                self.token = token
                return True
        return False

    def check_caller(self, what: str) -> None:
        """Refuse a call from the run's own thread, or before a run is known.

        Raises:
            RuntimeError: called from the broker's trio thread (waiting there
                for that thread would never end), or no run is known yet.
        """
        try:
            here = trio.lowlevel.current_trio_token()
        except RuntimeError:
            here = None
        if here is not None and here is self.token:
            raise RuntimeError(
                f"{what} was called from the broker's own trio thread, where it "
                "would wait for itself forever; use 'await broker.publish()' or "
                "'broker.publish_nowait()' there"
            )
        if self.token is None:
            raise RuntimeError(
                "the broker has not been used in a trio run yet, so there is no "
                "trio thread to publish in: create it inside trio.run(), or enter "
                "a subscription first"
            )

    def call(self, async_fn: Callable[[], Awaitable[R]]) -> R:
        """Run ``async_fn`` in the run and wait for it (after :meth:`check_caller`).

        Raises:
            BrokerClosedError: the run has ended.
        """
        assert self.token is not None
        try:
            return trio.from_thread.run(async_fn, trio_token=self.token)
        except trio.RunFinishedError:
            raise BrokerClosedError(
                "the trio run the broker belonged to has ended"
            ) from None


# -- the batched entry: broker.thread_publisher() ---------------------------------

Item = tuple[str, T, "Mapping[str, str] | None"]
"""A message as it waits in the queue: subject, payload, headers (checked)."""


class ThreadPublisher(typing.Generic[T]):
    """A batched way into a broker from other threads: see ``Broker.thread_publisher``.

    Threads put messages in a bounded queue and return; the broker's trio
    thread takes them out a batch at a time, woken once per batch, and
    publishes them in the order they were queued. As a context manager, its
    exit flushes and closes it::

        with broker.thread_publisher() as publisher:  # in a worker thread
            for reading in sensor:
                publisher.publish("sensor.temp", reading)
    """

    __slots__ = (
        "_check",
        "_closed",
        "_condition",
        "_finished",
        "_lost",
        "_max_pending",
        "_pending",
        "_publish",
        "_publish_nowait",
        "_published",
        "_queue",
        "_queued",
        "_run",
        "_scheduled",
        "_trio_thread",
        "_why",
    )

    def __init__(
        self,
        run: TrioRun,
        check: Callable[[object, object, object], Item[T]],
        publish: Callable[..., Awaitable[int]],
        publish_nowait: Callable[..., int],
        max_pending: int,
    ) -> None:
        self._run = run
        self._check = check
        self._publish = publish
        self._publish_nowait = publish_nowait
        self._max_pending = max_pending
        self._condition = threading.Condition(threading.Lock())
        self._queue: collections.deque[Item[T]] = collections.deque()
        self._pending = 0  # queued, or taken and not yet published
        self._queued = 0  # ever queued
        self._published = 0
        self._lost = 0
        self._finished = 0  # published or lost: done with
        self._scheduled = False  # a drain is due or running in the trio thread
        self._closed = False
        self._why = ""  # why messages were lost, for the errors to say
        # The trio thread's ident, once known: publish() compares it (one
        # call) instead of asking trio (which raises outside a run).
        self._trio_thread: int | None = None
        with contextlib.suppress(RuntimeError):
            if trio.lowlevel.current_trio_token() is run.token:
                self._trio_thread = threading.get_ident()

    # -- in the calling thread -------------------------------------------------

    def publish(
        self, subject: str, payload: T, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Queue a message for the broker; return once it is queued.

        Waits while ``max_pending`` messages are queued (backpressure: a
        ``BLOCK`` subscription whose buffer is full holds the queue back, and
        so the threads). Messages queued from one thread are published in the
        order they were queued.

        Raises:
            InvalidSubjectError, TypeError: as ``Broker.publish`` raises them,
                here in the calling thread; a subject under ``_INBOX.`` is
                refused (answer a request with ``Message.respond``).
            RuntimeError: called from the broker's own trio thread, where a
                wait for room would never end.
            BrokerClosedError: this handle is closed, or the broker is, or its
                trio run has ended.
        """
        item = self._check(subject, payload, headers)
        trio_thread = self._trio_thread
        if trio_thread is None or threading.get_ident() == trio_thread:
            self._run.check_caller("ThreadPublisher.publish()")
        condition = self._condition
        with condition:
            while self._pending >= self._max_pending and not self._closed:
                condition.wait()
            if self._closed:
                raise BrokerClosedError(f"this thread publisher is closed{self._why}")
            self._queue.append(item)
            self._pending += 1
            self._queued += 1
            wake = not self._scheduled
            self._scheduled = True
        if wake:
            self._wake()

    def flush(self) -> None:
        """Wait until every message queued so far has been published.

        Raises:
            BrokerClosedError: some it queued (now or before) could not be,
                as the broker closed or its trio run ended first (they are
                counted in :attr:`lost`).
            RuntimeError: called from the broker's own trio thread.
        """
        self._run.check_caller("ThreadPublisher.flush()")
        with self._condition:
            target = self._queued
            while self._finished < target:
                self._condition.wait()
            if self._lost:
                raise BrokerClosedError(
                    f"{self._lost} queued message(s) could not be published{self._why}"
                )

    def close(self) -> None:
        """Flush, then refuse further messages. Idempotent."""
        try:
            self.flush()
        finally:
            with self._condition:
                self._closed = True
                self._condition.notify_all()

    def __enter__(self) -> ThreadPublisher[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def published(self) -> int:
        """Messages it has published so far."""
        return self._published

    @property
    def lost(self) -> int:
        """Queued messages it could not publish: the broker closed first."""
        return self._lost

    @property
    def pending(self) -> int:
        """Messages queued and not yet published."""
        return self._pending

    def _wake(self) -> None:
        """Ask the trio thread to drain the queue: once per batch."""
        token = self._run.token
        assert token is not None  # (check_caller saw one)
        try:
            token.run_sync_soon(self._drain)
        except trio.RunFinishedError:
            why = " (the broker's trio run has ended)"
            self._drain_lost(why)
            with self._condition:
                self._closed = True
            raise BrokerClosedError(
                f"the trio run the broker belonged to has ended{why}"
            ) from None

    # -- in the trio thread ----------------------------------------------------

    def _take(self) -> collections.deque[Item[T]] | None:
        """Take everything queued; ``None`` (and the drain is over) if nothing is."""
        with self._condition:
            if not self._queue:
                self._scheduled = False
                return None
            batch, self._queue = self._queue, collections.deque()
            return batch

    def _done(self, published: int, lost: int, why: str = "") -> None:
        """Count messages done with, and wake the threads that wait on that."""
        with self._condition:
            self._published += published
            self._lost += lost
            self._finished += published + lost
            self._pending -= published + lost
            if lost:
                self._why = why
            self._condition.notify_all()
        if lost:
            logger.warning(
                "a thread publisher could not publish %d queued message(s)%s",
                lost,
                why,
            )

    def _drain_lost(self, why: str) -> None:
        """Count everything still queued as lost, and end the drain."""
        while (batch := self._take()) is not None:
            self._done(0, len(batch), why)

    def _drain(self) -> None:
        """Publish one batch without waiting (a ``run_sync_soon`` callback).

        One batch per call, then the call is queued again if more came: the
        trio run's other tasks (the consumers) get their turn in between. A
        full ``BLOCK`` buffer hands the rest of the batch to a task that can
        wait. Nothing may escape: an exception here would crash the run.
        """
        self._trio_thread = threading.get_ident()
        batch = self._take()
        if batch is None:
            return
        published = 0
        publish_nowait = self._publish_nowait
        try:
            while batch:
                subject, payload, headers = batch[0]
                publish_nowait(subject, payload, headers=headers)
                batch.popleft()
                published += 1
        except trio.WouldBlock:
            self._done(published, 0)
            try:
                trio.lowlevel.spawn_system_task(self._wait_and_drain, batch)
            except RuntimeError:  # the run is shutting down: no more tasks
                self._lose(batch, " (the broker's trio run ended)")
            return
        except Exception as error:
            self._done(published, 0)
            self._lose(batch, f" ({type(error).__name__}: {error})")
            return
        self._done(published, 0)
        self._again()

    async def _wait_and_drain(self, batch: collections.deque[Item[T]]) -> None:
        """Publish the rest of ``batch``, waiting for room where it must."""
        published = 0
        publish_nowait = self._publish_nowait
        try:
            try:
                while batch:
                    subject, payload, headers = batch[0]
                    try:
                        publish_nowait(subject, payload, headers=headers)
                    except trio.WouldBlock:
                        await self._publish(subject, payload, headers=headers)
                    batch.popleft()
                    published += 1
            finally:
                self._done(published, 0)
        except Exception as error:  # a system task must not raise
            self._lose(batch, f" ({type(error).__name__}: {error})")
            return
        except BaseException:  # Cancelled, as the run ends
            self._lose(batch, " (the broker's trio run ended)")
            raise
        self._again()

    def _again(self) -> None:
        """Queue the next drain (it ends the drain if nothing is queued)."""
        token = self._run.token
        assert token is not None
        try:
            token.run_sync_soon(self._drain)
        except trio.RunFinishedError:
            self._drain_lost(" (the broker's trio run ended)")

    def _lose(self, batch: collections.deque[Item[T]], why: str) -> None:
        """Count ``batch`` and everything queued after it as lost."""
        self._done(0, len(batch), why)
        self._drain_lost(why)
