"""nats-py's client with the guards a bridge needs against faults and bad peers.

Each guard covers a way in which nats-py (tested with 2.16; the overridden
methods are private, hence the upper bound on the extra's version) lets one
event end its read loop, or its connection, for good:

* A flush writes its PING straight to the socket, ahead of what still waits
  in nats-py's pending buffer (a SUB, PUBs): the server then answers PONG
  before it has seen them, and the flush confirms what has not arrived (a
  subscription not yet on the server, exports counted as confirmed).
  ``_send_ping`` here puts the PING in the pending buffer, behind them.
* A flush that times out cancels its PONG future; when the PONG comes late
  (a server stalled longer than the timeout), nats-py resolves the cancelled
  future, and the ``InvalidStateError`` ends the read loop silently: nothing
  more is read, and the connection still looks up. ``_process_pong`` here
  skips a future nobody waits for.
* A message from another client whose subject is not UTF-8, whose header
  status line is not UTF-8, or whose header block is cut short (8 bytes,
  ``NATS/1.0``) raises while nats-py builds it, which also ends the read
  loop. ``_process_msg`` here drops such a message and reports it.
* A subject holding a vertical tab or a form feed is split by nats-py's
  parser (its expressions take them for spaces, the server does not), which
  raises ``ProtocolError``: nats-py reconnects and loses what it had read.
  ``_GuardedParser`` skips that one message and parses on.

Dropped messages are reported through ``on_malformed`` (with the
subscription's sid, when it is known, and the subject's bytes), for the bridge
to count, once per message, and log.

For the bridge's exports, ``publish_checked`` is nats-py's ``publish`` of a
message without headers, less the checks the bridge has already made
(subject, reply subject): the same command goes into the same pending buffer,
with the same counts, limits and errors.

For JetStream (``_storer``, ``_puller``), ``put_commands`` writes commands
the bridge has built and checked (HPUBs sized against ``max_payload``, pull
requests, acks) to the connection at once, behind what nats-py's buffer
holds, without waiting for its flusher: the callers bound what is written,
each waiting for its answer. A message's headers, read once to screen it, are
handed to nats-py's own path as read, not parsed a second time.

It also skips, for the bridge's own subscriptions, what nats-py does for
every message between reading it and calling back: its parser's expressions
and state, a ``Msg``, the subscription's queue, a task that takes it out and
awaits the callback. The parser reads plain MSGs itself (anything else goes
to nats-py's parser), and a subscription registered in ``takers`` has each
message handed to its taker at once, in the read loop, while the taker says
it is ready (its queue has room and nothing waits on nats-py's path);
otherwise the message takes nats-py's path, and so does every one after it
until that path is empty, so messages keep their order. That is about half of
what nats-py's reading thread spends per message (``bench/bridge.py parse``).
"""

from __future__ import annotations

import asyncio
import re
import typing

from nats.aio.client import PING_PROTO, Client
from nats.errors import MaxPayloadError, ProtocolError, UnexpectedEOF
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

Incoming = tuple[str, str, bytes, dict[str, str] | None]
"""One message as NATS delivered it: subject, reply subject (or ""), data and
headers (or None)."""

Taker = tuple["Callable[[int], bool]", "Callable[[Incoming], None]"]
"""Whether it can take a message of so many payload bytes now, and taking one."""


_CRLF = b"\r\n"
# A plain MSG's control line that nats-py's expression reads the same way:
# single spaces between the fields, none of the others it takes for spaces
# (\s) anywhere. Subject, sid, reply subject (or None), payload size.
_PLAIN_MSG = re.compile(
    rb"MSG ([^ \t\n\r\v\f]+) ([0-9]+) (?:([^ \t\n\r\v\f]+) )?([0-9]+)\r\n"
)


class GuardedClient(Client):
    """A nats-py ``Client`` whose read loop no single message or PONG can end."""

    def __init__(self, on_malformed: Callable[[int | None, bytes, str], None]) -> None:
        super().__init__()
        self.on_malformed = on_malformed
        self._ps = _GuardedParser(self)
        self._read_headers: tuple[bytes, dict[str, str] | None] | None = None
        self.takers: dict[int, Taker] = {}
        """The bridge's subscriptions, by sid: their messages skip nats-py's
        queue while the taker is ready."""

    async def publish_checked(self, subject: str, data: bytes, reply: str) -> None:
        """``publish(subject, data, reply=reply)``, for subjects known to be valid.

        The bridge calls it only while connected (not draining, not closed),
        with subjects that hold no whitespace; otherwise it calls ``publish``.

        Raises:
            MaxPayloadError: ``data`` is larger than the server takes.
        """
        size = len(data)
        if size > self._max_payload:
            raise MaxPayloadError
        command = b"PUB %s %s %d\r\n%s\r\n" % (
            subject.encode(),
            reply.encode(),
            size,
            data,
        )
        stats = self.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += size
        self._pending.append(command)
        self._pending_data_size += len(command)
        if 0 < self._max_pending_size < self._pending_data_size:
            await self._flush_pending(force_flush=True)
        elif self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    def put_commands(self, commands: list[bytes]) -> None:
        """Write protocol commands to the connection now, behind what is pending.

        For the bridge's JetStream side (HPUBs it has checked and sized
        against ``max_payload``, pull requests, acks), while connected; not a
        coroutine, so a batch is written in one step, without a turn of the
        loop for nats-py's flusher. The pending buffer's limit and the
        transport's drain are not waited on: what is written is bounded by
        the callers, each waiting for its answer.
        """
        stats = self.stats
        size = 0
        for command in commands:
            size += len(command)
        stats["out_msgs"] += len(commands)
        stats["out_bytes"] += size
        self._pending.extend(commands)
        assert self._transport is not None  # (connected)
        self._transport.writelines(self._pending)
        self._pending = []
        self._pending_data_size = 0

    async def subscribe_taken(
        self, subject: str, take: Callable[[Incoming], None]
    ) -> Subscription:
        """Subscribe to ``subject``: each message goes to ``take`` in the read loop.

        Its taker is always ready, so nats-py's path (its queue, its task,
        the callback here) is never taken.
        """

        async def by_nats_py(msg: Msg) -> None:  # pragma: no cover
            take((msg.subject, msg.reply, msg.data, msg.headers))

        sub = await self.subscribe(subject, cb=by_nats_py)
        self.takers[self.sid(sub)] = (_always, take)
        return sub

    @staticmethod
    def sid(sub: Subscription) -> int:
        """The id by which the server and the read loop know ``sub``."""
        return sub._id

    @property
    def reader(self) -> asyncio.Task[None] | None:
        """nats-py's read loop, while it has one (a flush confirms only then)."""
        return self._reading_task

    @property
    def plainly_connected(self) -> bool:
        """Connected and not draining: a plain PUB may go straight in."""
        return self._status == Client.CONNECTED

    async def restart_reading(self) -> None:
        """Treat the connection as broken, so that nats-py reconnects.

        For a read loop that has ended while the connection looks up: nothing
        more would be read.
        """
        await self._process_op_err(UnexpectedEOF())

    async def kick_flusher(self) -> None:
        """Have nats-py's flusher write what its pending buffer holds."""
        await self._flush_pending()

    def write_status(self, subject: str, status: bytes) -> None:
        """Put a message with only a status line (``NATS/1.0 503``) in the buffer.

        nats-py's ``publish`` writes a status as an ordinary header; NATS
        clients read "no responders" from the status line alone. The caller
        kicks the flusher.
        """
        block = b"NATS/1.0 %s\r\n\r\n" % status
        command = b"HPUB %s %d %d\r\n%s\r\n" % (
            subject.encode(),
            len(block),
            len(block),
            block,
        )
        self.stats["out_msgs"] += 1
        self._pending.append(command)
        self._pending_data_size += len(command)

    async def _send_ping(self, future: asyncio.Future[bool] | None = None) -> None:
        # As nats-py's, but the PING goes behind what waits to be written.
        # Not while the connection is down: what is pending is written after
        # a reconnection, and a PING among it would answer a later flush
        # early; nats-py's own writes it to the broken socket, unanswered.
        if not self.is_connected:
            await super()._send_ping(future)
            return
        if future is None:
            future = asyncio.get_running_loop().create_future()
        self._pongs.append(future)
        self._pending.append(PING_PROTO)
        self._pending_data_size += len(PING_PROTO)
        await self._flush_pending()

    async def _process_pong(self) -> None:
        # A PONG answers the oldest PING; a flush that timed out has cancelled
        # its future, and then nobody waits for this one.
        if self._pongs:
            future = self._pongs.pop(0)
            if not future.done():
                future.set_result(True)
            self._pongs_received += 1
            self._pings_outstanding = 0

    async def _process_msg(
        self,
        sid: int,
        subject: bytes,
        reply: bytes,
        data: bytes,
        headers: bytes,
    ) -> None:
        try:
            text = subject.decode()
            answer_to = reply.decode()
            parsed = await self._process_headers(headers) if headers else None
        except (UnicodeDecodeError, IndexError, ValueError) as error:
            self.on_malformed(
                sid,
                bytes(subject),
                f"{type(error).__name__} in a message on {bytes(subject)!r}",
            )
            return
        if not self._hand_over(sid, text, answer_to, data, parsed):
            # (nats-py reads the headers again: it gets them as read here)
            self._read_headers = (headers, parsed)
            try:
                await super()._process_msg(sid, subject, reply, data, headers)
            finally:
                self._read_headers = None

    async def _process_headers(self, headers: bytes) -> dict[str, str] | None:
        read = self._read_headers
        if read is not None and read[0] is headers:
            return read[1]
        return await super()._process_headers(headers)

    def take_plain(self, sid: int, subject: bytes, reply: bytes, data: bytes) -> bool:
        """``_process_msg`` for a message without headers, if its taker takes it now.

        Returns whether it did; if not, ``_process_msg`` is still to be run
        (it also reports a subject that is not UTF-8).
        """
        try:
            text = subject.decode()
            answer_to = reply.decode()
        except UnicodeDecodeError:
            return False
        return self._hand_over(sid, text, answer_to, data, None)

    def _hand_over(
        self,
        sid: int,
        subject: str,
        reply: str,
        data: bytes,
        headers: dict[str, str] | None,
    ) -> bool:
        """Give a message to its taker, if it has one, ready, with nothing before.

        What nats-py's _process_msg does for a plain subscription's message,
        but the queue and the Msg: counted, handed over.
        """
        taker = self.takers.get(sid)
        if taker is None or not taker[0](len(data)):
            return False
        sub = self._subs.get(sid)
        if sub is None or not sub._pending_queue.empty():
            return False
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        sub._received += 1
        taker[1]((subject, reply, data, headers))
        return True


def _always(size: int) -> bool:
    return True


class _GuardedParser(Parser):
    """nats-py's parser, skipping a message whose control line it cannot split."""

    nc: GuardedClient

    def __init__(self, nc: GuardedClient) -> None:
        super().__init__(nc)
        self._skip = 0  # bytes of a malformed message still to throw away

    def reset(self) -> None:
        super().reset()
        self._skip = 0

    async def parse(self, data: bytes = b"") -> None:
        buf = self.buf
        buf.extend(data)
        if self._skip:
            if len(buf) < self._skip:
                self._skip -= len(buf)
                del buf[:]
                return
            del buf[: self._skip]
            self._skip = 0
        await self._messages()
        while True:
            try:
                await super().parse()
            except ProtocolError:
                if not self._skip_malformed():
                    raise
                if self._skip:
                    return  # the rest of it has not arrived yet
            else:
                return

    async def _messages(self) -> None:
        """Take the plain MSGs at the front of the buffer, as nats-py would.

        The same fields, the same calls, in fewer steps than nats-py's
        expressions and state. It stops at anything else: another command, a
        message not all there yet, or a control line with anything but single
        spaces between its fields; nats-py's parse takes it from there.
        """
        if self.state != AWAITING_CONTROL_LINE:
            return
        buf = self.buf
        nc = self.nc
        match = _PLAIN_MSG.match
        length = len(buf)
        taken = 0
        try:
            while (found := match(buf, taken)) is not None:
                subject, sid, reply, size = found.groups()
                start = found.end()
                stop = start + int(size)
                if length < stop + len(_CRLF):
                    break
                data = bytes(buf[start:stop])
                taken = stop + len(_CRLF)
                number = int(sid)
                reply = reply or b""
                if not nc.take_plain(number, subject, reply, data):
                    await nc._process_msg(number, subject, reply, data, b"")
        finally:
            del buf[:taken]

    def _skip_malformed(self) -> bool:
        """Drop the MSG or HMSG at the front of the buffer if it is malformed.

        The server separates the fields of a control line with spaces; a
        subject may hold other control characters. Returns whether there was
        such a message (then its bytes are, or will be, thrown away).
        """
        buf = self.buf
        if self.state != AWAITING_CONTROL_LINE or not (
            buf.startswith((b"MSG ", b"HMSG "))
        ):
            return False
        end = buf.find(_CRLF)
        if end < 0:
            return False
        line = bytes(buf[:end]).split(b" ")
        if len(line) < 4 or not line[-1].isdigit():
            return False
        total = end + len(_CRLF) + int(line[-1]) + len(_CRLF)
        sid = int(line[2]) if line[2].isdigit() else None
        self.nc.on_malformed(
            sid, line[1], f"a subject nats-py cannot parse: {line[1]!r}"
        )
        if len(buf) >= total:
            del buf[:total]
        else:
            self._skip = total - len(buf)
            del buf[:]
        return True
