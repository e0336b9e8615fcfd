"""A durable pull consumer's messages, taken in nats-py's read loop.

A JetStream pull consumer delivers what a *pull request* asks for (a
message to ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>`` whose reply
subject is the client's inbox, holding the batch size and how long the
server may keep the request waiting); each message comes to that inbox with
a reply subject of its own, ``$JS.ACK.…``, on which the client settles it
(``+ACK``, ``-NAK``, ``+TERM``, ``+WPI``). nats-py's ``fetch`` puts each
message through a ``Msg``, a queue, a task and a timer. A :class:`Puller`
does less:

* one request at a time, of ``batch`` messages, waiting up to
  ``PULL_WAIT`` seconds on the server; it is over when the batch is all
  there, with the server's status (408: it expired; 409 and others: said
  why, logged, and the next request waits ``PULL_WAIT``), or with its
  connection (on reconnecting);
* the messages are taken in nats-py's read loop (``GuardedClient.takers``)
  into a queue the trio side empties in one go; one hop back a turn of the
  loop;
* settlements cross in batches too, and are written straight to the
  connection (the server confirms none of them, whoever sends them).

When a request came back full (more are likely waiting), the trio side asks
for the next batch at once, so that the server sends it while this one is
handled: at most two batches are held. On :meth:`Puller.close`, the inbox is
unsubscribed and that is confirmed (after the PONG, nothing more comes), so
what came is all in hand, to be handed back; the server drops a waiting
request nobody listens to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from nats.aio.subscription import Subscription

    from ._client import Incoming
    from ._link import Link

PULL_WAIT = 1.0
"""Seconds a pull request waits on the server for messages."""


class Puller:
    """The pull requests and the messages of one durable consumer, on one link."""

    def __init__(self, link: Link, stream: str, durable: str, batch: int) -> None:
        self._link = link
        self._batch = batch
        self._inbox = f"_INBOX.{uuid.uuid4().hex}"
        request = json.dumps(
            {"batch": batch, "expires": int(PULL_WAIT * 1e9)}, separators=(",", ":")
        ).encode()
        self._request = b"PUB $JS.API.CONSUMER.MSG.NEXT.%s.%s %s %d\r\n%s\r\n" % (
            stream.encode(),
            durable.encode(),
            self._inbox.encode(),
            len(request),
            request,
        )
        self._sub: Subscription | None = None
        # written in the loop's thread, taken on the trio side
        self._items: deque[Incoming] = deque()
        self._ended = 0  # requests over (loop side)
        self._tell_scheduled = False
        # the number of the request under way (loop side); 0: none; -1: none,
        # and the next waits (the server said something is wrong)
        self._open = 0
        self._sent = 0  # requests written (loop side)
        self._got = 0  # messages of the request under way (loop side)
        self._last_full = False  # the last request came back with a whole batch
        # trio side
        self._asked = 0  # requests asked for
        self._wake = trio.Event()
        self._settling: deque[bytes] = deque()
        self._settle_scheduled = False

    # -- the trio side ------------------------------------------------------------

    def ask_ahead(self, held: int) -> None:
        """Ask for the next batch now, if more are likely waiting on the server.

        That is, the last request came back full; and none is under way, and
        ``held`` (the messages the trio side has in hand) is less than a batch.
        """
        if (
            self._asked == self._ended
            and self._last_full
            and held + len(self._items) < self._batch
        ):
            self._ask_soon()

    def _ask_soon(self) -> None:
        self._asked += 1
        self._link.soon(self._ask)

    async def take(self) -> list[Incoming]:
        """What has come (waits for something, asking for it)."""
        items = self._items
        while True:
            if items:
                taken = []
                with contextlib.suppress(IndexError):
                    while True:
                        taken.append(items.popleft())
                return taken
            if self._asked == self._ended:
                self._ask_soon()
            self._wake = trio.Event()
            if items or self._asked == self._ended:
                continue  # (came before the event was new)
            await self._wake.wait()

    def settle(self, reply: str, what: bytes) -> None:
        """Send ``what`` (``+ACK``…) on a message's ``reply`` subject, soon.

        Not confirmed (the server confirms no settlement); lost if the
        connection breaks first, and then the server delivers the message
        again after its ``ack_wait``.
        """
        self._settling.append(
            b"PUB %s %d\r\n%s\r\n" % (reply.encode(), len(what), what)
        )  # (deque: safe across threads)
        if not self._settle_scheduled:
            self._settle_scheduled = True
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._link.soon(self._write_settlements)

    async def close(self, held: int) -> list[Incoming]:
        """Stop listening (confirmed); what came and was not taken.

        With messages to hand back (``held`` in the trio side's hand, or
        come and not taken), a request under way is waited for first (its
        wait on the server at most): handed back while the server still
        holds the request, the first of them would go to it, find nobody
        listening, and come back behind the others.
        """
        with trio.move_on_after(PULL_WAIT + 1.0):
            while (held or self._items) and self._asked != self._ended:
                self._wake = trio.Event()
                if self._asked != self._ended:
                    await self._wake.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed
            await self._link.call(self._unsubscribe())
        taken = list(self._items)
        self._items.clear()
        return taken

    # -- the loop's thread --------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the inbox (in the loop)."""
        nc = self._link.nc
        assert nc is not None
        self._sub = await nc.subscribe_taken(self._inbox, self._on_message)
        self._link.on_reconnected.append(self._reconnected)
        await nc.flush(timeout=self._link.flush_timeout)  # type: ignore[arg-type]

    async def _unsubscribe(self) -> None:
        with contextlib.suppress(ValueError):
            self._link.on_reconnected.remove(self._reconnected)
        nc = self._link.nc
        sub = self._sub
        if nc is None or sub is None or not nc.plainly_connected:
            return
        sid = nc.sid(sub)
        # UNSUB first, then the PONG: what the server sent before it is read
        # (and taken) by then. nats-py's own unsubscribe would drop it.
        nc.put_commands([b"UNSUB %d\r\n" % sid])
        with contextlib.suppress(Exception):
            await nc.flush(timeout=self._link.flush_timeout)  # type: ignore[arg-type]
        nc.takers.pop(sid, None)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    def _ask(self) -> None:
        """Send the next pull request (or, unconnected, let it lapse)."""
        self._sent += 1
        number = self._open = self._sent
        self._got = 0
        nc = self._link.nc
        assert nc is not None
        loop = asyncio.get_running_loop()
        if nc.plainly_connected:
            # Over when the server says so (408 when it expires, 409…), or
            # when the whole batch is in; one lost with the connection, on
            # reconnecting (see _reconnected).
            nc.put_commands([self._request])
        else:  # as if it had expired, after its wait (no tight loop)
            loop.call_later(PULL_WAIT, self._lost, number)

    def _reconnected(self) -> None:
        if self._open > 0:
            self._end()  # (the server forgot it with the old connection)

    def _lost(self, number: int) -> None:
        if self._open == number:
            self._end()

    def _end(self, pause: bool = False) -> None:
        """The request under way is over; the trio side may ask again."""
        self._open = 0
        self._last_full = self._got >= self._batch
        if pause:  # (the server said something is wrong: not at once)
            self._open = -1
            asyncio.get_running_loop().call_later(PULL_WAIT, self._end)
            return
        self._ended += 1
        self._tell()

    def _on_message(self, item: Incoming) -> None:
        """A message or a status on the inbox, in nats-py's read loop."""
        _, reply, data, headers = item
        if reply.startswith("$JS.ACK."):
            # (only the server sends these: it refuses a client's publish
            # with such a reply subject)
            self._items.append(item)
            self._tell()
            if self._open > 0:
                self._got += 1
                if self._got >= self._batch:
                    self._end()
            return
        status = None if headers is None else headers.get("Status")
        if status in ("404", "408"):
            if self._open > 0:
                self._end()  # no (more) messages
        elif status == "100":
            pass  # a heartbeat (not asked for)
        elif status is None:
            self._link.warn(
                "inbox",
                "JetStream: what came to a consumer's inbox is neither a message "
                "nor a status, passed over: %r",
                data[:200],
            )
        else:
            self._link.warn(
                "pull",
                "JetStream: a pull request was answered %s %s",
                status,
                headers.get("Description", "") if headers else "",
            )
            if self._open > 0:
                self._end(pause=True)

    def _tell(self) -> None:
        if not self._tell_scheduled:
            self._tell_scheduled = True
            asyncio.get_running_loop().call_soon(self._told)

    def _told(self) -> None:
        self._tell_scheduled = False
        self._link.to_trio(self._poke)

    def _poke(self) -> None:
        self._wake.set()

    def _write_settlements(self) -> None:
        self._settle_scheduled = False  # (before taking: a later one schedules)
        settling = self._settling
        commands = []
        while settling:
            commands.append(settling.popleft())
        nc = self._link.nc
        if commands and nc is not None and nc.plainly_connected:
            nc.put_commands(commands)
