"""What a JetStream publish makes of the answers it gets, or does not get.

The stream's answers are the truth the bridge counts by, so each kind is
tried against a real nats-server: the stream itself; no stream at all (the
server says "no responders"); and, with the stream deleted, a peer on the
network that answers in its place, with a script of answers both true and
false. A bridge that trusts no peer takes only a PubAck that reads as one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Self

import nats
import pytest
import trio

from trio_pubsub import Broker, BrokerClosedError
from trio_pubsub.nats import decode_str, encode_str, open_jetstream

from .server import NatsServer
from .test_jetstream import GUARD, plain

Script = dict[str, list[list[bytes]]]
"""By message id: for each delivery of it, the answers the peer sends."""


class AnsweringPeer:
    """A plain nats-py client in a thread of its own that answers as scripted.

    It subscribes to ``subject`` and answers each message by its
    ``Nats-Msg-Id``: the next list of its script (a delivery with no list
    left, or an empty one, gets no answer). It notes each delivery's id and
    headers.
    """

    def __init__(self, url: str, subject: str, script: Script) -> None:
        self.url = url
        self.subject = subject
        self.script = {key: list(answers) for key, answers in script.items()}
        self.seen: list[tuple[str, dict[str, str]]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        nc = await nats.connect(self.url)

        async def answer(msg: Any) -> None:
            headers = dict(msg.headers or {})
            msg_id = headers.get("Nats-Msg-Id", "")
            self.seen.append((msg_id, headers))
            planned = self.script.get(msg_id, [])
            for data in planned.pop(0) if planned else []:
                await nc.publish(msg.reply, data)

        await nc.subscribe(self.subject, cb=answer)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()

    async def __aenter__(self) -> Self:
        self._thread.start()
        assert await trio.to_thread.run_sync(self._ready.wait, 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        await trio.to_thread.run_sync(self._thread.join, 10)

    async def wait_seen(self, msg_id: str, times: int = 1) -> None:
        """Wait (bounded) until the message ``msg_id`` came ``times`` times."""
        for _ in range(1000):
            if sum(1 for seen, _ in self.seen if seen == msg_id) >= times:
                return
            await trio.sleep(0.01)
        raise AssertionError(f"{msg_id!r} did not come {times} time(s)")


async def without_stream(url: str, stream: str) -> None:
    """Delete ``stream`` with plain nats-py: only a peer answers from now on."""

    async def delete(js: Any) -> None:
        await js.delete_stream(stream)

    await plain(url, delete)


async def test_only_an_answer_that_reads_as_a_pubAck_counts(
    js_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    lies = [
        b"not json",
        b"[1]",
        b'{"seq": -1}',
        b'{"seq": "7"}',
        b'{"seq": 7, "duplicate": "yes"}',
        b'{"seq": 7, "error": 1}',
    ]
    script: Script = {
        # every false answer is passed over; the true one after them counts
        "a": [[*lies, b'{"stream": "W", "seq": 7}']],
        "b": [[b'{"stream": "W", "seq": 7, "duplicate": true}']],
        "c": [[b'{"error": {"code": 400, "description": "maximum bytes exceeded"}}']],
        "d": [[b'{"error": {"code": 400}}']],
        # unavailable (503): written again after a short wait
        "e": [
            [b'{"error": {"code": 503, "description": "unavailable"}}'],
            [b'{"seq": 8}'],
        ],
        # no answer: written again after ATTEMPT_TIMEOUT, with the same id
        "f": [[], [b'{"seq": 9}']],
        # answered before the wait after "unavailable" is over
        "g": [[b'{"error": {"code": 503}}', b'{"seq": 10}']],
        # a second answer to one answered already changes nothing
        "h": [[b'{"seq": 11}', b'{"seq": 12, "duplicate": true}']],
    }
    broker = Broker(str)
    caplog.set_level(logging.WARNING, logger="trio_pubsub.nats")
    with trio.fail_after(GUARD):
        async with (
            broker.subscribe("w.>") as local,
            open_jetstream(
                broker,
                js_server.url,
                stream="W",
                subjects=["w.>"],
                encode=encode_str,
                decode=decode_str,
            ) as js,
        ):
            await without_stream(js_server.url, "W")
            async with AnsweringPeer(js_server.url, "w.>", script) as peer:
                assert await js.publish("w.1", "a", msg_id="a", headers={"k": "v"}) == 7
                assert await js.publish("w.1", "b", msg_id="b") == 7
                with pytest.raises(ValueError, match="maximum bytes exceeded"):
                    await js.publish("w.1", "c", msg_id="c")
                with pytest.raises(ValueError, match="'code': 400"):
                    await js.publish("w.1", "d", msg_id="d")
                assert await js.publish("w.1", "e", msg_id="e") == 8
                assert await js.publish("w.1", "f", msg_id="f") == 9
                assert await js.publish("w.1", "g", msg_id="g") == 10
                assert await js.publish("w.1", "h", msg_id="h") == 11
                await trio.sleep(0.2)  # (the second answer to "h" has come)
            stats = js.statistics()
            # what the server refused is not delivered locally
            assert [local.receive_nowait().payload for _ in range(6)] == list("abefgh")
    assert (stats.stored, stats.duplicates, stats.dropped, stats.unconfirmed) == (
        5,
        1,
        2,
        0,
    )
    # each message went out once, but those answered "unavailable" or not at
    # all: twice, with the same id; each with the stream it is meant for
    assert [msg_id for msg_id, _ in peer.seen] == list("abcdeeffgh")
    first = peer.seen[0][1]
    assert first["Nats-Msg-Id"] == "a"
    assert first["Nats-Expected-Stream"] == "W"
    assert first["k"] == "v"
    warned = [
        r.getMessage() for r in caplog.records if "not a PubAck" in r.getMessage()
    ]
    assert warned  # (rate-limited: at least the first)
    assert any("written again" in r.getMessage() for r in caplog.records)


async def test_no_stream_is_waited_out_until_the_deadline(
    js_server: NatsServer,
) -> None:
    """No stream, no peer: the server says "no responders", and it is tried again."""
    broker = Broker(str)
    with trio.fail_after(GUARD):
        async with open_jetstream(
            broker,
            js_server.url,
            stream="W",
            subjects=["w.>"],
            encode=encode_str,
            decode=decode_str,
            publish_deadline=1.0,
        ) as js:
            await without_stream(js_server.url, "W")
            with pytest.raises(trio.TooSlowError, match="msg_id='late'"):
                await js.publish("w.1", "x", msg_id="late")
            assert js.statistics().unconfirmed == 1

            # The stream comes back while a publish waits: it is stored.
            async def make(js: Any) -> None:
                await js.add_stream(name="W", subjects=["w.>"])

            async with trio.open_nursery() as nursery:
                sequence: list[int | None] = []

                async def publish() -> None:
                    sequence.append(await js.publish("w.1", "y", msg_id="back"))

                nursery.start_soon(publish)
                await trio.sleep(0.2)  # (it has been answered "no responders")
                await plain(js_server.url, make)
            assert sequence == [1]
            assert js.statistics().stored == 1


async def test_a_message_larger_than_the_server_takes_is_refused_before_sending(
    js_server: NatsServer,
) -> None:
    broker = Broker(str)
    with trio.fail_after(GUARD):
        async with open_jetstream(
            broker,
            js_server.url,
            stream="W",
            subjects=["w.>"],
            encode=encode_str,
            decode=decode_str,
        ) as js:
            with pytest.raises(ValueError, match="max_payload"):
                await js.publish("w.1", "x" * (1 << 20))
            # the connection is intact (the server would have closed it)
            assert await js.publish("w.1", "fits") == 1
            stats = js.statistics()
    assert (stats.stored, stats.dropped) == (1, 1)


async def test_the_stream_expected_is_the_bridges_whatever_the_headers_say(
    js_server: NatsServer,
) -> None:
    """One ``Nats-Expected-Stream`` line goes out: the bridge's stream."""
    broker = Broker(str)
    with trio.fail_after(GUARD):
        async with open_jetstream(
            broker,
            js_server.url,
            stream="W",
            subjects=["w.>"],
            encode=encode_str,
            decode=decode_str,
        ) as js:
            headers = {"Nats-Expected-Stream": "OTHER", "k": "v"}
            assert await js.publish("w.1", "x", headers=headers) == 1
    assert js.statistics().stored == 1


async def test_closing_settles_what_waits_for_a_pubAck(js_server: NatsServer) -> None:
    """Written and unanswered: unconfirmed; never written (no connection): dropped."""
    broker = Broker(str)
    raised: list[str] = []

    async def publish(js: Any, msg_id: str) -> None:
        with pytest.raises(BrokerClosedError) as caught:
            await js.publish("w.1", msg_id, msg_id=msg_id)
        raised.append(str(caught.value))

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            async with open_jetstream(
                broker,
                js_server.url,
                stream="W",
                subjects=["w.>"],
                encode=encode_str,
                decode=decode_str,
            ) as js:
                await without_stream(js_server.url, "W")
                async with AnsweringPeer(js_server.url, "w.>", {}) as peer:
                    nursery.start_soon(publish, js, "unanswered")
                    await peer.wait_seen("unanswered")
                js_server.kill()
                for _ in range(500):  # (bounded: until the bridge sees it)
                    if not js._link.counters.connected:
                        break
                    await trio.sleep(0.01)
                nursery.start_soon(publish, js, "unsent")
                await trio.sleep(0.1)
            stats = js.statistics()
    assert sorted(raised) == [
        "the JetStream bridge closed before the PubAck: the message may or may "
        "not be stored",
        "the JetStream bridge closed before the message was sent",
    ]
    assert (stats.unconfirmed, stats.dropped) == (1, 1)
