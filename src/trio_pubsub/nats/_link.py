"""The asyncio side of a bridge: nats-py on its own event loop, in a thread.

A :class:`Link` owns the thread, the loop and the NATS connection. Methods whose
names start with ``_`` run in the loop's thread; the others are called from
the trio side. The two sides share no lock: each counter is written by one
thread only, and work crosses in batches, one thread hop per batch:

* out: the trio side hands a list of encoded messages to :meth:`Link.send`
  (``call_soon_threadsafe``); a sender task publishes it, then confirms it
  with a PING/PONG round trip, then gives the trio side its credit back
  (``TrioToken.run_sync_soon``).
* in: each NATS subscription has a :class:`Lane` of its own: a deque that
  the subscription's messages are appended to, and that the trio side's
  import task for that lane empties in one go (:meth:`Link.incoming`); the
  first message after it was emptied wakes that task. A lane's queue is
  bounded in messages and payload bytes; when it is full, its messages wait
  in nats-py's own bounded queue for that subscription, and what that
  refuses is counted. Lanes share nothing, so one that waits (for a full
  ``BLOCK`` subscriber in the broker) holds back no other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import nats
import nats.errors
import trio

from .. import _port
from .._log import RateLimitedWarning
from ._client import GuardedClient, Incoming
from ._core import CoreNats

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from nats.aio.client import Server
    from nats.aio.msg import Msg

    from ._carrier import Carrier

logger = logging.getLogger("trio_pubsub.nats")

R = TypeVar("R")

IN_FLIGHT = 4
"""Most batches handed to the loop and not yet done with."""

WATCH_INTERVAL = 1.0
"""Seconds between two looks at whether nats-py's read loop still runs."""

# (remote subject, data, headers or None, reply subject or None, deadline or
# None): one message ready for NATS. A request carries the time.monotonic()
# after which nobody waits for its answer: it is not sent after that.
Outgoing = tuple[str, bytes, dict[str, str] | None, str | None, float | None]


class _Call(Generic[R]):
    """A coroutine handed to the loop by :meth:`Link.call`, and its task."""

    __slots__ = ("cancelled", "coroutine", "done", "task")

    def __init__(self, coroutine: Coroutine[Any, Any, R]) -> None:
        self.coroutine = coroutine
        self.task: asyncio.Task[R] | None = None
        self.cancelled = False
        self.done = trio.Event()


class Lane:
    """The way in of one NATS subscription: its queue, its bounds, its wake-ups.

    The loop's thread appends, and keeps each message's size until it sees
    that the trio side has taken it; the trio side takes all that is queued
    at once and counts how many it took (so the sizes cost the loop's
    thread, not trio's, which is the busier one). What the queue
    holds stays within ``max_messages`` and ``max_bytes`` of payload, but an
    empty queue takes one message of any size. (The trio side's batch in hand
    is outside it, as it is outside nats-py's queue: counting it would make
    the read loop fall back to nats-py's slower path while a batch is being
    imported, and batches smaller, for no bound that matters: a lane holds at
    most about three times its bounds, with nats-py's queue.)
    """

    __slots__ = (
        "answers",
        "earlier",
        "full",
        "in_callback",
        "items",
        "max_bytes",
        "max_messages",
        "queued_bytes",
        "received",
        "replies",
        "room",
        "screened",
        "seen_taken",
        "sizes",
        "taken",
        "tell_scheduled",
        "trio_waits",
        "wake",
    )

    def __init__(
        self,
        *,
        answers: bool,
        replies: str | None,
        earlier: list[tuple[str, ...]],
        max_messages: int,
        max_bytes: int,
    ) -> None:
        self.answers = answers
        """Whether this is the subscription for answers to the broker's requests."""
        self.screened = False
        """Whether its messages may be under ``_INBOX.`` and must be looked at."""
        self.replies = replies
        self.earlier = earlier
        """Patterns of the subscriptions before it (see :func:`_seen`)."""
        self.items: deque[Incoming] = deque()
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        # written in the loop's thread
        self.received = 0
        self.sizes: deque[int] = deque()  # of the messages not seen taken
        self.queued_bytes = 0  # their sum
        self.seen_taken = 0
        self.tell_scheduled = False  # _tell_trio is due
        self.in_callback = 0  # nats-py's path runs for it (see Link._can_take)
        self.room: asyncio.Event | None = None
        # written on the trio side
        self.taken = 0
        self.trio_waits = False  # waiting for ``wake``
        self.wake = trio.Event()
        # written by both: the loop's thread waits for room (see Link.incoming)
        self.full = False

    def has_room(self, size: int) -> bool:
        """Whether a message of ``size`` payload bytes fits in the queue now.

        In the loop's thread.
        """
        taken = self.taken
        if taken != self.seen_taken:
            sizes = self.sizes
            freed = 0
            for _ in range(taken - self.seen_taken):
                freed += sizes.popleft()
            self.queued_bytes -= freed
            self.seen_taken = taken
        queued = self.received - taken
        return queued == 0 or (
            queued < self.max_messages and self.queued_bytes + size <= self.max_bytes
        )

    def poke(self) -> None:
        """Wake the trio side's task (in the trio thread)."""
        self.wake.set()


KEPT_WAITS = 16
"""Waits a :class:`Backoff` remembers of one break."""


class Backoff:
    """Jittered, capped exponential waits between attempts to reconnect.

    The n-th attempt after a break waits a time drawn evenly from the upper
    half of ``min(cap, base * 2**(n-1))``: never less than half of it (no
    tight loop against a server that refuses), and spread, so that many
    clients that lost one server do not come back in the same instant.
    """

    def __init__(
        self, base: float, cap: float, draw: Callable[[float, float], float]
    ) -> None:
        self.base = base
        self.cap = cap
        self.attempts = 0
        self.waits: list[float] = []
        """The first waits drawn since the last connection (at most
        ``KEPT_WAITS``: an outage may last for days), for tests to read."""
        self.last_waits: list[float] = []
        """Those drawn before the last connection."""
        self._draw = draw

    def next_wait(self) -> float:
        """The seconds to wait before the next attempt."""
        ceiling = min(self.cap, self.base * 2.0**self.attempts)
        self.attempts += 1
        wait = self._draw(ceiling / 2, ceiling)
        if len(self.waits) < KEPT_WAITS:
            self.waits.append(wait)
        return wait

    def reset(self) -> None:
        """Connected: the next break starts from ``base`` again."""
        self.attempts = 0
        self.last_waits = self.waits
        self.waits = []


class Counters:
    """The link's counters. Each is written by one thread only."""

    def __init__(self) -> None:
        # written in the loop's thread
        self.exported = 0
        self.settled = 0  # messages of batches done with, whatever their fate
        self.unconfirmed = 0
        self.refused = 0  # NATS refused it, or the connection was closed for good
        self.expired = 0  # requests whose deadline passed before they were sent
        self.slow_consumer = 0
        self.malformed = 0  # messages from NATS nats-py could not read
        self.reconnects = 0
        self.connected = False
        self.closed = False


class Link:
    """nats-py in a thread of its own, driven from trio."""

    def __init__(
        self,
        token: trio.lowlevel.TrioToken,
        *,
        max_inbound: int,
        max_inbound_bytes: int,
        connect_options: dict[str, Any],
        flush_timeout: float,
        backoff: Backoff,
    ) -> None:
        self.counters = Counters()
        self.carrier: Carrier = CoreNats(self)
        """What sends the batches out (core NATS: PUB, then PING/PONG)."""
        self.max_payload = 1 << 20
        """The server's max_payload (nats-server's default until connected)."""
        self._token = token
        self._max_inbound = max_inbound
        self._max_inbound_bytes = max_inbound_bytes
        self._connect_options = connect_options
        self.backoff = backoff
        self.flush_timeout = flush_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, name="trio-pubsub-nats", daemon=True
        )
        self._finished = trio.Event()
        self.nc: GuardedClient | None = None
        # in: one lane per subscription, by its sid
        self._lanes: dict[int, Lane] = {}
        self._stopped = False  # loop side: the connection is closed for good
        # out: batches handed over and not yet sent
        self._outbox: asyncio.Queue[list[Outgoing]] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.up: asyncio.Event | None = None  # set while connected
        # Disconnections so far: a batch sent across one is unconfirmed.
        self.breaks = 0
        self._closing = False  # the bridge is closing the connection itself
        # one rate-limited warning per cause, made on first use (see _warn)
        self._warnings: dict[str, RateLimitedWarning] = {}
        self._credit = trio.Semaphore(IN_FLIGHT)  # batches handed over and not yet done
        # The prefix of the subscription for answers, once made (it takes one
        # token after it): the others skip what it matches.
        self._replies: str | None = None
        # loop side: tasks started for a moment (see _tell_busy)
        self._tasks: set[asyncio.Future[Any]] = set()
        self.on_reconnected: list[Callable[[], None]] = []
        """Run in the loop's thread after each reconnection."""

    # -- the thread ---------------------------------------------------------------

    def start(self) -> None:
        """Start the thread and its event loop."""
        self._thread.start()

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # What is left (nats-py's own tasks after a failed close) is cancelled
            # and awaited, so that closing the loop warns about nothing.
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            asyncio.set_event_loop(None)
            loop.close()
            self.to_trio(self._finished.set)

    def to_trio(self, function: Callable[[], object]) -> None:
        """Run ``function`` in the trio thread, soon (from the loop's thread)."""
        # After the trio run has ended there is nobody to tell.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(function)

    def soon(self, function: Callable[[], object]) -> None:
        """Run ``function`` in the loop's thread, soon (from the trio side).

        Raises:
            RuntimeError: the loop is closed.
        """
        self._loop.call_soon_threadsafe(function)

    async def call(self, coroutine: Coroutine[Any, Any, R]) -> R:
        """Run ``coroutine`` on the loop and wait for it from trio.

        One callback there and one back (``asyncio.run_coroutine_threadsafe``
        and its thread-safe future cost a hop half as much again: 140 µs
        against 80, measured). Cancelling the wait cancels the coroutine.

        Raises:
            concurrent.futures.CancelledError: the loop cancelled it (it is
                closing).
            RuntimeError: the loop is closed.
        """
        call: _Call[R] = _Call(coroutine)
        try:
            self._loop.call_soon_threadsafe(self._start_call, call)
        except RuntimeError:
            coroutine.close()
            raise
        try:
            await call.done.wait()
        except BaseException:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._cancel_call, call)
            raise
        task = call.task
        assert task is not None
        if task.cancelled():
            raise concurrent.futures.CancelledError
        return task.result()

    def _start_call(self, call: _Call[Any]) -> None:
        if call.cancelled:  # (given up on before it started)
            call.coroutine.close()
            return
        task = call.task = self._loop.create_task(call.coroutine)
        self._tasks.add(task)  # (the loop keeps only a weak reference)
        task.add_done_callback(functools.partial(self._call_done, call))

    def _call_done(self, call: _Call[Any], task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self.to_trio(call.done.set)

    def _cancel_call(self, call: _Call[Any]) -> None:
        call.cancelled = True
        if call.task is not None:
            call.task.cancel()

    async def stop(self) -> None:
        """Stop the loop and wait for the thread to end."""
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                self._loop.call_soon_threadsafe(self._loop.stop)
            await self._finished.wait()
        self._thread.join()

    # -- connecting ---------------------------------------------------------------

    async def _connect(self) -> None:
        self.up = asyncio.Event()
        self._outbox = asyncio.Queue()
        options = dict(self._connect_options)
        # On the first connect nats-py would retry forever with -1: try each
        # server twice and fail, then reconnect as asked (it reads its options
        # dict when it reconnects).
        attempts = options.pop("max_reconnect_attempts")
        self.nc = GuardedClient(self._on_malformed)
        await self.nc.connect(
            **options,
            max_reconnect_attempts=1,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
            reconnect_to_server_handler=self._next_server,
        )
        self.nc.options["max_reconnect_attempts"] = attempts
        self.max_payload = self.nc.max_payload
        self.counters.connected = True
        self.up.set()
        self._sender = asyncio.ensure_future(self._send_batches())
        self._watcher = asyncio.ensure_future(self._watch())

    async def connect(self) -> None:
        """Connect to NATS (nats-py's own connect, its errors included)."""
        await self.call(self._connect())

    async def _subscribe(
        self, subjects: list[str], queue: str, answers: bool
    ) -> list[Lane]:
        assert self.nc is not None
        lanes = []
        for index, subject in enumerate(subjects):
            # NATS sends a message once per subscription it matches, so with
            # overlapping patterns it is taken from the first of them only. A
            # queue group gets one copy in all, through any of them.
            # (split, not parsed: a subject from NATS may break the grammar
            # here, and is then dropped and counted once, on import)
            # The subscription for answers has its own copy of what it matches.
            earlier = [] if queue else [tuple(s.split(".")) for s in subjects[:index]]
            lane = Lane(
                answers=answers,
                replies=None if answers else self._replies,
                earlier=earlier,
                max_messages=self._max_inbound,
                max_bytes=self._max_inbound_bytes,
            )
            lane.room = asyncio.Event()
            sub = await self.nc.subscribe(
                subject,
                queue=queue,
                cb=functools.partial(self._on_message, lane),
                pending_msgs_limit=self._max_inbound,
                pending_bytes_limit=self._max_inbound_bytes,
            )
            sid = GuardedClient.sid(sub)
            self._lanes[sid] = lane
            self.nc.takers[sid] = (
                functools.partial(self._can_take, lane),
                functools.partial(self._take, lane),
            )
            lanes.append(lane)
        # After the PONG, the server has the subscriptions.
        await self.nc.flush(timeout=self.flush_timeout)  # type: ignore[arg-type]
        return lanes

    async def subscribe(self, subjects: list[str], queue: str) -> list[Lane]:
        """Subscribe to ``subjects`` (``queue``: a queue group, or "") and confirm.

        Returns their lanes, in the same order.
        """
        return await self.call(self._subscribe(subjects, queue, answers=False))

    async def subscribe_replies(self, prefix: str) -> Lane:
        """Subscribe to the answers to the broker's requests, before the others.

        They are the subjects of one token after ``prefix`` (which ends in a
        dot). Returns their lane.
        """
        (lane,) = await self.call(self._subscribe([prefix + "*"], "", answers=True))
        self._replies = prefix
        return lane

    def _on_malformed(self, sid: int | None, subject: bytes, what: str) -> None:
        lane = None if sid is None else self._lanes.get(sid)
        # NATS sent it once per subscription it matches: count it once.
        if lane is not None and _seen(
            lane.replies, lane.earlier, subject.decode(errors="surrogateescape")
        ):
            return
        self.counters.malformed += 1
        self.warn(
            "malformed",
            "NATS bridge: a message from NATS was not imported: nats-py cannot "
            "read it (%s)",
            what,
        )

    async def _watch(self) -> None:
        """Restart a read loop that has ended while the connection looks up.

        nats-py's read loop ends on any error it does not expect, and then
        nothing more is read while ``is_connected`` stays true. This looks
        every WATCH_INTERVAL seconds and, if so, makes nats-py reconnect.
        """
        nc = self.nc
        assert nc is not None
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            reader = nc.reader
            if nc.is_connected and (reader is None or reader.done()):
                self.warn(
                    "reader",
                    "NATS bridge: the connection stopped reading; reconnecting",
                )
                await nc.restart_reading()

    async def _on_error(self, error: Exception) -> None:
        if isinstance(error, nats.errors.SlowConsumerError):
            self.counters.slow_consumer += 1
            self.warn(
                "slow consumer",
                "NATS bridge: a message on %r was dropped: the bridge's inbound "
                "queue is full (the broker takes messages more slowly than NATS "
                "brings them)",
                error.subject,
            )
        else:
            name = type(error).__name__
            self.warn(name, "NATS bridge: %s: %s", name, error)

    async def _on_disconnected(self) -> None:
        self.breaks += 1
        self.counters.connected = False
        if self.up is not None:
            self.up.clear()
        if self._closing:
            return
        self.warn(
            "disconnected",
            "NATS bridge: disconnected; messages to export wait in its queue",
        )

    def _next_server(
        self, servers: list[Server], info: dict[str, Any]
    ) -> tuple[Server | None, float]:
        """nats-py's choice of server, and wait, before each attempt to reconnect.

        The server tried least often since the break, after a jittered,
        capped, exponential wait (:class:`Backoff`).
        """
        least = min(servers, key=lambda server: server.reconnects)
        return least, self.backoff.next_wait()

    async def _on_reconnected(self) -> None:
        self.backoff.reset()
        self.counters.reconnects += 1
        self.counters.connected = True
        assert self.nc is not None
        self.max_payload = self.nc.max_payload
        url = self.nc.connected_url  # a ParseResult, or None if it broke again
        self.warn(
            "reconnected",
            "NATS bridge: reconnected to %s",
            url.geturl() if url else "the server",
        )
        assert self.up is not None
        self.up.set()
        for hook in self.on_reconnected:
            hook()

    async def _on_closed(self) -> None:
        self.counters.connected = False
        self.counters.closed = True
        # Wake the sender: it counts every batch left as refused.
        if self.up is not None:
            self.up.set()
        self._open_lanes()
        if self._closing:
            logger.info("NATS bridge: connection closed")
        else:
            self.warn(
                "closed",
                "NATS bridge: connection closed for good (no reconnect attempt "
                "left); what is left to export is dropped",
            )

    # -- out ------------------------------------------------------------------------

    async def send(self, batch: list[Outgoing]) -> bool:
        """Hand ``batch`` to the loop, once fewer than IN_FLIGHT are in flight.

        Returns False if the loop has stopped: the caller counts the batch lost.
        """
        await self._credit.acquire()
        assert self._outbox is not None
        try:
            self._loop.call_soon_threadsafe(self._outbox.put_nowait, batch)
        except RuntimeError:  # the loop is closed
            self._credit.release()
            return False
        return True

    async def wait_sent(self) -> None:
        """Wait until every batch handed over is done with."""
        for _ in range(IN_FLIGHT):
            await self._credit.acquire()
        for _ in range(IN_FLIGHT):
            self._credit.release()

    def _done(self) -> None:
        self.to_trio(self._credit.release)

    async def _send_batches(self) -> None:
        assert self._outbox is not None
        assert self.up is not None
        while True:
            batch = await self._outbox.get()
            try:
                await self.carrier.carry(batch)
            finally:
                self.counters.settled += len(batch)
                self._done()

    def no_responders(self, subjects: list[str]) -> None:
        """Tell each of ``subjects`` "no responders" (NATS's 503), if connected.

        Best effort, counted nowhere: the requests it answers were counted
        when they were refused.
        """
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._tell_busy, subjects)

    def _tell_busy(self, subjects: list[str]) -> None:
        nc = self.nc
        if nc is None or not nc.plainly_connected:
            return
        for subject in subjects:
            nc.write_status(subject, _NO_RESPONDERS)
        flush = asyncio.ensure_future(nc.kick_flusher())
        self._tasks.add(flush)  # (the loop keeps only a weak reference)
        flush.add_done_callback(self._tasks.discard)

    def warn(self, cause: str, fmt: str, *args: object) -> None:
        """Log a warning, at most one a second for each ``cause``."""
        warn = self._warnings.get(cause)
        if warn is None:
            warn = self._warnings[cause] = RateLimitedWarning(log=logger)
        warn(fmt, *args)

    def refuse(self, count: int, why: str, subject: str | None = None) -> None:
        if count:
            self.counters.refused += count
            where = "" if subject is None else f" (on {subject!r})"
            self.warn(
                why, "NATS bridge: %d message(s) not exported: %s%s", count, why, where
            )

    async def _close(self, *, drain: bool) -> None:
        self._closing = True
        nc = self.nc
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        assert self._outbox is not None
        while not self._outbox.empty():
            batch = self._outbox.get_nowait()
            self.refuse(len(batch), "the bridge closed before sending them")
            self.counters.settled += len(batch)
            self._done()
        if nc is not None and not nc.is_closed:
            if drain:
                with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                    await nc.drain()
            if not nc.is_closed:
                await nc.close()
        self._open_lanes()

    def _open_lanes(self) -> None:
        """Closed for good: what waits for room in a lane goes in at once."""
        self._stopped = True
        for lane in self._lanes.values():
            assert lane.room is not None
            lane.room.set()

    async def close(self, *, drain: bool) -> None:
        """Close the connection (draining its subscriptions first if asked)."""
        await self.call(self._close(drain=drain))

    # -- in -------------------------------------------------------------------------

    def _can_take(self, lane: Lane, size: int) -> bool:
        """Whether the read loop may hand ``lane`` a message of ``size`` bytes now.

        Not while a callback on nats-py's path runs for it (one may wait for
        room), nor while nats-py's queue holds some of its messages (see
        ``GuardedClient``): messages keep their order.
        """
        return lane.in_callback == 0 and lane.has_room(size)

    def _take(self, lane: Lane, item: Incoming) -> None:
        """A message from the read loop, with room for it (see ``_can_take``)."""
        if not _seen(lane.replies, lane.earlier, item[0]):
            self._append(lane, item)

    async def _on_message(self, lane: Lane, msg: Msg) -> None:
        """A message by nats-py's path: its queue, its task, this callback."""
        lane.in_callback += 1
        try:
            if _seen(lane.replies, lane.earlier, msg.subject):
                return
            room = lane.room
            assert room is not None
            size = len(msg.data)
            while not lane.has_room(size) and not self._stopped:
                room.clear()
                lane.full = True
                if lane.has_room(size):  # taken meanwhile
                    break
                await room.wait()
            self._append(lane, (msg.subject, msg.reply, msg.data, msg.headers))
        finally:
            lane.in_callback -= 1

    def _append(self, lane: Lane, item: Incoming) -> None:
        lane.items.append(item)
        lane.received += 1
        size = len(item[2])
        lane.sizes.append(size)
        lane.queued_bytes += size
        if not lane.tell_scheduled:
            # Once per turn of the loop, after nats-py has handed over every
            # message of what it read: one crossing for the lot.
            lane.tell_scheduled = True
            self._loop.call_soon(self._tell_trio, lane)

    def _tell_trio(self, lane: Lane) -> None:
        lane.tell_scheduled = False
        if lane.trio_waits:
            lane.trio_waits = False
            self.to_trio(lane.poke)

    async def incoming(self, lane: Lane) -> list[Incoming]:
        """Wait for messages on ``lane`` and take all of them (trio side)."""
        items = lane.items
        while not items:
            lane.wake = trio.Event()
            lane.trio_waits = True
            if items:  # came before the flag was up: it may not be told
                break
            await lane.wake.wait()
        batch = []
        with contextlib.suppress(IndexError):
            while True:
                batch.append(items.popleft())
        lane.taken += len(batch)
        if lane.full:
            lane.full = False
            assert lane.room is not None
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(lane.room.set)
        return batch

    def queued_inbound(self) -> int:
        """Messages taken from NATS and not yet given to the trio side."""
        return sum(len(lane.items) for lane in self._lanes.values())


def _seen(replies: str | None, earlier: list[tuple[str, ...]], subject: str) -> bool:
    """Whether another subscription has its own copy of a message on ``subject``.

    That is the one for answers (one token after the prefix ``replies``), or
    one on a pattern in ``earlier``: NATS sends a message once per
    subscription it matches.
    """
    if (
        replies is not None
        and subject.startswith(replies)
        and "." not in subject[len(replies) :]
    ):
        return True
    if earlier:
        tokens = tuple(subject.split("."))
        for pattern in earlier:
            if _port.tokens_match(pattern, tokens):
                return True
    return False


_NO_RESPONDERS = b"503"
"""The status NATS sends to a reply subject when nobody subscribes to the request."""
