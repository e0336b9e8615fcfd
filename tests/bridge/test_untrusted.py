"""The bridge against peers it must not trust (issue 27).

Each test stands for another client of the same NATS server: a plain nats-py
client (``peer.Peer``) or a bare socket (``raw.RawClient``), publishing and
subscribing only where NATS lets it. What such a peer can make the bridge do
is listed in the docs' guarantees page ("Security"), each line with its test
here.
"""

from __future__ import annotations

import re
from typing import Any

import nats.errors
import pytest
import trio
from nats.aio.msg import Msg

from trio_pubsub import Broker, Message, OverflowPolicy, Subscription
from trio_pubsub.nats import decode_bytes, encode_bytes, open_bridge
from trio_pubsub.nats._link import KEPT_WAITS, Backoff

from .peer import Peer
from .raw import RawClient
from .server import NatsServer
from .test_bridge import GUARD, JSON, wait_until

BYTES: dict[str, Any] = {"encode": encode_bytes, "decode": decode_bytes}


async def answer_all(
    broker: Broker[Any],
    pattern: str,
    answer: Any,
    *,
    task_status: trio.TaskStatus[Subscription[Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A local responder that answers every request on ``pattern`` with ``answer``."""
    async with broker.subscribe(pattern) as sub:
        task_status.started(sub)
        async for message in sub:
            await message.respond(answer)


async def requests_seen_by(peer: Peer, subject: str) -> list[Msg]:
    """What a NATS peer receives on ``subject`` (the broker's requests there)."""
    seen: list[Msg] = []

    async def record() -> None:
        assert peer.nc is not None

        async def on_request(msg: Msg) -> None:
            seen.append(msg)

        await peer.nc.subscribe(subject, cb=on_request)
        await peer.nc.flush()

    await peer.call(record())
    return seen


async def ask(broker: Broker[Any], answer: list[Message[Any]]) -> None:
    """The broker asks NATS for a price; ``answer`` gets what came back."""
    answer.append(await broker.request("prices.get", 1, timeout=GUARD))


class Listener:
    """A raw client subscribed to some NATS subjects, counting what arrives."""

    def __init__(self, raw: RawClient) -> None:
        self.raw = raw
        self.seen = 0

    @classmethod
    async def open(cls, port: int, *subjects: bytes) -> Listener:
        raw = await RawClient.connect(port)
        for sid, subject in enumerate(subjects, 1):
            await raw.send(b"SUB %s %d\r\n" % (subject, sid))
        await raw.flush()
        return cls(raw)

    async def count(self, marker: bytes) -> int:
        """How often ``marker`` came so far (after a PING/PONG round trip).

        One marker at a time: it counts what came before the PONG.
        """
        received = self.raw.received
        await self.raw.send(b"PING\r\n")
        with trio.fail_after(GUARD):
            while b"PONG\r\n" not in received:
                received += await self.raw.stream.receive_some()
        end = received.index(b"PONG\r\n") + len(b"PONG\r\n")
        self.seen += received[:end].count(marker)
        del received[:end]
        return self.seen


# -- 1. answers go only to inboxes ------------------------------------------------


async def test_an_answer_never_goes_to_a_reply_subject_outside_the_inboxes(
    nats_server: NatsServer,
) -> None:
    """A crafted reply subject cannot steer a local answer anywhere in NATS.

    Before: the local answer was published on NATS ``orders.fake``, and a
    second bridge of the same broker importing ``orders.>`` brought it back
    into the local subject ``orders.fake``.
    """
    broker = Broker[Any]()
    async with (
        open_bridge(broker, nats_server.url, inbound=["req.>"], **JSON) as bridge,
        open_bridge(broker, nats_server.url, inbound=["orders.>"], **JSON),
        broker.subscribe("orders.>") as orders,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(answer_all, broker, "req.>", "answer")
        watch = await Listener.open(nats_server.port, b"orders.>", b"_INBOX.>")
        attacker = await RawClient.connect(nats_server.port)
        crafted = [
            b"orders.fake",  # a subject, not an inbox
            b"_INBOX.>",  # a wildcard
            b"_INBOX.a..b",  # breaks the grammar
        ]
        for reply in crafted:
            await attacker.send(b"PUB req.a %s 1\r\n1\r\n" % reply)
        await attacker.flush()
        await wait_until(lambda: bridge.statistics().requests_refused == 3)
        assert await watch.count(b"answer") == 0
        assert orders.statistics().received + orders.statistics().pending == 0
        stats = bridge.statistics()
        assert (stats.imported, stats.inbound_dropped, stats.exported) == (0, 3, 0)
        assert broker.statistics().requests_waiting == 0
        # a true inbox is answered
        await attacker.send(b"PUB req.a _INBOX.mine.1 1\r\n1\r\n")
        await wait_until(lambda: bridge.statistics().exported == 1)
        assert await watch.count(b"answer") == 1
        await attacker.aclose()
        await watch.raw.aclose()
        nursery.cancel_scope.cancel()


async def test_an_answer_never_goes_to_the_brokers_own_waiting_request(
    nats_server: NatsServer,
) -> None:
    """A reply subject the broker waits on is refused as a reply subject.

    Before: a peer that saw it on the wire sent a request with it as its reply
    subject, and the local answer to ``req.a`` became the answer to the
    broker's own, unrelated request.
    """
    broker = Broker[Any]()
    async with (
        open_bridge(
            broker, nats_server.url, outbound=["prices.>"], inbound=["req.>"], **JSON
        ) as bridge,
        Peer(nats_server.url) as peer,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(answer_all, broker, "req.>", "forged")
        seen = await requests_seen_by(peer, "prices.get")
        answer: list[Message[Any]] = []
        nursery.start_soon(ask, broker, answer)
        await wait_until(lambda: len(seen) == 1)
        reply = seen[0].reply
        assert re.fullmatch(r"_INBOX\.[0-9a-f]{22}\.[A-Za-z0-9_-]{16}", reply)
        attacker = await RawClient.connect(nats_server.port)
        await attacker.send(b"PUB req.a %s 1\r\n1\r\n" % reply.encode())
        await attacker.flush()
        await wait_until(lambda: bridge.statistics().requests_refused == 1)
        assert answer == []
        await peer.call(seen[0].respond(b'"real"'))
        await wait_until(lambda: answer != [])
        assert answer[0].payload == "real"
        await attacker.aclose()
        nursery.cancel_scope.cancel()


async def test_a_reply_subject_the_bridge_imports_is_refused(
    nats_server: NatsServer,
) -> None:
    """An answer that the bridge would import back is refused.

    (Only possible with an inbox prefix of the user's own: nothing under
    ``_INBOX.`` is imported.)
    """
    broker = Broker[Any]()
    async with (
        open_bridge(
            broker,
            nats_server.url,
            inbound=["req.>", "replies.>"],
            reply_prefixes=["replies", "_INBOX"],
            **JSON,
        ) as bridge,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(answer_all, broker, "req.>", "answer")
        watch = await Listener.open(nats_server.port, b"other.>", b"_INBOX.>")
        attacker = await RawClient.connect(nats_server.port)
        await attacker.send(b"PUB req.a replies.7 1\r\n1\r\n")
        await attacker.flush()
        await wait_until(lambda: bridge.statistics().requests_refused == 1)
        await attacker.send(b"PUB req.a _INBOX.x 1\r\n1\r\n")
        await wait_until(lambda: bridge.statistics().exported == 1)
        assert await watch.count(b"answer") == 1
        await attacker.aclose()
        await watch.raw.aclose()
        nursery.cancel_scope.cancel()


async def test_reply_prefixes_are_checked(nats_server: NatsServer) -> None:
    broker = Broker[Any]()
    with pytest.raises(TypeError, match="not a str"):
        async with open_bridge(
            broker, nats_server.url, inbound=["a"], reply_prefixes="_INBOX", **JSON
        ):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match=r"invalid subject '_INBOX\.>'"):
        async with open_bridge(
            broker, nats_server.url, inbound=["a"], reply_prefixes=["_INBOX.>"], **JSON
        ):
            pass  # pragma: no cover


# -- 2. nothing from an inbound pattern lands under _INBOX -------------------------


async def test_an_answer_forged_through_the_prefix_is_dropped(
    nats_server: NatsServer,
) -> None:
    """``shop._INBOX.<broker>.<token>`` on inbound ``>`` is not an answer.

    Before: with the prefix stripped, it was taken as the answer to the
    broker's waiting request.
    """
    broker = Broker[Any]()
    async with (
        open_bridge(
            broker,
            nats_server.url,
            outbound=["prices.>"],
            inbound=[">"],
            prefix="shop",
            **JSON,
        ) as bridge,
        Peer(nats_server.url) as peer,
        trio.open_nursery() as nursery,
    ):
        seen = await requests_seen_by(peer, "shop.prices.get")
        answer: list[Message[Any]] = []
        nursery.start_soon(ask, broker, answer)
        await wait_until(lambda: len(seen) == 1)
        attacker = await RawClient.connect(nats_server.port)
        forged = b"shop." + seen[0].reply.encode()
        await attacker.send(b'PUB %s 8\r\n"forged"\r\n' % forged)
        await attacker.flush()
        await wait_until(lambda: bridge.statistics().inbound_dropped == 1)
        assert answer == []
        await peer.call(seen[0].respond(b'"real"'))
        await wait_until(lambda: answer != [])
        assert answer[0].payload == "real"
        await attacker.aclose()
        nursery.cancel_scope.cancel()


async def test_reply_subjects_are_not_guessable() -> None:
    broker = Broker[Any]()
    seen: list[str] = []
    async with trio.open_nursery() as nursery:

        async def respond(task_status: trio.TaskStatus[None]) -> None:
            async with broker.subscribe("q") as sub:
                task_status.started()
                async for message in sub:
                    assert message.reply is not None
                    seen.append(message.reply)
                    await message.respond(0)

        await nursery.start(respond)
        for _ in range(200):
            await broker.request("q", 0, timeout=GUARD)
        nursery.cancel_scope.cancel()
    heads = {reply.rsplit(".", 1)[0] for reply in seen}
    tails = [reply.rsplit(".", 1)[1] for reply in seen]
    assert len(heads) == 1  # the broker's token
    assert len(set(tails)) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", tail) for tail in tails)
    assert not any(tail.isdigit() for tail in tails)


# -- 3. one stalled subscriber holds back its own pattern only ---------------------


async def test_a_stalled_block_subscriber_holds_back_its_pattern_only(
    nats_server: NatsServer,
) -> None:
    """A full BLOCK subscriber on ``slow`` holds back neither ``fast`` nor answers.

    Before: it held ``fast`` back and made every request to NATS time out,
    though the answers had come.
    """
    broker = Broker[Any]()
    async with (
        open_bridge(
            broker,
            nats_server.url,
            outbound=["ask.>"],
            inbound=["slow", "fast"],
            **JSON,
        ) as bridge,
        broker.subscribe("slow", policy=OverflowPolicy.BLOCK, max_buffer_size=1),
        broker.subscribe("fast", max_buffer_size=100) as fast,
        Peer(nats_server.url) as peer,
    ):
        await peer.respond_on("ask.x", lambda data: data)
        assert peer.nc is not None
        for i in range(5):
            await peer.call(peer.nc.publish("slow", str(i).encode()))
        await peer.call(peer.nc.flush())
        # the second message on "slow" waits for room that never comes
        await wait_until(lambda: bridge.statistics().imported == 1)
        for i in range(50):
            await peer.call(peer.nc.publish("fast", str(i).encode()))
        with trio.fail_after(GUARD):
            got = [(await fast.receive()).payload for _ in range(50)]
            for n in range(5):
                answer = await broker.request("ask.x", n, timeout=GUARD)
                assert answer.payload == n
        assert got == list(range(50))
        stats = bridge.statistics()
        assert (stats.imported, stats.dropped) == (1 + 50 + 5, 0)


# -- 4. a cap on requests waiting for a local answer -------------------------------


async def test_requests_beyond_max_requests_are_told_no_responders(
    nats_server: NatsServer,
) -> None:
    """Before: nothing capped them (33,689 of 50,000 waited at once)."""
    broker = Broker[Any]()
    async with (
        open_bridge(
            broker, nats_server.url, inbound=["req"], max_requests=10, **JSON
        ) as bridge,
        broker.subscribe("req", max_buffer_size=100),  # never answers
        Peer(nats_server.url) as peer,
    ):
        flood = await Listener.open(nats_server.port, b"_INBOX.flood.*")
        for i in range(30):
            await flood.raw.send(b"PUB req _INBOX.flood.%d 1\r\n1\r\n" % i)
        await wait_until(lambda: bridge.statistics().requests_refused == 20)
        assert broker.statistics().requests_waiting == 10
        with trio.fail_after(GUARD):
            while await flood.count(b"NATS/1.0 503\r\n") < 20:  # noqa: ASYNC110
                await trio.sleep(0.01)
        # a plain NATS client hears "no responders" at once
        with pytest.raises(nats.errors.NoRespondersError):
            await peer.request("req", b"1", timeout=GUARD)
        stats = bridge.statistics()
        assert (stats.imported, stats.requests_refused) == (10, 21)
        assert stats.inbound_dropped == 21
        await flood.raw.aclose()


# -- 5. bounded in bytes ------------------------------------------------------------


async def test_inbound_is_bounded_in_bytes(nats_server: NatsServer) -> None:
    """Before: only in messages (10,000 of up to 1 MB each by default)."""
    broker = Broker[bytes]()
    size, bound = 16 * 1024, 64 * 1024
    async with (
        open_bridge(
            broker, nats_server.url, inbound=["big"], max_inbound_bytes=bound, **BYTES
        ) as into,
        broker.subscribe("big", policy=OverflowPolicy.BLOCK, max_buffer_size=1) as sub,
    ):
        raw = await RawClient.connect(nats_server.port)
        for _ in range(100):
            await raw.pub(b"big", b"x" * size)
        await raw.flush()
        # held: the buffer of 1, the batch the import task holds, the bridge's
        # queue and nats-py's (64 KiB each: 4 messages, and one more into an
        # empty one) and the message waiting for room between them
        most = 1 + 3 * (bound // size + 1) + 1
        await wait_until(lambda: into.statistics().inbound_dropped >= 100 - most)
        link = into._link
        assert link is not None
        assert link.queued_inbound() <= bound // size + 1
        received = 0
        with trio.move_on_after(1):
            while True:
                await sub.receive()
                received += 1
        stats = into.statistics()
        assert stats.imported == received
        assert stats.imported + stats.inbound_dropped == 100
        assert stats.imported <= most
        await raw.aclose()


async def test_outbound_is_bounded_in_bytes(own_server: NatsServer) -> None:
    """What waits to be sent in the connection's thread stays near its bound."""
    broker = Broker[bytes]()
    size, bound = 100 * 1024, 1024 * 1024
    async with open_bridge(
        broker,
        own_server.url,
        outbound=["big"],
        max_outbound=1000,
        max_outbound_bytes=bound,
        outbound_policy=OverflowPolicy.BLOCK,
        **BYTES,
    ) as out:
        link = out._link
        assert link is not None
        own_server.kill()
        await wait_until(lambda: not out.statistics().connected)
        for _ in range(100):
            await broker.publish("big", b"x" * size)
        await wait_until(lambda: out.statistics().outbound_pending == 100)
        exporter = out._exporter
        assert exporter is not None
        handed = exporter.handed + exporter.in_hand - link.counters.settled
        assert handed <= bound // size + 5
        own_server.start()
        await wait_until(lambda: out.statistics().exported == 100)
        assert out.statistics().dropped == 0


def test_the_new_options_are_checked() -> None:
    for name in ("max_inbound_bytes", "max_outbound_bytes", "max_requests"):
        options: dict[str, Any] = {name: 0}
        with pytest.raises(ValueError, match=name):
            trio.run(open_and_leave, options)
    with pytest.raises(ValueError, match=r"max_reconnect_wait .* at least"):
        trio.run(
            open_and_leave, {"reconnect_time_wait": 2.0, "max_reconnect_wait": 1.0}
        )


async def open_and_leave(options: dict[str, Any]) -> None:
    async with open_bridge(
        Broker[Any](), "nats://127.0.0.1:1", outbound=["a"], **options, **JSON
    ):
        pass  # pragma: no cover


# -- 6. a request nobody waits for is not sent --------------------------------------


async def test_a_request_that_timed_out_while_waiting_to_go_out_is_not_sent(
    own_server: NatsServer,
) -> None:
    """Before: requests that had timed out during a stall were sent when it ended.

    The server is paused (SIGSTOP): the batch sent before the requests waits
    for its confirmation, and the requests wait behind it, past their
    deadline.
    """
    broker = Broker[Any]()
    async with (
        open_bridge(
            broker, own_server.url, outbound=["ask.>", "fill"], **JSON
        ) as bridge,
        Peer(own_server.url) as peer,
    ):
        await peer.respond_on("ask.x", lambda data: data)
        own_server.pause()
        try:
            await broker.publish("fill", 0)
            await trio.sleep(0.1)  # handed over and written, unconfirmed
            for n in range(5):
                with pytest.raises(trio.TooSlowError):
                    await broker.request("ask.x", n, timeout=0.2)
        finally:
            own_server.resume()
        with trio.fail_after(GUARD):
            answer = await broker.request("ask.x", 7, timeout=GUARD)
        assert answer.payload == 7
        assert peer.answered == [b"7"]
        stats = bridge.statistics()
        assert stats.requests_expired == 5
        assert stats.outbound_dropped == 5


# -- 7. reconnects spread out -------------------------------------------------------


def test_backoff_doubles_up_to_its_cap_and_draws_from_the_upper_half() -> None:
    draws: list[tuple[float, float]] = []

    def draw(low: float, high: float) -> float:
        draws.append((low, high))
        return high

    backoff = Backoff(0.5, 4.0, draw)
    waits = [backoff.next_wait() for _ in range(6)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert draws == [(w / 2, w) for w in waits]
    for _ in range(30):  # a long outage: only the first waits are kept
        backoff.next_wait()
    assert len(backoff.waits) == KEPT_WAITS
    backoff.reset()
    assert len(backoff.last_waits) == KEPT_WAITS
    assert backoff.next_wait() == 0.5


async def test_bridges_reconnect_after_waits_of_their_own(
    own_server: NatsServer,
) -> None:
    """Before: every client retried every 0.5 s, in lock-step."""
    brokers = [Broker[Any]() for _ in range(3)]
    async with (
        open_bridge(brokers[0], own_server.url, outbound=["a"], **JSON) as one,
        open_bridge(brokers[1], own_server.url, outbound=["a"], **JSON) as two,
        open_bridge(brokers[2], own_server.url, outbound=["a"], **JSON) as three,
    ):
        bridges = [one, two, three]
        own_server.kill()
        links = [bridge._link for bridge in bridges]
        await wait_until(lambda: all(len(link.backoff.waits) >= 3 for link in links))  # type: ignore[union-attr]
        own_server.start()
        await wait_until(lambda: all(b.statistics().reconnects == 1 for b in bridges))
        for link in links:
            assert link is not None
            waits = link.backoff.last_waits
            assert len(waits) >= 3
            for n, wait in enumerate(waits):
                ceiling = min(5.0, 0.5 * 2**n)
                assert ceiling / 2 <= wait <= ceiling
        schedules = {tuple(link.backoff.last_waits[:3]) for link in links}  # type: ignore[union-attr]
        assert len(schedules) == 3


# -- 8. small defects ---------------------------------------------------------------


async def test_a_malformed_subject_on_two_overlapping_patterns_counts_once(
    nats_server: NatsServer,
) -> None:
    """Before: NATS sent it once per matching subscription; each counted it."""
    broker = Broker[bytes]()
    async with (
        open_bridge(broker, nats_server.url, inbound=["m.>", "m.*"], **BYTES) as into,
        broker.subscribe("m.>", max_buffer_size=10) as sub,
    ):
        raw = await RawClient.connect(nats_server.port)
        await raw.pub(b"m.\xff\xfe", b"bad subject")
        await raw.pub(b"m.a\x0bb", b"vertical tab")
        await raw.pub(b"m.ok", b"1")
        await raw.flush()
        with trio.fail_after(GUARD):
            assert (await sub.receive()).payload == b"1"
        # (read in order in one thread: every count came before m.ok)
        assert into.statistics().inbound_dropped == 2
        await raw.aclose()
