"""Gaps in the stream: ``subscribe(..., report_gaps=True)`` and ``Lagged`` (issue 30).

A consumer learns exactly where it lost messages: ``Lagged(count)`` is raised
once, at the position of the gap, and the stream goes on after it.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from trio_pubsub import Broker, Lagged, OverflowPolicy, Subscription


def read(sub: Subscription[int], most: int = 1_000) -> list[int | str]:
    """What is pending (``most`` items at most), each gap as ``"lost N"``."""
    out: list[int | str] = []
    for _ in range(most):
        try:
            out.append(sub.receive_nowait().payload)
        except Lagged as gap:
            out.append(f"lost {gap.count}")
        except trio.WouldBlock:
            return out
    assert most < 1_000, "more than 1,000 items"
    return out


async def test_drop_newest_reports_the_gap_after_what_it_held() -> None:
    broker = Broker[int]()
    async with broker.subscribe("a", max_buffer_size=2, report_gaps=True) as sub:
        for i in range(5):
            broker.publish_nowait("a", i)  # 2, 3, 4 dropped
        assert read(sub) == [0, 1, "lost 3"]
        broker.publish_nowait("a", 5)
        assert read(sub) == [5]  # the gap was reported once
        assert sub.statistics().dropped == 3


async def test_drop_oldest_reports_the_gap_before_what_survived() -> None:
    broker = Broker[int]()
    async with broker.subscribe(
        "a", max_buffer_size=2, policy=OverflowPolicy.DROP_OLDEST, report_gaps=True
    ) as sub:
        for i in range(5):
            broker.publish_nowait("a", i)  # 0, 1, 2 evicted
        assert read(sub) == ["lost 3", 3, 4]
        for i in range(5, 8):
            broker.publish_nowait("a", i)  # 5 evicted
        assert read(sub) == ["lost 1", 6, 7]


async def test_gaps_between_messages_keep_their_places() -> None:
    broker = Broker[int]()
    async with broker.subscribe("a", max_buffer_size=3, report_gaps=True) as sub:
        for i in range(4):
            broker.publish_nowait("a", i)  # 3 dropped after 0, 1, 2
        assert sub.receive_nowait().payload == 0
        broker.publish_nowait("a", 4)  # room for one: after the gap
        broker.publish_nowait("a", 5)  # dropped: a second gap
        assert read(sub) == [1, 2, "lost 1", 4, "lost 1"]


async def test_receive_batch_stops_at_a_gap_and_async_for_raises_it() -> None:
    broker = Broker[int]()
    async with broker.subscribe("a", max_buffer_size=3, report_gaps=True) as sub:
        for i in range(5):
            broker.publish_nowait("a", i)
        assert [m.payload for m in await sub.receive_batch(10)] == [0, 1, 2]
        with pytest.raises(Lagged) as gap:
            await sub.receive_batch(10)
        assert gap.value.count == 2
        broker.publish_nowait("a", 5)
        broker.publish_nowait("a", 6)
        broker.publish_nowait("a", 7)
        broker.publish_nowait("a", 8)  # dropped
        seen: list[int] = []
        with pytest.raises(Lagged):
            async for message in sub:
                seen.append(message.payload)
        assert seen == [5, 6, 7]
        broker.publish_nowait("a", 9)
        assert (await sub.receive()).payload == 9


async def test_a_waiting_receive_sees_a_gap_left_at_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    async with broker.subscribe("a", max_buffer_size=1, report_gaps=True) as sub:
        broker.publish_nowait("a", 0)
        broker.publish_nowait("a", 1)  # dropped
        assert (await sub.receive()).payload == 0
        with pytest.raises(Lagged):
            await sub.receive()  # not a wait: the gap comes first
        with trio.move_on_after(1):
            await sub.receive()  # now it waits (nothing pending)
            raise AssertionError("nothing was published")


async def test_a_block_timeout_leaves_a_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    async with broker.subscribe(
        "a",
        max_buffer_size=1,
        policy=OverflowPolicy.BLOCK,
        block_timeout=1.0,
        report_gaps=True,
    ) as sub:
        await broker.publish("a", 0)
        assert await broker.publish("a", 1) == 0  # timed out: dropped
        assert read(sub) == [0, "lost 1"]


async def test_without_report_gaps_nothing_is_raised() -> None:
    broker = Broker[int]()
    async with broker.subscribe("a", max_buffer_size=2) as sub:
        for i in range(5):
            broker.publish_nowait("a", i)
        assert read(sub) == [0, 1]


async def test_report_gaps_must_be_a_bool() -> None:
    broker = Broker[int]()
    with pytest.raises(TypeError, match="report_gaps must be a bool"):
        broker.subscribe("a", report_gaps=1)  # type: ignore[arg-type]
    assert broker.statistics().subscriptions == 0


@settings(max_examples=200, deadline=None)
@given(
    policy=st.sampled_from([OverflowPolicy.DROP_NEWEST, OverflowPolicy.DROP_OLDEST]),
    size=st.integers(1, 5),
    steps=st.lists(st.tuples(st.booleans(), st.integers(1, 8)), max_size=30),
)
def test_every_gap_is_exactly_where_messages_are_missing(
    policy: OverflowPolicy, size: int, steps: list[tuple[bool, int]]
) -> None:
    """Each gap's count is the number of messages missing at its place.

    Publish 0, 1, 2, ... and receive in between; every message is accounted.
    """
    stream: list[int | str] = []

    async def run() -> int:
        broker = Broker[int]()
        published = 0
        async with broker.subscribe(
            "a", max_buffer_size=size, policy=policy, report_gaps=True
        ) as sub:
            for publishing, count in steps:
                if publishing:
                    for _ in range(count):
                        broker.publish_nowait("a", published)
                        published += 1
                else:
                    stream.extend(read(sub, count))
            stream.extend(read(sub))
        return published

    published = trio.run(run)
    expected = 0
    for item in stream:
        if isinstance(item, str):
            expected += int(item.split()[1])
        else:
            assert item == expected, stream
            expected += 1
    assert expected == published, stream


async def test_a_closed_subscription_reports_no_gap_it_left_behind() -> None:
    """Leaving discards the gaps with the messages: a receive says closed."""
    broker = Broker[int]()
    async with broker.subscribe("a", max_buffer_size=1, report_gaps=True) as sub:
        keep = sub.clone()
        broker.publish_nowait("a", 0)
        broker.publish_nowait("a", 1)  # dropped: a gap after 0
    with pytest.raises(trio.ClosedResourceError):
        keep.receive_nowait()
