"""open_jetstream against a real nats-server with JetStream (issue 31).

What the bridge stores is read back with plain nats-py, an independent
client, and what plain nats-py stores is consumed by the bridge: the
interoperation is part of the proof.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.js.api
import pytest
import trio

from trio_pubsub import (
    Broker,
    BrokerClosedError,
    InvalidSubjectError,
    Message,
    OverflowPolicy,
    Retry,
    Router,
)
from trio_pubsub.nats import (
    DurableMessage,
    decode_json,
    decode_str,
    encode_json,
    encode_str,
    open_jetstream,
)
from trio_pubsub.nats._jetstream import Pacer

from .server import NatsServer

R = TypeVar("R")
GUARD = 30  # seconds: a guard against hanging, never a measure


async def plain(url: str, work: Callable[[Any], Awaitable[R]]) -> R:
    """Run ``work(js)`` with plain nats-py, in asyncio, in a thread of its own."""

    async def run() -> R:
        nc = await nats.connect(url)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return await trio.to_thread.run_sync(asyncio.run, run())


async def stored(url: str, stream: str) -> list[tuple[str, Any, dict[str, str]]]:
    """Every message of ``stream`` as plain nats-py reads it, in order."""

    async def read(js: Any) -> list[tuple[str, Any, dict[str, str]]]:
        info = await js.stream_info(stream)
        found: list[tuple[str, Any, dict[str, str]]] = []
        if not info.state.messages:
            return found
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            found.append((msg.subject, payload_of(msg.data), dict(msg.headers or {})))
        return found

    return await plain(url, read)


def payload_of(data: bytes) -> Any:
    """What a stored message holds: JSON, or text when it is not."""
    try:
        return json.loads(data)
    except ValueError:
        return data.decode()


async def test_publish_stores_once_and_delivers_locally(js_server: NatsServer) -> None:
    broker = Broker[Any]()
    with trio.fail_after(GUARD):
        async with (
            broker.subscribe("orders.>", max_buffer_size=10) as local,
            open_jetstream(
                broker,
                js_server.url,
                stream="ORDERS",
                subjects=["orders.>"],
                encode=encode_json,
                decode=decode_json,
            ) as js,
        ):
            first = await js.publish(
                "orders.1", {"amount": 10}, headers={"trace": "t1"}, msg_id="o-1"
            )
            again = await js.publish("orders.1", {"amount": 10}, msg_id="o-1")
            second = await js.publish("orders.2", {"amount": 20})
            assert (first, again, second) == (1, 1, 2)  # the repeat: a duplicate
            # an id given in the headers is the message's id too
            by_header = await js.publish(
                "orders.1", {"amount": 10}, headers={"Nats-Msg-Id": "o-1"}
            )
            assert by_header == 1
            stats = js.statistics()
            assert (stats.stored, stats.duplicates, stats.unconfirmed) == (2, 2, 0)
            got = [local.receive_nowait() for _ in range(4)]
            assert [m.payload for m in got] == [{"amount": 10}] * 2 + [
                {"amount": 20},
                {"amount": 10},
            ]
            assert got[0].headers["Nats-Msg-Id"] == "o-1"
            with pytest.raises(trio.WouldBlock):
                local.receive_nowait()
        found = await stored(js_server.url, "ORDERS")
    assert [(s, p) for s, p, _ in found] == [
        ("orders.1", {"amount": 10}),
        ("orders.2", {"amount": 20}),
    ]
    assert found[0][2].items() >= {"trace": "t1", "Nats-Msg-Id": "o-1"}.items()
    made = found[1][2]["Nats-Msg-Id"]  # one made by the bridge: random, a count
    assert len(made.split("-")[0]) == 32


async def test_bad_input_is_refused_and_nothing_is_stored(
    js_server: NatsServer,
) -> None:
    broker = Broker(dict)
    with trio.fail_after(GUARD):
        async with open_jetstream(
            broker,
            js_server.url,
            stream="ORDERS",
            subjects=["orders.>"],
            encode=encode_json,
            decode=decode_json,
        ) as js:
            with pytest.raises(ValueError, match="outside the stream 'ORDERS'"):
                await js.publish("payments.1", {})
            with pytest.raises(InvalidSubjectError):
                await js.publish("orders.*", {})
            with pytest.raises(TypeError, match="dict"):
                await js.publish("orders.1", "not a dict")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="msg_id"):
                await js.publish("orders.1", {}, msg_id=7)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="msg_id"):
                await js.publish("orders.1", {}, msg_id=" x")
            with pytest.raises(ValueError, match="header name"):
                await js.publish("orders.1", {}, headers={"a b": "c"})
            with pytest.raises(ValueError, match="outside the stream"):
                async with js.consumer("payments.>", durable="d"):
                    pass
            with pytest.raises(ValueError, match="durable"):
                async with js.consumer("orders.>", durable="a.b"):
                    pass
            assert js.statistics().stored == 0
        with pytest.raises(BrokerClosedError):
            await js.publish("orders.1", {})
        assert await stored(js_server.url, "ORDERS") == []


async def test_an_existing_stream_is_checked(js_server: NatsServer) -> None:
    async def make(js: Any) -> None:
        await js.add_stream(
            name="MEM", subjects=["mem.>"], storage=nats.js.api.StorageType.MEMORY
        )
        await js.add_stream(name="FILE", subjects=["file.a.>"])

    await plain(js_server.url, make)
    broker = Broker[Any]()
    options: dict[str, Any] = {"encode": encode_json, "decode": decode_json}
    with trio.fail_after(GUARD):
        with pytest.raises(ValueError, match="in memory"):
            async with open_jetstream(broker, js_server.url, stream="MEM", **options):
                pass
        with pytest.raises(ValueError, match=r"stores \['file.a.>'\], not 'file.>'"):
            async with open_jetstream(
                broker, js_server.url, stream="FILE", subjects=["file.>"], **options
            ):
                pass
        with pytest.raises(ValueError, match="does not exist"):
            async with open_jetstream(broker, js_server.url, stream="NONE", **options):
                pass
        # an existing stream, found by its name alone
        async with open_jetstream(
            broker, js_server.url, stream="FILE", **options
        ) as js:
            assert js.subjects == ("file.a.>",)
        with pytest.raises(ValueError, match="stream name"):
            async with open_jetstream(broker, js_server.url, stream="A.B", **options):
                pass


async def test_a_durable_consumer_takes_what_plain_nats_py_stored(
    js_server: NatsServer,
) -> None:
    async def publish(js: Any) -> None:
        await js.add_stream(name="JOBS", subjects=["jobs.>"])
        for i in range(5):
            await js.publish(f"jobs.{i}", json.dumps(i).encode())

    await plain(js_server.url, publish)
    broker = Broker[Any]()
    taken: list[DurableMessage[Any]] = []
    with trio.fail_after(GUARD):
        async with open_jetstream(
            broker, js_server.url, stream="JOBS", encode=encode_json, decode=decode_json
        ) as js:
            async with js.consumer("jobs.>", durable="workers", ack_wait=1.0) as jobs:
                async for job in jobs:
                    taken.append(job)
                    if job.message.payload == 0 and job.deliveries == 1:
                        await job.nak()  # again, at once
                    elif job.message.payload == 1:
                        await job.term()  # never again
                    elif job.message.payload == 2 and job.deliveries == 1:
                        pass  # not acked: delivered again after ack_wait
                    else:
                        await job.ack()
                    if len({t.message.payload for t in taken if t.deliveries > 1}) == 2:
                        break
                with pytest.raises(RuntimeError, match="already"):
                    await taken[0].ack()
            stats = js.statistics()
    seen = [(t.message.payload, t.deliveries) for t in taken]
    assert {(0, 1), (0, 2)} <= set(seen)  # nak'd, then delivered again
    assert {(2, 1), (2, 2)} <= set(seen)  # never acked: again after ack_wait
    assert [p for p, _ in seen].count(1) == 1  # terminated: once
    assert {t.sequence for t in taken} == {1, 2, 3, 4, 5}
    assert stats.naked == 1
    assert stats.dead_lettered == 1
    assert stats.redelivered >= 2
    assert stats.acked >= 3


async def test_a_durable_goes_on_where_it_left_off(js_server: NatsServer) -> None:
    broker = Broker[Any]()
    options: dict[str, Any] = {"encode": encode_json, "decode": decode_json}
    with trio.fail_after(GUARD):
        async with open_jetstream(
            broker, js_server.url, stream="LOG", subjects=["log.>"], **options
        ) as js:
            for i in range(6):
                await js.publish("log.a", i)
            async with js.consumer("log.>", durable="reader") as reader:
                for _ in range(3):
                    await (await reader.__anext__()).ack()
        # a new connection (as after a restart) goes on after the acked ones
        rest = []
        async with (
            open_jetstream(broker, js_server.url, stream="LOG", **options) as js,
            js.consumer("log.>", durable="reader", batch=2) as reader,
        ):
            for _ in range(3):
                job = await reader.__anext__()
                rest.append(job.message.payload)
                await job.ack()
    assert rest == [3, 4, 5]


async def test_an_undecodable_message_is_terminated_and_counted(
    js_server: NatsServer,
) -> None:
    async def publish(js: Any) -> None:
        await js.add_stream(name="RAW", subjects=["raw"])
        await js.publish("raw", b"\xff not json")
        await js.publish("raw", b"1")

    await plain(js_server.url, publish)
    broker = Broker(int)
    with trio.fail_after(GUARD):
        async with (
            open_jetstream(
                broker,
                js_server.url,
                stream="RAW",
                encode=encode_json,
                decode=decode_json,
            ) as js,
            js.consumer("raw", durable="r") as reader,
        ):
            job = await reader.__anext__()
            assert job.message.payload == 1
            await job.ack()
            assert js.statistics().undecodable == 1


async def test_no_jetstream_is_a_connection_error(nats_server: NatsServer) -> None:
    with trio.fail_after(GUARD), pytest.raises(ConnectionError, match="ORDERS"):
        async with open_jetstream(
            Broker[Any](),
            nats_server.url,
            stream="ORDERS",
            subjects=["orders.>"],
            encode=encode_json,
            decode=decode_json,
        ):
            pass


async def test_local_publishes_on_outbound_patterns_are_stored(
    js_server: NatsServer,
) -> None:
    broker = Broker[Any]()
    with trio.fail_after(GUARD):
        async with open_jetstream(
            broker,
            js_server.url,
            stream="EVENTS",
            subjects=["events.>"],
            outbound=["events.*.created"],
            encode=encode_json,
            decode=decode_json,
        ) as js:
            await broker.publish("events.1.created", 1, headers={"Nats-Msg-Id": "e-1"})
            await broker.publish("events.1.created", 1, headers={"Nats-Msg-Id": "e-1"})
            await broker.publish("events.2.created", 2)
            await broker.publish("events.2.deleted", 3)  # not outbound: stays local
            await js.publish("events.3.created", 4)  # stored once, not exported again
        stats = js.statistics()
        found = await stored(js_server.url, "EVENTS")
    # (the export stores in the background: its order among itself only)
    assert sorted((s, p) for s, p, _ in found) == [
        ("events.1.created", 1),
        ("events.2.created", 2),
        ("events.3.created", 4),
    ]
    assert (stats.stored, stats.duplicates, stats.dropped) == (3, 1, 0)


async def test_an_outbox_accepts_while_the_server_is_frozen_and_sends_later(
    js_server: NatsServer, tmp_path: Path
) -> None:
    """Accepted means committed: what the outbox holds goes out on the next start."""
    broker = Broker[Any]()
    options: dict[str, Any] = {
        "stream": "PAY",
        "encode": encode_json,
        "decode": decode_json,
        "outbox": tmp_path / "outbox.sqlite",
    }
    with trio.fail_after(GUARD):
        async with broker.subscribe("pay.>", max_buffer_size=10) as local:
            async with open_jetstream(
                broker, js_server.url, subjects=["pay.>"], drain_timeout=0.5, **options
            ) as js:
                js_server.pause()  # SIGSTOP: it holds its socket, answers nothing
                try:
                    for i in range(5):
                        assert await js.publish("pay.x", i, msg_id=f"p-{i}") is None
                    assert js.statistics().outbox_pending == 5
                    assert [local.receive_nowait().payload for _ in range(5)] == [
                        0,
                        1,
                        2,
                        3,
                        4,
                    ]
                finally:
                    await trio.sleep(0.1)
            # left while frozen: the drain gave up, the outbox keeps them
            assert js.statistics().outbox_pending == 5
            js_server.resume()
        async with open_jetstream(broker, js_server.url, **options) as js:
            pass  # sent first on entry, then drained on exit
        assert js.statistics().outbox_pending == 0
        found = await stored(js_server.url, "PAY")
    # each once; the order may differ around a resend (some were stored by the
    # frozen server once it ran again, before the second bridge resent all)
    assert sorted((p, h["Nats-Msg-Id"]) for _, p, h in found) == [
        (i, f"p-{i}") for i in range(5)
    ]


CHILD = Path(__file__).with_name("js_child.py")


async def run_until(
    args: list[str], lines: int, env: dict[str, str] | None = None
) -> list[str]:
    """Start a child; SIGKILL it after it printed ``lines`` lines; its lines.

    ``lines=0``: let it finish by itself.
    """
    printed: list[str] = []
    process = await trio.lowlevel.open_process(
        [sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    buffer = b""
    try:
        async for chunk in process.stdout:
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            printed += [line.decode() for line in done]
            if lines and len(printed) >= lines:
                process.send_signal(signal.SIGKILL)  # a crash, at a random point
                break
    finally:
        await process.wait()
    if not lines:
        assert process.returncode == 0
    return printed


async def test_a_producer_killed_five_times_loses_and_repeats_nothing(
    js_server: NatsServer, tmp_path: Path
) -> None:
    """What publish returned is stored once; nothing never accepted is."""
    total = 300
    outbox = str(tmp_path / "producer.sqlite")
    returned: set[int] = set()
    called: set[int] = set()
    start = 0
    rng = random.Random(31)
    with trio.fail_after(120):
        for _ in range(5):
            lines = await run_until(
                ["produce", js_server.url, outbox, str(start), str(total)],
                rng.randint(10, 50),
            )
            done = [int(line) for line in lines]
            returned.update(done)
            called.update(range(start, done[-1] + 2))  # the one being published
            # skip the one that was in publish when killed: accepted or not
            start = done[-1] + 2
        lines = await run_until(
            ["produce", js_server.url, outbox, str(start), str(total)], 0
        )
        returned.update(int(line) for line in lines)
        called.update(range(start, total))
        found = await stored(js_server.url, "KILL")
    ids = [int(headers["Nats-Msg-Id"][2:]) for _, _, headers in found]
    assert len(ids) == len(set(ids)), "a message stored twice"
    assert returned <= set(ids), f"lost: {sorted(returned - set(ids))}"
    assert set(ids) <= called, "stored, and never accepted"
    assert [p for _, p, _ in found] == ids  # each payload under its own id


async def test_a_consumer_killed_mid_handler_has_each_effect_once(
    js_server: NatsServer, tmp_path: Path
) -> None:
    """At least once from the server, exactly once in effect (keyed by id)."""
    broker = Broker[Any]()
    with trio.fail_after(120):
        async with open_jetstream(
            broker,
            js_server.url,
            stream="WORK",
            subjects=["work.>"],
            encode=encode_json,
            decode=decode_json,
        ) as js:
            for i in range(60):
                await js.publish(f"work.{i % 3}", i, msg_id=f"w-{i}")
        effects = str(tmp_path / "effects.sqlite")
        handled: list[str] = []
        for kill_after in (7, 15, 4):
            handled += await run_until(["consume", js_server.url, effects], kill_after)
        # the last run: until every message has its effect
        handled += await run_until(
            ["consume", js_server.url, effects], 0, env={"DONE": "60"}
        )
        db = sqlite3.connect(effects)
    rows = dict(db.execute("SELECT id, n FROM effect").fetchall())
    redeliveries = db.execute(
        "SELECT COUNT(*) FROM attempt WHERE delivery > 1"
    ).fetchone()[0]
    assert rows == {f"w-{i}": i for i in range(60)}  # every effect, once each
    assert len(handled) >= 60  # handled at least once each (some twice)
    assert redeliveries >= 1  # a kill left at least one message unacked


async def test_the_server_killed_and_restarted_loses_nothing_that_returned(
    js_server: NatsServer,
) -> None:
    """SIGKILL of the server mid-stream: publish resends with its id until stored."""
    broker = Broker[Any]()
    returned: list[int] = []
    with trio.fail_after(120):
        async with open_jetstream(
            broker,
            js_server.url,
            stream="SURVIVE",
            subjects=["survive"],
            encode=encode_json,
            decode=decode_json,
            reconnect_time_wait=0.1,
            max_reconnect_wait=0.5,
        ) as js:
            fifty = trio.Event()

            async def publisher() -> None:
                for i in range(200):
                    await js.publish("survive", i, msg_id=f"s-{i}")
                    returned.append(i)
                    if i == 49:
                        fifty.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publisher)
                await fifty.wait()
                js_server.kill()  # SIGKILL, as a crash
                await trio.sleep(0.5)
                js_server.start()  # on the same store and port
            stats = js.statistics()
        found = await stored(js_server.url, "SURVIVE")
    ids = [headers["Nats-Msg-Id"] for _, _, headers in found]
    assert returned == list(range(200))
    assert sorted(ids, key=lambda i: int(i[2:])) == [f"s-{i}" for i in range(200)]
    assert len(ids) == len(set(ids))
    assert stats.stored + stats.duplicates == 200
    assert stats.unconfirmed == 0


async def test_replay_from_a_sequence_and_from_a_time_keeps_stream_order(
    js_server: NatsServer,
) -> None:
    broker = Broker(int)
    with trio.fail_after(GUARD):
        async with open_jetstream(
            broker,
            js_server.url,
            stream="HIST",
            subjects=["hist.>"],
            encode=encode_json,
            decode=decode_json,
        ) as js:
            for i in range(10):
                await js.publish(f"hist.{i % 2}", i)
            async with js.consumer("hist.>", durable="d") as durable:
                first = await durable.__anext__()
                await first.ack()  # a durable in the middle of its work
                all_ = [s async for s in js.replay("hist.>")]
                assert [s.message.payload for s in all_] == list(range(10))
                assert [s.sequence for s in all_] == list(range(1, 11))
                from_seq = [
                    s.message.payload
                    async for s in js.replay("hist.>", start_sequence=6)
                ]
                assert from_seq == [5, 6, 7, 8, 9]
                odd = [s.message.payload async for s in js.replay("hist.1")]
                assert odd == [1, 3, 5, 7, 9]
                after = all_[7].time
                from_time = [
                    s.message.payload
                    async for s in js.replay("hist.>", start_time=after)
                ]
                # (stored at that time or later: 7 itself, or from 8 if its
                # time in nanoseconds fell after the microsecond given)
                assert from_time in ([7, 8, 9], [8, 9])
                unpaced = [s async for s in js.replay("hist.>", max_rate=None)]
                assert len(unpaced) == 10
                with pytest.raises(ValueError, match="not both"):
                    async for _ in js.replay(
                        "hist.>", start_sequence=1, start_time=after
                    ):
                        pass
                with pytest.raises(ValueError, match="timezone"):
                    async for _ in js.replay(
                        "hist.>", start_time=after.replace(tzinfo=None)
                    ):
                        pass
                # the durable goes on where it was: the replays took nothing
                second = await durable.__anext__()
                assert second.message.payload == 1
                await second.ack()


async def test_a_replay_is_paced_on_the_trio_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The pacer a replay uses: at most ``rate`` a second, no catch-up burst."""
    pacer = Pacer(5.0)
    times = []
    for _ in range(6):
        await pacer.wait()
        times.append(trio.current_time())
    assert [round(t - times[0], 6) for t in times] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    await trio.sleep(10)  # idle for a while: no burst to make up for it
    burst_start = trio.current_time()
    for _ in range(10):
        await pacer.wait()
    assert trio.current_time() - burst_start == pytest.approx(1.8)
    free = Pacer(None)
    before = trio.current_time()
    for _ in range(1000):
        await free.wait()
    assert trio.current_time() == before


async def test_a_router_handler_on_a_durable_consumer_acks_retries_and_dead_letters(
    js_server: NatsServer,
) -> None:
    """A poison message is retried with the Retry delays, then dead-lettered.

    The server holds each retry back; the dead letter is stored once with its
    headers; the messages behind the poison one flow.
    """
    broker = Broker(int)
    router: Router[int] = Router(broker)
    attempts: dict[int, list[float]] = {}
    retry = Retry(attempts=3, backoff=0.2, jitter=False)
    with trio.fail_after(GUARD):
        async with (
            open_jetstream(
                broker,
                js_server.url,
                stream="BILL",
                subjects=["bill.>", "dead.>"],
                encode=encode_json,
                decode=decode_json,
            ) as js,
            js.consumer("bill.>", durable="billing", ack_wait=5.0) as consumer,
        ):
            third = trio.Event()
            with pytest.raises(ValueError, match="not of a handler with source="):
                router.handler(source=consumer, queue="q")
            with pytest.raises(TypeError, match="one of them"):
                router.handler("bill.>", source=consumer)
            with pytest.raises(TypeError, match="one of them"):
                router.handler()
            with pytest.raises(TypeError, match="durable source"):
                router.handler(source=object())  # type: ignore[arg-type]

            @router.handler(
                source=consumer, name="billing", retry=retry, dead_letter="dead"
            )
            async def bill(message: Message[int]) -> None:
                tried = attempts.setdefault(message.payload, [])
                tried.append(trio.current_time())
                if message.payload < 0:
                    if len(tried) == 3:
                        third.set()
                    raise ValueError(f"negative amount {message.payload}")

            for amount in (10, -5, 20, 30):
                await js.publish(f"bill.{amount}", amount, msg_id=f"b{amount}")
            async with trio.open_nursery() as nursery:
                await nursery.start(router.serve)
                await third.wait()
                router.stop()  # what is in flight is settled, then serve returns
            stats = js.statistics()
        found = await stored(js_server.url, "BILL")
    (handler,) = router.statistics()
    assert (handler.handled, handler.dead_lettered, handler.failed) == (3, 1, 0)
    assert handler.retried == 2  # two deliveries handed back for a retry
    assert handler.received == 4  # ... and not counted as received
    assert handler.in_flight == 0
    times = attempts[-5]
    # the server held each retry back at least the Retry delay (a lower bound)
    assert times[1] - times[0] >= 0.2 * 0.9
    assert times[2] - times[1] >= 0.4 * 0.9
    assert [len(attempts[a]) for a in (10, 20, 30)] == [1, 1, 1]
    dead = [(s, p, h) for s, p, h in found if s.startswith("dead.")]
    assert len(dead) == 1
    subject, payload, headers = dead[0]
    assert (subject, payload) == ("dead.bill.-5", -5)
    assert headers["dead-letter-attempts"] == "3"
    assert headers["dead-letter-error-type"] == "ValueError"
    assert headers["dead-letter-subject"] == "bill.-5"
    assert headers["Nats-Msg-Id"] == "b-5.dead"
    assert (stats.acked, stats.naked, stats.dead_lettered) == (3, 2, 1)


async def test_two_processes_on_one_durable_share_its_messages(
    js_server: NatsServer,
) -> None:
    """Each message goes to one of them; together they take all."""
    broker = Broker[Any]()
    with trio.fail_after(120):
        async with open_jetstream(
            broker,
            js_server.url,
            stream="WORK",
            subjects=["work.>"],
            encode=encode_json,
            decode=decode_json,
        ) as js:
            for i in range(200):
                await js.publish(f"work.{i % 4}", i, msg_id=f"w-{i}")
        seen: dict[int, list[str]] = {0: [], 1: []}
        everything = trio.Event()
        processes: list[trio.Process] = []

        async def run(index: int) -> None:
            process = await trio.lowlevel.open_process(
                [sys.executable, str(CHILD), "share", js_server.url],
                stdout=subprocess.PIPE,
            )
            processes.append(process)
            assert process.stdout is not None
            buffer = b""
            async for chunk in process.stdout:
                buffer += chunk
                *done, buffer = buffer.split(b"\n")
                seen[index] += [line.decode() for line in done]
                if len(seen[0]) + len(seen[1]) >= 200:
                    everything.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, 0)
            nursery.start_soon(run, 1)
            await everything.wait()
            for process in processes:
                process.send_signal(signal.SIGKILL)
            for process in processes:
                await process.wait()
    first, second = set(seen[0]), set(seen[1])
    assert first | second == {f"w-{i}" for i in range(200)}
    assert not first & second  # no message to both (none was left unacked)
    assert first
    assert second


async def test_an_outbox_that_cannot_write_keeps_what_it_holds_and_accepts_nothing(
    js_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another writer holds the outbox's file (SQLite's lock, past its 5 s wait).

    A row stored while the file is locked stays, and is sent again (a
    duplicate the server drops); a commit that fails accepts nothing: the
    publish raises, the export counts it dropped, and the bridge goes on.
    """
    path = tmp_path / "outbox.sqlite"
    broker = Broker[Any]()

    async def until(done: Callable[[], bool]) -> None:
        for _ in range(GUARD * 20):  # (bounded)
            if done():
                return
            await trio.sleep(0.05)
        raise AssertionError("not done in time")

    def lock() -> sqlite3.Connection:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        return other

    def warned(text: str) -> bool:
        return any(text in r.getMessage() for r in caplog.records)

    caplog.set_level(logging.WARNING, logger="trio_pubsub.nats")
    with trio.fail_after(GUARD * 2):
        async with (
            broker.subscribe("pay.>", max_buffer_size=10) as local,
            open_jetstream(
                broker,
                js_server.url,
                stream="PAY",
                subjects=["pay.>"],
                outbound=["pay.out.>"],
                outbox=path,
                encode=encode_json,
                decode=decode_json,
            ) as js,
        ):
            # 1. stored while the file is locked: it cannot be removed yet
            js_server.pause()
            await js.publish("pay.x", 1, msg_id="kept")
            other = lock()
            js_server.resume()
            await until(lambda: warned("stay in the outbox"))
            other.execute("ROLLBACK")
            await until(lambda: js.statistics().outbox_pending == 0)
            assert js.statistics().duplicates == 1  # sent again, dropped there
            # 2. a commit that fails accepts nothing
            other.execute("BEGIN EXCLUSIVE")
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(broker.publish, "pay.out.1", 2)
                    with pytest.raises(sqlite3.OperationalError, match="locked"):
                        await js.publish("pay.x", 3, msg_id="refused")
                    await until(lambda: js.statistics().dropped == 1)
            finally:
                other.execute("ROLLBACK")
                other.close()
            assert await js.publish("pay.x", 4) is None  # the bridge goes on
            await until(lambda: js.statistics().outbox_pending == 0)
            stats = js.statistics()
            got = [local.receive_nowait().payload for _ in range(3)]
    assert got == [1, 2, 4]  # the refused publish was not delivered
    assert (stats.stored, stats.duplicates, stats.dropped) == (2, 1, 1)
    assert [p for _, p, _ in await stored(js_server.url, "PAY")] == [1, 4]


async def test_a_full_outbox_applies_the_exports_policy_and_counts(
    js_server: NatsServer, tmp_path: Path
) -> None:
    """The server frozen, the outbox full: DROP_NEWEST drops, and counts."""
    broker = Broker(int)
    with trio.fail_after(GUARD):
        async with open_jetstream(
            broker,
            js_server.url,
            stream="FULL",
            subjects=["full.>"],
            outbound=["full.>"],
            outbox=tmp_path / "outbox.sqlite",
            max_outbox=3,
            max_outbound=2,
            outbound_policy=OverflowPolicy.DROP_NEWEST,
            drain_timeout=0.5,
            encode=encode_json,
            decode=decode_json,
        ) as js:
            js_server.pause()
            try:
                for i in range(20):
                    broker.publish_nowait("full.x", i)  # never waits
                    await trio.sleep(0.01)
                stats = js.statistics()
            finally:
                js_server.resume()
    # 3 accepted into the outbox, 1 in the export's hands waiting for room,
    # 2 in its buffer: the other 14 dropped by its policy, and counted
    assert stats.outbox_pending == 3
    assert stats.dropped == 14
    with pytest.raises(ValueError, match="outbound_policy"):
        async with open_jetstream(
            broker,
            js_server.url,
            stream="FULL",
            outbound_policy=OverflowPolicy.DISCONNECT,
            encode=encode_json,
            decode=decode_json,
        ):
            pass


async def test_a_message_the_server_refuses_is_an_error_and_counted(
    js_server: NatsServer,
) -> None:
    """The stream's own limit: a refusal is not resent, and nothing is stored."""

    async def make(js: Any) -> None:
        await js.add_stream(name="SMALL", subjects=["small"], max_msg_size=256)

    await plain(js_server.url, make)
    broker = Broker(str)
    with trio.fail_after(GUARD):
        async with (
            broker.subscribe("small") as local,
            open_jetstream(
                broker,
                js_server.url,
                stream="SMALL",
                encode=encode_str,
                decode=decode_str,
            ) as js,
        ):
            with pytest.raises(ValueError, match="the server refused"):
                await js.publish("small", "x" * 1000)
            assert await js.publish("small", "fits") == 1
            stats = js.statistics()
            assert [local.receive_nowait().payload] == ["fits"]  # only what is stored
    assert (stats.stored, stats.dropped, stats.unconfirmed) == (1, 1, 0)
    assert [p for _, p, _ in await stored(js_server.url, "SMALL")] == ["fits"]
