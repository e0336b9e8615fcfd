"""Broker and Subscription behaviour, rule by rule, through the public API."""

from __future__ import annotations

from typing import TypeVar

import attrs
import pytest
import trio
import trio.testing

from tests.helpers import drain
from trio_pubsub import (
    Broker,
    BrokerClosedError,
    BrokerStatistics,
    InvalidSubjectError,
    Message,
    OverflowPolicy,
    SlowConsumerError,
    Subscription,
    SubscriptionStatistics,
)

T = TypeVar("T")


def delivery_counters(broker: Broker[T]) -> tuple[int, ...]:
    """The broker's counters of SPEC.md, without the match cache's."""
    stats = broker.statistics()
    return (
        stats.published,
        stats.delivered,
        stats.dropped,
        stats.disconnected,
        stats.subscriptions,
    )


def assert_law(sub: Subscription[object], routed: int) -> None:
    stats = sub.statistics()
    assert stats.received + stats.pending + stats.dropped == routed, stats


# -- routing -----------------------------------------------------------------


async def test_publish_reaches_matching_subscriptions_only() -> None:
    """Each subscription gets exactly the messages its pattern matches."""
    broker = Broker(str)
    async with (
        broker.subscribe("orders.*.created") as created,
        broker.subscribe("orders.>") as everything,
        broker.subscribe("payments.>") as payments,
    ):
        assert await broker.publish("orders.42.created", "a") == 2
        assert await broker.publish("orders.42.shipped", "b") == 1
        assert broker.publish_nowait("orders", "c") == 0
        assert drain(created) == ["a"]
        assert drain(everything) == ["a", "b"]
        assert drain(payments) == []
    assert broker.statistics() == BrokerStatistics(
        published=3,
        delivered=3,
        dropped=0,
        disconnected=0,
        subscriptions=0,
    )


async def test_message_carries_concrete_subject_and_same_payload() -> None:
    """Receivers see the published subject and share the payload object."""
    broker = Broker[list[int]]()
    payload = [1, 2]
    async with broker.subscribe("a.*") as one, broker.subscribe(">") as two:
        await broker.publish("a.b", payload)
        first, second = await one.receive(), await two.receive()
    assert first == Message(subject="a.b", payload=payload)
    assert first.payload is payload
    assert second.payload is payload
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        first.subject = "x"  # type: ignore[misc]


async def test_messages_arrive_in_publish_order() -> None:
    """A subscription receives messages in the order they were published."""
    broker = Broker(int, max_buffer_size=1000)
    async with broker.subscribe("n.>") as sub:
        for i in range(500):
            broker.publish_nowait(f"n.{i % 7}", i)
        assert drain(sub) == list(range(500))


async def test_runtime_type_check() -> None:
    """Broker(T) refuses a payload of another type; Broker[T]() does not check."""
    checked = Broker(int)
    with pytest.raises(TypeError, match="payload must be an instance of int"):
        await checked.publish("a", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="payload must be an instance of int"):
        checked.publish_nowait("a", "text")  # type: ignore[arg-type]
    assert checked.statistics().published == 0

    unchecked = Broker[int]()
    async with unchecked.subscribe("a") as sub:
        unchecked.publish_nowait("a", "text")  # type: ignore[arg-type]
        received: object = sub.receive_nowait().payload
        assert received == "text"


def test_message_type_must_be_a_class() -> None:
    """A message_type that isinstance() cannot use is refused at construction."""
    with pytest.raises(TypeError, match="message_type"):
        Broker(list[int])


# -- options -----------------------------------------------------------------

BAD_OPTIONS = [
    ({"max_buffer_size": 0}, ValueError, "max_buffer_size"),
    ({"max_buffer_size": -3}, ValueError, "max_buffer_size"),
    ({"max_buffer_size": 1.5}, TypeError, "max_buffer_size"),
    ({"max_buffer_size": True}, TypeError, "max_buffer_size"),
    ({"max_buffer_size": "8"}, TypeError, "max_buffer_size"),
    ({"disconnect_after": 0}, ValueError, "disconnect_after"),
    ({"disconnect_after": 2.0}, TypeError, "disconnect_after"),
    ({"policy": "block"}, TypeError, "policy"),
    ({"policy": 1}, TypeError, "policy"),
]


@pytest.mark.parametrize(("options", "error", "name"), BAD_OPTIONS)
def test_bad_broker_options(options: dict[str, object], error: type, name: str) -> None:
    """Invalid broker options raise ValueError/TypeError naming the option."""
    with pytest.raises(error, match=name):
        Broker(int, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(("options", "error", "name"), BAD_OPTIONS)
async def test_bad_subscribe_options(
    options: dict[str, object], error: type, name: str
) -> None:
    """Invalid subscribe options raise at the call, naming the option."""
    broker = Broker(int)
    with pytest.raises(error, match=name):
        broker.subscribe("a", **options)  # type: ignore[arg-type]
    assert broker.statistics().subscriptions == 0


async def test_defaults_come_from_the_broker() -> None:
    """None options take the broker's defaults; given ones override them."""
    broker = Broker(int, max_buffer_size=3, policy=OverflowPolicy.DROP_OLDEST)
    async with (
        broker.subscribe("a") as default,
        broker.subscribe("a", max_buffer_size=5, policy=OverflowPolicy.BLOCK) as custom,
    ):
        assert (default.max_buffer_size, default.policy) == (
            3,
            OverflowPolicy.DROP_OLDEST,
        )
        assert (custom.max_buffer_size, custom.policy) == (5, OverflowPolicy.BLOCK)
        assert default.pattern == "a"
    plain = Broker(int)
    async with plain.subscribe(">") as sub:
        assert sub.max_buffer_size == 64
        assert sub.policy is OverflowPolicy.DROP_NEWEST


# -- eager validation ----------------------------------------------------------


async def test_subscribe_validates_at_the_call() -> None:
    """A bad pattern raises when subscribe() is called, before any entry."""
    broker = Broker(int)
    with pytest.raises(InvalidSubjectError, match=r"invalid pattern 'a\.\.b'"):
        broker.subscribe("a..b")
    with pytest.raises(TypeError, match="pattern must be a str"):
        broker.subscribe(42)  # type: ignore[arg-type]
    assert broker.statistics().subscriptions == 0


@pytest.mark.parametrize("subject", ["a.*", "a.>", "", "a b", "a..b"])
async def test_publish_rejects_bad_subject_and_changes_nothing(subject: str) -> None:
    """Publish and publish_nowait validate the subject before delivering."""
    broker = Broker(int)
    async with broker.subscribe(">") as sub:
        before = broker.statistics(), sub.statistics()
        with pytest.raises(InvalidSubjectError) as info:
            await broker.publish(subject, 1)
        assert info.value.subject == subject
        with pytest.raises(InvalidSubjectError):
            broker.publish_nowait(subject, 1)
        assert (broker.statistics(), sub.statistics()) == before


async def test_publish_rejects_non_str_subject() -> None:
    """A non-str subject is a TypeError."""
    broker = Broker(int)
    with pytest.raises(TypeError, match="subject must be a str"):
        broker.publish_nowait(b"a", 1)  # type: ignore[arg-type]


# -- scope -----------------------------------------------------------------------


async def test_only_messages_after_entry_are_routed() -> None:
    """subscribe() alone registers nothing; entry does; exit removes."""
    broker = Broker(int)
    scope = broker.subscribe("a")
    assert broker.publish_nowait("a", 1) == 0
    async with scope as sub:
        assert broker.statistics().subscriptions == 1
        assert broker.publish_nowait("a", 2) == 1
        assert drain(sub) == [2]
    assert broker.statistics().subscriptions == 0
    assert broker.publish_nowait("a", 3) == 0


async def test_scope_can_be_entered_once() -> None:
    """Entering the same subscribe() twice is a RuntimeError."""
    broker = Broker(int)
    scope = broker.subscribe("a")
    async with scope:
        pass
    with pytest.raises(RuntimeError, match="already entered"):
        async with scope:
            pass  # pragma: no cover


async def test_exception_exit_removes_and_propagates() -> None:
    """An exception in the body propagates and the subscription is gone."""
    broker = Broker(int)
    with pytest.raises(ZeroDivisionError):
        async with broker.subscribe("a") as sub:
            broker.publish_nowait("a", 1)
            1 / 0  # noqa: B018
    assert broker.statistics().subscriptions == 0
    assert broker.publish_nowait("a", 2) == 0
    # the pending message was discarded and counted
    assert sub.statistics().dropped == 1
    assert_law(sub, 1)


async def test_cancelled_exit_removes() -> None:
    """Cancellation inside the body removes the subscription before leaving."""
    broker = Broker(int)
    with trio.move_on_after(1):
        async with broker.subscribe("a") as sub:
            await sub.receive()
    assert broker.statistics().subscriptions == 0
    assert broker.publish_nowait("a", 1) == 0


async def test_receive_after_exit_is_closed() -> None:
    """Using a subscription after its block is a ClosedResourceError."""
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        broker.publish_nowait("a", 1)
    with pytest.raises(trio.ClosedResourceError):
        sub.receive_nowait()
    with pytest.raises(trio.ClosedResourceError):
        await sub.receive()
    assert sub.statistics() == SubscriptionStatistics(
        delivered=1, received=0, pending=0, dropped=1, max_buffer_size=64
    )


async def test_close_early() -> None:
    """sub.close() stops delivery, discards pending, and is idempotent."""
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        broker.publish_nowait("a", 1)
        sub.close()
        sub.close()
        assert broker.statistics().subscriptions == 0
        assert broker.publish_nowait("a", 2) == 0
        with pytest.raises(trio.ClosedResourceError):
            await sub.receive()
        assert_law(sub, 1)
    assert broker.statistics().dropped == 1


async def test_close_wakes_a_waiting_receiver() -> None:
    """A task waiting in receive() when the subscription closes gets ClosedResourceError."""
    broker = Broker(int)
    async with broker.subscribe("a") as sub, trio.open_nursery() as nursery:
        errors: list[BaseException] = []

        async def waiter() -> None:
            try:
                await sub.receive()
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        sub.close()
    assert len(errors) == 1


# -- hand-off and receive ---------------------------------------------------------


async def test_waiting_receiver_takes_message_directly() -> None:
    """A waiting receiver is room: with a buffer of 1, two quick publishes both fit."""
    broker = Broker(int, max_buffer_size=1)
    got: list[int] = []
    async with broker.subscribe("a") as sub, trio.open_nursery() as nursery:

        async def consumer() -> None:
            got.append((await sub.receive()).payload)

        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        assert broker.publish_nowait("a", 1) == 1
        assert broker.publish_nowait("a", 2) == 1
        stats = sub.statistics()
        assert (stats.received, stats.pending, stats.dropped) == (1, 1, 0)
    assert got == [1]


@pytest.mark.parametrize(
    ("policy", "fourth", "expected"),
    [
        (OverflowPolicy.DROP_NEWEST, 0, [1, 2, 3]),
        (OverflowPolicy.DROP_OLDEST, 1, [1, 3, 4]),
        (OverflowPolicy.BLOCK, None, [1, 2, 3]),
    ],
)
async def test_publishes_before_the_handed_receiver_resumes(
    policy: OverflowPolicy, fourth: int | None, expected: list[int]
) -> None:
    """After a hand-off, the buffer fills to its size, in order, then the policy.

    The buffer already exists (earlier traffic) and the receiver has been handed
    the first message but has not run yet when the next three are published.
    """
    broker = Broker(int, max_buffer_size=2)
    got: list[int] = []
    async with broker.subscribe("a", policy=policy) as sub, trio.open_nursery() as n:
        broker.publish_nowait("a", 0)
        assert sub.receive_nowait().payload == 0  # the deque now exists

        async def consumer() -> None:
            got.append((await sub.receive()).payload)

        n.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        assert [broker.publish_nowait("a", i) for i in (1, 2, 3)] == [1, 1, 1]
        if fourth is None:
            with pytest.raises(trio.WouldBlock):
                broker.publish_nowait("a", 4)
        else:
            assert broker.publish_nowait("a", 4) == fourth
        await trio.testing.wait_all_tasks_blocked()
        got += [sub.receive_nowait().payload for _ in range(2)]
        stats = sub.statistics()
        dropped = 0 if fourth is None else 1
        assert (stats.received, stats.pending, stats.dropped) == (4, 0, dropped)
    assert got == expected


async def test_async_for_yields_messages() -> None:
    """Async for yields Message objects until the broker closes."""
    broker = Broker(int)
    async with broker.subscribe(">") as sub:
        for i in range(3):
            broker.publish_nowait("x", i)
        await broker.aclose()
        assert [m.payload async for m in sub] == [0, 1, 2]


# -- policies ------------------------------------------------------------------------


async def test_drop_newest() -> None:
    """DROP_NEWEST keeps the first messages and counts the refused ones."""
    broker = Broker(int, max_buffer_size=2)
    async with broker.subscribe("a") as sub:
        results = [broker.publish_nowait("a", i) for i in range(5)]
        assert results == [1, 1, 0, 0, 0]
        assert sub.statistics() == SubscriptionStatistics(
            delivered=2, received=0, pending=2, dropped=3, max_buffer_size=2
        )
        assert drain(sub) == [0, 1]
        assert_law(sub, 5)
    assert broker.statistics().dropped == 3


async def test_drop_oldest() -> None:
    """DROP_OLDEST keeps the newest messages, counting the evicted ones."""
    broker = Broker(int)
    async with broker.subscribe(
        "a", max_buffer_size=2, policy=OverflowPolicy.DROP_OLDEST
    ) as sub:
        results = [broker.publish_nowait("a", i) for i in range(5)]
        assert results == [1] * 5
        assert sub.statistics() == SubscriptionStatistics(
            delivered=5, received=0, pending=2, dropped=3, max_buffer_size=2
        )
        assert drain(sub) == [3, 4]
        assert_law(sub, 5)


async def test_block_publish_waits_for_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """BLOCK makes publish wait until the consumer makes room; nothing is lost."""
    broker = Broker(int)
    got: list[int] = []
    async with (
        broker.subscribe("a", max_buffer_size=1, policy=OverflowPolicy.BLOCK) as sub,
        trio.open_nursery() as nursery,
    ):

        async def slow_consumer() -> None:
            async for message in sub:
                await trio.sleep(1)
                got.append(message.payload)

        nursery.start_soon(slow_consumer)
        start = trio.current_time()
        for i in range(5):
            assert await broker.publish("a", i) == 1
        # the publisher was held back by the consumer's pace
        assert trio.current_time() - start >= 3
        await broker.aclose()
    assert got == [0, 1, 2, 3, 4]
    assert sub.statistics().dropped == 0


async def test_block_publish_nowait_is_all_or_nothing() -> None:
    """A full BLOCK subscription makes publish_nowait raise and deliver to no one."""
    broker = Broker(int)
    async with (
        broker.subscribe(
            "a", max_buffer_size=1, policy=OverflowPolicy.BLOCK
        ) as blocking,
        broker.subscribe("a") as other,
    ):
        broker.publish_nowait("a", 1)
        before = delivery_counters(broker), blocking.statistics(), other.statistics()
        with pytest.raises(trio.WouldBlock):
            broker.publish_nowait("a", 2)
        assert (
            delivery_counters(broker),
            blocking.statistics(),
            other.statistics(),
        ) == before
        assert drain(other) == [1]


async def test_block_serves_others_before_waiting() -> None:
    """While publish waits on a full BLOCK subscription, the others already have it."""
    broker = Broker(int)
    async with (
        broker.subscribe(
            "a", max_buffer_size=1, policy=OverflowPolicy.BLOCK
        ) as blocking,
        broker.subscribe("a") as fast,
        trio.open_nursery() as nursery,
    ):
        broker.publish_nowait("a", 1)
        results: list[int] = []

        async def publisher() -> None:
            results.append(await broker.publish("a", 2))

        nursery.start_soon(publisher)
        await trio.testing.wait_all_tasks_blocked()
        assert drain(fast) == [1, 2]
        assert results == []
        assert blocking.receive_nowait().payload == 1
        await trio.testing.wait_all_tasks_blocked()
        assert results == [2]
        assert blocking.receive_nowait().payload == 2


async def test_block_waiting_publishers_keep_their_order() -> None:
    """Publishers waiting on the same BLOCK buffer get in first come, first served."""
    broker = Broker(int)
    async with (
        broker.subscribe("a", max_buffer_size=1, policy=OverflowPolicy.BLOCK) as sub,
        trio.open_nursery() as nursery,
    ):
        broker.publish_nowait("a", 0)
        for i in range(1, 4):
            nursery.start_soon(broker.publish, "a", i)
            await trio.testing.wait_all_tasks_blocked()
        received = []
        for _ in range(4):
            received.append((await sub.receive()).payload)
            # the law holds at every moment, even while publishers are waking
            assert_law(sub, sub.statistics().delivered)
        assert received == [0, 1, 2, 3]


async def test_disconnect_after_consecutive_drops() -> None:
    """DISCONNECT cuts off after disconnect_after drops in a row; pending drains first."""
    broker = Broker(int)
    async with broker.subscribe(
        "a", max_buffer_size=2, policy=OverflowPolicy.DISCONNECT, disconnect_after=3
    ) as sub:
        assert [broker.publish_nowait("a", i) for i in range(4)] == [1, 1, 0, 0]
        assert sub.receive_nowait().payload == 0  # room again
        assert broker.publish_nowait("a", 4) == 1  # accepted: the streak is broken
        assert [broker.publish_nowait("a", i) for i in range(5, 7)] == [0, 0]
        assert broker.statistics().disconnected == 0  # only 2 in a row so far
        assert broker.publish_nowait("a", 7) == 0  # the third in a row cuts it off
        assert broker.statistics().disconnected == 1
        assert broker.statistics().subscriptions == 0
        assert broker.publish_nowait("a", 8) == 0  # not routed any more
        assert drain(sub) == [1, 4]
        with pytest.raises(SlowConsumerError, match="slow consumer"):
            sub.receive_nowait()
        with pytest.raises(SlowConsumerError):
            await sub.receive()
        assert_law(sub, 8)
        assert sub.statistics().dropped == 5


async def test_disconnect_async_for_raises_after_draining() -> None:
    """Async for yields what was pending, then raises SlowConsumerError."""
    broker = Broker(int)
    async with broker.subscribe(
        "a", max_buffer_size=2, policy=OverflowPolicy.DISCONNECT
    ) as sub:
        for i in range(3):
            broker.publish_nowait("a", i)
        seen = []
        with pytest.raises(SlowConsumerError):
            async for message in sub:
                seen.append(message.payload)
        assert seen == [0, 1]


async def test_default_disconnect_after_is_one() -> None:
    """With the default, the first drop cuts a DISCONNECT subscription off."""
    broker = Broker(int, policy=OverflowPolicy.DISCONNECT, max_buffer_size=1)
    async with broker.subscribe("a") as sub:
        broker.publish_nowait("a", 1)
        broker.publish_nowait("a", 2)
        assert broker.statistics().disconnected == 1
        assert drain(sub) == [1]


# -- snapshot then deliver ---------------------------------------------------------


async def test_subscription_leaving_while_publish_waits_is_skipped() -> None:
    """A waiting publish skips a subscription that leaves, and returns."""
    broker = Broker(int)
    results: list[int] = []
    async with trio.open_nursery() as nursery:
        async with broker.subscribe(
            "a", max_buffer_size=1, policy=OverflowPolicy.BLOCK
        ) as sub:
            broker.publish_nowait("a", 1)

            async def publisher() -> None:
                results.append(await broker.publish("a", 2))

            nursery.start_soon(publisher)
            await trio.testing.wait_all_tasks_blocked()
            assert results == []
        await trio.testing.wait_all_tasks_blocked()
        assert results == [0]
    assert broker.statistics().published == 2
    assert_law(sub, 1)


async def test_subscription_entering_during_wait_gets_nothing() -> None:
    """A subscription entered while a publish waits does not get that message."""
    broker = Broker(int)
    async with (
        broker.subscribe(
            "a", max_buffer_size=1, policy=OverflowPolicy.BLOCK
        ) as blocking,
        trio.open_nursery() as nursery,
    ):
        broker.publish_nowait("a", 1)
        nursery.start_soon(broker.publish, "a", 2)
        await trio.testing.wait_all_tasks_blocked()
        async with broker.subscribe("a") as late:
            blocking.receive_nowait()
            await trio.testing.wait_all_tasks_blocked()
            assert blocking.receive_nowait().payload == 2
            assert drain(late) == []


# -- close --------------------------------------------------------------------


async def test_aclose_is_idempotent_and_refuses_new_work() -> None:
    """After aclose, publish, publish_nowait and subscribe raise BrokerClosedError."""
    broker = Broker(int)
    scope = broker.subscribe("a")
    await broker.aclose()
    await broker.aclose()
    with pytest.raises(BrokerClosedError):
        await broker.publish("a", 1)
    with pytest.raises(BrokerClosedError):
        broker.publish_nowait("a", 1)
    with pytest.raises(BrokerClosedError):
        broker.subscribe("a")
    with pytest.raises(BrokerClosedError):
        async with scope:
            pass  # pragma: no cover
    assert broker.statistics().published == 0
    assert isinstance(BrokerClosedError(), trio.ClosedResourceError)


async def test_aclose_lets_subscriptions_drain_then_end() -> None:
    """Open subscriptions keep their pending messages, then get EndOfChannel."""
    broker = Broker(int)
    async with broker, broker.subscribe("a") as sub:
        broker.publish_nowait("a", 1)
        await broker.aclose()
        assert broker.statistics().subscriptions == 0
        assert (await sub.receive()).payload == 1
        with pytest.raises(trio.EndOfChannel):
            await sub.receive()
        with pytest.raises(trio.EndOfChannel):
            sub.receive_nowait()
        assert_law(sub, 1)


async def test_aclose_wakes_waiting_receivers() -> None:
    """A task waiting in receive() when the broker closes gets EndOfChannel."""
    broker = Broker(int)
    ended = trio.Event()
    async with broker.subscribe("a") as sub, trio.open_nursery() as nursery:

        async def waiter() -> None:
            async for _ in sub:
                pass  # pragma: no cover
            ended.set()

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        await broker.aclose()
    assert ended.is_set()


async def test_aclose_wakes_blocked_publishers_with_broker_closed() -> None:
    """Publishers waiting for room in a BLOCK buffer wake with BrokerClosedError."""
    broker = Broker(int)
    errors: list[BaseException] = []
    async with (
        broker.subscribe("a", max_buffer_size=1, policy=OverflowPolicy.BLOCK) as sub,
        trio.open_nursery() as nursery,
    ):
        broker.publish_nowait("a", 1)

        async def publisher() -> None:
            try:
                await broker.publish("a", 2)
            except BrokerClosedError as exc:
                errors.append(exc)

        nursery.start_soon(publisher)
        nursery.start_soon(publisher)
        await trio.testing.wait_all_tasks_blocked()
        await broker.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert len(errors) == 2
        assert drain(sub) == [1]
        assert_law(sub, 1)
    assert broker.statistics().published == 1


async def test_aclose_then_leave_counts_nothing_twice() -> None:
    """Leaving a drained subscription of a closed broker changes no counter."""
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        broker.publish_nowait("a", 1)
        await broker.aclose()
        sub.receive_nowait()
    assert broker.statistics() == BrokerStatistics(
        published=1,
        delivered=1,
        dropped=0,
        disconnected=0,
        subscriptions=0,
    )


# -- cancellation -------------------------------------------------------------------


async def test_cancelled_publish_while_blocked_keeps_counters_exact() -> None:
    """A publish cancelled while waiting delivers nothing to that subscription."""
    broker = Broker(int)
    async with (
        broker.subscribe("a") as first,
        broker.subscribe(
            "a", max_buffer_size=1, policy=OverflowPolicy.BLOCK
        ) as blocking,
    ):
        broker.publish_nowait("a", 1)
        with trio.CancelScope() as scope:
            scope.deadline = trio.current_time()  # already expired
            scope.cancel()
            await broker.publish("a", 2)
        assert scope.cancelled_caught
        # cancelled at its first checkpoint: nobody got message 2
        assert drain(first) == [1]

        async with trio.open_nursery() as nursery:

            async def publisher(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
                with trio.CancelScope() as inner:
                    task_status.started(inner)
                    await broker.publish("a", 3)

            inner = await nursery.start(publisher)
            await trio.testing.wait_all_tasks_blocked()
            inner.cancel()
        # the non-blocking subscription kept its copy; the blocking one has none
        assert drain(first) == [3]
        assert drain(blocking) == [1]
        assert_law(blocking, 1)
        assert_law(first, 2)
        assert broker.statistics().published == 1
        assert broker.publish_nowait("a", 4) == 2


async def test_cancelled_receive_loses_nothing() -> None:
    """A receive cancelled while waiting takes nothing; the next one gets the message."""
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        with trio.move_on_after(0.01):
            await sub.receive()
        broker.publish_nowait("a", 1)
        with trio.CancelScope() as scope:
            scope.cancel()
            await sub.receive()
        assert scope.cancelled_caught
        assert sub.statistics().pending == 1
        assert (await sub.receive()).payload == 1
        assert_law(sub, 1)


async def test_cancelled_entry_registers_nothing() -> None:
    """Cancelled at the entry checkpoint, a subscription never registers."""
    broker = Broker(int)
    with trio.CancelScope() as scope:
        scope.cancel()
        async with broker.subscribe("a"):
            pass  # pragma: no cover
    assert scope.cancelled_caught
    assert broker.statistics().subscriptions == 0


async def test_cancelled_aclose_still_closes() -> None:
    """Aclose closes the broker even if it is cancelled at its checkpoint."""
    broker = Broker(int)
    with trio.CancelScope() as scope:
        scope.cancel()
        await broker.aclose()
    assert scope.cancelled_caught
    with pytest.raises(BrokerClosedError):
        broker.publish_nowait("a", 1)


async def test_checkpoint_conventions() -> None:
    """Async methods always checkpoint; *_nowait methods never do."""
    broker = Broker(int)
    with trio.testing.assert_checkpoints():
        async with broker.subscribe("a") as sub:
            pass
    async with broker.subscribe("a") as sub:
        with trio.testing.assert_checkpoints():
            await broker.publish("a", 1)
        with trio.testing.assert_checkpoints():
            await broker.publish("nobody", 1)
        with trio.testing.assert_checkpoints():
            await sub.receive()
        with trio.testing.assert_no_checkpoints():
            broker.publish_nowait("a", 2)
            sub.receive_nowait()
            sub.statistics()
            broker.statistics()
    with trio.testing.assert_checkpoints():
        await broker.aclose()


# -- statistics and repr ---------------------------------------------------------------


async def test_statistics_are_frozen_snapshots() -> None:
    """statistics() returns immutable values that do not change afterwards."""
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        before = sub.statistics(), broker.statistics()
        broker.publish_nowait("a", 1)
        assert before != (sub.statistics(), broker.statistics())
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            before[1].published = 3  # type: ignore[misc]


async def test_reprs_are_informative() -> None:
    """Reprs name the public class, the pattern, the policy and the state."""
    broker = Broker(int)
    async with broker.subscribe("a.>", policy=OverflowPolicy.BLOCK) as sub:
        assert repr(sub) == (
            "<trio_pubsub.Subscription 'a.>' policy=BLOCK max_buffer_size=64 state=open>"
        )
        assert (
            repr(broker)
            == "<trio_pubsub.Broker[int] open, 1 subscriptions, 0 published>"
        )
    await broker.aclose()
    assert "closed" in repr(broker)
    assert repr(Broker[int]()).startswith("<trio_pubsub.Broker[] open")


async def test_broker_closed_between_two_blocking_waits() -> None:
    """A publish still due to wait on a second BLOCK subscription raises BrokerClosedError."""
    broker = Broker(int)
    outcome: list[object] = []
    async with (
        broker.subscribe("a", max_buffer_size=1, policy=OverflowPolicy.BLOCK) as first,
        broker.subscribe("a", max_buffer_size=1, policy=OverflowPolicy.BLOCK) as second,
        trio.open_nursery() as nursery,
    ):
        broker.publish_nowait("a", 1)

        async def publisher() -> None:
            try:
                outcome.append(await broker.publish("a", 2))
            except BrokerClosedError as exc:
                outcome.append(exc)

        nursery.start_soon(publisher)
        await trio.testing.wait_all_tasks_blocked()
        # room in the first: the waiting publisher is let in, then, before it
        # runs again, the broker closes
        assert first.receive_nowait().payload == 1
        await broker.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert len(outcome) == 1
        assert isinstance(outcome[0], BrokerClosedError)
        assert drain(first) == [2]
        assert drain(second) == [1]
        assert_law(first, 2)
        assert_law(second, 1)
    assert broker.statistics().published == 1


async def test_second_blocking_subscription_leaving_is_skipped() -> None:
    """A BLOCK subscription that leaves before the publish reaches it is skipped."""
    broker = Broker(int)
    results: list[int] = []
    async with (
        trio.open_nursery() as nursery,
        broker.subscribe("a", max_buffer_size=1, policy=OverflowPolicy.BLOCK) as first,
    ):
        async with broker.subscribe(
            "a", max_buffer_size=1, policy=OverflowPolicy.BLOCK
        ) as second:
            broker.publish_nowait("a", 1)

            async def publisher() -> None:
                results.append(await broker.publish("a", 2))

            nursery.start_soon(publisher)
            await trio.testing.wait_all_tasks_blocked()
            first.receive_nowait()  # lets the publisher into the first
        # the second left before the publisher ran again
        await trio.testing.wait_all_tasks_blocked()
        assert results == [1]
        assert drain(first) == [2]
    assert_law(second, 1)


# -- match cache -----------------------------------------------------------------


async def test_match_cache_counts_hits_misses_and_size(cache_size: int) -> None:
    """Repeated subjects are cache hits (when the cache is on); it stays bounded."""
    broker = Broker(int, match_cache_size=cache_size)
    async with broker.subscribe("a.*") as sub:
        for i in range(10):
            broker.publish_nowait(f"a.{i % 5}", i)
        stats = broker.statistics()
        assert stats.cache_hits + stats.cache_misses == 10
        if cache_size >= 5:
            assert (stats.cache_hits, stats.cache_misses, stats.cache_size) == (5, 5, 5)
        else:
            assert stats.cache_size <= cache_size
        assert drain(sub) == list(range(10))


async def test_cached_subject_sees_later_subscriptions(cache_size: int) -> None:
    """A subject cached before a subscription enters or leaves routes correctly."""
    broker = Broker(int, match_cache_size=cache_size)
    assert broker.publish_nowait("a.b", 0) == 0  # cached with no targets
    async with broker.subscribe("a.*") as star, broker.subscribe("a.b") as exact:
        assert broker.publish_nowait("a.b", 1) == 2
        async with broker.subscribe(">") as everything:
            assert broker.publish_nowait("a.b", 2) == 3
            assert drain(everything) == [2]
        assert broker.publish_nowait("a.b", 3) == 2
        star.close()
        assert broker.publish_nowait("a.b", 4) == 1
        assert drain(exact) == [1, 2, 3, 4]


async def test_cache_hit_still_checks_payload_type() -> None:
    """A cached subject skips parsing, never the payload check."""
    broker = Broker(int)
    broker.publish_nowait("a", 1)
    with pytest.raises(TypeError, match="payload must be an instance of int"):
        broker.publish_nowait("a", "x")  # type: ignore[arg-type]
    assert broker.statistics().cache_hits == 1


async def test_unhashable_subject_is_a_clear_type_error() -> None:
    """An unhashable subject reports the subject rule, not 'unhashable type'."""
    broker = Broker(int)
    with pytest.raises(TypeError, match="subject must be a str, not list"):
        broker.publish_nowait(["a"], 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="subject must be a str, not list"):
        await broker.publish(["a"], 1)  # type: ignore[arg-type]


async def test_closed_broker_refuses_cached_subjects() -> None:
    """Closing empties the cache, so a cached subject cannot bypass the check."""
    broker = Broker(int)
    broker.publish_nowait("a", 1)
    await broker.aclose()
    with pytest.raises(BrokerClosedError):
        broker.publish_nowait("a", 2)
    assert broker.statistics().cache_size == 0


def test_bad_match_cache_size() -> None:
    """match_cache_size must be an int >= 0."""
    with pytest.raises(ValueError, match="match_cache_size must be an int >= 0"):
        Broker(int, match_cache_size=-1)
    with pytest.raises(TypeError, match="match_cache_size"):
        Broker(int, match_cache_size=None)  # type: ignore[arg-type]
    Broker(int, match_cache_size=0)


async def test_several_waiting_receivers_are_served_in_turn() -> None:
    """Receivers waiting on one subscription get one message each, first come first."""
    broker = Broker(int, max_buffer_size=1)
    got: list[tuple[str, int]] = []
    async with broker.subscribe("a") as sub, trio.open_nursery() as nursery:

        async def receiver(name: str) -> None:
            got.append((name, (await sub.receive()).payload))

        for name in ("first", "second", "third"):
            nursery.start_soon(receiver, name)
            await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            # a fourth receiver gives up: the others still wait
            scope.deadline = trio.current_time() + 0.01
            await sub.receive()
        assert broker.publish_nowait("a", 1) == 1
        assert broker.publish_nowait("a", 2) == 1
        assert broker.publish_nowait("a", 3) == 1
        # every receiver was served: the next message waits in the buffer
        assert broker.publish_nowait("a", 4) == 1
        assert sub.statistics().pending == 1
    # trio may run the woken tasks in any order; who got what is what counts
    assert sorted(got) == [("first", 1), ("second", 2), ("third", 3)]


async def test_statistics_compare_by_delivery_counters() -> None:
    """A snapshot equals one built from SPEC.md's five counters alone."""
    broker = Broker(int)
    async with broker.subscribe("a"):
        broker.publish_nowait("a", 1)
        broker.publish_nowait("a", 2)
        stats = broker.statistics()
        assert stats == BrokerStatistics(
            published=2, delivered=2, dropped=0, disconnected=0, subscriptions=1
        )
        assert (stats.cache_hits, stats.cache_misses, stats.cache_size) == (1, 1, 1)


def test_new_message_builds_the_same_frozen_value() -> None:
    """The publish path's message factory gives what Message() gives."""
    from trio_pubsub._message import new_message

    built = new_message("a.b", [1])
    assert built == Message("a.b", [1])
    assert type(built) is Message
    assert repr(built) == "Message(subject='a.b', payload=[1])"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        built.payload = [2]  # type: ignore[misc]


async def test_idle_subscriptions_share_no_buffer_until_a_message() -> None:
    """An idle subscription owns no deque; the shared placeholder stays empty."""
    from trio_pubsub._inbox import _NO_BUFFER

    broker = Broker(int, max_buffer_size=2)
    async with broker.subscribe("a") as one, broker.subscribe("a") as two:
        assert one._inbox.buffer is _NO_BUFFER
        assert broker.publish_nowait("a", 1) == 2
        assert one._inbox.buffer is not _NO_BUFFER
        assert one._inbox.buffer is not two._inbox.buffer
        assert drain(one) == [1]
        assert drain(two) == [1]
    assert len(_NO_BUFFER) == 0
