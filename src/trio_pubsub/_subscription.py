"""The receive side: Subscription and the _Inbox behind each subscription.

An ``_Inbox`` is one subscription's bounded buffer with its counters and its
waiting tasks. It is a small memory channel of its own rather than a
``trio.open_memory_channel`` pair, because the counters must change in the same
step as the buffer (the law ``received + pending + dropped == routed`` holds at
every moment, not only between checkpoints), ``DROP_OLDEST`` evicts from the
sending side, and the end of the stream depends on who ended it.

Invariants (no checkpoint between any check and the mutation that follows it;
``put`` and ``receive`` are the only methods of ``_Inbox`` that wait):

* ``len(buffer) <= max_buffer_size``, except in a ``BLOCK`` inbox that took more
  retained messages on entry than it holds (see ``take_retained``); ``limit`` is
  ``max_buffer_size``
  except while receivers wait or before the first message is buffered: then 0.
* ``buffer`` is the shared, always empty ``_NO_BUFFER`` until a message is
  buffered: an idle subscription owns no deque.
* Tasks wait in ``receivers`` only while ``buffer`` is empty, and publishers wait
  in ``senders`` only while it is full: a message offered while a receiver waits
  goes straight to that receiver, and room made by a receive goes straight to the
  first waiting publisher, so messages keep their order.
* Every message that entered the buffer (or went straight to a receiver) is
  received, pending, evicted or discarded, and ``dropped == refused + evicted +
  discarded``; so ``delivered`` is derived, ``received + pending + dropped -
  refused``, and the broker's fast path only has to append to the buffer.
* Only an ``OPEN`` inbox is in its broker's trie.
"""

from __future__ import annotations

import enum
import logging
import math
import time
import typing
from collections import deque
from typing import Generic, TypeVar

import attrs
import trio

from ._errors import BrokerClosedError, SlowConsumerError
from ._message import Message  # noqa: TC001 (the API reference resolves it)
from ._policy import Action, OverflowPolicy, decide
from ._stats import SubscriptionStatistics

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    from ._queue import _Group

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

logger = logging.getLogger("trio_pubsub")


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:  # outside trio.run
        return time.monotonic()


class _RateLimitedWarning:
    """Logs at most one WARNING per ``interval`` seconds of trio's clock.

    Each subscription has its own, made on its first drop, so every dropping
    subscription is named in the log at least once.

    Warnings that fall inside the interval are counted, and the count is added to
    the next one that is logged, so a flood of drops costs a few lines per second.
    """

    __slots__ = ("_interval", "_logger", "_next", "_suppressed")

    def __init__(self, interval: float, log: logging.Logger = logger) -> None:
        self._interval = interval
        self._logger = log
        self._next = -math.inf
        self._suppressed = 0

    def __call__(self, fmt: str, *args: object) -> None:
        if not self._logger.isEnabledFor(logging.WARNING):
            return
        now = _now()
        if now < self._next:
            self._suppressed += 1
            return
        if self._suppressed:
            fmt += " (%d similar warnings suppressed since the last one)"
            args = (*args, self._suppressed)
        self._logger.warning(fmt, *args)
        self._next = now + self._interval
        self._suppressed = 0


LOG_INTERVAL: typing.Final = 1.0
"""Seconds between two drop warnings of one subscription."""


@attrs.define
class _Tally:
    """What one broker and all of its inboxes share.

    Counters, wake-up results and the way out of the broker's trie live here
    rather than in each inbox, because every byte of an idle subscription counts.
    """

    detach: Callable[[_Inbox[typing.Any]], None]
    """Removes an inbox from the broker's trie."""
    delivered: int = 0
    dropped: int = 0
    disconnected: int = 0
    handed: dict[trio.lowlevel.Task, Message[typing.Any]] = attrs.Factory(dict)
    """Messages handed straight to a waiting receiver, by receiving task."""
    put_results: dict[trio.lowlevel.Task, _Put] = attrs.Factory(dict)
    """How a publisher's wait for room ended, by publishing task."""


class _State(enum.Enum):
    OPEN = enum.auto()
    """In the broker's trie, taking new messages."""
    ENDED = enum.auto()
    """The broker was closed: drain, then ``trio.EndOfChannel``."""
    CUT_OFF = enum.auto()
    """Disconnected as a slow consumer: drain, then ``SlowConsumerError``."""
    CLOSED = enum.auto()
    """Left (scope exit or ``close()``): buffer discarded, ``ClosedResourceError``."""


class _Put(enum.Enum):
    """How a publisher's wait for room in a ``BLOCK`` buffer ended."""

    DELIVERED = enum.auto()
    SKIPPED = enum.auto()
    BROKER_CLOSED = enum.auto()


W = TypeVar("W")


async def _park(waiters: dict[trio.lowlevel.Task, W], value: W) -> trio.lowlevel.Task:
    """Wait in ``waiters`` (under ``value``) until another task reschedules us.

    Whoever reschedules the task removes it from ``waiters`` first. If the wait
    is cancelled instead, the task removes itself, so nothing refers to it.
    Returns the task, the key under which the waker left any result.
    """
    task = trio.lowlevel.current_task()
    waiters[task] = value

    def abort(_: object) -> trio.lowlevel.Abort:
        del waiters[task]
        return trio.lowlevel.Abort.SUCCEEDED

    await trio.lowlevel.wait_task_rescheduled(abort)
    return task


_NO_BUFFER: typing.Final[deque[typing.Any]] = deque()
"""The buffer of every inbox that has not buffered a message yet. Never appended
to: ``limit`` is 0 while it is in place, and ``_accept`` replaces it first."""


class _Inbox(Generic[T]):
    """One subscription's buffer, counters and waiting tasks."""

    # The broker's fast path reads ``buffer`` and ``limit`` of every target:
    # first, so they share a cache line.
    __slots__ = (  # noqa: RUF023
        "buffer",
        "limit",
        "also",
        "disconnect_after",
        "dropped",
        "group",
        "max_buffer_size",
        "pattern",
        "policy",
        "queue",
        "received",
        "receivers",
        "refused",
        "senders",
        "state",
        "streak",
        "streak_mark",
        "tally",
        "tokens",
        "warn_drop",
    )

    def __init__(
        self,
        pattern: str,
        tokens: tuple[str, ...],
        *,
        policy: OverflowPolicy,
        max_buffer_size: int,
        disconnect_after: int,
        tally: _Tally,
        queue: str | None = None,
    ) -> None:
        self.pattern = pattern
        self.queue = queue
        # Set while it is a member of its queue group (see _queue.py).
        self.group: _Group | None = None
        self.tokens = tokens
        # The parsed patterns after the first of an inbox that listens on several
        # (one ordered stream for a NATS bridge's export); () for a subscription.
        self.also: tuple[tuple[str, ...], ...] = ()
        self.policy = policy
        self.max_buffer_size = max_buffer_size
        self.disconnect_after = disconnect_after
        self.tally = tally
        self.state = _State.OPEN
        self.buffer: deque[Message[T]] = _NO_BUFFER
        # What the fast path may fill the buffer up to: max_buffer_size, or 0
        # while receivers wait (a message for them takes the slow path and is
        # handed over) and while there is no deque yet (the slow path makes it).
        self.limit = 0
        # dicts used as FIFO sets of waiting tasks
        self.receivers: dict[trio.lowlevel.Task, None] = {}
        self.senders: dict[trio.lowlevel.Task, Message[T]] = {}
        self.received = 0
        self.dropped = 0
        self.refused = 0
        # Refusals in a row: ``streak`` counts them while ``delivered`` stays at
        # ``streak_mark``; any accepted message moves ``delivered`` and so ends it.
        self.streak = 0
        self.streak_mark = 0
        self.warn_drop: _RateLimitedWarning | None = None

    @property
    def delivered(self) -> int:
        """Messages that entered the buffer or went straight to a receiver."""
        return self.received + len(self.buffer) + self.dropped - self.refused

    @property
    def consecutive_drops(self) -> int:
        """Messages refused since the last one accepted."""
        return self.streak if self.delivered == self.streak_mark else 0

    # -- sending side ---------------------------------------------------------

    def would_block(self) -> bool:
        """True when this is a ``BLOCK`` inbox whose buffer is full."""
        return (
            self.policy is OverflowPolicy.BLOCK
            and self.state is _State.OPEN
            and len(self.buffer) >= self.max_buffer_size
        )

    def take_retained(self, messages: list[Message[T]]) -> None:
        """Receive the retained messages its pattern matches, on entry.

        Each goes through the policy as a published message would, except that a
        ``BLOCK`` inbox takes them all, beyond its size if need be: nobody can
        wait at entry, and none may be lost. Publishers then wait until the
        consumer has brought the buffer back under its size.
        """
        for message in messages:
            if self.state is not _State.OPEN:
                return  # cut off by DISCONNECT: the rest are not routed to it
            if self.policy is OverflowPolicy.BLOCK:
                self._accept(message)
            else:
                self.offer(message)

    def offer(self, message: Message[T]) -> bool:
        """Offer a message without waiting; return whether it was accepted.

        Raises:
            trio.WouldBlock: this is a ``BLOCK`` inbox and its buffer is full.
        """
        if self.state is not _State.OPEN:
            return False  # left, or cut off, after the publisher's snapshot
        if len(self.buffer) < self.max_buffer_size:
            # Room (a receiver may be waiting): what decide() would say at once,
            # without working out the drop streak it does not need here.
            self._accept(message)
            return True
        action = decide(
            self.policy,
            pending=len(self.buffer),
            max_buffer_size=self.max_buffer_size,
            consecutive_drops=self.consecutive_drops,
            disconnect_after=self.disconnect_after,
        )
        if action is Action.DELIVER:
            self._accept(message)
            return True
        if action is Action.WAIT:
            raise trio.WouldBlock
        if action is Action.EVICT_OLDEST:
            self.buffer.popleft()
            self._count_drops(1)
            self._warn_drop(message, "discarded its oldest pending message")
            self._accept(message)
            return True
        self.streak = self.consecutive_drops + 1
        self.refused += 1
        self._count_drops(1)
        self.streak_mark = self.delivered
        self._warn_drop(message, "dropped a new message")
        if action is Action.DISCONNECT:
            self._cut_off()
        return False

    async def put(self, message: Message[T]) -> bool:
        """Offer a message, waiting for room if this is a full ``BLOCK`` inbox.

        Returns whether it was accepted; ``False`` when the subscription left
        while the publisher waited.

        Raises:
            BrokerClosedError: the broker was closed before there was room.

        If cancelled while waiting, the message does not enter this buffer and
        every counter is as if it had never been offered.
        """
        if self.state is _State.ENDED:
            # The publish was still due to deliver here when the broker closed.
            raise self._broker_closed()
        try:
            return self.offer(message)
        except trio.WouldBlock:
            pass
        task = await _park(self.senders, message)
        result = self.tally.put_results.pop(task)
        if result is _Put.BROKER_CLOSED:
            raise self._broker_closed()
        return result is _Put.DELIVERED

    def _broker_closed(self) -> BrokerClosedError:
        where = repr(self.pattern)
        if self.queue is not None:
            where += f" of queue group {self.queue!r}"
        return BrokerClosedError(
            f"the broker was closed while a publish waited for room in {where}"
        )

    def _accept(self, message: Message[T]) -> None:
        self.tally.delivered += 1
        if self.receivers:
            # Hand it straight to the longest-waiting receiver, as a trio memory
            # channel does: a waiting receiver is room, and the buffer stays empty.
            task = next(iter(self.receivers))
            del self.receivers[task]
            self.tally.handed[task] = message
            self.received += 1
            trio.lowlevel.reschedule(task)
            # If it was the last one, what comes before it resumes takes the
            # fast path.
            self._reopen_fast_path()
        else:
            if self.buffer is _NO_BUFFER:
                self.buffer = deque()
                self.limit = self.max_buffer_size  # no receiver waits: see above
            self.buffer.append(message)

    def _reopen_fast_path(self) -> None:
        """Let the broker append directly again once no receiver waits."""
        if not self.receivers and self.buffer is not _NO_BUFFER:
            self.limit = self.max_buffer_size

    def _count_drops(self, count: int) -> None:
        self.dropped += count
        self.tally.dropped += count

    def _warn_drop(self, message: Message[T], what: str) -> None:
        if self.warn_drop is None:
            self.warn_drop = _RateLimitedWarning(LOG_INTERVAL)
        self.warn_drop(
            "subscription %r (%s, buffer of %d full) %s on subject %r; "
            "%d dropped so far",
            self.pattern,
            self.policy.name,
            self.max_buffer_size,
            what,
            message.subject,
            self.dropped,
        )

    def _cut_off(self) -> None:
        self.state = _State.CUT_OFF
        self.tally.detach(self)
        self.tally.disconnected += 1
        logger.warning(
            "subscription %r was disconnected as a slow consumer after %d "
            "consecutive drops; %d messages remain for it to drain",
            self.pattern,
            self.consecutive_drops,
            len(self.buffer),
        )
        self._wake_all(_Put.SKIPPED)

    # -- receiving side -------------------------------------------------------

    def take(self) -> Message[T]:
        """Take the oldest pending message, or raise what the state says."""
        if self.buffer:
            message = self.buffer.popleft()
            self.received += 1
            if self.senders and len(self.buffer) < self.max_buffer_size:
                # Room just appeared: it belongs to the longest-waiting publisher.
                # (A buffer holding more retained messages than its size has none.)
                task = next(iter(self.senders))
                self._accept(self.senders.pop(task))
                self.tally.put_results[task] = _Put.DELIVERED
                trio.lowlevel.reschedule(task)
            return message
        if self.state is _State.OPEN:
            raise trio.WouldBlock
        if self.state is _State.ENDED:
            raise trio.EndOfChannel
        if self.state is _State.CUT_OFF:
            raise SlowConsumerError(
                f"subscription {self.pattern!r} was disconnected as a slow consumer "
                f"after {self.disconnect_after} consecutive drops "
                f"(buffer of {self.max_buffer_size})"
            )
        raise trio.ClosedResourceError(f"subscription {self.pattern!r} is closed")

    async def receive(self) -> Message[T]:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            message = self.take()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return message
        self.limit = 0
        try:
            task = await _park(self.receivers, None)
        finally:
            # the last receiver may have left, cancelled or woken by the end
            self._reopen_fast_path()
        handed = self.tally.handed.pop(task, None)
        if handed is None:
            # Woken because the stream ended: take() raises the reason.
            return self.take()
        return handed

    # -- ending ---------------------------------------------------------------

    def end(self) -> None:
        """The broker closed: no new messages; drain, then ``EndOfChannel``."""
        assert self.state is _State.OPEN, "only open inboxes are in the trie"
        self.state = _State.ENDED
        self._wake_all(_Put.BROKER_CLOSED)

    def close(self) -> None:
        """The subscriber left: discard what is pending and count it as dropped."""
        if self.state is _State.CLOSED:
            return
        was_open = self.state is _State.OPEN
        self.state = _State.CLOSED
        discarded = len(self.buffer)
        if discarded:
            self.buffer.clear()
            self._count_drops(discarded)
        if was_open:
            self.tally.detach(self)
        self._wake_all(_Put.SKIPPED)

    def _wake_all(self, put_result: _Put) -> None:
        for task in self.senders:
            self.tally.put_results[task] = put_result
            trio.lowlevel.reschedule(task)
        self.senders.clear()
        for task in self.receivers:
            trio.lowlevel.reschedule(task)
        self.receivers.clear()

    def statistics(self) -> SubscriptionStatistics:
        return SubscriptionStatistics(
            delivered=self.delivered,
            received=self.received,
            pending=len(self.buffer),
            dropped=self.dropped,
            max_buffer_size=self.max_buffer_size,
        )


@typing.final
class Subscription(Generic[T_co]):
    """The receiving end of one subscription, from ``async with broker.subscribe()``.

    It receives every message published on a subject that its pattern matches
    from the moment the ``async with`` is entered until it is left, in the order
    they were published, minus those its overflow policy drops (counted in
    :meth:`statistics`). Iterate with ``async for``, or call :meth:`receive`.

    Do not create it yourself: :meth:`Broker.subscribe` does.
    """

    __slots__ = ("_inbox",)

    def __init__(self, inbox: _Inbox[T_co]) -> None:
        self._inbox = inbox

    def __repr__(self) -> str:
        inbox = self._inbox
        queue = "" if inbox.queue is None else f" queue={inbox.queue!r}"
        return (
            f"<trio_pubsub.Subscription {inbox.pattern!r}{queue} "
            f"policy={inbox.policy.name} max_buffer_size={inbox.max_buffer_size} "
            f"state={inbox.state.name.lower()}>"
        )

    @property
    def pattern(self) -> str:
        """The pattern this subscription listens on."""
        return self._inbox.pattern

    @property
    def queue(self) -> str | None:
        """The queue group it belongs to, or ``None``."""
        return self._inbox.queue

    @property
    def policy(self) -> OverflowPolicy:
        """What happens when its buffer is full."""
        return self._inbox.policy

    @property
    def max_buffer_size(self) -> int:
        """How many messages its buffer holds."""
        return self._inbox.max_buffer_size

    async def receive(self) -> Message[T_co]:
        """Wait for the next message and return it.

        A trio checkpoint. It waits only while the buffer is empty.

        Returns:
            The oldest pending message.

        Raises:
            trio.EndOfChannel: the broker was closed and every pending message
                has been received.
            SlowConsumerError: the ``DISCONNECT`` policy cut this subscription
                off and every pending message has been received.
            trio.ClosedResourceError: the subscription was closed, or its
                ``async with`` block has been left.

        If cancelled, no message is taken: the next call gets it.
        """
        return await self._inbox.receive()

    def receive_nowait(self) -> Message[T_co]:
        """Return the next message if one is pending, without waiting.

        Raises:
            trio.WouldBlock: no message is pending and the stream has not ended.
            trio.EndOfChannel: as for :meth:`receive`.
            SlowConsumerError: as for :meth:`receive`.
            trio.ClosedResourceError: as for :meth:`receive`.
        """
        return self._inbox.take()

    def close(self) -> None:
        """Leave early: take no new messages and discard the pending ones.

        Discarded messages are counted as dropped. Afterwards :meth:`receive`
        raises ``trio.ClosedResourceError``, and so do tasks waiting in it now.
        Idempotent; leaving the ``async with`` block does the same.
        """
        self._inbox.close()

    def statistics(self) -> SubscriptionStatistics:
        """Return a snapshot of this subscription's counters."""
        return self._inbox.statistics()

    def __aiter__(self) -> Subscription[T_co]:
        return self

    async def __anext__(self) -> Message[T_co]:
        try:
            return await self._inbox.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
