"""_Inbox: one subscription's bounded buffer, its counters and its waiting tasks.

An ``_Inbox`` is a small memory channel of its own rather than a
``trio.open_memory_channel`` pair, because the counters must change in the same
step as the buffer (the law ``received + pending + dropped == routed`` holds at
every moment, not only between checkpoints), ``DROP_OLDEST`` evicts from the
sending side, and the end of the stream depends on who ended it.

This is the only module that parks and wakes tasks. As in trio's own memory
channels, a waker passes its result to the woken task with
``reschedule(task, outcome.Value(...))`` (or ``outcome.Error``), so no side
table holds results in between; and every method that changes state is
protected from ``KeyboardInterrupt`` (``enable_ki_protection``): a Ctrl-C that
arrives inside one is delivered at the next checkpoint instead, never between
two mutations that belong together.

Invariants (no checkpoint between any check and the mutation that follows it;
``put``, ``receive``, ``receive_batch`` and ``wait`` are the only methods that
wait):

* ``len(buffer) <= max_buffer_size``, except in a ``BLOCK`` inbox that took more
  retained messages on entry than it holds (see ``take_retained``); ``limit`` is
  ``max_buffer_size`` except while receivers or publishers wait, before the
  first message is buffered, and once it is no longer ``OPEN``: then 0. Below
  ``limit``, taking a message is an append and one more ``tally.delivered``:
  the first lines of ``offer``, and the one copy of them outside this class,
  inlined in ``Delivery.publish_nowait``.
* ``buffer`` is the shared, always empty ``_NO_BUFFER`` until a message is
  buffered: an idle subscription owns no deque.
* Tasks wait in ``receivers`` only while ``buffer`` is empty, and publishers wait
  in ``senders`` only while it is not empty: a message offered while a receiver
  waits goes straight to that receiver; a publisher waits only for a full
  ``BLOCK`` buffer, and once one waits, every later message waits behind it, so
  messages keep their order. Waiting publishers are let in together, once
  receives have made room for a quarter of the buffer (at least one message;
  ``let_in_at``) rather than at every message taken: a publisher that fills the
  buffer then wakes once per quarter of it, not once per message. A waiting
  publisher's deadline (``block_timeout``) lets it in at once if there is room.
* Every message that entered the buffer (or went straight to a receiver) is
  received, pending, evicted or discarded, and ``dropped == refused + evicted +
  discarded``; so ``delivered`` is derived, ``received + pending + dropped -
  refused``, and taking a message below ``limit`` only has to append it.
* Only an ``OPEN`` inbox is registered in its broker's routes.

Two figures cost the publish fast path nothing:

* ``high_water``, the most messages buffered at once: the length only grows by
  appends, so its highest points come right before a removal (a receive, an
  eviction, a discard), where it is noted, or are the length now.
* ``oldest_pending_age``, from marks: pairs ``(index, time)`` meaning "the
  message numbered ``index`` (in buffer order) and every later one arrived at
  ``time`` or after". ``statistics()`` notes one at every call, and from its
  first call on (before, nobody sees the figure) so does every receive from
  the buffer; the slow path notes one when it buffers the first message or
  evicts for ``DROP_OLDEST`` (those two exactly at the arrival). The age of
  the oldest pending message is at most the time since the last mark at or
  before it: high by at most the time between that mark and its arrival,
  never low. Publishers on the fast path read no clock: one read costs about
  a third of a publish, and a message arriving at an empty buffer cannot be
  told from any other there without a test that every delivery would pay.
"""

from __future__ import annotations

import enum
import math
import typing
from collections import deque
from typing import Generic, TypeVar

import outcome  # trio's own dependency: the values reschedule() passes
import trio
from trio.lowlevel import enable_ki_protection

from ._errors import BrokerClosedError, Lagged, SlowConsumerError
from ._log import RateLimitedWarning, logger
from ._policy import Action, OverflowPolicy, decide
from ._stats import SubscriptionStatistics

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    from ._message import Message

T = TypeVar("T")
W = TypeVar("W")


class Tally:
    """What one broker and all of its inboxes share: totals, and the way out.

    They live here rather than in each inbox, because every byte of an idle
    subscription counts.
    """

    __slots__ = ("clock", "delivered", "detach", "disconnected", "dropped")

    def __init__(self, detach: Callable[[_Inbox[typing.Any]], None]) -> None:
        self.detach = detach
        """Removes an inbox from the broker's routes."""
        self.delivered = 0
        self.dropped = 0
        self.disconnected = 0
        self.clock: Callable[[], float] | None = None
        """The ``current_time`` of the trio run's clock, once read (the broker
        forgets it when it moves to another run): half the cost of
        ``trio.current_time()``."""

    def now(self) -> float | None:
        """The broker's trio time now, or ``None`` if no run is known."""
        clock = self.clock
        if clock is None:
            try:
                clock = self.clock = trio.lowlevel.current_clock().current_time
            except RuntimeError:  # outside a trio run
                return None
        return clock()


class SubscriptionState(enum.Enum):
    """Where a subscription is in its life: :attr:`Subscription.state`.

    Every state but ``OPEN`` is final: the broker routes nothing more to it.
    """

    OPEN = enum.auto()
    """Registered in the broker's routes, taking new messages."""
    ENDED = enum.auto()
    """The broker was closed; drain, then ``trio.EndOfChannel``."""
    DRAINED = enum.auto()
    """Routed nothing more while the broker stays open; drain, then
    ``trio.EndOfChannel``; publishers waiting on it return as if it had left."""
    CUT_OFF = enum.auto()
    """Disconnected as a slow consumer; drain, then ``SlowConsumerError``."""
    CLOSED = enum.auto()
    """Left (scope exit or ``close()``): buffer discarded, ``ClosedResourceError``."""


State = SubscriptionState  # (the name the core uses)


# -- the waiters helper: park, wake one, wake all -------------------------------


def _park(
    waiters: dict[trio.lowlevel.Task, W], value: W
) -> typing.Coroutine[typing.Any, typing.Any, typing.Any]:
    """Enter ``waiters`` (under ``value``); return the wait, to be awaited at once.

    Awaiting it returns what the waker sent (or raises what it sent as an
    error). The waker removes the task from ``waiters`` first; if the wait is
    cancelled (or interrupted) instead, the task removes itself, so nothing
    refers to it. A plain function handing back trio's own wait, rather than a
    coroutine awaiting it: one frame less on every wake-up.
    """
    task = trio.lowlevel.current_task()
    waiters[task] = value

    def abort(_: object) -> trio.lowlevel.Abort:
        del waiters[task]
        return trio.lowlevel.Abort.SUCCEEDED

    return trio.lowlevel.wait_task_rescheduled(abort)  # noqa: ASYNC105 (see above)


def _wake_first(
    waiters: dict[trio.lowlevel.Task, W], result: outcome.Outcome[object]
) -> W:
    """Wake the longest-waiting task with ``result``; return its value."""
    task = next(iter(waiters))
    value = waiters.pop(task)
    trio.lowlevel.reschedule(task, result)
    return value


def _wake_all(
    waiters: dict[trio.lowlevel.Task, W],
    result: Callable[[], outcome.Outcome[object]],
) -> None:
    """Wake every waiting task, each with a ``result()`` of its own."""
    for task in waiters:
        trio.lowlevel.reschedule(task, result())
    waiters.clear()


WAIT: typing.Final = -1
"""What ``offer()`` returns for a full ``BLOCK`` buffer: wait with ``put()``."""

_NO_BUFFER: typing.Final[deque[typing.Any]] = deque()
"""The buffer of every inbox that has not buffered a message yet. Never appended
to: ``limit`` is 0 while it is in place, and ``_accept`` replaces it first."""

# An outcome can be unwrapped once: every wake-up gets a new one. A receiver
# woken by the end of the stream gets None (then take() says why); a publisher
# gets whether its message was accepted, or the error to raise.


class _Inbox(Generic[T]):
    """One subscription's buffer, counters and waiting tasks."""

    # The broker's fast path reads ``buffer`` and ``limit`` of every target:
    # first, so they share a cache line.
    __slots__ = (  # noqa: RUF023
        "buffer",
        "limit",
        "also",
        "block_timeout",
        "disconnect_after",
        "dropped",
        "handles",
        "high_water",
        "later",
        "max_buffer_size",
        "name",
        "pattern",
        "policy",
        "queue",
        "received",
        "receivers",
        "refused",
        "handed",
        "since",
        "senders",
        "state",
        "stopped",
        "streak",
        "streak_mark",
        "tally",
        "tokens",
        "warn_drop",
        "watched",
        "gaps",  # (last: the slots before it keep their places)
    )

    def __init__(
        self,
        pattern: str,
        tokens: tuple[str, ...],
        *,
        policy: OverflowPolicy,
        max_buffer_size: int,
        disconnect_after: int,
        tally: Tally,
        queue: str | None = None,
        also: tuple[tuple[str, ...], ...] = (),
        name: str | None = None,
        block_timeout: float = math.inf,
        report_gaps: bool = False,
    ) -> None:
        self.pattern = pattern
        self.name = pattern if name is None else name
        self.handles = 0  # Subscription handles open on it (see release())
        # How long a publish waits for room in a full BLOCK buffer (seconds).
        self.block_timeout = block_timeout
        self.queue = queue
        self.tokens = tokens
        # The parsed patterns after the first of an inbox that listens on several
        # (one ordered stream for a NATS bridge's export); () for a subscription.
        self.also = also
        self.policy = policy
        self.max_buffer_size = max_buffer_size
        self.disconnect_after = disconnect_after
        self.tally = tally
        self.state = State.OPEN
        # Set once it is no longer OPEN; made only for a task that waits for it
        self.stopped: trio.Event | None = None
        self.buffer: deque[Message[T]] = _NO_BUFFER
        # What the fast path may fill the buffer up to: max_buffer_size, or 0
        # while receivers wait (a message for them takes the slow path and is
        # handed over), while publishers wait (a new message waits behind them)
        # and while there is no deque yet (the slow path makes it).
        self.limit = 0
        # dicts used as FIFO sets of waiting tasks: receivers with the handle
        # they wait on, publishers with their message
        self.receivers: dict[trio.lowlevel.Task, object] = {}
        self.senders: dict[trio.lowlevel.Task, Message[T]] = {}
        self.received = 0
        self.dropped = 0
        self.refused = 0
        self.handed = 0  # received straight from a publisher, never buffered
        self.high_water = 0  # noted before each removal (see the module doc)
        # The marks (see the module doc): ``since``, the time of the last one at
        # or before the oldest pending message, and the later ones, in a deque
        # made only for a consumer that falls behind (a deque takes 600 bytes).
        self.since: float | None = None
        self.later: deque[tuple[int, float]] | None = None
        # Whether statistics() has been read; until then nobody sees the age,
        # and receives read no clock.
        self.watched = False
        # Refusals in a row: ``streak`` counts them while ``delivered`` stays at
        # ``streak_mark``; any accepted message moves ``delivered`` and so ends it.
        self.streak = 0
        self.streak_mark = 0
        self.warn_drop: RateLimitedWarning | None = None
        # With report_gaps, the gaps not yet reported, oldest first: [index,
        # count], the index (in buffer order, as ``removed`` counts) of the
        # message the gap comes before; None without report_gaps.
        self.gaps: deque[list[int]] | None = deque() if report_gaps else None

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
        """Whether a message offered now would wait (a ``BLOCK`` inbox).

        It would when the buffer is full, or publishers still wait for room.
        """
        return (
            self.policy is OverflowPolicy.BLOCK
            and self.state is State.OPEN
            and (len(self.buffer) >= self.max_buffer_size or bool(self.senders))
        )

    @property
    def let_in_at(self) -> int:
        """The length at or below which receives let waiting publishers in."""
        return self.max_buffer_size - max(1, self.max_buffer_size // 4)

    @enable_ki_protection
    def take_retained(self, messages: list[Message[T]]) -> None:
        """Receive the retained messages its pattern matches, on entry.

        Each goes through the policy as a published message would, except that a
        ``BLOCK`` inbox takes them all, beyond its size if need be: nobody can
        wait at entry, and none may be lost. Publishers then wait until the
        consumer has brought the buffer back under its size.
        """
        for message in messages:
            if self.state is not State.OPEN:
                return  # cut off by DISCONNECT: the rest are not routed to it
            if self.policy is OverflowPolicy.BLOCK:
                self._accept(message)
            else:
                self.offer(message)

    @enable_ki_protection
    def offer(self, message: Message[T]) -> int:
        """Offer a message without waiting.

        Returns 1 if it was accepted, 0 if not (refused, or this inbox is no
        longer open), and ``WAIT`` (-1) if this is a ``BLOCK`` inbox whose
        buffer is full: an ordinary answer rather than an exception, as every
        message of a publisher that keeps a ``BLOCK`` buffer full gets it.
        """
        buffer = self.buffer
        if len(buffer) < self.limit:
            # The common case: room, nobody waits, open (see ``limit``).
            buffer.append(message)
            self.tally.delivered += 1
            return 1
        if self.state is not State.OPEN:
            return 0  # left, or cut off, after the publisher's snapshot
        if len(self.buffer) < self.max_buffer_size:
            if self.senders:
                return WAIT  # behind the publishers already waiting (BLOCK)
            # Room (a receiver may be waiting): what decide() would say at once,
            # without working out the drop streak it does not need here.
            self._accept(message)
            return 1
        policy = self.policy
        if policy is OverflowPolicy.BLOCK:
            return WAIT  # what decide() says for a full BLOCK buffer, without it
        action = decide(
            policy,
            pending=len(self.buffer),
            max_buffer_size=self.max_buffer_size,
            # the streak takes sums to work out, and only DISCONNECT needs it
            consecutive_drops=(
                self.consecutive_drops if policy is OverflowPolicy.DISCONNECT else 0
            ),
            disconnect_after=self.disconnect_after,
        )
        if action is Action.EVICT_OLDEST:
            self._note_high_water()
            self.buffer.popleft()
            if self.gaps is not None:
                self._gap_at_head()
            self._count_drops(1)
            self._move_marks()
            self._warn_drop(message, "discarded its oldest pending message")
            self._mark()  # (the slow path already: its arrival, exactly)
            self._accept(message)
            return 1
        self._refuse(message, "dropped a new message")
        if action is Action.DISCONNECT:
            self._cut_off()
        return 0

    def _refuse(self, message: Message[T], what: str) -> None:
        """Count ``message`` as routed here and dropped, never buffered."""
        if self.gaps is not None:  # a gap after what is held
            self._add_gap(self.removed + len(self.buffer))
        self.streak = self.consecutive_drops + 1
        self.refused += 1
        self._count_drops(1)
        self.streak_mark = self.delivered
        self._warn_drop(message, what)

    def _add_gap(self, index: int, count: int = 1) -> None:
        """One more message lost before the message numbered ``index``."""
        gaps = self.gaps
        assert gaps is not None, "only with report_gaps"
        if gaps and gaps[-1][0] == index:
            gaps[-1][1] += count
        else:
            gaps.append([index, count])

    def _gap_at_head(self) -> None:
        """The oldest pending message is being evicted: move the head gap on.

        (``removed`` does not count it yet.) The gap before it, if any, now
        comes before the next one, one message larger.
        """
        head = self.removed
        count = 1
        gaps = self.gaps
        if gaps and gaps[0][0] == head:
            count += gaps.popleft()[1]
        # Only DROP_OLDEST evicts, and it never refuses: no gap lies further on
        assert not gaps, "a DROP_OLDEST inbox has gaps at its head only"
        self._add_gap(head + 1, count)

    def _lagged(self) -> Lagged:
        """Report the gap at the head of the stream, and forget it."""
        assert self.gaps is not None
        return Lagged(self.name, self.gaps.popleft()[1])

    @enable_ki_protection
    async def put(self, message: Message[T]) -> bool:
        """Offer a message, waiting for room if this is a full ``BLOCK`` inbox.

        Returns whether it was accepted; ``False`` when the subscription left
        while the publisher waited, or ``block_timeout`` passed first (then the
        message is dropped here, counted and logged).

        Raises:
            BrokerClosedError: the broker was closed before there was room.

        If cancelled while waiting, the message does not enter this buffer and
        every counter is as if it had never been offered.
        """
        if self.state is State.ENDED:
            # The publish was still due to deliver here when the broker closed.
            raise self._broker_closed()
        if not self.would_block():
            return self.offer(message) > 0  # (it cannot say WAIT then)
        self.limit = 0  # later messages wait behind this one
        try:
            if self.block_timeout == math.inf:
                # No deadline, so no cancel scope: the wait is cancelled only
                # from outside, and then nothing entered the buffer.
                waited_for: bool = await _park(self.senders, message)
                return waited_for
            with trio.move_on_after(self.block_timeout) as waited:
                accepted: bool = await _park(self.senders, message)
                return accepted
        finally:
            # a publisher let in, cancelled or out of time: it may have been
            # the last one waiting
            self._reopen_fast_path()
        # block_timeout passed: the wait was given up and nothing entered
        assert waited.cancelled_caught
        if self.state is State.OPEN and len(self.buffer) < self.max_buffer_size:
            # Room, made after it began to wait: publishers are let in a
            # quarter of the buffer at a time, but never after their deadline.
            self._accept(message)
            return True
        self._refuse(message, f"dropped a message after {self.block_timeout} s")
        return False

    def _broker_closed(self) -> BrokerClosedError:
        where = repr(self.name)
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
            self.received += 1
            self.handed += 1
            _wake_first(self.receivers, outcome.Value(message))
            # If it was the last one, what comes before it resumes takes the
            # fast path.
            self._reopen_fast_path()
        else:
            if not self.buffer:
                if self.buffer is _NO_BUFFER:
                    self.buffer = deque()
                    self.limit = self.max_buffer_size  # no receiver waits: see above
                self._mark()  # on the slow path anyway: its arrival, exactly
            self.buffer.append(message)

    def _reopen_fast_path(self) -> None:
        """Let messages in by an append again once nobody waits (and it is open)."""
        if (
            not self.receivers
            and not self.senders
            and self.buffer is not _NO_BUFFER
            and self.state is State.OPEN
        ):
            self.limit = self.max_buffer_size

    def _let_in(self) -> None:
        """Room was made: waiting publishers' messages fill it, in turn."""
        senders = self.senders
        buffer = self.buffer
        while senders and len(buffer) < self.max_buffer_size:
            self._accept(_wake_first(senders, outcome.Value(True)))
        self._reopen_fast_path()

    def _note_high_water(self) -> None:
        """Note the buffer's length before a removal (its peaks come there)."""
        if len(self.buffer) > self.high_water:
            self.high_water = len(self.buffer)

    def _mark(self) -> None:
        """Note that what arrives from now on arrives after ``current_time()``."""
        now = self.tally.now()
        if now is None:
            return
        if not self.buffer:  # for the message about to arrive: the oldest
            self.since = now
            self.later = None
            return
        index = self.removed + len(self.buffer)
        later = self.later
        if later is None:
            later = self.later = deque()
        elif later and later[-1][0] == index:
            later.pop()  # nothing arrived since: the new time is the closer one
        later.append((index, now))

    @property
    def removed(self) -> int:
        """Messages that left the buffer: received from it, evicted, discarded.

        It is also the index, in buffer order, of the oldest pending one.
        """
        return self.received - self.handed + self.dropped - self.refused

    def _move_marks(self) -> None:
        """Messages left the front of the buffer: the marks move on with it."""
        later = self.later
        removed = self.removed
        while later and later[0][0] <= removed:
            self.since = later.popleft()[1]

    def oldest_pending_age(self) -> float | None:
        """Seconds the oldest pending message has waited at most (see above)."""
        if not self.buffer or self.since is None:
            return None
        now = self.tally.now()
        return None if now is None else now - self.since

    def _count_drops(self, count: int) -> None:
        self.dropped += count
        self.tally.dropped += count

    def _warn_drop(self, message: Message[T], what: str) -> None:
        if self.warn_drop is None:
            self.warn_drop = RateLimitedWarning()
        self.warn_drop(
            "subscription %r (%s, buffer of %d full) %s on subject %r; "
            "%d dropped so far",
            self.name,
            self.policy.name,
            self.max_buffer_size,
            what,
            message.subject,
            self.dropped,
        )

    def _cut_off(self) -> None:
        self.state = State.CUT_OFF
        self.tally.detach(self)
        self.tally.disconnected += 1
        logger.warning(
            "subscription %r was disconnected as a slow consumer after %d "
            "consecutive drops; %d messages remain for it to drain",
            self.name,
            self.consecutive_drops,
            len(self.buffer),
        )
        self._wake_everyone(broker_closed=False)

    # -- receiving side -------------------------------------------------------

    @enable_ki_protection
    def take(self) -> Message[T]:
        """Take the oldest pending message, or raise what the state says.

        With a gap before the oldest pending message, raise ``Lagged`` once.
        """
        if self.gaps and self.gaps[0][0] == self.removed:
            raise self._lagged()
        buffer = self.buffer
        if buffer:
            if len(buffer) > self.high_water:
                self.high_water = len(buffer)
            message = buffer.popleft()
            self.received += 1
            if self.watched:
                self._move_marks()
                self._mark()  # what arrives from now on waits less
            if self.senders and len(buffer) <= self.let_in_at:
                # Room for a quarter of the buffer: it belongs to the waiting
                # publishers, longest-waiting first. (A buffer holding more
                # retained messages than its size has none.)
                self._let_in()
            return message
        if self.state is State.OPEN:
            raise trio.WouldBlock
        if self.state is State.ENDED or self.state is State.DRAINED:
            raise trio.EndOfChannel
        if self.state is State.CUT_OFF:
            raise SlowConsumerError(
                f"subscription {self.name!r} was disconnected as a slow consumer "
                f"after {self.disconnect_after} consecutive drops "
                f"(buffer of {self.max_buffer_size})"
            )
        raise trio.ClosedResourceError(f"subscription {self.name!r} is closed")

    @enable_ki_protection
    def take_batch(self, max_items: int) -> list[Message[T]]:
        """Take up to ``max_items`` pending messages, oldest first, at least one.

        With nothing pending, raises what :meth:`take` raises. Room made for
        waiting publishers goes to them in turn, as after each ``take()``.
        """
        buffer = self.buffer
        if not buffer or self.gaps:
            if not buffer or self.gaps[0][0] == self.removed:  # type: ignore[index]
                # raises: WouldBlock, the end of the stream, or Lagged
                return [self.take()]
            # up to the next gap, not past it
            max_items = min(max_items, self.gaps[0][0] - self.removed)  # type: ignore[index]
        length = len(buffer)
        if length > self.high_water:
            self.high_water = length
        if max_items >= length:
            batch = list(buffer)
            buffer.clear()
        else:
            popleft = buffer.popleft
            batch = [popleft() for _ in range(max_items)]
        self.received += len(batch)
        if self.watched:
            self._move_marks()
            self._mark()
        if self.senders and len(buffer) <= self.let_in_at:
            self._let_in()
        return batch

    @enable_ki_protection
    async def receive_batch(self, max_items: int, handle: object) -> list[Message[T]]:
        """Wait for messages, take up to ``max_items``: one checkpoint for all."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.buffer or self.gaps or self.state is not State.OPEN:
            batch = self.take_batch(max_items)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return batch
        first = await self.wait(handle)
        if max_items == 1 or not self.buffer:
            return [first]
        # What was published after it, before this task ran again
        return [first, *self.take_batch(max_items - 1)]

    @enable_ki_protection
    async def receive(self, handle: object = None) -> Message[T]:
        """Wait for the next message (a checkpoint); see ``Subscription.receive``.

        ``handle`` is the Subscription it is received through: closing that
        handle wakes the tasks that wait on it.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.buffer or self.gaps or self.state is not State.OPEN:
            # A message, a gap, or the end of the stream: take() returns or raises
            # it. (Tested first: an empty buffer raises nothing on its way to
            # the wait.)
            message = self.take()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return message
        return await self.wait(handle)

    @enable_ki_protection
    async def wait(self, handle: object) -> Message[T]:
        """Wait for a message while the buffer is empty and the stream open.

        The waiting half of :meth:`receive`, for callers that took the other
        half themselves (``Subscription.__anext__``: one frame less a message).
        Parks in ``receivers`` until a publisher hands it a message, or the
        stream ends (then it raises as :meth:`take` does).
        """
        self.limit = 0
        try:
            handed: Message[T] | None = await _park(self.receivers, handle)
        finally:
            # the last receiver may have left, cancelled or woken by the end
            self._reopen_fast_path()
        if handed is None:
            # Woken because the stream ended: take() raises the reason.
            return self.take()
        return handed

    # -- ending ---------------------------------------------------------------

    @enable_ki_protection
    def end(self) -> None:
        """The broker closed: no new messages; drain, then ``EndOfChannel``."""
        assert self.state is State.OPEN, "only open inboxes are registered"
        self.state = State.ENDED
        self._wake_everyone(broker_closed=True)

    @enable_ki_protection
    def drain(self) -> None:
        """Route nothing more here; keep what is held; then ``EndOfChannel``.

        Unlike :meth:`end`, the broker is still open: publishers waiting for
        room here return as for a subscription that left. Idempotent; nothing
        happens once it has ended, been cut off or closed.
        """
        if self.state is State.OPEN:
            self.state = State.DRAINED
            self.tally.detach(self)
            self._wake_everyone(broker_closed=False)

    @enable_ki_protection
    def release(self, handle: object, error: Callable[[], BaseException]) -> None:
        """A handle was closed: wake the tasks waiting on it with ``error()``.

        Closing the last handle closes the inbox.
        """
        waiting = [task for task, on in self.receivers.items() if on is handle]
        for task in waiting:
            del self.receivers[task]
            trio.lowlevel.reschedule(task, outcome.Error(error()))
        self.handles -= 1
        if self.handles <= 0:
            self.close()
        else:
            self._reopen_fast_path()

    @enable_ki_protection
    def close(self) -> None:
        """The subscriber left: discard what is pending and count it as dropped."""
        if self.state is State.CLOSED:
            return
        was_open = self.state is State.OPEN
        self.state = State.CLOSED
        if was_open:
            self.tally.detach(self)
        discarded = len(self.buffer)
        if discarded:
            self._note_high_water()
            self.buffer.clear()
            self.since = self.later = None
            self._count_drops(discarded)
        if self.gaps:
            self.gaps.clear()  # nobody reads on: nothing lies after them
        self._wake_everyone(broker_closed=False)

    def _wake_everyone(self, *, broker_closed: bool) -> None:
        self.limit = 0  # no longer open: every message takes offer()'s checks
        if self.stopped is not None:
            self.stopped.set()
        if broker_closed:
            _wake_all(self.senders, lambda: outcome.Error(self._broker_closed()))
        else:
            _wake_all(self.senders, lambda: outcome.Value(False))
        _wake_all(self.receivers, lambda: outcome.Value(None))

    def stop_event(self) -> trio.Event:
        """An event set once the inbox is no longer ``OPEN`` (made on demand)."""
        if self.stopped is None:
            self.stopped = trio.Event()
            if self.state is not State.OPEN:
                self.stopped.set()
        return self.stopped

    def statistics(self) -> SubscriptionStatistics:
        # From now on, receives look at the clock too: the figure is read.
        self.watched = True
        self._mark()
        return SubscriptionStatistics(
            delivered=self.delivered,
            received=self.received,
            pending=len(self.buffer),
            dropped=self.dropped,
            max_buffer_size=self.max_buffer_size,
            high_water=max(self.high_water, len(self.buffer)),
            oldest_pending_age=self.oldest_pending_age(),
        )
