"""The NATS bridge against a real nats-server: routing, no echo, loss accounting."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio

from trio_pubsub import Broker, InvalidSubjectError, Message, OverflowPolicy
from trio_pubsub.nats import (
    decode_bytes,
    decode_json,
    decode_str,
    encode_bytes,
    encode_json,
    encode_str,
    open_bridge,
)
from trio_pubsub.nats._bridge import Bridge

from .server import NatsServer

GUARD = 20  # seconds: a guard against hanging, never a measure

JSON: dict[str, Any] = {"encode": encode_json, "decode": decode_json}


async def take(sub: Any, count: int) -> list[Message[Any]]:
    """Receive ``count`` messages (failing the test if they do not come)."""
    with trio.fail_after(GUARD):
        return [await sub.receive() for _ in range(count)]


async def wait_until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(GUARD):
        while not condition():  # noqa: ASYNC110 - counters of another thread
            await trio.sleep(0.01)


async def quiet(sub: Any, seconds: float = 0.3) -> None:
    """Assert that nothing more arrives for a while (after everything expected)."""
    with trio.move_on_after(seconds):
        extra = await sub.receive()
        pytest.fail(f"unexpected message {extra!r}")


def no_bridge_threads() -> bool:
    return not any(t.name == "trio-pubsub-nats" for t in threading.enumerate())


async def test_round_trip_with_headers(nats_server: NatsServer) -> None:
    here, there = Broker[Any](), Broker[Any]()
    async with (
        open_bridge(here, nats_server.url, outbound=["orders.>"], **JSON) as out,
        open_bridge(there, nats_server.url, inbound=["orders.>"], **JSON) as into,
        there.subscribe("orders.>") as sub,
    ):
        for i in range(20):
            await here.publish(f"orders.{i}.created", {"n": i}, headers={"id": str(i)})
        got = await take(sub, 20)
        assert [m.subject for m in got] == [f"orders.{i}.created" for i in range(20)]
        assert [m.payload for m in got] == [{"n": i} for i in range(20)]
        assert [m.headers for m in got] == [{"id": str(i)} for i in range(20)]
        await wait_until(lambda: out.statistics().exported == 20)
        await wait_until(lambda: into.statistics().imported == 20)
        stats = into.statistics()
        assert (stats.imported, stats.dropped, stats.connected) == (20, 0, True)
    assert no_bridge_threads()


async def test_a_payload_of_the_wrong_type_is_dropped_and_counted(
    nats_server: NatsServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker with a message type imports only what decodes to that type.

    The same subject each time, so that all but the first are cache hits.
    """
    here, there = Broker[Any](), Broker[int](int)
    async with (
        open_bridge(here, nats_server.url, outbound=["n"], **JSON) as out,
        open_bridge(there, nats_server.url, inbound=["n"], **JSON) as into,
        there.subscribe("n") as sub,
    ):
        for payload in [1, "two", 3, "four", 5]:
            await here.publish("n", payload)
        got = await take(sub, 3)
        await wait_until(lambda: into.statistics().inbound_dropped == 2)
        await quiet(sub)
        assert [m.payload for m in got] == [1, 3, 5]
        assert (out.statistics().exported, into.statistics().imported) == (5, 3)
    assert "a message on 'n' was not imported" in caplog.text


async def test_wildcards_both_ways(nats_server: NatsServer) -> None:
    here, there = Broker[Any](), Broker[Any]()
    async with (
        open_bridge(
            here, nats_server.url, outbound=["a.*.x", "b.>"], prefix="wild", **JSON
        ),
        open_bridge(
            there, nats_server.url, inbound=["*.1.x", "b.>"], prefix="wild", **JSON
        ) as into,
        there.subscribe(">") as sub,
    ):
        for subject in ["a.1.x", "a.2.x", "a.1.y", "b.1.x", "b.2", "c.1.x", "b"]:
            await here.publish(subject, subject)
        got = await take(sub, 3)
        # exported: a.1.x a.2.x b.1.x b.2; imported: *.1.x and b.> (each
        # pattern in order, on its own: b.2 may come before b.1.x, which the
        # first pattern took)
        assert sorted(m.subject for m in got) == ["a.1.x", "b.1.x", "b.2"]
        await quiet(sub)
        await wait_until(lambda: into.statistics().imported == 3)


async def test_overlapping_outbound_patterns_export_once(
    nats_server: NatsServer,
) -> None:
    here, there = Broker[Any](), Broker[Any]()
    async with (
        open_bridge(
            here, nats_server.url, outbound=["o.>", "o.*", "*.k", "o.k"], **JSON
        ) as out,
        open_bridge(there, nats_server.url, inbound=["o.>"], **JSON),
        there.subscribe("o.>") as sub,
    ):
        for i in range(10):
            await here.publish("o.k", i)
        got = await take(sub, 10)
        assert [m.payload for m in got] == list(range(10))
        await quiet(sub)
        await wait_until(lambda: out.statistics().exported == 10)
        # one subscription in the broker, whatever the number of patterns
        assert here.statistics().subscriptions == 1


async def test_prefix_maps_both_ways(nats_server: NatsServer) -> None:
    here, there, raw = Broker[Any](), Broker[Any](), Broker[Any]()
    async with (
        open_bridge(here, nats_server.url, outbound=["ev.>"], prefix="app.one", **JSON),
        open_bridge(there, nats_server.url, inbound=["ev.>"], prefix="app.one", **JSON),
        # without the prefix, the remote subject is seen as it is on the server
        open_bridge(raw, nats_server.url, inbound=["app.>"], **JSON),
        there.subscribe(">") as sub,
        raw.subscribe(">") as raw_sub,
    ):
        await here.publish("ev.login", "ann")
        assert [m.subject for m in await take(sub, 1)] == ["ev.login"]
        assert [m.subject for m in await take(raw_sub, 1)] == ["app.one.ev.login"]


async def test_imported_messages_are_never_exported_again(
    nats_server: NatsServer,
) -> None:
    # ``both`` imports and exports the same subjects; ``source`` feeds it and
    # ``witness`` counts what reaches the server on those subjects.
    both, source, witness = Broker[Any](), Broker[Any](), Broker[Any]()
    async with (
        open_bridge(
            both, nats_server.url, outbound=["e.>"], inbound=["e.>"], **JSON
        ) as middle,
        open_bridge(source, nats_server.url, outbound=["e.>"], **JSON),
        open_bridge(witness, nats_server.url, inbound=["e.>"], **JSON),
        both.subscribe("e.>") as local,
        witness.subscribe("e.>") as seen,
    ):
        for i in range(5):
            await source.publish("e.x", i)
        assert [m.payload for m in await take(local, 5)] == list(range(5))
        assert [m.payload for m in await take(seen, 5)] == list(range(5))
        # a local publish in ``both`` still goes out, once
        await both.publish("e.y", "local")
        assert [m.payload for m in await take(seen, 1)] == ["local"]
        assert [m.payload for m in await take(local, 1)] == ["local"]
        await quiet(seen)
        await wait_until(lambda: middle.statistics().exported == 1)
        await wait_until(lambda: middle.statistics().imported == 5)


async def test_codecs_for_bytes_and_str(nats_server: NatsServer) -> None:
    raw, text = Broker[bytes](), Broker[str]()
    async with (
        open_bridge(
            raw,
            nats_server.url,
            outbound=["bin"],
            encode=encode_bytes,
            decode=decode_bytes,
        ),
        open_bridge(
            text, nats_server.url, inbound=["bin"], encode=encode_str, decode=decode_str
        ) as into,
        text.subscribe("bin") as sub,
    ):
        await raw.publish("bin", "héllo".encode())
        await raw.publish("bin", b"\xff")  # not UTF-8: dropped on import, counted
        await raw.publish("bin", b"ok")
        assert [m.payload for m in await take(sub, 2)] == ["héllo", "ok"]
        await wait_until(lambda: into.statistics().inbound_dropped == 1)


def test_codecs_refuse_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="expected bytes, not str"):
        encode_bytes("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected str, not bytes"):
        encode_str(b"bytes")  # type: ignore[arg-type]
    assert decode_json(encode_json({"a": [1, "é"]})) == {"a": [1, "é"]}
    assert encode_bytes(bytearray(b"x")) == b"x"
    assert encode_bytes(memoryview(b"xy")[1:]) == b"y"
    data = b"as is"
    assert encode_bytes(data) is data  # immutable: not copied


async def test_what_cannot_travel_is_dropped_counted_and_logged(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    here, there = Broker[Any](), Broker[Any]()
    async with (
        open_bridge(here, nats_server.url, outbound=["t"], **JSON) as out,
        open_bridge(there, nats_server.url, inbound=["t"], **JSON),
        there.subscribe("t") as sub,
    ):
        await here.publish("t", {1, 2})  # a set: not JSON
        await here.publish("t", 1, headers={"bad name": "x"})
        await here.publish("t", 2, headers={"ok": "line\nbreak"})
        await here.publish("t", 3, headers={"Trace-Id": "abc"})
        got = await take(sub, 1)
        assert [(m.payload, dict(m.headers)) for m in got] == [(3, {"Trace-Id": "abc"})]
        await wait_until(lambda: out.statistics().exported == 1)
        assert out.statistics().outbound_dropped == 3
    text = caplog.text
    assert "encode failed" in text
    assert "header name 'bad name' is not valid in NATS" in text


async def test_invalid_subjects_and_payloads_from_nats_are_dropped(
    nats_server: NatsServer,
) -> None:
    sender, typed = Broker[Any](), Broker[int](int)
    async with (
        open_bridge(sender, nats_server.url, outbound=["n.>"], **JSON),
        open_bridge(typed, nats_server.url, inbound=["n.>"], **JSON) as into,
        typed.subscribe("n.>") as sub,
    ):
        await sender.publish("n.a", "not an int")
        await sender.publish("n.b", 7)
        assert [m.payload for m in await take(sub, 1)] == [7]
        await wait_until(lambda: into.statistics().inbound_dropped == 1)
        await wait_until(lambda: into.statistics().imported == 1)


async def test_block_subscriber_slows_the_import_and_losses_are_exact(
    nats_server: NatsServer,
) -> None:
    """A full BLOCK subscription stops the import; the bounded queues then drop."""
    sender, slow = Broker[Any](), Broker[Any]()
    total = 300
    async with (
        open_bridge(sender, nats_server.url, outbound=["s"], **JSON) as out,
        open_bridge(
            slow, nats_server.url, inbound=["s"], max_inbound=10, **JSON
        ) as into,
        slow.subscribe("s", policy=OverflowPolicy.BLOCK, max_buffer_size=1) as sub,
    ):
        for i in range(total):
            await sender.publish("s", i)
        await wait_until(lambda: out.statistics().exported == total)
        # Nothing is read yet: the buffer of 1, the batch the import task holds,
        # the bridge's queue and nats-py's (each of 10 at most) and the message
        # waiting for room between them are held; the rest is dropped, counted.
        # Read only once all have come (held or dropped): one still on its way
        # when reading starts finds room, and is imported beyond those bounds
        # (34 of 32 seen once in a loaded run).
        nc = into._link.nc if into._link is not None else None
        assert nc is not None
        await wait_until(lambda: nc.stats["in_msgs"] == total)
        assert into.statistics().inbound_dropped > 0
        received = []
        with trio.move_on_after(1):
            while True:
                received.append((await sub.receive()).payload)
        stats = into.statistics()
        assert stats.imported == len(received)
        assert stats.imported + stats.inbound_dropped == total
        assert stats.imported <= 1 + 3 * 10 + 1
        assert received == sorted(received)  # in order, with gaps


async def test_messages_keep_their_order_around_a_full_inbound_queue(
    nats_server: NatsServer,
) -> None:
    """Messages handed over at once and those that wait keep one order.

    While the bridge's inbound queue has room, each message goes to it as
    nats-py parses it; once it is full, they wait in nats-py's queue, and so
    do the ones that come after, until that queue is empty again. What the
    queues cannot hold is dropped and counted; what comes through is in
    order, once each.
    """
    sender, slow = Broker[Any](), Broker[Any]()
    async with (
        open_bridge(sender, nats_server.url, outbound=["q"], **JSON) as out,
        open_bridge(
            slow, nats_server.url, inbound=["q"], max_inbound=20, **JSON
        ) as into,
        slow.subscribe("q", policy=OverflowPolicy.BLOCK, max_buffer_size=1) as sub,
    ):
        for i in range(45):
            await sender.publish("q", i)
        await wait_until(lambda: out.statistics().exported == 45)

        def queued() -> int:  # in the bridge's inbound queue now
            link = into._link
            assert link is not None
            return link.queued_inbound()

        # The bridge's queue is full: what comes now waits in nats-py's.
        await wait_until(lambda: queued() == 20)
        got = []

        async def read() -> None:
            # Slowly, so that room comes a message at a time while nats-py's
            # queue still holds some: a new message then has room, and must
            # still not go ahead of them.
            with trio.move_on_after(1):
                while True:
                    got.append((await sub.receive()).payload)
                    await trio.sleep(0.002)

        async with trio.open_nursery() as nursery:
            # More while the waiting ones go through: they wait behind them.
            nursery.start_soon(read)
            for i in range(45, 55):
                await sender.publish("q", i)
        stats = into.statistics()
        assert got == sorted(set(got))  # in order, once each
        assert len(got) > 20  # more than the bridge's queue held
        assert stats.imported == len(got)
        assert stats.imported + stats.inbound_dropped == 55
        # With the queues empty again, the next ones go straight through.
        for i in range(55, 65):
            await sender.publish("q", i)
        assert [m.payload for m in await take(sub, 10)] == list(range(55, 65))
        assert into.statistics().imported == len(got) + 10


async def test_outbound_overflow_follows_its_policy(nats_server: NatsServer) -> None:
    here = Broker[Any]()
    async with open_bridge(
        here,
        nats_server.url,
        outbound=["f"],
        max_outbound=5,
        outbound_policy=OverflowPolicy.DROP_NEWEST,
        **JSON,
    ) as out:
        # publish_nowait takes no checkpoint: the export task cannot run meanwhile
        for i in range(50):
            here.publish_nowait("f", i)
        await wait_until(lambda: out.statistics().exported == 5)
        stats = out.statistics()
        assert (stats.outbound_dropped, stats.outbound_pending) == (45, 0)


async def test_block_outbound_makes_local_publishers_wait(
    nats_server: NatsServer,
) -> None:
    here = Broker[Any]()
    async with open_bridge(
        here,
        nats_server.url,
        outbound=["f"],
        max_outbound=2,
        outbound_policy=OverflowPolicy.BLOCK,
        **JSON,
    ) as out:
        here.publish_nowait("f", 0)
        here.publish_nowait("f", 1)
        with pytest.raises(trio.WouldBlock):
            here.publish_nowait("f", 2)
        for i in range(2, 40):
            await here.publish("f", i)
        await wait_until(lambda: out.statistics().exported == 40)
        assert out.statistics().dropped == 0


async def drained_through(
    url: str, subject: str, payloads: list[Any], codec: dict[str, Any]
) -> tuple[Any, list[Any]]:
    """Publish ``payloads`` into a broker whose bridge exports with ``drain=True``.

    Another broker's bridge imports them. Returns the exporting bridge's
    statistics once it is closed, and the payloads the other broker received.
    """
    here, there = Broker[Any](), Broker[Any]()
    count = len(payloads)
    async with (
        open_bridge(there, url, inbound=[subject], max_inbound=count, **codec),
        there.subscribe(subject, max_buffer_size=count) as sub,
    ):
        async with open_bridge(
            here, url, outbound=[subject], max_outbound=count, drain=True, **codec
        ) as out:
            for payload in payloads:
                here.publish_nowait(subject, payload)
        got = await take(sub, count)
    return out.statistics(), [m.payload for m in got]


async def test_drain_exports_everything_queued(nats_server: NatsServer) -> None:
    count = 3000
    stats, got = await drained_through(nats_server.url, "d", list(range(count)), JSON)
    assert (stats.exported, stats.dropped, stats.outbound_pending) == (count, 0, 0)
    assert got == list(range(count))


async def test_a_batch_larger_than_nats_py_pending_buffer_is_exported_whole(
    nats_server: NatsServer,
) -> None:
    """nats-py flushes its pending buffer once over 2 MiB: then, within a batch."""
    count, size = 400, 16 * 1024  # 6.4 MiB, taken in one or two batches
    payloads = [bytes([i % 256]) * size for i in range(count)]
    codec: dict[str, Any] = {"encode": encode_bytes, "decode": decode_bytes}
    stats, got = await drained_through(nats_server.url, "big", payloads, codec)
    assert (stats.exported, stats.dropped) == (count, 0)
    assert got == payloads


async def test_without_drain_every_message_is_still_accounted_for(
    nats_server: NatsServer,
) -> None:
    here = Broker[Any]()
    count = 3000
    async with open_bridge(
        here, nats_server.url, outbound=["d"], max_outbound=count, **JSON
    ) as out:
        for i in range(count):
            here.publish_nowait("d", i)
    stats = out.statistics()
    assert stats.exported + stats.unconfirmed + stats.outbound_dropped == count
    assert stats.outbound_pending == 0
    assert no_bridge_threads()


async def test_cancellation_closes_cleanly(nats_server: NatsServer) -> None:
    here = Broker[Any]()
    with trio.CancelScope() as scope:
        async with open_bridge(
            here, nats_server.url, outbound=["c"], inbound=["c.in"], **JSON
        ) as bridge:
            here.publish_nowait("c", 1)
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert not bridge.statistics().connected
    assert no_bridge_threads()
    assert here.statistics().subscriptions == 0


async def test_aclose_inside_the_block_and_again(nats_server: NatsServer) -> None:
    here = Broker[Any]()
    async with open_bridge(here, nats_server.url, outbound=["c"], **JSON) as bridge:
        stats = bridge.statistics()
        assert (stats.connected, stats.closed) == (True, False)
        await bridge.aclose()
        await bridge.aclose()
        stats = bridge.statistics()
        assert (stats.connected, stats.closed) == (False, True)
        assert "closed" in repr(bridge)
        here.publish_nowait("c", 1)  # no longer exported, nothing waits
    assert no_bridge_threads()


async def test_the_body_exception_comes_out_unwrapped(nats_server: NatsServer) -> None:
    here = Broker[Any]()
    with pytest.raises(KeyError, match="mine"):
        async with open_bridge(here, nats_server.url, outbound=["c"], **JSON):
            raise KeyError("mine")
    assert no_bridge_threads()


async def test_queue_group_shares_the_work_in_one_process(
    nats_server: NatsServer,
) -> None:
    source = Broker[Any]()
    workers = [Broker[Any]() for _ in range(3)]
    async with (
        open_bridge(source, nats_server.url, outbound=["job.>"], **JSON),
        open_bridge(workers[0], nats_server.url, inbound=["job.>"], queue="w", **JSON),
        open_bridge(workers[1], nats_server.url, inbound=["job.>"], queue="w", **JSON),
        open_bridge(workers[2], nats_server.url, inbound=["job.>"], queue="w", **JSON),
        workers[0].subscribe("job.>", max_buffer_size=1000) as a,
        workers[1].subscribe("job.>", max_buffer_size=1000) as b,
        workers[2].subscribe("job.>", max_buffer_size=1000) as c,
    ):
        for i in range(300):
            await source.publish(f"job.{i}", i)
        seen: list[int] = []

        async def gather(sub: Any) -> None:
            with trio.move_on_after(2):
                async for message in sub:
                    seen.append(message.payload)

        async with trio.open_nursery() as nursery:
            for sub in (a, b, c):
                nursery.start_soon(gather, sub)
        assert sorted(seen) == list(range(300))


async def test_connection_refused_on_entry(caplog: pytest.LogCaptureFixture) -> None:
    from .server import free_port

    here = Broker[Any]()
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match="could not connect to NATS"):
        async with open_bridge(here, url, outbound=["x"], connect_timeout=1, **JSON):
            pytest.fail("entered")  # pragma: no cover
    assert no_bridge_threads()
    assert here.statistics().subscriptions == 0


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"outbound": "a.>"}, TypeError, "must be a list of patterns, not a str"),
        ({"outbound": ["a..b"]}, InvalidSubjectError, "empty token"),
        ({"inbound": ["a.>.b"]}, InvalidSubjectError, "last token"),
        ({}, ValueError, "nothing to bridge"),
        ({"outbound": ["a"], "prefix": "p.*"}, InvalidSubjectError, "wildcards"),
        ({"outbound": ["a"], "queue": "has space"}, ValueError, "whitespace"),
        (
            {"outbound": ["a"], "outbound_policy": OverflowPolicy.DISCONNECT},
            ValueError,
            "DROP_NEWEST, DROP_OLDEST or BLOCK",
        ),
        ({"outbound": ["a"], "max_outbound": 0}, ValueError, "max_outbound must be"),
        ({"outbound": ["a"], "max_inbound": 1.5}, TypeError, "must be an int"),
        ({"outbound": ["a"], "drain_timeout": "1"}, TypeError, "must be a number"),
        ({"outbound": ["a"], "connect_timeout": float("inf")}, ValueError, "finite"),
        (
            {"outbound": ["a"], "max_reconnect_attempts": -2},
            ValueError,
            "max_reconnect_attempts must be an int >= -1",
        ),
        (
            {"outbound": ["a"], "max_reconnect_attempts": True},
            TypeError,
            "max_reconnect_attempts must be an int",
        ),
        ({"outbound": ["a"], "servers": []}, ValueError, "at least one"),
        ({"outbound": ["a"], "servers": [1]}, TypeError, "non-empty str URL"),
        ({"outbound": ["a"], "encode": None}, TypeError, "must be callables"),
        # issue 16: NATS refuses these in a subscription, where the grammar
        # here reads them as literal tokens
        ({"inbound": ["a*.b"]}, InvalidSubjectError, "'a\\*': NATS allows"),
        ({"inbound": ["x.>>"]}, InvalidSubjectError, "'>>': NATS allows"),
        ({"inbound": ["sh*p"]}, InvalidSubjectError, "'sh\\*p': NATS allows"),
        ({"inbound": ["a"], "prefix": "p>"}, InvalidSubjectError, "'p>'"),
        # issue 17: reply subjects are the bridge's own business
        ({"inbound": ["_INBOX.>"]}, InvalidSubjectError, "are reply subjects"),
        ({"outbound": ["_INBOX.*.1"]}, InvalidSubjectError, "are reply subjects"),
        ({"outbound": ["a"], "request_timeout": 0}, ValueError, "request_timeout"),
    ],
)
async def test_bad_arguments_are_refused_before_connecting(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    arguments: dict[str, Any] = {"servers": "nats://127.0.0.1:1", **JSON, **options}
    with pytest.raises(error, match=match):
        async with open_bridge(Broker[Any](), **arguments):
            pytest.fail("entered")  # pragma: no cover
    assert no_bridge_threads()


def test_the_statistics_type_is_exported() -> None:
    from trio_pubsub.nats import BridgeStatistics

    assert BridgeStatistics.__name__ == "BridgeStatistics"
    assert Bridge.__name__ == "Bridge"


@pytest.fixture(autouse=True)
def _bridge_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_pubsub.nats")


async def test_the_bridge_collector_reports_what_statistics_say(
    nats_server: NatsServer,
) -> None:
    """trio_pubsub_bridge_* scraped while the bridge runs (issue 18)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from trio_pubsub.prometheus import BridgeCollector

    here, there = Broker[Any](), Broker[Any]()
    registry = CollectorRegistry()
    async with (
        open_bridge(here, nats_server.url, outbound=["m.>"], **JSON) as out,
        open_bridge(there, nats_server.url, inbound=["m.>"], **JSON) as into,
        there.subscribe("m.>") as sub,
    ):
        collector = BridgeCollector(out, name="out")
        collector.add_bridge(into, name="in")
        registry.register(collector)
        for i in range(10):
            await here.publish(f"m.{i}", i)
        await take(sub, 10)
        await wait_until(lambda: out.statistics().exported == 10)

        def scrape() -> dict[tuple[str, str], float]:
            text = generate_latest(registry).decode()
            return {
                (s.name, s.labels["bridge"]): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }

        samples = await trio.to_thread.run_sync(scrape)  # another thread, as HTTP
        assert samples[("trio_pubsub_bridge_exported_total", "out")] == 10
        assert samples[("trio_pubsub_bridge_imported_total", "in")] == 10
        assert samples[("trio_pubsub_bridge_connected", "out")] == 1
        assert samples[("trio_pubsub_bridge_outbound_dropped_total", "out")] == 0
        assert samples[("trio_pubsub_bridge_outbound_pending", "out")] == 0
        assert samples[("trio_pubsub_bridge_requests_refused_total", "in")] == 0
        assert samples[("trio_pubsub_bridge_requests_expired_total", "out")] == 0
        with pytest.raises(ValueError, match="already"):
            collector.add_bridge(out, name="in")
