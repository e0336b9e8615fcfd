"""A subscription says at once when the broker stops routing to it (issue 30).

Before, a task busy elsewhere learned that ``DISCONNECT`` had cut its
subscription off only after draining what it still held (a live-feed server
noticed a cut-off client 2.8 s late), and the state showed only in ``repr``.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_pubsub import Broker, OverflowPolicy, SlowConsumerError, SubscriptionState


async def test_a_cut_off_is_seen_at_once_while_messages_are_pending() -> None:
    broker = Broker[int]()
    seen: list[tuple[SubscriptionState, int]] = []
    async with (
        broker.subscribe(
            "feed", max_buffer_size=8, policy=OverflowPolicy.DISCONNECT
        ) as sub,
        trio.open_nursery() as nursery,
    ):

        async def watch() -> None:
            state = await sub.wait_stopped()
            seen.append((state, sub.statistics().pending))

        nursery.start_soon(watch)
        await trio.testing.wait_all_tasks_blocked()
        before = sub.state
        for i in range(8):
            broker.publish_nowait("feed", i)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == []  # full, but still routed to
        broker.publish_nowait("feed", 8)  # one drop: cut off
        await trio.testing.wait_all_tasks_blocked()
        # the watcher knows, with all 8 messages still to drain
        assert seen == [(SubscriptionState.CUT_OFF, 8)]
        assert (before, sub.state) == (
            SubscriptionState.OPEN,
            SubscriptionState.CUT_OFF,
        )
        got = [(await sub.receive()).payload for _ in range(8)]
        assert got == list(range(8))
        with pytest.raises(SlowConsumerError):
            await sub.receive()


@pytest.mark.parametrize("how", ["drain", "aclose", "leave", "close"])
async def test_every_way_to_stop_wakes_the_waiters(how: str) -> None:
    broker = Broker[int]()
    states: list[SubscriptionState] = []
    async with trio.open_nursery() as nursery:
        async with broker.subscribe("a") as sub:

            async def watch() -> None:
                states.append(await sub.wait_stopped())

            nursery.start_soon(watch)
            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            assert states == []
            if how == "drain":
                sub.drain()
            elif how == "aclose":
                await broker.aclose()
            elif how == "close":
                sub.close()
            if how != "leave":
                await trio.testing.wait_all_tasks_blocked()
                assert len(states) == 2
        await trio.testing.wait_all_tasks_blocked()
    expected = {
        "drain": SubscriptionState.DRAINED,
        "aclose": SubscriptionState.ENDED,
        "leave": SubscriptionState.CLOSED,
        "close": SubscriptionState.CLOSED,
    }[how]
    assert states == [expected, expected]
    assert sub.state is SubscriptionState.CLOSED  # left its block at last


async def test_waiting_on_a_stopped_subscription_is_a_checkpoint() -> None:
    broker = Broker[int]()
    async with broker.subscribe("a") as sub:
        sub.drain()
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await sub.wait_stopped()  # cancelled at its checkpoint
        assert await sub.wait_stopped() is SubscriptionState.DRAINED


async def test_a_cancelled_wait_leaves_nothing_behind() -> None:
    broker = Broker[int]()
    async with broker.subscribe("a") as sub, trio.open_nursery() as nursery:
        nursery.start_soon(sub.wait_stopped)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    async with broker.subscribe("a") as sub:
        assert sub.state is SubscriptionState.OPEN
        assert broker.publish_nowait("a", 1) == 1
        assert sub.receive_nowait().payload == 1
