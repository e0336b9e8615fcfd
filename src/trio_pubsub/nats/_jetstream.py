"""Durable delivery through NATS JetStream: stored before it counts, acked when done.

A :class:`JetStreamBridge` holds one connection (nats-py on its own loop, in
the thread a :class:`~._link.Link` runs) to a server with JetStream, and one
stream, which it creates (file storage) or checks on entry:

* :meth:`JetStreamBridge.publish` stores a message in the stream and returns
  once the server has acknowledged it (its PubAck), resending it with the
  same ``Nats-Msg-Id`` until then, so that a resend is a duplicate the
  server drops. Then it delivers the message in the local broker, past every
  export (nothing goes out twice).
* :meth:`JetStreamBridge.consumer` reads a durable pull consumer: each
  message is handed over as a :class:`DurableMessage`, to be acked once its
  work is done, nak'd to have it again later, or terminated.

What the server says is the truth that is counted: ``stored`` on a PubAck,
``duplicates`` when the PubAck says the id was stored already.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import random
import sqlite3
import time
import typing
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import attrs
import nats.errors
import nats.js.api
import nats.js.errors
import trio

from .. import (
    Broker,
    BrokerClosedError,
    InvalidSubjectError,
    Message,
    OverflowPolicy,
    Subscription,
    _port,
    subject_matches,
    validate_pattern,
    validate_subject,
)
from .._log import RateLimitedWarning
from ._bridge import check_servers
from ._export import check_outbound_policy
from ._link import Backoff, Link, logger
from ._outbox import Outbox, Row
from ._puller import Puller
from ._storer import Storer, Storing

if typing.TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

    from ._client import Incoming

T = TypeVar("T")

MSG_ID: typing.Final = "Nats-Msg-Id"
"""The header JetStream deduplicates on."""

PUBLISH_DEADLINE: typing.Final = 30.0
"""Seconds ``publish`` keeps resending a message before it gives up."""

_OUTBOX_BATCH = 256  # rows the sender reads from the outbox at once
_KNOWN_SUBJECTS = 10_000  # subjects whose check publish remembers
_OUTBOX_PAUSE = 1.0  # seconds before the sender tries again after a deadline
_FETCH_WAIT = 1.0  # seconds one fetch waits on the server for messages
_REPLAY_BATCH = 256  # messages a replay fetches at once

TracePublish = Callable[[str, dict[str, str]], contextlib.AbstractContextManager[None]]
"""A hook around a JetStream publish (see ``JetStreamBridge.trace_publish``)."""

_UNTRACED = contextlib.nullcontext()

REPLAY_RATE: typing.Final = 10_000.0
"""Messages per second a replay yields at most, by default."""


@attrs.frozen(kw_only=True)
class JetStreamStatistics:
    """A snapshot of a JetStream bridge's counters (``statistics()``)."""

    stored: int
    """Messages the server acknowledged as stored (a PubAck, not a duplicate)."""
    duplicates: int
    """Messages the server acknowledged as duplicates of one stored already."""
    unconfirmed: int
    """Messages given up on without a PubAck (they may or may not be stored)."""
    outbox_pending: int
    """Messages in the outbox (accepted) not yet acknowledged by the server."""
    acked: int
    """Consumed messages acknowledged."""
    naked: int
    """Consumed messages handed back for redelivery (nak)."""
    redelivered: int
    """Consumed messages that had been delivered before (the server says)."""
    dead_lettered: int
    """Consumed messages terminated with ``term`` (given up on, not redelivered)."""
    undecodable: int
    """Consumed messages whose payload could not be decoded (terminated)."""
    dropped: int
    """Messages not stored (an outbound one dropped by ``outbound_policy`` or
    whose encode failed, one waiting to be sent when the bridge closed, or one
    the server refused)."""


def _check_msg_id(msg_id: object) -> str | None:
    if msg_id is None:
        return None
    if not isinstance(msg_id, str):
        raise TypeError(f"msg_id must be a str or None, not {type(msg_id).__name__}")
    if not msg_id or not msg_id.isprintable() or msg_id != msg_id.strip():
        raise ValueError(
            f"msg_id must be non-empty printable text without spaces at its "
            f"ends (a NATS header value), not {msg_id!r}"
        )
    return msg_id


def _check_headers(headers: object) -> dict[str, str]:
    """A copy of ``headers``, if NATS can carry them; else a clear error."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping of str to str, not {headers!r}")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"headers must map str to str, not {name!r}: {value!r}")
        if not name or any(c in name for c in ": \r\n\t") or not name.isprintable():
            raise ValueError(f"invalid header name {name!r} for NATS")
        if "\r" in value or "\n" in value:
            raise ValueError(f"the value of header {name!r} has a line break")
        checked[name] = value
    return checked


class DurableMessage(Generic[T]):
    """A message from a durable consumer: do its work, then ``ack`` it.

    Until it is acked, nak'd or terminated, the server holds it for this
    consumer; if none of them comes within the consumer's ``ack_wait``, the
    server delivers it again (to this process or another on the same
    durable).
    """

    __slots__ = (
        "_bridge",
        "_puller",
        "_reply",
        "_settled",
        "deliveries",
        "message",
        "sequence",
    )

    def __init__(
        self,
        bridge: JetStreamBridge[T],
        puller: Puller,
        reply: str,
        message: Message[T],
        sequence: int,
        deliveries: int,
    ) -> None:
        self._bridge = bridge
        self._puller = puller
        self._reply = reply
        self._settled = False
        self.message = message
        """The decoded message (its headers include ``Nats-Msg-Id`` if set)."""
        self.sequence = sequence
        """Its sequence number in the stream."""
        self.deliveries = deliveries
        """How many times the server has delivered it, this one included."""

    async def ack(self) -> None:
        """Its work is done: the server will not deliver it again.

        Sent without waiting for it to be written (as nats-py's own ``ack``;
        the server confirms no ack), and no checkpoint: the next ``async
        for`` step over the consumer is one. If the connection breaks first,
        the server delivers the message again after ``ack_wait``.
        """
        self._settle()
        self._puller.settle(self._reply, b"+ACK")
        self._bridge._acked += 1

    async def nak(self, delay: float | None = None) -> None:
        """Have it delivered again, after ``delay`` seconds (``None``: at once)."""
        if delay is not None and delay != 0:
            _port.check_seconds("delay", delay)
        self._settle()
        what = b"-NAK"
        if delay:
            what += b' {"delay":%d}' % int(delay * 1e9)
        self._puller.settle(self._reply, what)
        self._bridge._naked += 1

    async def term(self) -> None:
        """Give up on it: the server will never deliver it again."""
        self._settle()
        self._puller.settle(self._reply, b"+TERM")
        self._bridge._dead_lettered += 1

    async def in_progress(self) -> None:
        """Still working on it: the server restarts its ``ack_wait``."""
        self._puller.settle(self._reply, b"+WPI")

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError("this message was acked, nak'd or terminated already")
        self._settled = True


class Pacer:
    """At most ``rate`` steps a second on the trio clock (``None``: no limit).

    Steps are spaced evenly; a step that comes late is not made up for by a
    burst after it.
    """

    def __init__(self, rate: float | None) -> None:
        self.gap = 0.0 if rate is None else 1.0 / rate
        self.next_at = -math.inf

    async def wait(self) -> None:
        if not self.gap:
            return
        now = trio.current_time()
        self.next_at = max(self.next_at + self.gap, now)
        if self.next_at > now:
            await trio.sleep_until(self.next_at)


@attrs.frozen
class StoredMessage(Generic[T]):
    """A message of the stream, as ``replay()`` reads it."""

    sequence: int
    """Its sequence number in the stream."""
    time: datetime.datetime
    """When the server stored it (UTC)."""
    message: Message[T]
    """The decoded message."""


class Consumer(Generic[T]):
    """A durable pull consumer (``async for`` yields ``DurableMessage`` objects)."""

    def __init__(
        self, bridge: JetStreamBridge[T], pattern: str, durable: str, batch: int
    ) -> None:
        self._bridge = bridge
        self.pattern = pattern
        """The subjects it takes (a pattern within the stream's)."""
        self.durable = durable
        """The durable name (processes that share it share its messages)."""
        self._batch = batch
        self.ack_wait = 30.0
        """Seconds the server waits for an ack before it delivers again."""
        self._puller = Puller(bridge._link, bridge.stream, durable, batch)
        self._held: deque[DurableMessage[T]] = deque()

    async def _open(self, ack_wait: float, max_deliver: int) -> None:
        """Create the consumer on the server, or bring it to what is asked; listen.

        Raises:
            ValueError: the server refused the consumer, or the change.
        """
        self.ack_wait = ack_wait
        bridge = self._bridge
        asked = {
            "ack_wait": float(ack_wait),
            "max_deliver": max_deliver,
            "filter_subject": self.pattern,
        }

        async def create() -> dict[str, tuple[object, object]]:
            js = bridge._js()
            try:
                info = await js.consumer_info(bridge.stream, self.durable)
            except nats.js.errors.NotFoundError:
                config = nats.js.api.ConsumerConfig(
                    name=self.durable,
                    durable_name=self.durable,
                    ack_policy=nats.js.api.AckPolicy.EXPLICIT,
                    ack_wait=ack_wait,
                    max_deliver=max_deliver,
                    filter_subject=self.pattern,
                )
                await js.add_consumer(bridge.stream, config=config)
                changed = {}
            else:
                # As it is, but what this call asks for (an update: the rest,
                # set by whoever made it, stays)
                config = info.config
                changed = {
                    name: (getattr(config, name), value)
                    for name, value in asked.items()
                    if getattr(config, name) != value
                }
                if changed:
                    for name, (_, value) in changed.items():
                        setattr(config, name, value)
                    await js.add_consumer(bridge.stream, config=config)
            await self._puller.start()
            return changed

        try:
            changed = await bridge._link.call(create())
        except nats.js.errors.APIError as error:
            raise ValueError(
                f"the server refused the consumer {self.durable!r} on "
                f"{self.pattern!r}: {error.description}"
            ) from error
        if changed:
            logger.warning(
                "JetStream: the consumer %r of the stream %r was updated: %s",
                self.durable,
                bridge.stream,
                ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()),
            )

    def __aiter__(self) -> Consumer[T]:
        return self

    async def dead_letter(
        self, subject: str, payload: T, headers: Mapping[str, str]
    ) -> None:
        """Store a message given up on, on ``subject``, for a router's handler.

        (A :class:`~trio_pubsub.Router` handler with ``source=`` calls it.)
        Its id is the original's with ``.dead`` after it, so that storing it
        again after a crash (before the original was terminated) is a
        duplicate the server drops.

        Raises:
            ValueError: ``subject`` is outside the stream's subjects.
        """
        kept = dict(headers)
        original = kept.pop(MSG_ID, None)
        await self._bridge.publish(
            subject,
            payload,
            headers=kept,
            msg_id=None if original is None else f"{original}.dead",
        )

    async def _release(self) -> None:
        """Stop taking; hand back what came and was not handed out.

        It goes to others at once (otherwise the server would hold it for
        this consumer until its ``ack_wait`` ran out).
        """
        held, self._held = self._held, deque()
        if self._bridge._closed:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            held.extend(self._taken(await self._puller.close(len(held))))
            for message in held:
                await message.nak()

    async def __anext__(self) -> DurableMessage[T]:
        held = self._held
        while not held:
            if self._bridge._closed:
                raise StopAsyncIteration
            held.extend(self._taken(await self._puller.take()))
        message = held.popleft()
        # (after a full batch the next is asked for at once: the server sends
        # it while these are handled; at most two batches are held)
        self._puller.ask_ahead(len(held))
        return message

    def _taken(self, items: list[Incoming]) -> list[DurableMessage[T]]:
        """Messages as they came, decoded; what cannot be, terminated and counted."""
        bridge = self._bridge
        taken: list[DurableMessage[T]] = []
        for subject, reply, data, headers in items:
            where = _ack_metadata(reply)
            try:
                if where is None:
                    raise ValueError(f"not an ack subject JetStream makes: {reply!r}")
                payload = bridge._decode(data)
                message = _port.new_message(
                    subject, bridge._pipeline.check_payload(payload), headers
                )
            except Exception as error:
                bridge._undecodable += 1
                bridge._warn_decode(
                    "JetStream: a message on %r could not be decoded, "
                    "terminated: %s: %s",
                    subject,
                    type(error).__name__,
                    error,
                )
                self._puller.settle(reply, b"+TERM")
                continue
            sequence, deliveries = where
            if deliveries > 1:
                bridge._redelivered += 1
            taken.append(
                DurableMessage(
                    bridge, self._puller, reply, message, sequence, deliveries
                )
            )
        return taken


def _ack_metadata(reply: str) -> tuple[int, int] | None:
    """The stream sequence and the delivery count in a message's ack subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.…`` (9 tokens), or
    with a domain and an account hash after ``ACK`` (12 tokens, or more).
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        delivered, sequence = tokens[4], tokens[5]
    elif len(tokens) >= 11:
        delivered, sequence = tokens[6], tokens[7]
    else:
        return None
    if not (delivered.isdigit() and sequence.isdigit()):
        return None
    return int(sequence), int(delivered)


class JetStreamBridge(Generic[T]):
    """What ``open_jetstream()`` yields: one stream, stored and consumed."""

    def __init__(
        self,
        broker: Broker[T],
        link: Link,
        *,
        stream: str,
        subjects: tuple[str, ...],
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
        publish_deadline: float,
        outbox: Outbox | None,
        storer: Storer,
    ) -> None:
        self.broker = broker
        """The local broker."""
        self.stream = stream
        """The stream's name."""
        self.subjects = subjects
        """The stream's subject patterns (what it stores)."""
        self._link = link
        self._pipeline = _port.pipeline(broker)
        self._encode = encode
        self._decode = decode
        self._deadline = publish_deadline
        self._closed = False
        self._outbox = outbox
        self._scopes: list[trio.CancelScope] = []  # of its tasks: cancelled at close
        self._export_sub: Subscription[T] | None = None
        self._exported = 0  # messages the export took in and settled
        self._progress: trio.Event | None = None  # what a drain waits on
        self._stored = self._duplicates = self._unconfirmed = 0
        self._dropped = 0
        self._storer = storer
        storer.on_answers = self._answered
        self._storing: set[Storing] = set()  # handed over, not yet answered
        self._known: set[str] = set()  # subjects checked already
        self._context: JetStreamContext | None = None
        self._id_prefix = f"{uuid.uuid4().hex}-"  # (new for every bridge)
        self._ids = 0
        self._acked = self._naked = self._redelivered = 0
        self._dead_lettered = self._undecodable = 0
        self._warn_decode = RateLimitedWarning(log=logger)
        self._warn_resend = RateLimitedWarning(log=logger)
        self.trace_publish: TracePublish | None = None
        """A hook around each :meth:`publish`, given its subject and headers
        (which it may add to) once they are checked: the OpenTelemetry
        extra's producer span (``otel.instrument_jetstream``)."""

    def _js(self) -> JetStreamContext:
        """The connection's JetStream context, for the API (made on first use)."""
        if self._context is None:
            assert self._link.nc is not None
            self._context = self._link.nc.jetstream()
        return self._context

    def statistics(self) -> JetStreamStatistics:
        """A snapshot of the counters."""
        return JetStreamStatistics(
            stored=self._stored,
            duplicates=self._duplicates,
            unconfirmed=self._unconfirmed,
            outbox_pending=0 if self._outbox is None else self._outbox.pending,
            acked=self._acked,
            naked=self._naked,
            redelivered=self._redelivered,
            dead_lettered=self._dead_lettered,
            undecodable=self._undecodable,
            dropped=self._dropped + self._export_dropped(),
        )

    async def publish(
        self,
        subject: str,
        payload: T,
        *,
        headers: Mapping[str, str] | None = None,
        msg_id: str | None = None,
    ) -> int | None:
        """Store a message in the stream, then deliver it locally.

        Returns once the server has acknowledged it as stored (or as a
        duplicate of one stored with the same ``msg_id``), resending it with
        the same id until then, for ``publish_deadline`` seconds at most;
        with an ``outbox``, once it is committed there (the bridge sends it
        from there, and keeps it until the server has it, across restarts).
        Then every local subscription sees it once (it is not exported
        again, by this bridge or another).

        Args:
            subject: A literal subject within the stream's subjects.
            payload: The payload, of the broker's type.
            headers: Headers to store with it (str to str, as NATS carries).
            msg_id: The id JetStream deduplicates on (``Nats-Msg-Id``);
                ``None``: the ``Nats-Msg-Id`` of ``headers`` if they have one,
                else a new one (a random prefix of the bridge and a count), so
                a resend of this call is a duplicate, a second call is not.

        Returns:
            The message's sequence number in the stream; ``None`` with an
            outbox (it is not stored yet).

        Raises:
            BrokerClosedError: the bridge is closed.
            InvalidSubjectError: ``subject`` is not a literal subject.
            ValueError: ``subject`` is outside the stream's subjects, or a
                header or ``msg_id`` is not what NATS carries.
            TypeError: ``payload``, ``headers`` or ``msg_id`` has the wrong type.
            trio.TooSlowError: no PubAck within ``publish_deadline``: it may or
                may not be stored (counted in ``unconfirmed``); publishing it
                again with the same ``msg_id`` is safe.
            ValueError: the server refused it (the stream's limits, say):
                counted in ``dropped``, not resent.
            BrokerClosedError: the bridge closed before it was sent.
            sqlite3.Error: with an outbox, the commit failed (the file is
                locked by another process past SQLite's 5 s wait, the disk is
                full): the message is not accepted, nothing is sent.

        If cancelled, the message may be stored all the same (it is counted
        when the server answers), and it is not delivered locally.
        """
        if self._closed:
            raise BrokerClosedError("this JetStream bridge is closed")
        if subject not in self._known:
            self._check_subject(subject)
        checked = _check_headers(headers)
        given = _check_msg_id(msg_id if msg_id is not None else checked.get(MSG_ID))
        value = self._pipeline.check_payload(payload)
        data = self._encode(value)
        checked[MSG_ID] = given if given is not None else self._new_id()
        traced = self.trace_publish
        with _UNTRACED if traced is None else traced(subject, checked):
            sequence: int | None = None
            if self._outbox is not None:
                await self._outbox.add(checked[MSG_ID], subject, data, checked)
            else:
                sequence = await self._stored_now(subject, data, checked)
            pending = self._pipeline.inject(subject, value, checked)
            if pending is not None:
                await self._pipeline.finish(pending)
        return sequence

    def _check_subject(self, subject: str) -> None:
        """Raise unless ``subject`` is literal and in the stream; remember it."""
        validate_subject(subject)
        if not any(subject_matches(pattern, subject) for pattern in self.subjects):
            raise ValueError(
                f"subject {subject!r} is outside the stream {self.stream!r}, "
                f"which stores {list(self.subjects)!r}"
            )
        if len(self._known) >= _KNOWN_SUBJECTS:
            self._known.clear()
        self._known.add(subject)

    def _new_id(self) -> str:
        """A message id unique across bridges and restarts: random, then a count."""
        self._ids += 1
        return f"{self._id_prefix}{self._ids}"

    async def _stored_now(
        self, subject: str, data: bytes, headers: dict[str, str]
    ) -> int:
        """Store a message (counted in :meth:`_answered`): its sequence.

        Raises:
            trio.TooSlowError: no PubAck within the deadline (unconfirmed).
            BrokerClosedError: the bridge closed before the PubAck came.
            ValueError: the server refused it.
        """
        item = Storing(
            subject, data, headers, time.monotonic() + self._deadline, trio.Event()
        )
        self._storer.hand(item)  # (the loop runs until the bridge has closed)
        self._storing.add(item)
        await item.done.wait()
        if item.closed is not None:
            raise BrokerClosedError(item.closed)
        answer = item.answer
        if isinstance(answer, tuple):
            return answer[0]
        if answer is None:
            raise trio.TooSlowError(
                f"no PubAck for a message on {subject!r} within "
                f"{self._deadline} s: it may or may not be stored; publish it "
                f"again with msg_id={headers[MSG_ID]!r} to be sure"
            )
        raise ValueError(f"the server refused a message on {subject!r}: {answer}")

    def _answered(self, items: list[Storing]) -> None:
        """In the trio thread: what the server said of ``items``; count it."""
        for item in items:
            if item not in self._storing:
                continue  # (settled when the bridge closed)
            self._storing.discard(item)
            answer = item.answer
            if answer is None:
                self._unconfirmed += 1
            elif isinstance(answer, str):
                self._dropped += 1
            elif answer[1]:
                self._duplicates += 1
            else:
                self._stored += 1
            item.done.set()

    @asynccontextmanager
    async def consumer(
        self,
        pattern: str,
        *,
        durable: str,
        batch: int = 64,
        ack_wait: float = 30.0,
        max_deliver: int = -1,
    ) -> AsyncIterator[Consumer[T]]:
        """A durable pull consumer of the stream's messages on ``pattern``.

        Created on the server if it does not exist (explicit acks), and kept
        there after the block: a process that opens it again, or another one
        on the same ``durable`` name, goes on where it left off; messages not
        acked are delivered again after ``ack_wait``. If it exists with
        another ``pattern``, ``ack_wait`` or ``max_deliver``, it is updated to
        these (logged as a warning); the rest of its settings stay as they
        are.

        Args:
            pattern: The subjects to take, within the stream's.
            durable: The consumer's durable name (letters, digits, ``-``, ``_``).
            batch: The most messages fetched at once.
            ack_wait: Seconds the server waits for an ack before it delivers
                a message again.
            max_deliver: The most deliveries of a message (-1: no limit).

        Raises:
            BrokerClosedError: the bridge is closed.
            InvalidSubjectError: ``pattern`` breaks the grammar.
            ValueError: ``pattern`` is outside the stream's subjects, or a
                name or number is out of range, or the server refused the
                consumer or its update (with the server's reason).
        """
        self._check_pattern(pattern)
        if not isinstance(typing.cast("object", durable), str):
            raise TypeError(f"durable must be a str, not {durable!r}")
        if not durable or not all(c.isalnum() or c in "-_" for c in durable):
            raise ValueError(
                f"durable must be a name of letters, digits, '-' and '_', "
                f"not {durable!r}"
            )
        _port.check_int("batch", batch)
        _port.check_seconds("ack_wait", ack_wait)
        _port.check_int("max_deliver", max_deliver, minimum=-1)
        consumer = Consumer(self, pattern, durable, batch)
        await consumer._open(ack_wait, max_deliver)
        try:
            yield consumer
        finally:
            await consumer._release()

    async def replay(
        self,
        pattern: str,
        *,
        start_sequence: int | None = None,
        start_time: datetime.datetime | None = None,
        max_rate: float | None = REPLAY_RATE,
    ) -> AsyncIterator[StoredMessage[T]]:
        """The stream's messages on ``pattern``, in stream order, from a point.

        Read through a consumer of its own that acknowledges nothing and is
        gone afterwards, so durable consumers are not disturbed. It ends with
        the last message stored when it reached it.

        Args:
            pattern: The subjects to read, within the stream's.
            start_sequence: The first sequence number to read (from 1).
            start_time: Read what was stored at this time or later (a
                timezone-aware ``datetime``; the server's times have
                nanoseconds, Python's microseconds, so a message stored
                within the same microsecond may be left out). Neither: from
                the start.
            max_rate: The most messages per second it yields, evenly spaced
                on the trio clock (10,000 by default; ``None``: no limit), so
                that a replay published into a broker cannot flood its
                subscribers.

        Raises:
            BrokerClosedError: the bridge is closed.
            ValueError: ``pattern`` is outside the stream, both starts are
                given, or one is out of range.
        """
        self._check_pattern(pattern)
        if start_sequence is not None and start_time is not None:
            raise ValueError("give start_sequence or start_time, not both")
        if start_sequence is not None:
            _port.check_int("start_sequence", start_sequence)
            policy = nats.js.api.DeliverPolicy.BY_START_SEQUENCE
        elif start_time is not None:
            when = typing.cast("object", start_time)
            if not isinstance(when, datetime.datetime) or when.tzinfo is None:
                raise ValueError(
                    f"start_time must be a timezone-aware datetime, not {start_time!r}"
                )
            policy = nats.js.api.DeliverPolicy.BY_START_TIME
        else:
            policy = nats.js.api.DeliverPolicy.ALL
        if max_rate is not None:
            _port.check_seconds("max_rate", max_rate)
        config = nats.js.api.ConsumerConfig(
            deliver_policy=policy,
            opt_start_seq=start_sequence,
            opt_start_time=start_time,
            ack_policy=nats.js.api.AckPolicy.NONE,
            filter_subject=pattern,
            inactive_threshold=60.0,
        )
        js = self._js()

        async def subscribe() -> JetStreamContext.PullSubscription:
            return await js.pull_subscribe(pattern, stream=self.stream, config=config)

        async def fetch(
            psub: JetStreamContext.PullSubscription,
        ) -> list[Msg]:
            try:
                return await psub.fetch(_REPLAY_BATCH, timeout=_FETCH_WAIT)
            except nats.errors.TimeoutError:
                return []

        psub = await self._link.call(subscribe())
        pacer = Pacer(max_rate)
        try:
            while True:
                batch = await self._link.call(fetch(psub))
                if not batch:
                    return  # nothing was left when it asked
                for msg in batch:
                    await pacer.wait()
                    payload = self._pipeline.check_payload(self._decode(msg.data))
                    yield StoredMessage(
                        sequence=int(msg.metadata.sequence.stream),
                        time=msg.metadata.timestamp,
                        message=_port.new_message(msg.subject, payload, msg.headers),
                    )
                    if msg.metadata.num_pending == 0:
                        return
        finally:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(5),
                contextlib.suppress(Exception),  # (closed meanwhile: gone with it)
            ):
                await self._link.call(psub.unsubscribe())

    def _check_pattern(self, pattern: str) -> None:
        if self._closed:
            raise BrokerClosedError("this JetStream bridge is closed")
        validate_pattern(pattern)
        if not any(_within(pattern, mine) for mine in self.subjects):
            raise ValueError(
                f"pattern {pattern!r} is outside the stream {self.stream!r}, "
                f"which stores {list(self.subjects)!r}"
            )

    async def _send_outbox(self) -> None:
        """Send what the outbox holds, oldest first; remove each once stored."""
        outbox = self._outbox
        assert outbox is not None
        while True:
            await outbox.added.wait()
            rows = await outbox.take(_OUTBOX_BATCH)
            if not rows:
                outbox.added = trio.Event()
                continue
            done: list[int] = []
            late: list[int] = []
            try:
                async with trio.open_nursery() as sending:  # all at once, in order
                    for row in rows:
                        sending.start_soon(self._send_row, row, done, late)
            finally:
                if done:
                    with trio.CancelScope(shield=True):
                        try:
                            await outbox.remove(done)
                        except sqlite3.Error as error:
                            # (kept: sent again, and the server drops them)
                            late.append(0)
                            self._warn_resend(
                                "JetStream: stored messages stay in the outbox "
                                "for now: %s: %s",
                                type(error).__name__,
                                error,
                            )
                    self._tell_progress()
            if late:
                await trio.sleep(_OUTBOX_PAUSE)

    async def _send_row(self, row: Row, done: list[int], late: list[int]) -> None:
        """Store one row of the outbox; say in ``done`` or ``late`` how it went."""
        number, _, subject, data, headers = row
        try:
            await self._stored_now(subject, data, headers)
        except trio.TooSlowError:
            late.append(number)  # (counted unconfirmed; kept: sent again)
        else:
            done.append(number)

    async def _export(self, sub: Subscription[T]) -> None:
        """Store what is published locally on the outbound patterns.

        Each message the export subscription took in ends in one counter:
        stored or duplicates (the server's PubAck), dropped (encode failed),
        unconfirmed (sent and no PubAck, or the bridge closed while it was
        being stored); with an outbox, in the outbox first.
        """
        async for message in sub:
            try:
                headers = dict(message.headers)
                if MSG_ID not in headers:
                    headers[MSG_ID] = self._new_id()
                try:
                    data = self._encode(message.payload)
                except Exception as error:
                    self._dropped += 1
                    self._warn_decode(
                        "JetStream: a message on %r was not stored: encode "
                        "failed: %s: %s",
                        message.subject,
                        type(error).__name__,
                        error,
                    )
                    continue
                if self._outbox is not None:
                    try:
                        await self._outbox.add(
                            headers[MSG_ID], message.subject, data, headers
                        )
                    except sqlite3.Error as error:
                        self._dropped += 1
                        self._warn_decode(
                            "JetStream: a message on %r was not stored: the "
                            "outbox could not commit it: %s: %s",
                            message.subject,
                            type(error).__name__,
                            error,
                        )
                else:
                    try:
                        await self._stored_now(message.subject, data, headers)
                    except (trio.TooSlowError, BrokerClosedError) as error:
                        # (counted where it was known: unconfirmed or dropped)
                        self._warn_resend("JetStream: %s", error)
            finally:
                self._exported += 1
                self._tell_progress()

    def _export_dropped(self) -> int:
        """What the export's subscription dropped (its policy, when full)."""
        sub = self._export_sub
        return 0 if sub is None else sub.statistics().dropped

    def _idle(self) -> bool:
        """Nothing left to send: the export settled all it took, the outbox is empty."""
        sub = self._export_sub
        took_in = 0 if sub is None else sub.statistics().delivered
        outbox = 0 if self._outbox is None else self._outbox.pending
        return took_in == self._exported and outbox == 0

    async def _drain(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait (``timeout`` seconds at most) until everything accepted is stored."""
        with trio.move_on_after(timeout):
            while not self._idle():
                self._progress = trio.Event()
                await self._progress.wait()

    def _tell_progress(self) -> None:
        """Something accepted was stored: a drain looks again."""
        if self._progress is not None:
            self._progress.set()
            self._progress = None

    async def aclose(self) -> None:
        """Close the connection; ``publish`` raises ``BrokerClosedError`` after.

        What the outbox holds stays there, to be sent the next time.
        """
        if self._closed:
            return
        self._closed = True
        for scope in self._scopes:
            scope.cancel()
        with trio.CancelScope(shield=True):
            try:
                with trio.move_on_after(10):
                    await self._link.close(drain=False)
            finally:
                await self._link.stop()
                self._abandon()
                if self._outbox is not None:
                    await self._outbox.close()

    def _abandon(self) -> None:
        """The loop has stopped: what waits for a PubAck will not have one.

        What was written may be stored (unconfirmed); what was not, is not
        (dropped).
        """
        for item in self._storing:
            if item.sent:
                self._unconfirmed += 1
                why = "the JetStream bridge closed before the PubAck: the message "
                why += "may or may not be stored"
            else:
                self._dropped += 1
                why = "the JetStream bridge closed before the message was sent"
            item.closed = why
            item.done.set()
        self._storing.clear()


def _within(pattern: str, stream_pattern: str) -> bool:
    """Whether every subject ``pattern`` matches, ``stream_pattern`` matches."""
    mine, theirs = pattern.split("."), stream_pattern.split(".")
    for index, token in enumerate(theirs):
        if token == ">":
            return len(mine) > index
        if index >= len(mine):
            return False
        if token != "*" and (mine[index] in ("*", ">") or mine[index] != token):
            return False
        if mine[index] == ">":
            return False
    return len(mine) == len(theirs)


async def _stream(link: Link, name: str, subjects: tuple[str, ...]) -> tuple[str, ...]:
    """Create the stream (file storage) or check it; its subject patterns."""
    assert link.nc is not None
    manager = link.nc.jsm()

    async def ensure() -> tuple[str, ...]:
        try:
            info = await manager.stream_info(name)
        except nats.js.errors.NotFoundError:
            if not subjects:
                raise ValueError(
                    f"the stream {name!r} does not exist: give its subjects to "
                    f"create it"
                ) from None
            # (the server refuses patterns that overlap: the widest alone)
            widest = [
                mine
                for mine in subjects
                if not any(other != mine and _within(mine, other) for other in subjects)
            ]
            info = await manager.add_stream(
                name=name,
                subjects=widest,
                storage=nats.js.api.StorageType.FILE,
            )
        config = info.config
        if config.storage != nats.js.api.StorageType.FILE:
            raise ValueError(
                f"the stream {name!r} keeps its messages in memory: durable "
                f"delivery needs file storage"
            )
        have = tuple(config.subjects or ())
        for wanted in subjects:
            if not any(_within(wanted, pattern) for pattern in have):
                raise ValueError(
                    f"the stream {name!r} stores {list(have)!r}, not {wanted!r}"
                )
        return have

    return await link.call(ensure())


def _stream_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"stream must be a non-empty str, not {name!r}")
    if any(c in name for c in ". *>\t\r\n/\\") or not name.isprintable():
        raise ValueError(
            f"stream {name!r}: a stream name has no '.', '*', '>', '/', "
            f"'\\' or whitespace"
        )
    return name


@asynccontextmanager
async def open_jetstream(
    broker: Broker[T],
    servers: str | Sequence[str],
    *,
    stream: str,
    encode: Callable[[T], bytes],
    decode: Callable[[bytes], T],
    subjects: Sequence[str] = (),
    outbound: Sequence[str] = (),
    outbox: str | Path | None = None,
    max_outbox: int = 100_000,
    max_outbound: int = 1024,
    outbound_policy: OverflowPolicy = OverflowPolicy.BLOCK,
    publish_deadline: float = PUBLISH_DEADLINE,
    drain_timeout: float = 10.0,
    name: str | None = None,
    connect_timeout: float = 2.0,
    reconnect_time_wait: float = 0.5,
    max_reconnect_wait: float = 8.0,
    max_reconnect_attempts: int = -1,
) -> AsyncIterator[JetStreamBridge[T]]:
    """Store and consume ``broker``'s messages in a JetStream stream.

    On entry it connects and creates the stream ``stream`` with file storage
    for ``subjects`` (and ``outbound``) if it does not exist, or checks that
    it stores them (and on file) if it does; with an outbox, what the outbox
    holds from before is sent first. On a normal exit it waits (up to
    ``drain_timeout``) until what was accepted is stored, then closes the
    connection; what is stored stays on the server, and what the outbox
    still holds stays in it.

    Args:
        broker: The local broker: what is published is delivered there too,
            and what is consumed is decoded to its type.
        servers: A NATS URL or a list of them (a server with JetStream on).
        stream: The stream's name.
        encode: Turns a payload into ``bytes``.
        decode: Turns ``bytes`` into a payload.
        subjects: The stream's subject patterns (needed to create it; with
            an existing stream, those it must store).
        outbound: Patterns of local subjects whose messages are stored in
            the stream as they are published in the broker (each with its
            ``Nats-Msg-Id`` header if it has one, else a new one); they
            must lie within the stream's subjects.
        outbox: A file for the outbox (SQLite): what :meth:`~JetStreamBridge.publish`
            and the export accept is committed there first, and removed once
            the server acknowledged it; after a crash it is sent again with
            the same ids. ``None``: no outbox (``publish`` waits for the
            server instead).
        max_outbox: The most messages the outbox holds; a publish waits for
            room beyond (and so, through the export's ``BLOCK`` subscription,
            do local publishers on outbound subjects).
        max_outbound: The export subscription's buffer.
        outbound_policy: What the export subscription does when it is full
            (the server or the outbox cannot keep up): ``BLOCK`` (local
            publishers wait), ``DROP_NEWEST`` or ``DROP_OLDEST`` (counted in
            ``dropped``).
        publish_deadline: The most seconds a message is resent before
            :meth:`~JetStreamBridge.publish` gives up (30 s by default);
            the outbox's sender never gives up (it tries again after a pause).
        drain_timeout: The most seconds a normal exit waits for what was
            accepted to be stored.
        name: The connection's name, as the server shows it.
        connect_timeout: Seconds to wait for each connection attempt.
        reconnect_time_wait: Seconds before the first attempt to reconnect;
            each further one waits twice as long, up to ``max_reconnect_wait``,
            every wait drawn at random between half of it and all of it.
        max_reconnect_wait: The longest wait between two attempts (seconds).
        max_reconnect_attempts: Attempts before giving up for good; -1: never.

    Raises:
        ConnectionError: no server could be reached, or it has no JetStream.
        InvalidSubjectError: a subject pattern breaks the grammar.
        TypeError, ValueError: an argument is wrong, or the stream exists and
            does not store ``subjects`` on file.
    """
    stream = _stream_name(stream)
    listed = [subjects] if isinstance(subjects, str) else list(subjects)
    exports = [outbound] if isinstance(outbound, str) else list(outbound)
    patterns = tuple(dict.fromkeys([*listed, *exports]))
    for pattern in patterns:
        validate_pattern(pattern)
        _port.check_unreserved(pattern)
    if not (callable(typing.cast("object", encode)) and callable(decode)):
        raise TypeError("encode and decode must be callables")
    _port.check_int("max_outbox", max_outbox)
    _port.check_int("max_outbound", max_outbound)
    check_outbound_policy(outbound_policy)
    _port.check_seconds("publish_deadline", publish_deadline)
    _port.check_seconds("drain_timeout", drain_timeout)
    _port.check_seconds("connect_timeout", connect_timeout)
    _port.check_seconds("reconnect_time_wait", reconnect_time_wait)
    _port.check_seconds("max_reconnect_wait", max_reconnect_wait)
    _port.check_int("max_reconnect_attempts", max_reconnect_attempts, minimum=-1)
    if outbox is not None and not isinstance(outbox, str | Path):
        raise TypeError(f"outbox must be a file path or None, not {outbox!r}")
    connect_options: dict[str, Any] = {
        "servers": check_servers(servers),
        "name": name,
        "allow_reconnect": True,
        "connect_timeout": connect_timeout,
        "reconnect_time_wait": reconnect_time_wait,
        "max_reconnect_attempts": max_reconnect_attempts,
        "ping_interval": 10,
        "max_outstanding_pings": 2,
    }
    link = Link(
        trio.lowlevel.current_trio_token(),
        max_inbound=1024,
        max_inbound_bytes=16 << 20,
        connect_options=connect_options,
        flush_timeout=5.0,
        backoff=Backoff(reconnect_time_wait, max_reconnect_wait, random.uniform),
    )
    box = None if outbox is None else Outbox(Path(outbox), max_outbox)
    link.start()
    bridge: JetStreamBridge[T] | None = None
    try:
        try:
            await link.connect()
            have = await _stream(link, stream, patterns)
            storer = Storer(link, stream)
            await link.call(storer.start())
        except nats.js.errors.ServiceUnavailableError as error:
            raise ConnectionError(
                f"could not open the stream {stream!r} at {servers!r}: the "
                f"server has no JetStream (start it with -js)"
            ) from error
        except nats.js.errors.APIError as error:
            raise ValueError(
                f"the server refused the stream {stream!r}: {error.description}"
            ) from error
        except (TimeoutError, nats.errors.Error, OSError) as error:
            raise ConnectionError(
                f"could not open the stream {stream!r} at {servers!r}: "
                f"{type(error).__name__}: {error}"
            ) from error
        if box is not None:
            await box.open()
        bridge = JetStreamBridge(
            broker,
            link,
            stream=stream,
            subjects=have,
            encode=encode,
            decode=decode,
            publish_deadline=publish_deadline,
            outbox=box,
            storer=storer,
        )
        async with contextlib.AsyncExitStack() as stack:
            if exports:
                bridge._export_sub = await stack.enter_async_context(
                    _port.export(
                        broker,
                        exports,
                        max_buffer_size=max_outbound,
                        policy=outbound_policy,
                    )
                )
            async with trio.open_nursery() as nursery:
                if box is not None:
                    nursery.start_soon(_under, bridge, bridge._send_outbox())
                if bridge._export_sub is not None:
                    nursery.start_soon(
                        _under, bridge, bridge._export(bridge._export_sub)
                    )
                try:
                    yield bridge
                    await bridge._drain(drain_timeout)
                finally:
                    await bridge.aclose()
    finally:
        if bridge is None:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(10):
                    await link.close(drain=False)
                await link.stop()
                if box is not None:
                    await box.close()


async def _under(
    bridge: JetStreamBridge[typing.Any], work: typing.Awaitable[None]
) -> None:
    """Run ``work`` in a scope of its own, cancelled when ``bridge`` closes."""
    with trio.CancelScope() as scope:
        bridge._scopes.append(scope)
        if bridge._closed:
            scope.cancel()
        await work


_ = InvalidSubjectError  # (named in the docstrings above)
