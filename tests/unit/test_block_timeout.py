"""block_timeout: a stalled BLOCK subscriber holds a publish back only so long (issue 17)."""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing

from trio_pubsub import Broker, OverflowPolicy

from ..helpers import drain

BLOCK = OverflowPolicy.BLOCK


async def test_a_stalled_block_subscriber_no_longer_freezes_every_publisher(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With block_timeout=0.1, 500 publishes to a stalled one take ~0.1 s each.

    Before, one stalled BLOCK subscriber froze them all (16 of 500 in 5 s).
    The message is dropped for the stalled subscription only, counted, logged.
    """
    caplog.set_level(logging.WARNING, logger="trio_pubsub")
    broker = Broker(int)
    async with (
        broker.subscribe(
            "e", max_buffer_size=4, policy=BLOCK, block_timeout=0.1
        ) as stalled,
        broker.subscribe("e", max_buffer_size=1000) as healthy,
    ):
        start = trio.current_time()
        for i in range(500):
            assert await broker.publish("e", i) == (2 if i < 4 else 1)
        assert trio.current_time() - start == pytest.approx(496 * 0.1)
        assert drain(healthy) == list(range(500))
        assert drain(stalled) == [0, 1, 2, 3]
        stats = stalled.statistics()
        assert (stats.delivered, stats.dropped, stats.received) == (4, 496, 4)
        assert broker.statistics().dropped == 496
        assert broker.statistics().published == 500
    assert "dropped a message after 0.1 s" in caplog.text


async def test_the_broker_default_applies_and_a_subscription_may_wait_for_ever(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int, block_timeout=1.0)
    async with (
        broker.subscribe("a", max_buffer_size=1, policy=BLOCK) as default,
        broker.subscribe(
            "b", max_buffer_size=1, policy=BLOCK, block_timeout=math.inf
        ) as patient,
    ):
        broker.publish_nowait("a", 0)
        broker.publish_nowait("b", 0)
        start = trio.current_time()
        assert await broker.publish("a", 1) == 0
        assert trio.current_time() - start == pytest.approx(1.0)
        with trio.move_on_after(100) as scope:
            await broker.publish("b", 1)
        assert scope.cancelled_caught  # still waiting after 100 s
        assert patient.statistics().dropped == 0
        assert default.statistics().dropped == 1


async def test_room_made_in_time_delivers_as_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with (
        broker.subscribe(
            "a", max_buffer_size=1, policy=BLOCK, block_timeout=1.0
        ) as sub,
        trio.open_nursery() as nursery,
    ):
        broker.publish_nowait("a", 0)

        async def consumer() -> None:
            await trio.sleep(0.5)
            await sub.receive()

        nursery.start_soon(consumer)
        assert await broker.publish("a", 1) == 1
        assert drain(sub) == [1]
        assert sub.statistics().dropped == 0


async def test_a_queue_member_timing_out_drops_the_message_for_the_group(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A full BLOCK member whose timeout passes: dropped there, not re-routed."""
    broker = Broker(int)
    async with (
        broker.subscribe(
            "j", queue="g", max_buffer_size=1, policy=BLOCK, block_timeout=0.5
        ) as one,
        broker.subscribe(
            "j", queue="g", max_buffer_size=1, policy=BLOCK, block_timeout=0.5
        ) as two,
    ):
        broker.publish_nowait("j", 0)
        broker.publish_nowait("j", 1)
        assert await broker.publish("j", 2) == 0
        stats = [one.statistics(), two.statistics()]
        assert sum(s.dropped for s in stats) == 1
        assert sum(s.delivered for s in stats) == 2
        assert sorted(drain(one) + drain(two)) == [0, 1]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (math.nan, ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_a_bad_block_timeout_is_refused(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="block_timeout"):
        Broker(int, block_timeout=value)  # type: ignore[arg-type]
    with pytest.raises(error, match="block_timeout"):
        Broker(int).subscribe("a", block_timeout=value)  # type: ignore[arg-type]
