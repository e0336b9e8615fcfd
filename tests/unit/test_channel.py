"""Subscription as a trio ReceiveChannel, names, subscriptions(), drain() (issue 17).

ReceiveChannel: clone, aclose, async with.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from trio_pubsub import (
    Broker,
    Message,
    OverflowPolicy,
    Subscription,
    SubscriptionInfo,
    SubscriptionStatistics,
)


async def consume(channel: trio.abc.ReceiveChannel[Message[int]]) -> list[int]:
    """Code written for any trio ReceiveChannel."""
    return [message.payload async for message in channel]


async def test_a_subscription_is_a_trio_receive_channel() -> None:
    """It is accepted, typed, where a ReceiveChannel of messages is expected."""
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        assert isinstance(sub, trio.abc.ReceiveChannel)
        broker.publish_nowait("a", 1)
        broker.publish_nowait("a", 2)
        sub.drain()
        assert await consume(sub) == [1, 2]


async def test_aclose_closes_with_a_checkpoint_and_async_with_closes() -> None:
    """aclose() is close() plus a checkpoint; `async with sub:` closes on exit."""
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        broker.publish_nowait("a", 1)
        with trio.testing.assert_checkpoints():
            await sub.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await sub.receive()
        assert sub.statistics().dropped == 1  # discarded when it left
        assert broker.statistics().subscriptions == 0
    async with broker.subscribe("b") as other:
        async with other:
            pass
        with pytest.raises(trio.ClosedResourceError):
            other.receive_nowait()


async def test_clones_share_one_buffer_and_each_message_goes_to_one() -> None:
    """Two handles, two consumers: every message is received once in all."""
    broker = Broker(int, max_buffer_size=100)
    got: list[tuple[str, int]] = []

    async def worker(label: str, handle: Subscription[int]) -> None:
        async with handle:
            async for message in handle:
                got.append((label, message.payload))
                await trio.sleep(0.01)

    async with broker.subscribe("jobs") as sub, trio.open_nursery() as nursery:
        clone = sub.clone()
        nursery.start_soon(worker, "a", sub)
        nursery.start_soon(worker, "b", clone)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(20):
            await broker.publish("jobs", i)
        await trio.sleep(1)
        sub.drain()
    assert sorted(p for _, p in got) == list(range(20))
    assert {label for label, _ in got} == {"a", "b"}


async def test_closing_one_clone_leaves_the_subscription_to_the_others() -> None:
    """A closed handle raises, wakes its own waiters; the last one leaves."""
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        clone = sub.clone()
        errors: list[type[BaseException]] = []

        async def waiter(handle: Subscription[int]) -> None:
            try:
                await handle.receive()
            except trio.ClosedResourceError as error:
                errors.append(type(error))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, clone)
            await trio.testing.wait_all_tasks_blocked()
            clone.close()
        assert errors == [trio.ClosedResourceError]
        with pytest.raises(trio.ClosedResourceError):
            clone.clone()
        assert broker.publish_nowait("a", 1) == 1  # still subscribed
        assert (await sub.receive()).payload == 1
        sub.close()  # the last handle: it leaves
        assert broker.statistics().subscriptions == 0


async def test_leaving_the_block_closes_every_handle() -> None:
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        clone = sub.clone()
    for handle in (sub, clone):
        with pytest.raises(trio.ClosedResourceError):
            handle.receive_nowait()


async def test_names_label_subscriptions_in_logs_and_snapshots(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """name= tells subscriptions on one pattern apart; default: the pattern."""
    caplog.set_level(logging.WARNING, logger="trio_pubsub")
    broker = Broker(int, max_buffer_size=1)
    async with (
        broker.subscribe("orders.>", name="audit") as audit,
        broker.subscribe("orders.>", name="billing", queue="b") as billing,
        broker.subscribe("orders.>", policy=OverflowPolicy.BLOCK) as plain,
    ):
        assert (audit.name, billing.name, plain.name) == (
            "audit",
            "billing",
            "orders.>",
        )
        assert "name='audit'" in repr(audit)
        broker.publish_nowait("orders.1", 1)
        plain.receive_nowait()
        broker.publish_nowait("orders.2", 2)  # audit and billing drop it
        assert "subscription 'audit'" in caplog.text
        assert "subscription 'billing'" in caplog.text
        infos = broker.subscriptions()
        assert [i.name for i in infos] == ["audit", "billing", "orders.>"]
        assert infos[1] == SubscriptionInfo(
            name="billing",
            pattern="orders.>",
            queue="b",
            policy=OverflowPolicy.DROP_NEWEST,
            max_buffer_size=1,
            statistics=SubscriptionStatistics(
                delivered=1, received=0, pending=1, dropped=1, max_buffer_size=1
            ),
        )
        with pytest.raises(AttributeError):
            infos[0].name = "x"  # type: ignore[misc]
        audit.drain()
        assert [i.name for i in broker.subscriptions()] == ["billing", "orders.>"]
    assert broker.subscriptions() == ()


@pytest.mark.parametrize(
    ("name", "error"), [("", ValueError), (3, TypeError), (b"x", TypeError)]
)
def test_a_bad_name_is_refused_at_the_call(
    name: object, error: type[Exception]
) -> None:
    broker = Broker(int)
    with pytest.raises(error, match="name"):
        broker.subscribe("a", name=name)  # type: ignore[arg-type]


async def test_drain_keeps_what_is_held_and_releases_publishers() -> None:
    """drain(): nothing more is routed, what is held is received, then the end.

    A publisher waiting on it returns normally.
    """
    broker = Broker(int)
    async with (
        broker.subscribe("a", max_buffer_size=1, policy=OverflowPolicy.BLOCK) as sub,
        trio.open_nursery() as nursery,
    ):
        broker.publish_nowait("a", 1)
        results: list[int] = []

        async def publisher() -> None:
            results.append(await broker.publish("a", 2))

        nursery.start_soon(publisher)
        await trio.testing.wait_all_tasks_blocked()
        sub.drain()
        sub.drain()  # idempotent
        await trio.testing.wait_all_tasks_blocked()
        assert results == [0]
        assert broker.publish_nowait("a", 3) == 0
        assert [m.payload async for m in sub] == [1]
        with pytest.raises(trio.EndOfChannel):
            await sub.receive()
