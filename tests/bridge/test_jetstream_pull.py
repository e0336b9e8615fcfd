"""A durable consumer's pull requests, against a real nats-server with JetStream.

The bridge asks for its messages itself (``_puller.Puller``): these tests
take it through what the server can answer besides messages (a consumer
deleted under it, a restart), through a backlog larger than a batch (the
next batch asked for while one is handled), and through a peer on the
network that writes to the consumer's inbox what is not a JetStream answer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import nats.js.api
import pytest
import trio

from trio_pubsub import Broker
from trio_pubsub.nats import DurableMessage, decode_json, encode_json, open_jetstream

from .raw import RawClient
from .server import NatsServer
from .test_jetstream import GUARD, plain

OPTIONS: dict[str, Any] = {"encode": encode_json, "decode": decode_json}


async def test_a_backlog_larger_than_a_batch_comes_in_stream_order(
    js_server: NatsServer,
) -> None:
    """Batches of 8 for 50 messages: the next asked for while one is handled."""
    broker = Broker[Any]()
    with trio.fail_after(GUARD):
        async with open_jetstream(
            broker, js_server.url, stream="LOG", subjects=["log.>"], **OPTIONS
        ) as js:
            for i in range(50):
                await js.publish("log.a", i)
            got = []
            async with js.consumer("log.>", durable="reader", batch=8) as reader:
                async for job in reader:
                    got.append((job.message.payload, job.sequence, job.deliveries))
                    await job.ack()
                    if len(got) == 50:
                        break
            stats = js.statistics()
    assert got == [(i, i + 1, 1) for i in range(50)]
    assert (stats.acked, stats.naked, stats.redelivered) == (50, 0, 0)


async def test_leaving_in_the_middle_of_a_backlog_hands_back_in_order(
    js_server: NatsServer,
) -> None:
    """Left with a batch in hand and the next one asked for: nothing reorders."""
    broker = Broker[Any]()
    with trio.fail_after(GUARD):
        async with open_jetstream(
            broker, js_server.url, stream="LOG", subjects=["log.>"], **OPTIONS
        ) as js:
            for i in range(40):
                await js.publish("log.a", i)
            async with js.consumer("log.>", durable="reader", batch=8) as reader:
                for _ in range(3):  # the first batch full: the next asked for
                    await (await reader.__anext__()).ack()
            rest = []
            async with js.consumer("log.>", durable="reader", batch=8) as reader:
                for _ in range(37):
                    job = await reader.__anext__()
                    rest.append(job.message.payload)
                    await job.ack()
            stats = js.statistics()
    assert rest == list(range(3, 40))
    assert stats.naked == 5 + 8  # the batch in hand, and the one asked ahead


async def test_a_consumer_deleted_under_it_is_said_and_waited_out(
    js_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The server answers the pull request 409; once it is back, on it goes."""
    broker = Broker[Any]()
    caplog.set_level(logging.WARNING, logger="trio_pubsub.nats")

    async def delete(js: Any) -> None:
        await js.delete_consumer("LOG", "reader")

    async def create(js: Any) -> None:
        await js.add_consumer(
            "LOG",
            nats.js.api.ConsumerConfig(
                durable_name="reader",
                ack_policy=nats.js.api.AckPolicy.EXPLICIT,
                filter_subject="log.>",
                deliver_policy=nats.js.api.DeliverPolicy.NEW,
            ),
        )

    with trio.fail_after(GUARD):
        async with (
            open_jetstream(
                broker, js_server.url, stream="LOG", subjects=["log.>"], **OPTIONS
            ) as js,
            js.consumer("log.>", durable="reader") as reader,
        ):
            await js.publish("log.a", 0)
            await (await reader.__anext__()).ack()
            async with trio.open_nursery() as nursery:
                got: list[DurableMessage[Any]] = []

                async def take() -> None:
                    got.append(await reader.__anext__())

                nursery.start_soon(take)
                await trio.sleep(0.2)  # (its pull request waits on the server)
                await plain(js_server.url, delete)
                await trio.sleep(0.2)
                await plain(js_server.url, create)
                await js.publish("log.a", 1)
            await got[0].ack()
    assert [job.message.payload for job in got] == [1]
    said = [r.getMessage() for r in caplog.records]
    assert any("pull request was answered 409" in line for line in said), said


async def test_a_restarted_server_is_asked_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its waiting pull request died with the connection: a new one is sent."""
    server = NatsServer(store=tmp_path / "store")
    server.start()
    broker = Broker[Any]()
    try:
        with trio.fail_after(GUARD):
            async with (
                open_jetstream(
                    broker,
                    server.url,
                    stream="LOG",
                    subjects=["log.>"],
                    reconnect_time_wait=0.05,
                    max_reconnect_wait=0.2,
                    **OPTIONS,
                ) as js,
                js.consumer("log.>", durable="reader") as reader,
            ):
                got: list[DurableMessage[Any]] = []

                async def take() -> None:
                    got.append(await reader.__anext__())

                async def down() -> None:
                    server.kill()
                    for _ in range(500):  # (bounded: until the bridge sees it)
                        if not js._link.counters.connected:
                            return
                        await trio.sleep(0.01)

                # 1. killed while a request waits there
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(take)
                    await trio.sleep(0.2)
                    await down()
                    server.start()
                    await js.publish("log.a", "after")
                # 2. asked while it is down: the request lapses, and again
                await trio.sleep(1.2)  # (the request that brought "after" expired)
                await down()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(take)
                    await trio.sleep(1.5)
                    server.start()
                    await js.publish("log.a", "again")
                for job in got:
                    await job.ack()
                await down()  # the block is left while it is down
    finally:
        server.stop()
    assert [job.message.payload for job in got] == ["after", "again"]


async def test_what_a_peer_writes_to_the_inbox_is_not_taken_for_an_answer(
    js_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A heartbeat is passed over; any other status is logged; no message made.

    Nor of a message that looks delivered, which the server refuses to pass
    on from a client.
    """
    broker = Broker[Any]()
    caplog.set_level(logging.WARNING, logger="trio_pubsub.nats")
    with trio.fail_after(GUARD):
        async with (
            open_jetstream(
                broker, js_server.url, stream="LOG", subjects=["log.>"], **OPTIONS
            ) as js,
            js.consumer("log.>", durable="reader") as reader,
        ):
            inbox = reader._puller._inbox.encode()
            peer = await RawClient.connect(js_server.port)
            try:
                await peer.hpub(inbox, b"NATS/1.0 100 Idle Heartbeat\r\n\r\n", b"")
                await peer.hpub(inbox, b"NATS/1.0 409 Made Up\r\n\r\n", b"")
                await peer.pub(inbox, b"[1]")  # no status, no ack subject
                # a message that looks delivered (the server refuses it: a
                # client may not publish with a $JS.ACK reply subject)
                await peer.send(
                    b'PUB %s $JS.ACK.LOG.reader.1.1.1.1.0 6\r\n"fake"\r\n' % inbox
                )
                await peer.flush()
            finally:
                await peer.aclose()
            await js.publish("log.a", "real")
            job = await reader.__anext__()
            await job.ack()
    assert job.message.payload == "real"
    said = [r.getMessage() for r in caplog.records]
    assert any("answered 409 Made Up" in line for line in said), said
    assert any("neither a message nor a status" in line for line in said), said
    assert not any("Heartbeat" in line for line in said), said


async def test_an_existing_durable_is_brought_to_what_is_asked(
    js_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Its pattern, ack_wait and max_deliver as asked; the rest as it was made."""
    broker = Broker[Any]()
    caplog.set_level(logging.WARNING, logger="trio_pubsub.nats")

    async def make(js: Any) -> None:
        await js.add_stream(name="LOG", subjects=["log.>"])
        for durable, config in (
            ("reader", {"filter_subject": "log.>"}),
            ("two", {"filter_subjects": ["log.a", "log.b"]}),
        ):
            await js.add_consumer(
                "LOG",
                nats.js.api.ConsumerConfig(
                    durable_name=durable,
                    ack_policy=nats.js.api.AckPolicy.EXPLICIT,
                    deliver_policy=nats.js.api.DeliverPolicy.NEW,
                    ack_wait=30,
                    **config,
                ),
            )

    async def read(js: Any) -> Any:
        return (await js.consumer_info("LOG", "reader")).config

    def updates() -> list[str]:
        return [r.getMessage() for r in caplog.records if "updated" in r.getMessage()]

    await plain(js_server.url, make)
    with trio.fail_after(GUARD):
        async with open_jetstream(broker, js_server.url, stream="LOG", **OPTIONS) as js:
            async with js.consumer(
                "log.a", durable="reader", ack_wait=5, max_deliver=3
            ):
                pass
            config = await plain(js_server.url, read)
            assert (config.filter_subject, config.ack_wait, config.max_deliver) == (
                "log.a",
                5.0,
                3,
            )
            kept = nats.js.api.DeliverPolicy(config.deliver_policy)
            assert kept is nats.js.api.DeliverPolicy.NEW  # as it was made
            assert len(updates()) == 1
            assert "ack_wait 30.0 -> 5.0" in updates()[0]
            async with js.consumer(
                "log.a", durable="reader", ack_wait=5, max_deliver=3
            ):
                pass
            assert len(updates()) == 1  # as asked already: nothing to change
            # a change the server refuses: a single pattern where it has two
            with pytest.raises(ValueError, match="the server refused the consumer"):
                async with js.consumer("log.>", durable="two"):
                    pass
