"""A server killed mid-stream and restarted: reconnects and exact loss accounting."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio

from trio_pubsub import Broker, OverflowPolicy
from trio_pubsub.nats import Bridge, open_bridge

from .server import NatsServer
from .test_bridge import JSON, take, wait_until


def exported(bridge: Bridge[Any], count: int) -> bool:
    return bridge.statistics().exported == count


async def test_killed_and_restarted_server(
    own_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages published during the outage wait in the bounded outbound queue.

    What overflows it is dropped and counted; the rest is sent after the
    reconnection. The importing side reconnects first (shorter wait), so that
    its subscription is back on the server before the exporter sends.
    """
    here, there = Broker[Any](), Broker[Any]()
    async with (
        open_bridge(
            there, own_server.url, inbound=["k"], reconnect_time_wait=0.05, **JSON
        ) as into,
        open_bridge(
            here,
            own_server.url,
            outbound=["k"],
            max_outbound=20,
            outbound_policy=OverflowPolicy.DROP_NEWEST,
            reconnect_time_wait=1.0,
            **JSON,
        ) as out,
        there.subscribe("k", max_buffer_size=1000) as sub,
    ):
        for i in range(50):  # paced, as the queue of 20 would overflow
            await here.publish("k", i)
            await wait_until(functools.partial(exported, out, i + 1))
        assert [m.payload for m in await take(sub, 50)] == list(range(50))
        await wait_until(lambda: out.statistics().exported == 50)

        own_server.kill()
        await wait_until(lambda: not out.statistics().connected)
        await wait_until(lambda: not into.statistics().connected)
        for i in range(50, 100):
            await here.publish("k", i)
        # The queue of 20 and the batches handed to the connection's thread
        # hold some; DROP_NEWEST dropped the rest.
        stats = out.statistics()
        assert not stats.closed  # down, and reconnecting
        held = stats.outbound_pending
        assert 20 <= held < 50
        assert stats.outbound_dropped == 50 - held

        own_server.start()
        got = await take(sub, held)
        assert [m.payload for m in got] == list(range(50, 50 + held))
        await wait_until(lambda: out.statistics().exported == 50 + held)
        stats = out.statistics()
        assert (stats.connected, stats.reconnects) == (True, 1)
        assert (stats.outbound_dropped, stats.unconfirmed) == (50 - held, 0)
        assert stats.outbound_pending == 0
        assert into.statistics().reconnects == 1
        # and the stream goes on
        await here.publish("k", 100)
        assert [m.payload for m in await take(sub, 1)] == [100]
    assert "disconnected" in caplog.text
    assert f"reconnected to {own_server.url}" in caplog.text


async def test_kill_during_a_stream_keeps_the_ledger_exact(
    own_server: NatsServer,
) -> None:
    """Killed while messages flow: each is exported, unconfirmed or dropped."""
    here = Broker[Any]()
    total = 5000
    async with open_bridge(
        here,
        own_server.url,
        outbound=["s"],
        max_outbound=total,
        reconnect_time_wait=0.05,
        **JSON,
    ) as out:
        async with trio.open_nursery() as nursery:

            async def publisher() -> None:
                for i in range(total):
                    await here.publish("s", i)
                    if i % 50 == 0:
                        await trio.sleep(0.001)

            nursery.start_soon(publisher)
            await wait_until(lambda: out.statistics().exported > 0)
            own_server.kill()
            await wait_until(lambda: not out.statistics().connected)
            own_server.start()
        await wait_until(
            lambda: (
                out.statistics().outbound_pending == 0 and out.statistics().connected
            )
        )
        await wait_until(
            lambda: (
                (s := out.statistics()).exported + s.unconfirmed + s.dropped == total
            )
        )
        stats = out.statistics()
        assert stats.reconnects == 1
        assert stats.dropped == 0  # the queue held everything during the outage


async def test_closed_for_good_counts_everything_after(
    own_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    here = Broker[Any]()
    async with open_bridge(
        here,
        own_server.url,
        outbound=["g"],
        max_reconnect_attempts=1,
        reconnect_time_wait=0.05,
        **JSON,
    ) as out:
        await here.publish("g", 0)
        await wait_until(lambda: out.statistics().exported == 1)
        own_server.kill()
        await wait_until(lambda: "closed for good" in caplog.text)
        for i in range(1, 11):
            await here.publish("g", i)
        await wait_until(lambda: out.statistics().outbound_dropped == 10)
        stats = out.statistics()
        assert (
            stats.exported,
            stats.connected,
            stats.closed,
            stats.outbound_pending,
        ) == (1, False, True, 0)
