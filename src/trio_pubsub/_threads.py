"""Publishing from other threads: the thread publisher, and its checks.

The broker's trio run (``_delivery.TrioRun``) is reached from other threads
with ``trio.from_thread``; ``Broker.publish_from_thread`` waits there for each
message, and a :class:`ThreadPublisher` queues them and has the trio thread
publish a batch at a time.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import typing

import trio

from ._errors import BrokerClosedError, InvalidSubjectError
from ._log import logger
from ._message import freeze_headers
from ._subject import REPLY_ROOT, parse_subject

if typing.TYPE_CHECKING:
    from collections.abc import Mapping

    from ._delivery import Delivery, TrioRun

T = typing.TypeVar("T")


def check_item(
    delivery: Delivery[T], subject: object, payload: object, headers: object
) -> tuple[str, T, Mapping[str, str] | None]:
    """Check a message for the thread publisher, in the calling thread.

    The checks of ``publish``, in its order; a subject already in the
    match cache (a plain dict, read whole under the interpreter's lock) is
    known to be valid.
    """
    if type(subject) is not str or subject not in delivery.cache:
        tokens = parse_subject(subject)  # so it is a str from here on
        subject = str.__str__(typing.cast("str", subject))
        if tokens[0] == REPLY_ROOT:
            raise InvalidSubjectError(
                subject,
                "a request is answered with Message.respond() in the trio "
                "thread, not from a thread publisher",
            )
    checked = delivery.check_payload(payload)
    frozen = None if headers is None else freeze_headers(headers) or None
    delivery.check_open()
    return subject, checked, frozen


# -- the batched entry: broker.thread_publisher() ---------------------------------


class _Publishes(typing.Protocol):
    """What a thread publisher needs of its broker (which it cannot import)."""

    def publish_nowait(
        self,
        subject: str,
        payload: typing.Any,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> int: ...

    async def publish(
        self,
        subject: str,
        payload: typing.Any,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> int: ...


Item = tuple["str | None", typing.Any, "Mapping[str, str] | None"]
"""A message as it waits in the queue: subject, payload, headers (checked); or,
with ``None`` for a subject, a flush mark: a ``threading.Event`` to set."""


class ThreadPublisher(typing.Generic[T]):
    """A batched way into a broker from other threads: see ``Broker.thread_publisher``.

    Threads put messages in a bounded queue and return; the broker's trio
    thread takes them out a batch at a time, woken once per batch, and
    publishes them in the order they were queued. :meth:`publish` checks a
    message in the calling thread (raising what ``Broker.publish`` would
    raise, there) and returns once it is queued; :meth:`flush` returns once
    every message queued so far is published.

    Messages queued from one thread are published in the order they were
    queued; those of different threads interleave. Each is published with
    ``publish_nowait``, or, when a ``BLOCK`` buffer is full, with ``await
    publish`` by a task that waits for room (and holds the rest of the queue
    back meanwhile). Queued messages it could not publish because the broker
    closed, or its trio run ended, are counted in :attr:`lost`, and
    :meth:`flush` raises :class:`BrokerClosedError` for them. As a context
    manager, its exit flushes and closes it::

        with broker.thread_publisher() as publisher:  # in a worker thread
            for reading in sensor:
                publisher.publish("sensor.temp", reading)
    """

    # How it stays cheap for the threads: a message is one append to a deque
    # (atomic under the interpreter lock), with no lock taken, unless the queue
    # is full (then the thread waits on the condition) or no drain is due (then
    # the thread claims the drain under the lock and wakes the trio thread).
    # Only the trio thread takes messages out and counts them (``_published``,
    # ``_lost``, ``_taken``), so the counts need no lock either. The drain
    # claims and gives up ``_scheduled`` so that a message is never left
    # behind: it clears the flag, then looks at the queue once more, and a
    # thread appends first and looks at the flag after.

    __slots__ = (
        "_broker",
        "_closed",
        "_condition",
        "_delivery",
        "_lost",
        "_max_pending",
        "_published",
        "_queue",
        "_run",
        "_scheduled",
        "_taken",
        "_trio_thread",
        "_waiting",
        "_why",
    )

    def __init__(
        self, delivery: Delivery[T], broker: _Publishes, max_pending: int
    ) -> None:
        self._delivery = delivery
        self._run: TrioRun = delivery.run
        # Its publish methods are looked up for each batch, not bound once: a
        # broker whose publishers are rebound (trio_pubsub.otel's tracing) is
        # followed.
        self._broker = broker
        self._max_pending = max_pending
        self._condition = threading.Condition(threading.Lock())
        self._queue: collections.deque[Item] = collections.deque()
        self._taken = 0  # messages the trio thread holds, not yet published
        self._published = 0
        self._lost = 0
        self._waiting = 0  # threads waiting for room
        self._scheduled = False  # a drain is due or running in the trio thread
        self._closed = False
        self._why = ""  # why messages were lost, for the errors to say
        # The trio thread's ident, once known: publish() compares it (one
        # call) instead of asking trio (which raises outside a run).
        self._trio_thread: int | None = None
        if self._run.is_current():
            self._trio_thread = threading.get_ident()

    # -- in the calling thread -------------------------------------------------

    def publish(
        self, subject: str, payload: T, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Queue a message for the broker; return once it is queued.

        Waits while ``max_pending`` messages are pending (backpressure: a
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
        item = check_item(self._delivery, subject, payload, headers)
        trio_thread = self._trio_thread
        if trio_thread is None or threading.get_ident() == trio_thread:
            self._run.check_caller("ThreadPublisher.publish()")
        queue = self._queue
        if len(queue) + self._taken >= self._max_pending:
            self._wait_for_room()
        if self._closed:
            raise BrokerClosedError(f"this thread publisher is closed{self._why}")
        queue.append(item)
        if not self._scheduled:
            self._claim_drain()

    def _wait_for_room(self) -> None:
        condition = self._condition
        with condition:
            self._waiting += 1
            try:
                while (
                    len(self._queue) + self._taken >= self._max_pending
                    and not self._closed
                ):
                    condition.wait()
            finally:
                self._waiting -= 1

    def _claim_drain(self) -> None:
        """Wake the trio thread to drain, unless a drain is due already."""
        with self._condition:
            if self._scheduled:
                return
            self._scheduled = True
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
        done = threading.Event()
        # A mark behind everything queued so far: the drain sets it when it
        # gets there (or counts what it could not publish, and sets it).
        self._queue.append((None, done, None))
        if not self._scheduled:
            with contextlib.suppress(BrokerClosedError):
                self._claim_drain()  # (if the run has ended, done is set)
        done.wait()
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
        """Queued messages it could not publish, as the broker closed first."""
        return self._lost

    @property
    def pending(self) -> int:
        """Messages queued and not yet published."""
        queued = sum(1 for item in list(self._queue) if item[0] is not None)
        return queued + self._taken  # (the flush marks are no messages)

    def _wake(self) -> None:
        """Ask the trio thread to drain the queue: once per batch."""
        token = self._run.token
        assert token is not None  # (check_caller saw one)
        try:
            token.run_sync_soon(self._drain)
        except trio.RunFinishedError:
            why = " (the broker's trio run has ended)"
            with self._condition:
                self._closed = True
                self._why = why
            self._lose(why)  # nobody else drains it now, and nobody waits on
            raise BrokerClosedError(
                f"the trio run the broker belonged to has ended{why}"
            ) from None

    # -- in the trio thread ----------------------------------------------------

    def _drain(self) -> None:
        """Publish one batch without waiting (a ``run_sync_soon`` callback).

        A full ``BLOCK`` buffer hands the message it refused, and the rest of
        the queue after it, to a task that can wait. Nothing may escape: an
        exception here would crash the trio run.
        """
        self._trio_thread = threading.get_ident()
        item = self._publish_batch()
        if item is not None:
            try:
                self._run.spawn(self._wait_and_drain, item)
            except RuntimeError:  # the run is shutting down: no more tasks
                self._lose(" (the broker's trio run ended)", held=1)

    def _publish_batch(self) -> Item | None:
        """Publish what is queued now with ``publish_nowait``, in order.

        Returns the message a full ``BLOCK`` buffer refused, taken out of the
        queue, for the caller to wait with; or ``None`` once the batch is done
        (and the next drain queued if more came meanwhile, so the run's other
        tasks, the consumers, get a turn in between) or lost.
        """
        queue = self._queue
        publish_nowait = self._broker.publish_nowait
        for _ in range(len(queue)):
            subject, payload, headers = item = queue[0]
            if subject is None:
                payload.set()  # a flush mark: everything before it is done
                queue.popleft()
                continue
            try:
                publish_nowait(subject, payload, headers=headers)
            except trio.WouldBlock:
                queue.popleft()
                self._taken += 1
                self._room()
                return item
            except Exception as error:  # it must not crash the run
                self._lose(f" ({type(error).__name__}: {error})")
                return None
            queue.popleft()
            self._published += 1
        self._end_batch()
        return None

    async def _wait_and_drain(self, item: Item) -> None:
        """Publish ``item``, waiting for room, then go on with the queue."""
        next_item: Item | None = item
        while next_item is not None:
            subject, payload, headers = next_item
            assert subject is not None  # (a flush mark is never refused)
            try:
                await self._broker.publish(subject, payload, headers=headers)
            except Exception as error:  # a system task must not raise
                self._lose(f" ({type(error).__name__}: {error})", held=1)
                return
            except BaseException:  # Cancelled, as the run ends
                self._lose(" (the broker's trio run ended)", held=1)
                raise
            self._taken -= 1
            self._published += 1
            next_item = self._publish_batch()

    def _room(self) -> None:
        """Wake the threads waiting for room, if any: messages were taken out."""
        if self._waiting:
            with self._condition:
                self._condition.notify_all()

    def _end_batch(self) -> None:
        """Wake the threads waiting for room; queue the next drain if needed."""
        self._room()
        self._scheduled = False
        if self._queue:  # queued after the batch was counted: claim it back
            # (unless a thread has; if the run is ending, it is counted lost)
            with contextlib.suppress(BrokerClosedError):
                self._claim_drain()

    def _lose(self, why: str, held: int = 0) -> None:
        """Count everything queued (and ``held`` taken out) as lost; end the drain."""
        with self._condition:
            self._taken -= held
            self._lose_queued(why, held)
            self._scheduled = False
            self._condition.notify_all()

    def _lose_queued(self, why: str, lost: int = 0) -> None:
        """Take everything queued out as lost (with the condition held)."""
        queue = self._queue
        while queue:
            subject, payload, _ = queue.popleft()
            if subject is None:
                payload.set()
            else:
                lost += 1
        self._lost += lost
        if lost:
            self._why = why
            logger.warning(
                "a thread publisher could not publish %d queued message(s)%s",
                lost,
                why,
            )
