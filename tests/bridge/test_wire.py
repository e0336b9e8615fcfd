"""How the bridge reads the wire, from a stand-in server on a bare TCP socket.

A real nats-server sends every message well formed, and the bridge reads what
it gets in whatever pieces TCP hands over. The stand-in here speaks just
enough of the protocol for nats-py to connect and subscribe, then sends one
fixed stream of messages in pieces of a chosen size: the forms nats-py's
parser accepts (a reply subject, two spaces, a tab, an empty payload, headers,
a PING between messages) and two it refuses, which the bridge drops and
counts.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from trio_pubsub import Broker
from trio_pubsub.nats import decode_bytes, encode_bytes, open_bridge

GUARD = 20  # seconds: a guard against hanging, never a measure

BYTES: dict[str, Any] = {"encode": encode_bytes, "decode": decode_bytes}

INFO = {
    "server_id": "stand-in",
    "version": "2.10.0",
    "proto": 1,
    "headers": True,
    "max_payload": 1 << 20,
}


def stream(sid: bytes) -> bytes:
    """The messages, for the subscription ``sid``: 8 to import, 2 to drop."""
    return b"".join(
        [
            b"MSG w.1 %s 2\r\nab\r\n" % sid,
            b"MSG w.2 %s _INBOX.to 2\r\ncd\r\n" % sid,  # with a reply subject
            b"MSG w.3 %s  2\r\nef\r\n" % sid,  # two spaces
            b"MSG w.4\t%s 2\r\ngh\r\n" % sid,  # a tab
            b"PING\r\n",
            b"MSG w.5 %s 0\r\n\r\n" % sid,  # nothing in it
            b"MSG w.x %s a b 2\r\nzz\r\n" % sid,  # too many fields: dropped
            b"MSG w.y Q 2\r\nzz\r\n",  # a sid that is not a number: dropped
            b"MSG w.6 %s 2\r\nij\r\n" % sid,
            b"HMSG w.7 %s 12 14\r\nNATS/1.0\r\n\r\nkl\r\n" % sid,
            b"MSG w.8 %s 2\r\nmn\r\n" % sid,
        ]
    )


async def commands(stream_: trio.SocketStream) -> AsyncIterator[list[bytes]]:
    """Greet the client with INFO, then yield the whole lines of each read."""
    await stream_.send_all(b"INFO %s\r\n" % json.dumps(INFO).encode())
    pending = b""
    while data := await stream_.receive_some():
        pending += data
        *lines, pending = pending.split(b"\r\n")
        yield lines


class StandIn:
    """One connection: INFO, a PONG for each PING, the stream after the SUB."""

    def __init__(self, piece: int) -> None:
        self.piece = piece
        self.pongs = 0  # PONGs from the client: answers to the stream's PING

    async def serve(self, stream_: trio.SocketStream) -> None:
        sid = None
        async with stream_:
            async for lines in commands(stream_):
                for line in lines:
                    if line == b"PING":
                        await stream_.send_all(b"PONG\r\n")
                    elif line == b"PONG":
                        self.pongs += 1
                    elif line.startswith(b"SUB w.> "):
                        sid = line.split(b" ")[-1]
                if sid is not None:
                    await self.send(stream_, stream(sid))
                    sid = None

    async def send(self, stream_: trio.SocketStream, data: bytes) -> None:
        for start in range(0, len(data), self.piece):
            await stream_.send_all(data[start : start + self.piece])
            await trio.sleep(0.001)  # so that the client reads it in pieces


@pytest.mark.parametrize("piece", [1, 2, 7, 1000])
async def test_messages_are_read_whole_from_pieces_of_any_size(piece: int) -> None:
    stand_in = StandIn(piece)
    broker = Broker[bytes]()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, stand_in.serve, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        # (subscribed first: the stream comes as soon as the bridge is)
        async with (
            broker.subscribe("w.>", max_buffer_size=100) as sub,
            open_bridge(
                broker, f"nats://127.0.0.1:{port}", inbound=["w.>"], **BYTES
            ) as into,
        ):
            with trio.fail_after(GUARD):
                got = [await sub.receive() for _ in range(8)]
                while into.statistics().inbound_dropped < 2:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                # the client's PONG may still be on its way to the stand-in
                while stand_in.pongs < 1:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            stats = into.statistics()
        nursery.cancel_scope.cancel()
    assert [(m.subject, m.payload) for m in got] == [
        ("w.1", b"ab"),
        ("w.2", b"cd"),
        ("w.3", b"ef"),
        ("w.4", b"gh"),
        ("w.5", b""),
        ("w.6", b"ij"),
        ("w.7", b"kl"),
        ("w.8", b"mn"),
    ]
    # w.2 alone came with a reply subject: it is imported as a request
    assert [m.reply is not None for m in got] == [i == 1 for i in range(8)]
    assert (stats.imported, stats.inbound_dropped, stats.reconnects) == (8, 2, 0)


class Recorder:
    """One connection that answers every PING and notes each command's verb."""

    def __init__(self) -> None:
        self.verbs: list[bytes] = []

    async def serve(self, stream_: trio.SocketStream) -> None:
        async with stream_:
            async for lines in commands(stream_):
                for line in lines:
                    verb = line.split(b" ", 1)[0]
                    if verb in (b"SUB", b"PUB", b"PING"):
                        self.verbs.append(verb)
                    if verb == b"PING":
                        await stream_.send_all(b"PONG\r\n")


async def test_a_confirmation_comes_after_what_it_confirms_issue_28() -> None:
    """The PING that confirms a subscription or an export follows it on the wire.

    nats-py writes a flush's PING straight to the socket, ahead of what still
    waits in its pending buffer: the server answered PONG before it had seen
    the SUB (a message published just after the bridge was open then reached
    nobody; it happened under load) or the PUBs counted as exported.
    """
    recorder = Recorder()
    broker = Broker[bytes]()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, recorder.serve, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with open_bridge(
            broker, f"nats://127.0.0.1:{port}", inbound=["w.>"], outbound=["o"], **BYTES
        ) as bridge:
            for _ in range(3):
                await broker.publish("o", b"x")
            with trio.fail_after(GUARD):
                while bridge.statistics().exported < 3:  # noqa: ASYNC110
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    verbs = recorder.verbs
    assert verbs[0] == b"PING"  # nats-py's own, when it connects
    # every SUB and PUB has a PING after it, which the confirmation waited for
    last_sub_or_pub = max(i for i, verb in enumerate(verbs) if verb != b"PING")
    assert b"PING" in verbs[last_sub_or_pub:]
    # the two subscriptions (answers, w.>) each confirmed before what follows
    first = verbs.index(b"SUB")
    assert verbs[first : first + 4] == [b"SUB", b"PING", b"SUB", b"PING"]
    assert verbs.count(b"PUB") == 3
