"""receive_batch() and batches(): several messages for one checkpoint (issue 20)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_pubsub import (
    Broker,
    Message,
    OverflowPolicy,
    SlowConsumerError,
    Subscription,
)


def payloads(batch: list[Message[int]]) -> list[int]:
    return [message.payload for message in batch]


def law_holds(broker: Broker[int], sub: Subscription[int]) -> None:
    stats = sub.statistics()
    assert stats.delivered == stats.received + stats.pending + stats.dropped
    assert broker.statistics().delivered == stats.delivered


async def test_a_batch_is_what_is_pending_oldest_first_up_to_max_items() -> None:
    broker = Broker(int)
    async with broker.subscribe("a", max_buffer_size=10) as sub:
        for i in range(7):
            broker.publish_nowait("a", i)
        assert payloads(await sub.receive_batch(3)) == [0, 1, 2]
        assert payloads(await sub.receive_batch(100)) == [3, 4, 5, 6]
        assert sub.statistics().received == 7
        assert sub.statistics().high_water == 7
        law_holds(broker, sub)


async def test_a_batch_is_one_checkpoint_and_a_cancelled_call_takes_nothing() -> None:
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        for i in range(3):
            broker.publish_nowait("a", i)
        with trio.testing.assert_checkpoints():
            assert payloads(await sub.receive_batch(2)) == [0, 1]
        with trio.CancelScope() as scope:
            scope.cancel()
            await sub.receive_batch(5)
        assert scope.cancelled_caught
        assert sub.statistics().pending == 1
        assert payloads(await sub.receive_batch(5)) == [2]


async def test_it_waits_while_empty_then_takes_what_came_before_it_ran(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with broker.subscribe("a") as sub, trio.open_nursery() as nursery:
        batches: list[list[int]] = []

        async def consume() -> None:
            batches.append(payloads(await sub.receive_batch(4)))

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        # The first goes straight to the waiting consumer; the others are
        # buffered before it runs again, and come in the same batch, up to 4.
        for i in range(6):
            broker.publish_nowait("a", i)
        await trio.testing.wait_all_tasks_blocked()
        assert batches == [[0, 1, 2, 3]]
        assert sub.statistics().pending == 2


async def test_with_max_items_1_a_woken_consumer_gets_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with broker.subscribe("a") as sub, trio.open_nursery() as nursery:
        got: list[list[int]] = []

        async def consume() -> None:
            got.append(payloads(await sub.receive_batch(1)))

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        broker.publish_nowait("a", 1)
        broker.publish_nowait("a", 2)
    assert got == [[1]]


async def test_publishers_waiting_in_a_full_block_buffer_get_the_room_in_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with (
        broker.subscribe("a", max_buffer_size=2, policy=OverflowPolicy.BLOCK) as sub,
        trio.open_nursery() as nursery,
    ):
        broker.publish_nowait("a", 0)
        broker.publish_nowait("a", 1)
        for i in (2, 3, 4):
            nursery.start_soon(broker.publish, "a", i)
            await trio.testing.wait_all_tasks_blocked()
        # Two taken: room for two of the three waiting, the first two
        assert payloads(await sub.receive_batch(2)) == [0, 1]
        assert sub.statistics().pending == 2
        law_holds(broker, sub)
        await trio.testing.wait_all_tasks_blocked()
        assert payloads(await sub.receive_batch(5)) == [2, 3]
        await trio.testing.wait_all_tasks_blocked()
        assert payloads(await sub.receive_batch(5)) == [4]
    assert broker.statistics().dropped == 0


async def test_batches_end_where_async_for_ends() -> None:
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        for i in range(5):
            broker.publish_nowait("a", i)
        await broker.aclose()
        assert [payloads(b) async for b in sub.batches(2)] == [[0, 1], [2, 3], [4]]
        with pytest.raises(trio.EndOfChannel):
            await sub.receive_batch(2)


async def test_a_cut_off_subscription_raises_once_its_messages_are_taken() -> None:
    broker = Broker(int)
    async with broker.subscribe(
        "a", max_buffer_size=2, policy=OverflowPolicy.DISCONNECT
    ) as sub:
        for i in range(3):
            broker.publish_nowait("a", i)
        assert payloads(await sub.receive_batch(10)) == [0, 1]
        with pytest.raises(SlowConsumerError):
            await sub.receive_batch(10)
        with pytest.raises(SlowConsumerError):
            [b async for b in sub.batches(10)]


async def test_a_closed_handle_raises_closed_resource_error() -> None:
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        other = sub.clone()
        broker.publish_nowait("a", 1)
        other.close()
        with pytest.raises(trio.ClosedResourceError):
            await other.receive_batch(3)
        assert payloads(await sub.receive_batch(3)) == [1]
    with pytest.raises(trio.ClosedResourceError):
        await sub.receive_batch(3)


async def test_closing_the_handle_wakes_a_task_waiting_for_a_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with broker.subscribe("a") as sub, trio.open_nursery() as nursery:
        errors: list[BaseException] = []

        async def consume() -> None:
            try:
                await sub.receive_batch(3)
            except trio.ClosedResourceError as error:
                errors.append(error)

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        sub.close()
    assert len(errors) == 1


@pytest.mark.parametrize(
    ("max_items", "error"),
    [(0, ValueError), (-1, ValueError), ("3", TypeError), (True, TypeError)],
)
async def test_max_items_must_be_an_int_of_one_or_more(
    max_items: object, error: type[Exception]
) -> None:
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        broker.publish_nowait("a", 1)
        with pytest.raises(error, match="max_items must be an int >= 1"):
            await sub.receive_batch(max_items)  # type: ignore[arg-type]
        with pytest.raises(error, match="max_items must be an int >= 1"):
            sub.batches(max_items)  # type: ignore[arg-type]
        assert sub.statistics().pending == 1  # nothing taken


async def test_watched_ages_follow_a_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        broker.publish_nowait("a", 0)
        sub.statistics()  # watched from now on
        await trio.sleep(5)
        broker.publish_nowait("a", 1)
        broker.publish_nowait("a", 2)
        assert sub.statistics().oldest_pending_age == pytest.approx(5)
        await sub.receive_batch(1)
        await trio.sleep(1)
        # The oldest now (1) arrived at 5, after the mark taken at 0 (the
        # last at or before it): the figure is that bound, never low.
        assert sub.statistics().oldest_pending_age == pytest.approx(6)
        broker.publish_nowait("a", 3)
        await sub.receive_batch(2)
        await trio.sleep(1)
        # 3 arrived after the mark of the statistics() call just before it
        assert sub.statistics().oldest_pending_age == pytest.approx(1)
        await sub.receive_batch(5)
        assert sub.statistics().oldest_pending_age is None
