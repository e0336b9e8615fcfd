"""high_water, oldest_pending_age and cache_evictions (issue 18)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_pubsub import Broker, Message, OverflowPolicy
from trio_pubsub._inbox import Tally, _Inbox

from ..helpers import drain


async def test_high_water_is_the_most_held_at_once() -> None:
    broker = Broker(int)
    async with broker.subscribe("e", max_buffer_size=10) as sub:
        assert sub.statistics().high_water == 0
        for i in range(5):
            broker.publish_nowait("e", i)
        assert sub.statistics().high_water == 5  # the length now
        for _ in range(3):
            sub.receive_nowait()
        broker.publish_nowait("e", 5)
        stats = sub.statistics()
        assert (stats.pending, stats.high_water) == (3, 5)
        drain(sub)
        assert sub.statistics().high_water == 5
        for i in range(7):
            broker.publish_nowait("e", i)
        assert sub.statistics().high_water == 7
    # discarded on leaving: the peak stays
    assert sub.statistics().high_water == 7


async def test_a_message_handed_to_a_waiting_receiver_is_never_held() -> None:
    broker = Broker(int)
    async with broker.subscribe("e") as sub, trio.open_nursery() as nursery:

        async def consume() -> None:
            for _ in range(3):
                await sub.receive()

        nursery.start_soon(consume)
        for i in range(3):
            await trio.testing.wait_all_tasks_blocked()
            await broker.publish("e", i)
    stats = sub.statistics()
    assert (stats.received, stats.high_water) == (3, 0)


async def test_high_water_of_a_full_drop_oldest_buffer_is_its_size() -> None:
    broker = Broker(int)
    async with broker.subscribe(
        "e", max_buffer_size=4, policy=OverflowPolicy.DROP_OLDEST
    ) as sub:
        for i in range(20):
            broker.publish_nowait("e", i)
        sub.receive_nowait()
        assert sub.statistics().high_water == 4


async def test_the_oldest_pending_age_by_the_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with broker.subscribe("e") as sub:
        assert sub.statistics().oldest_pending_age is None
        broker.publish_nowait("e", 0)  # the first message: marked on arrival
        await trio.sleep(2.5)
        assert sub.statistics().oldest_pending_age == pytest.approx(2.5)
        broker.publish_nowait("e", 1)  # behind it
        await trio.sleep(1)
        assert sub.statistics().oldest_pending_age == pytest.approx(3.5)
        drain(sub)  # t=3.5: each receive is a mark
        assert sub.statistics().oldest_pending_age is None
        await trio.sleep(10)
        # the consumer is busy elsewhere: nothing looks at the clock until the
        # message comes, so its age counts from the last look (never low)
        broker.publish_nowait("e", 2)  # t=13.5
        await trio.sleep(0.25)
        assert sub.statistics().oldest_pending_age == pytest.approx(10.25)
        drain(sub)
        await trio.sleep(10)
        assert sub.statistics().oldest_pending_age is None  # t=23.75: a look
        broker.publish_nowait("e", 3)
        await trio.sleep(0.25)
        assert sub.statistics().oldest_pending_age == pytest.approx(0.25)


async def test_the_age_is_never_low_and_high_by_at_most_the_gap_before_arrival(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A message behind others is bounded by the last receive before it."""
    broker = Broker(int)
    async with broker.subscribe("e") as sub:
        broker.publish_nowait("e", 0)  # t=0, exact
        await trio.sleep(1)
        broker.publish_nowait("e", 1)  # t=1, behind 0: not stamped
        await trio.sleep(1)
        sub.receive_nowait()  # t=2: 1 is the oldest; its mark is t=0
        age = sub.statistics().oldest_pending_age
        assert age is not None
        assert 1.0 <= age <= 2.0  # truly 1 s, high by at most 1 s
        broker.publish_nowait("e", 2)  # t=2, after the receive's mark
        await trio.sleep(3)
        sub.receive_nowait()  # t=5: 2 is the oldest, marked at t=2 by the receive
        assert sub.statistics().oldest_pending_age == pytest.approx(3.0)


async def test_a_full_drop_oldest_buffer_marks_each_arrival(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with broker.subscribe(
        "e", max_buffer_size=2, policy=OverflowPolicy.DROP_OLDEST
    ) as sub:
        for i in range(4):  # t=0..3; 2 and 3 are left, each marked on arrival
            broker.publish_nowait("e", i)
            await trio.sleep(1)
        assert drain(sub)[:1] == [2]
        assert sub.statistics().oldest_pending_age is None
        for i in range(3):
            broker.publish_nowait("e", i)
            await trio.sleep(1)
        # t=7: holds 1 (arrived t=5, on the fast path: bounded by 0's mark at
        # t=4) and 2 (arrived t=6 into the full buffer, evicting 0: marked)
        assert sub.statistics().oldest_pending_age == pytest.approx(3.0)
        assert sub.receive_nowait().payload == 1
        assert sub.statistics().oldest_pending_age == pytest.approx(1.0)


async def test_marks_stay_few_however_long_the_backlog() -> None:
    broker = Broker(int)
    async with broker.subscribe("e", max_buffer_size=100) as sub:
        for i in range(50):
            broker.publish_nowait("e", i)
        for round_ in range(1000):
            sub.receive_nowait()
            broker.publish_nowait("e", round_)
            assert len(sub._inbox.later or ()) <= 51


def bare_inbox() -> _Inbox[int]:
    return _Inbox(
        "e",
        ("e",),
        policy=OverflowPolicy.DROP_NEWEST,
        max_buffer_size=4,
        disconnect_after=1,
        tally=Tally(detach=lambda inbox: None),
    )


def test_outside_any_run_there_is_no_clock_and_the_age_is_none() -> None:
    """An inbox never used in a trio run has no clock and reports no age."""
    outside = bare_inbox()
    assert outside.offer(Message("e", 1))
    assert outside.statistics().oldest_pending_age is None

    async def fill() -> _Inbox[int]:
        inside = bare_inbox()
        inside.offer(Message("e", 2))
        assert inside.statistics().oldest_pending_age == 0
        return inside

    clock = trio.testing.MockClock()
    inside = trio.run(fill, clock=clock)
    clock.jump(3)
    stats = inside.statistics()  # read after the run: by that run's clock
    assert (stats.pending, stats.oldest_pending_age) == (1, 3.0)


async def test_cache_evictions_count_the_subjects_let_go() -> None:
    broker = Broker(int, match_cache_size=8)
    async with broker.subscribe("a.*"):
        for i in range(8):
            broker.publish_nowait(f"a.{i}", i)
        assert broker.statistics().cache_evictions == 0
        broker.publish_nowait("a.8", 8)  # full: the oldest quarter (2) goes
        stats = broker.statistics()
        assert (stats.cache_evictions, stats.cache_size) == (2, 7)
        for i in range(100):
            broker.publish_nowait(f"a.x{i}", i)
        stats = broker.statistics()
        # every subject that ever entered is cached now or was evicted
        assert stats.cache_evictions + stats.cache_size == 109


def test_a_broker_used_in_a_second_run_reads_that_run_s_clock() -> None:
    broker = Broker(int)

    async def age_after(seconds: float) -> float | None:
        async with broker.subscribe("e") as sub:
            broker.publish_nowait("e", 1)
            await trio.sleep(seconds)
            return sub.statistics().oldest_pending_age

    first = trio.testing.MockClock(autojump_threshold=0)
    first.jump(1000)
    assert trio.run(age_after, 1, clock=first) == 1
    second = trio.testing.MockClock(autojump_threshold=0)
    assert trio.run(age_after, 2, clock=second) == 2
