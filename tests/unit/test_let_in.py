"""Publishers waiting for room in a BLOCK buffer are let in a quarter at a time.

A publisher that keeps a ``BLOCK`` buffer full would otherwise wake once per
message the consumer takes; letting the waiting publishers in once a quarter
of the buffer is free makes it wake once per quarter. Nothing else changes:
order, counters, ``block_timeout`` and cancellation keep their rules.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_pubsub import Broker, OverflowPolicy

from ..helpers import drain

BLOCK = OverflowPolicy.BLOCK


async def _fill(broker: Broker[int], subject: str, count: int) -> None:
    for i in range(count):
        broker.publish_nowait(subject, i)


@pytest.mark.parametrize(
    ("size", "takes"),
    [(1, 1), (2, 1), (4, 1), (8, 2), (64, 16), (65, 16), (100, 25)],
)
async def test_a_waiting_publisher_is_let_in_once_a_quarter_is_free(
    autojump_clock: trio.testing.MockClock, size: int, takes: int
) -> None:
    """``takes`` receives (a quarter of ``size``, at least one) let it in."""
    broker = Broker(int)
    done: list[int] = []

    async def publish_one() -> None:
        done.append(await broker.publish("a", size))

    async with (
        broker.subscribe("a", max_buffer_size=size, policy=BLOCK) as sub,
        trio.open_nursery() as nursery,
    ):
        await _fill(broker, "a", size)
        nursery.start_soon(publish_one)
        await trio.testing.wait_all_tasks_blocked()
        for taken in range(takes):
            assert done == [], f"let in after {taken} of {takes} receives"
            assert (await sub.receive()).payload == taken
            await trio.testing.wait_all_tasks_blocked()
        assert done == [1]
        assert sub.statistics().pending == size - takes + 1
        assert drain(sub) == list(range(takes, size + 1))
    assert broker.statistics().dropped == 0


async def test_while_publishers_wait_a_new_message_waits_behind_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Room not yet let in belongs to the waiting publishers.

    A later ``publish_nowait`` raises WouldBlock (and changes nothing), a later
    ``await publish`` queues behind, and every message keeps its place.
    """
    broker = Broker(int)
    async with (
        broker.subscribe("a", max_buffer_size=8, policy=BLOCK) as sub,
        trio.open_nursery() as nursery,
    ):
        await _fill(broker, "a", 8)
        nursery.start_soon(broker.publish, "a", 8)
        await trio.testing.wait_all_tasks_blocked()
        assert (await sub.receive()).payload == 0  # room for one, not let in
        before = sub.statistics()
        with pytest.raises(trio.WouldBlock):
            broker.publish_nowait("a", 99)
        assert sub.statistics() == before
        nursery.start_soon(broker.publish, "a", 9)
        await trio.testing.wait_all_tasks_blocked()
        assert sub.statistics().pending == 7
        assert (await sub.receive()).payload == 1  # a quarter free: both go in
        await trio.testing.wait_all_tasks_blocked()
        assert sub.statistics().pending == 8
        assert drain(sub) == list(range(2, 10))
    assert broker.statistics().dropped == 0


async def test_a_batch_lets_in_as_many_waiting_publishers_as_it_made_room_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with (
        broker.subscribe("a", max_buffer_size=8, policy=BLOCK) as sub,
        trio.open_nursery() as nursery,
    ):
        await _fill(broker, "a", 8)
        for i in range(8, 12):
            nursery.start_soon(broker.publish, "a", i)
            await trio.testing.wait_all_tasks_blocked()
        assert [m.payload for m in await sub.receive_batch(3)] == [0, 1, 2]
        assert sub.statistics().pending == 8  # three of the four went in
        # taking them lets the fourth in on the way
        assert drain(sub) == [3, 4, 5, 6, 7, 8, 9, 10, 11]


async def test_a_cancelled_waiting_publisher_leaves_the_room_to_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with (
        broker.subscribe("a", max_buffer_size=8, policy=BLOCK) as sub,
        trio.open_nursery() as nursery,
    ):
        await _fill(broker, "a", 8)
        nursery.start_soon(broker.publish, "a", 8)
        await trio.testing.wait_all_tasks_blocked()
        second = trio.CancelScope()

        async def cancellable() -> None:
            with second:
                await broker.publish("a", 80)

        nursery.start_soon(cancellable)
        await trio.testing.wait_all_tasks_blocked()
        assert (await sub.receive()).payload == 0
        second.cancel()  # the second waiting publish gives up
        await trio.testing.wait_all_tasks_blocked()
        assert (await sub.receive()).payload == 1  # the first is let in
        await trio.testing.wait_all_tasks_blocked()
        assert drain(sub) == [2, 3, 4, 5, 6, 7, 8]
        assert broker.statistics().published == 9  # 80 was not published
        # Nobody waits now: the room is open to anyone again.
        assert broker.publish_nowait("a", 9) == 1
        assert drain(sub) == [9]
    assert broker.statistics().dropped == 0


async def test_a_deadline_lets_a_waiting_publisher_into_room_not_yet_let_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Room made before ``block_timeout`` passed takes the message then.

    It is not dropped for want of room.
    """
    broker = Broker(int)
    async with (
        broker.subscribe(
            "a", max_buffer_size=8, policy=BLOCK, block_timeout=1.0
        ) as sub,
        trio.open_nursery() as nursery,
    ):
        await _fill(broker, "a", 8)

        async def consume_one_later() -> None:
            await trio.sleep(0.5)
            await sub.receive()

        nursery.start_soon(consume_one_later)
        start = trio.current_time()
        assert await broker.publish("a", 8) == 1
        assert trio.current_time() - start == pytest.approx(1.0)
        assert drain(sub) == list(range(1, 9))
        assert sub.statistics().dropped == 0


async def test_a_deadline_with_no_room_still_drops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with broker.subscribe(
        "a", max_buffer_size=8, policy=BLOCK, block_timeout=1.0
    ) as sub:
        await _fill(broker, "a", 8)
        assert await broker.publish("a", 8) == 0
        assert sub.statistics().dropped == 1
        assert drain(sub) == list(range(8))


async def test_a_queue_member_with_publishers_waiting_is_not_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A member whose room is not yet let in is full, to its queue group.

    A message waits (or raises WouldBlock) instead of being offered to it and
    lost.
    """
    broker = Broker(int)
    async with (
        broker.subscribe("j", queue="g", max_buffer_size=8, policy=BLOCK) as one,
        broker.subscribe("j", queue="g", max_buffer_size=8, policy=BLOCK) as two,
        trio.open_nursery() as nursery,
    ):
        await _fill(broker, "j", 16)
        nursery.start_soon(broker.publish, "j", 16)
        await trio.testing.wait_all_tasks_blocked()
        waited_on = one if one.statistics().pending == 8 else two
        # The publisher waits for one member (whichever's turn it was).
        waited_on.receive_nowait()
        assert waited_on.statistics().pending == 7
        with pytest.raises(trio.WouldBlock):
            broker.publish_nowait("j", 99)
        nursery.start_soon(broker.publish, "j", 17)
        await trio.testing.wait_all_tasks_blocked()
        received = 1 + len(drain(one)) + len(drain(two))
        await trio.testing.wait_all_tasks_blocked()
        received += len(drain(one)) + len(drain(two))
        await trio.testing.wait_all_tasks_blocked()
        received += len(drain(one)) + len(drain(two))
        assert received == 18
    stats = broker.statistics()
    assert stats.dropped == 0
    assert stats.published == 18
