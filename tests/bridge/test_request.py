"""Request/reply through the NATS bridge, both ways, against a real nats-server.

The other side is a plain nats-py client (``peer.Peer``): ``nc.request`` and
``msg.respond``, as any NATS program would use them (issue 17).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import nats.errors
import pytest
import trio

from trio_pubsub import Broker, Message, NoRespondersError, Subscription
from trio_pubsub._broker import pipeline
from trio_pubsub.nats import decode_json, encode_json, open_bridge

from .peer import Peer
from .server import NatsServer

GUARD = 20  # seconds: a guard against hanging, never a measure

JSON: dict[str, Any] = {"encode": encode_json, "decode": decode_json}


def doubled(data: bytes) -> bytes:
    return json.dumps(json.loads(data) * 2).encode()


async def wait_until(condition: Any) -> None:
    with trio.fail_after(GUARD):
        while not condition():  # noqa: ASYNC110 - counters of another thread
            await trio.sleep(0.01)


async def respond_doubled(
    broker: Broker[Any],
    pattern: str,
    *,
    delay: float = 0.0,
    task_status: trio.TaskStatus[Subscription[Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A local responder: answer each request with twice its payload."""
    async with broker.subscribe(pattern) as sub:
        task_status.started(sub)
        async for message in sub:
            await trio.sleep(delay)
            await message.respond(message.payload * 2, headers={"by": "local"})


async def test_a_local_request_reaches_a_nats_responder(
    nats_server: NatsServer,
) -> None:
    broker = Broker[Any]()
    async with (
        Peer(nats_server.url) as peer,
        open_bridge(broker, nats_server.url, outbound=["prices.>"], **JSON) as bridge,
    ):
        await peer.respond_on("prices.get", doubled)
        for n in range(5):
            with trio.fail_after(GUARD):
                answer = await broker.request("prices.get", n, timeout=GUARD)
            assert answer.payload == 2 * n
            assert answer.subject.startswith("_INBOX.")
        assert peer.answered == [b"0", b"1", b"2", b"3", b"4"]
        await wait_until(lambda: bridge.statistics().exported == 5)
        stats = bridge.statistics()
        assert (stats.imported, stats.dropped) == (5, 0)
    assert broker.statistics().requests_waiting == 0
    assert [s for s in pipeline(broker).cache if s.startswith("_INBOX")] == []


async def test_a_nats_request_reaches_a_local_responder(
    nats_server: NatsServer,
) -> None:
    broker = Broker[Any]()
    async with (
        open_bridge(broker, nats_server.url, inbound=["prices.>"], **JSON) as bridge,
        Peer(nats_server.url) as peer,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(respond_doubled, broker, "prices.get")
        for n in range(5):
            msg = await peer.request(
                "prices.get", str(n).encode(), timeout=GUARD, headers={"id": str(n)}
            )
            assert msg.data == str(2 * n).encode()
            assert msg.headers == {"by": "local"}
        await wait_until(lambda: bridge.statistics().exported == 5)  # the answers
        stats = bridge.statistics()
        assert (stats.imported, stats.dropped) == (5, 0)
        await wait_until(lambda: broker.statistics().requests_waiting == 0)
        nursery.cancel_scope.cancel()


async def test_two_brokers_answer_each_other_through_nats_with_a_prefix(
    nats_server: NatsServer,
) -> None:
    """here.request -> bridge out -> NATS -> bridge in -> there's responder, and back."""
    here, there = (
        Broker[Any](),
        Broker[Any](),
    )
    options: dict[str, Any] = {"prefix": "site", **JSON}
    async with (
        open_bridge(here, nats_server.url, outbound=["calc.>"], **options),
        open_bridge(there, nats_server.url, inbound=["calc.>"], **options),
        trio.open_nursery() as nursery,
    ):
        await nursery.start(respond_doubled, there, "calc.double")
        with trio.fail_after(GUARD):
            answer = await here.request(
                "calc.double", 21, timeout=GUARD, headers={"trace": "t"}
            )
        assert answer.payload == 42
        assert answer.headers == {"by": "local"}
        nursery.cancel_scope.cancel()
    for broker in (here, there):
        assert broker.statistics().requests_waiting == 0


async def test_nobody_in_nats_is_no_responders_at_once(
    nats_server: NatsServer,
) -> None:
    """The server's "no responders" (503) ends the local request.

    Without it the request would wait for its whole timeout: the bridge's
    export took it, so locally it did reach a subscription.
    """
    broker = Broker[Any]()
    async with open_bridge(
        broker, nats_server.url, outbound=["prices.>"], **JSON
    ) as bridge:
        with (
            trio.fail_after(GUARD),
            pytest.raises(NoRespondersError, match="none has a responder behind it"),
        ):
            await broker.request("prices.get", 1, timeout=2 * GUARD)
        assert bridge.statistics().dropped == 0
        # a local responder as well: its answer is the one
        async with trio.open_nursery() as nursery:
            await nursery.start(respond_doubled, broker, "prices.get")
            with trio.fail_after(GUARD):
                answer = await broker.request("prices.get", 4, timeout=GUARD)
            assert answer.payload == 8
            nursery.cancel_scope.cancel()
    assert broker.statistics().requests_waiting == 0


async def test_a_nats_request_nobody_answers_here_leaves_nothing_behind(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_pubsub.nats")
    broker = Broker[Any]()
    async with (
        open_bridge(
            broker,
            nats_server.url,
            inbound=["q.>"],
            request_timeout=0.2,
            **JSON,
        ) as bridge,
        Peer(nats_server.url) as peer,
        broker.subscribe("q.silent") as silent,
    ):
        # a subscription that never answers: the bridge gives up after 0.2 s
        with pytest.raises(nats.errors.TimeoutError):
            await peer.request("q.silent", b"1", timeout=0.5)
        request = silent.receive_nowait()
        assert request.reply is not None
        await wait_until(lambda: broker.statistics().requests_waiting == 0)
        assert await request.respond(2) == 0  # too late: goes to nobody
        # no subscription at all: nothing waits
        with pytest.raises(nats.errors.TimeoutError):
            await peer.request("q.nobody", b"1", timeout=0.3)
        assert broker.statistics().requests_waiting == 0
        stats = bridge.statistics()
        assert (stats.imported, stats.dropped, stats.exported) == (2, 0, 0)
    assert "had no local answer within request_timeout" in caplog.text


async def test_an_answer_is_imported_once_with_an_inbound_wildcard(
    nats_server: NatsServer,
) -> None:
    """The answers' own subscription has its copy; an inbound ``>`` skips it."""
    broker = Broker[Any]()
    async with (
        Peer(nats_server.url) as peer,
        open_bridge(
            broker, nats_server.url, outbound=["prices.>"], inbound=[">"], **JSON
        ) as bridge,
    ):
        await peer.respond_on("prices.get", doubled)
        with trio.fail_after(GUARD):
            answer = await broker.request("prices.get", 3, timeout=GUARD)
        assert answer.payload == 6
        await trio.sleep(0.3)  # a second copy would have come by now
        assert bridge.statistics().imported == 1


async def test_other_clients_answers_on_an_inbound_wildcard_are_counted(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Another client's reply subject cannot be published here: dropped, counted."""
    caplog.set_level(logging.WARNING, logger="trio_pubsub.nats")
    broker = Broker[Any]()
    async with (
        open_bridge(broker, nats_server.url, inbound=[">"], **JSON) as bridge,
        Peer(nats_server.url) as asker,
        Peer(nats_server.url) as answerer,
    ):
        await answerer.respond_on("elsewhere", doubled)
        msg = await asker.request("elsewhere", b"5", timeout=GUARD)
        assert msg.data == b"10"
        # the request itself is imported (to nobody here), the answer refused
        await wait_until(lambda: bridge.statistics().inbound_dropped == 1)
        assert bridge.statistics().imported == 1
    assert "subjects under _INBOX. are reply subjects" in caplog.text


async def test_closing_the_bridge_ends_the_wait_for_a_local_answer(
    nats_server: NatsServer,
) -> None:
    broker = Broker[Any]()
    async with (
        Peer(nats_server.url) as peer,
        broker.subscribe("q") as silent,
        trio.open_nursery() as nursery,
    ):
        async with open_bridge(broker, nats_server.url, inbound=["q"], **JSON):

            async def ask() -> None:
                with pytest.raises(nats.errors.TimeoutError):
                    await peer.request("q", b"1", timeout=0.5)

            nursery.start_soon(ask)
            await wait_until(lambda: broker.statistics().requests_waiting == 1)
        assert broker.statistics().requests_waiting == 0
        assert silent.receive_nowait().reply is not None


async def test_a_draining_bridge_still_sends_the_answers_it_waits_for(
    nats_server: NatsServer,
) -> None:
    broker = Broker[Any]()
    answers: list[bytes] = []
    async with Peer(nats_server.url) as peer, trio.open_nursery() as nursery:
        await nursery.start(functools.partial(respond_doubled, delay=0.2), broker, "q")
        async with open_bridge(
            broker, nats_server.url, inbound=["q"], drain=True, **JSON
        ) as bridge:

            async def ask() -> None:
                answers.append((await peer.request("q", b"7", timeout=GUARD)).data)

            nursery.start_soon(ask)
            await wait_until(lambda: broker.statistics().requests_waiting == 1)
        # the block has been left: the bridge waited for the answer, sent it
        assert bridge.statistics().exported == 1
        await wait_until(lambda: answers == [b"14"])
        nursery.cancel_scope.cancel()


async def test_headers_of_a_request_reach_the_nats_responder(
    nats_server: NatsServer,
) -> None:
    broker = Broker[Any]()
    seen: list[Message[Any]] = []
    async with (
        Peer(nats_server.url) as peer,
        open_bridge(broker, nats_server.url, outbound=["h"], **JSON),
    ):
        assert peer.nc is not None

        async def subscribe() -> None:
            assert peer.nc is not None

            async def on_request(msg: Any) -> None:
                seen.append(msg)
                assert peer.nc is not None  # (msg.respond takes no headers)
                await peer.nc.publish(msg.reply, b"1", headers={"answer": "yes"})

            await peer.nc.subscribe("h", cb=on_request)
            await peer.nc.flush()

        await peer.call(subscribe())
        with trio.fail_after(GUARD):
            answer = await broker.request("h", 0, timeout=GUARD, headers={"q": "v"})
        assert answer.headers == {"answer": "yes"}
        assert seen[0].headers == {"q": "v"}


async def test_an_answer_that_cannot_be_decoded_is_counted(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_pubsub.nats")
    broker = Broker[Any]()
    async with (
        Peer(nats_server.url) as peer,
        open_bridge(broker, nats_server.url, outbound=["q"], **JSON) as bridge,
    ):
        await peer.respond_on("q", lambda data: b"{not json")
        with pytest.raises(trio.TooSlowError):
            await broker.request("q", 1, timeout=0.5)
        assert bridge.statistics().inbound_dropped == 1
    assert "an answer on '_INBOX." in caplog.text
    assert "decode failed" in caplog.text


async def test_closing_the_broker_ends_the_bridge_s_wait_for_an_answer(
    nats_server: NatsServer,
) -> None:
    broker = Broker[Any]()
    async with (
        open_bridge(broker, nats_server.url, inbound=["q"], **JSON) as bridge,
        Peer(nats_server.url) as peer,
        broker.subscribe("q"),
        trio.open_nursery() as nursery,
    ):

        async def ask() -> None:
            with pytest.raises(nats.errors.TimeoutError):
                await peer.request("q", b"1", timeout=0.5)

        nursery.start_soon(ask)
        await wait_until(lambda: broker.statistics().requests_waiting == 1)
        await broker.aclose()
        assert broker.statistics().requests_waiting == 0
        importer = bridge._importer
        assert importer is not None
        await wait_until(lambda: not importer.answering)  # its task has ended
