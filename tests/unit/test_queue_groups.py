"""Queue groups: each message goes to one member of each group, rule by rule.

Every test runs with the match cache off, tiny and on (the ``cache_size``
fixture), because the cache holds the groups' targets.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TypeVar

import pytest
import trio
import trio.testing

from tests.helpers import drain
from trio_pubsub import (
    Broker,
    BrokerClosedError,
    OverflowPolicy,
    SlowConsumerError,
    Subscription,
)
from trio_pubsub._broker import pipeline

T = TypeVar("T")


def law_holds(sub: Subscription[T], routed: int) -> bool:
    stats = sub.statistics()
    return stats.received + stats.pending + stats.dropped == routed


async def test_a_fixed_set_of_members_takes_turns(cache_size: int) -> None:
    broker = Broker(int, match_cache_size=cache_size)
    async with AsyncExitStack() as stack:
        members = [
            await stack.enter_async_context(broker.subscribe("job", queue="workers"))
            for _ in range(3)
        ]
        for i in range(9):
            assert broker.publish_nowait("job", i) == 1  # a group counts once
        assert [drain(m) for m in members] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
        stats = broker.statistics()
        assert (stats.published, stats.delivered) == (9, 9)


async def test_plain_subscriptions_and_each_group_get_a_copy(cache_size: int) -> None:
    broker = Broker(int, match_cache_size=cache_size)
    async with (
        broker.subscribe("orders.>") as audit,
        broker.subscribe("orders.*", queue="billing") as bill_1,
        broker.subscribe("orders.*", queue="billing") as bill_2,
        broker.subscribe("orders.>", queue="mail") as mail,
    ):
        for i in range(4):
            assert await broker.publish(f"orders.{i}", i) == 3
        assert drain(audit) == [0, 1, 2, 3]
        assert (drain(bill_1), drain(bill_2)) == ([0, 2], [1, 3])
        assert drain(mail) == [0, 1, 2, 3]


async def test_a_group_spans_patterns(cache_size: int) -> None:
    """Members with different patterns share one group, as in NATS."""
    broker = Broker(int, match_cache_size=cache_size)
    async with (
        broker.subscribe("a.*", queue="g") as star,
        broker.subscribe("a.>", queue="g") as rest,
        broker.subscribe("b", queue="g") as other,
    ):
        # a.x reaches both star and rest: one copy, taking turns
        assert [broker.publish_nowait("a.x", i) for i in range(4)] == [1, 1, 1, 1]
        # a.x.y reaches rest only, b reaches other only
        assert broker.publish_nowait("a.x.y", 4) == 1
        assert broker.publish_nowait("b", 5) == 1
        assert (drain(star), drain(rest), drain(other)) == ([0, 2], [1, 3, 4], [5])


async def test_a_full_member_is_passed_over(cache_size: int) -> None:
    broker = Broker(int, match_cache_size=cache_size)
    async with (
        broker.subscribe("j", queue="w", max_buffer_size=1) as small,
        broker.subscribe("j", queue="w", max_buffer_size=10) as big,
    ):
        for i in range(5):
            broker.publish_nowait("j", i)
        # small took 0 and was full from then on: the rest went to big
        assert (drain(small), drain(big)) == ([0], [1, 2, 3, 4])
        # both have room again: small was routed to least recently, so it is
        # next; then it is full again and passed over again
        for i in range(5, 8):
            broker.publish_nowait("j", i)
        assert (drain(small), drain(big)) == ([5], [6, 7])
        assert small.statistics().dropped == big.statistics().dropped == 0


@pytest.mark.parametrize(
    ("policy", "kept_by_turn_member", "dropped"),
    [
        (OverflowPolicy.DROP_NEWEST, [0], 1),
        (OverflowPolicy.DROP_OLDEST, [2], 1),
    ],
)
async def test_with_no_room_anywhere_the_turn_members_policy_decides(
    cache_size: int,
    policy: OverflowPolicy,
    kept_by_turn_member: list[int],
    dropped: int,
) -> None:
    broker = Broker(int, match_cache_size=cache_size)
    async with (
        broker.subscribe("j", queue="w", max_buffer_size=1, policy=policy) as first,
        broker.subscribe("j", queue="w", max_buffer_size=1, policy=policy) as second,
    ):
        broker.publish_nowait("j", 0)  # first
        broker.publish_nowait("j", 1)  # second
        broker.publish_nowait("j", 2)  # no room: first's turn, first's policy
        assert first.statistics().dropped == dropped
        assert second.statistics().dropped == 0
        assert (drain(first), drain(second)) == (kept_by_turn_member, [1])
        assert law_holds(first, routed=2)
        assert law_holds(second, routed=1)
        assert broker.statistics().dropped == dropped


async def test_a_disconnect_group_cuts_off_the_turn_member(cache_size: int) -> None:
    broker = Broker(int, match_cache_size=cache_size)
    async with (
        broker.subscribe("j", queue="w", max_buffer_size=1, policy=OverflowPolicy.DISCONNECT) as first,
        broker.subscribe("j", queue="w", max_buffer_size=1, policy=OverflowPolicy.DISCONNECT) as second,
    ):  # fmt: skip
        for i in range(3):
            broker.publish_nowait("j", i)
        assert broker.statistics().disconnected == 1
        assert drain(first) == [0]
        with pytest.raises(SlowConsumerError):
            first.receive_nowait()
        # the group goes on with the member that is left
        broker.publish_nowait("j", 3)
        assert drain(second) == [1]
        assert second.statistics().dropped == 1  # 3: no room, its own turn


async def test_a_block_group_refuses_publish_nowait_when_every_member_is_full(
    cache_size: int,
) -> None:
    broker = Broker(int, match_cache_size=cache_size, policy=OverflowPolicy.BLOCK)
    async with (
        broker.subscribe("j", queue="w", max_buffer_size=1) as first,
        broker.subscribe("j", queue="w", max_buffer_size=1) as second,
        broker.subscribe("j") as plain,
    ):
        broker.publish_nowait("j", 0)
        broker.publish_nowait("j", 1)
        drain(plain)
        before = broker.statistics()
        with pytest.raises(trio.WouldBlock):
            broker.publish_nowait("j", 2)
        assert broker.statistics() == before
        assert drain(plain) == []  # all or nothing
        assert (drain(first), drain(second)) == ([0], [1])


async def test_a_block_group_makes_publish_wait_for_the_turn_member(
    cache_size: int, autojump_clock: trio.testing.MockClock
) -> None:
    broker = Broker(int, match_cache_size=cache_size, policy=OverflowPolicy.BLOCK)
    async with (
        broker.subscribe("j", queue="w", max_buffer_size=1) as first,
        broker.subscribe("j", queue="w", max_buffer_size=1) as second,
    ):
        await broker.publish("j", 0)
        await broker.publish("j", 1)
        done: list[int] = []

        async def publish_two() -> None:
            done.append(await broker.publish("j", 2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_two)
            await trio.sleep(1)
            assert done == []  # waiting for first, whose turn it is
            assert (await second.receive()).payload == 1
            await trio.sleep(1)
            assert done == []  # room in second does not end the wait for first
            assert (await first.receive()).payload == 0
        assert done == [1]
        assert drain(first) == [2]
        assert law_holds(first, routed=2)
        assert law_holds(second, routed=1)


async def test_when_the_awaited_member_leaves_another_member_gets_it(
    cache_size: int, autojump_clock: trio.testing.MockClock
) -> None:
    broker = Broker(int, match_cache_size=cache_size, policy=OverflowPolicy.BLOCK)
    async with broker.subscribe("j", queue="w", max_buffer_size=1) as stays:
        done: list[int] = []
        async with trio.open_nursery() as nursery:
            async with broker.subscribe("j", queue="w", max_buffer_size=1) as leaves:
                await broker.publish("j", 0)  # stays: the first to join
                await broker.publish("j", 1)  # leaves

                async def publish_two() -> None:
                    done.append(await broker.publish("j", 2))

                nursery.start_soon(publish_two)
                await trio.sleep(1)
                assert done == []  # waiting for stays, whose turn it is
                stays.close()
            # stays closed and leaves left: nobody is left, nothing delivered
            await trio.sleep(1)
        assert done == [0]
        assert leaves.statistics().dropped == 1  # its pending 1, discarded
        assert stays.statistics().dropped == 1  # its pending 0, discarded


async def test_a_wait_moves_on_to_a_member_that_stays(
    cache_size: int, autojump_clock: trio.testing.MockClock
) -> None:
    broker = Broker(int, match_cache_size=cache_size, policy=OverflowPolicy.BLOCK)
    async with broker.subscribe("j", queue="w", max_buffer_size=1) as stays:
        leaves_scope = broker.subscribe("j", queue="w", max_buffer_size=1)
        leaves = await leaves_scope.__aenter__()
        await broker.publish("j", 0)  # stays
        await broker.publish("j", 1)  # leaves
        done: list[int] = []

        async def publish_two() -> None:
            done.append(await broker.publish("j", 2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_two)
            await trio.sleep(1)
            leaves.close()  # not its turn: the publisher keeps waiting for stays
            await trio.sleep(1)
            assert done == []
            assert (await stays.receive()).payload == 0
        await leaves_scope.__aexit__(None, None, None)
        assert done == [1]
        assert drain(stays) == [2]

        # Now the awaited member leaves while the other one has room.
        async with broker.subscribe("j", queue="w", max_buffer_size=1) as newcomer:
            await broker.publish("j", 3)  # stays: newcomer joined behind it
            await broker.publish("j", 4)  # newcomer
            later: list[int] = []

            async def publish_five() -> None:
                # both full: the turn of stays (routed to less recently), so it waits
                later.append(await broker.publish("j", 5))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_five)
                await trio.sleep(1)
                assert drain(newcomer) == [4]  # room in newcomer; the wait is on stays
                await trio.sleep(1)
                assert later == []
                stays.close()  # it left: the message goes to newcomer after all
            assert later == [1]
            assert drain(newcomer) == [5]
            assert stays.statistics().dropped == 1  # its pending 3, discarded


async def test_a_closing_broker_wakes_a_publisher_waiting_on_a_group(
    cache_size: int, autojump_clock: trio.testing.MockClock
) -> None:
    broker = Broker(int, match_cache_size=cache_size, policy=OverflowPolicy.BLOCK)
    async with broker.subscribe("j", queue="w", max_buffer_size=1) as member:
        await broker.publish("j", 0)

        async def publish_one() -> None:
            with pytest.raises(BrokerClosedError, match="queue group 'w'"):
                await broker.publish("j", 1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_one)
            await trio.sleep(1)
            await broker.aclose()
        assert drain(member) == [0]
        assert law_holds(member, routed=1)


async def test_a_publish_due_to_wait_on_a_group_when_the_broker_closes_raises(
    cache_size: int, autojump_clock: trio.testing.MockClock
) -> None:
    """Closed after waiting on an earlier target, before reaching the group."""
    broker = Broker(int, match_cache_size=cache_size, policy=OverflowPolicy.BLOCK)
    async with (
        broker.subscribe("j", max_buffer_size=1) as plain,
        broker.subscribe("j", queue="w", max_buffer_size=1) as member,
    ):
        await broker.publish("j", 0)

        async def publish_one() -> None:
            with pytest.raises(BrokerClosedError, match="queue group 'w'"):
                await broker.publish("j", 1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_one)
            await trio.sleep(1)  # waiting on plain, then due to wait on the group
            assert plain.receive_nowait().payload == 0  # 1 goes to plain...
            await broker.aclose()  # ...and the broker closes before the group
        assert drain(plain) == [1]
        assert drain(member) == [0]


async def test_a_cancelled_wait_routes_nothing(
    cache_size: int, autojump_clock: trio.testing.MockClock
) -> None:
    broker = Broker(int, match_cache_size=cache_size, policy=OverflowPolicy.BLOCK)
    async with broker.subscribe("j", queue="w", max_buffer_size=1) as member:
        await broker.publish("j", 0)
        before = broker.statistics()
        with trio.move_on_after(1):
            await broker.publish("j", 1)
        assert broker.statistics() == before
        assert drain(member) == [0]
        assert law_holds(member, routed=1)


async def test_a_member_entering_during_a_wait_does_not_get_that_message(
    cache_size: int, autojump_clock: trio.testing.MockClock
) -> None:
    broker = Broker(int, match_cache_size=cache_size, policy=OverflowPolicy.BLOCK)
    async with broker.subscribe("j", queue="w", max_buffer_size=1) as old:
        await broker.publish("j", 0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker.publish, "j", 1)
            await trio.sleep(1)
            async with broker.subscribe("j", queue="w") as new:
                await trio.sleep(1)
                assert drain(new) == []  # not in the snapshot of the waiting publish
                assert old.receive_nowait().payload == 0  # room: 1 goes in at once
                assert drain(old) == [1]
                # new joined after old was routed 1: old's turn, then new's
                await broker.publish("j", 2)
                await broker.publish("j", 3)
                assert (drain(old), drain(new)) == ([2], [3])


async def test_a_group_starts_afresh_after_its_last_member_left(
    cache_size: int,
) -> None:
    broker = Broker(int, match_cache_size=cache_size)
    async with broker.subscribe("j", queue="w") as lone:
        broker.publish_nowait("j", 0)
        assert drain(lone) == [0]
    assert broker.statistics().subscriptions == 0
    broker.publish_nowait("j", 1)  # nobody: the cached group target is gone too
    async with (
        broker.subscribe("j", queue="w") as first,
        broker.subscribe("j", queue="w") as second,
    ):
        broker.publish_nowait("j", 2)
        broker.publish_nowait("j", 3)
        assert (drain(first), drain(second)) == ([2], [3])
    assert pipeline(broker).routes.groups == {}


async def test_joining_and_leaving_update_cached_routes(cache_size: int) -> None:
    """A member joining or leaving changes the routes of subjects seen before."""
    broker = Broker(int, match_cache_size=cache_size)
    async with broker.subscribe("a.>", queue="g") as first:
        for subject in ("a.x", "a.y", "b.z"):
            broker.publish_nowait(subject, 0)
        drain(first)
        async with broker.subscribe("a.*", queue="g") as second:
            broker.publish_nowait("a.x", 1)  # first
            broker.publish_nowait("a.y", 2)  # second, which joined behind it
            assert (drain(first), drain(second)) == ([1], [2])
            async with broker.subscribe("a.x", queue="g") as third:
                for payload in (3, 4, 5):
                    broker.publish_nowait("a.x", payload)
                broker.publish_nowait("a.y", 6)  # third does not match a.y
                assert (drain(first), drain(second), drain(third)) == ([3, 6], [4], [5])
            broker.publish_nowait("a.x", 7)  # second: routed to least recently
            assert drain(second) == [7]
        broker.publish_nowait("a.x", 8)
        broker.publish_nowait("a.y", 9)
        assert drain(first) == [8, 9]


async def test_group_members_and_plain_subscriptions_keep_their_counters(
    cache_size: int,
) -> None:
    broker = Broker(int, match_cache_size=cache_size, max_buffer_size=2)
    async with (
        broker.subscribe("s.>", queue="q") as member_a,
        broker.subscribe("s.*", queue="q") as member_b,
        broker.subscribe(">") as everything,
    ):
        accepted = [broker.publish_nowait(f"s.{i % 3}", i) for i in range(10)]
        # Each publish was routed to one member (taking turns, full or not) and
        # to the plain subscription; three buffers of 2 took 6 copies.
        assert accepted == [2, 2, 1, 1, 0, 0, 0, 0, 0, 0]
        assert law_holds(member_a, routed=5)
        assert law_holds(member_b, routed=5)
        assert law_holds(everything, routed=10)
        broker_stats = broker.statistics()
        assert broker_stats.delivered == 6
        assert broker_stats.dropped == 20 - 6


def test_a_queue_name_is_checked_at_subscribe() -> None:
    broker = Broker[int]()
    for bad in ("", " ", "a b", "tab\there", "new\nline"):
        with pytest.raises(ValueError, match="queue name") as caught:
            broker.subscribe("a", queue=bad)
        assert repr(bad) in str(caught.value)
    with pytest.raises(TypeError, match="queue must be a str or None, not int: 5"):
        broker.subscribe("a", queue=5)  # type: ignore[arg-type]
    assert broker.statistics().subscriptions == 0


async def test_a_queue_name_may_hold_dots_and_wildcard_characters() -> None:
    broker = Broker[int]()
    async with broker.subscribe("a", queue="billing.v2.*>") as sub:
        assert sub.queue == "billing.v2.*>"
        assert "queue='billing.v2.*>'" in repr(sub)
        broker.publish_nowait("a", 1)
        assert drain(sub) == [1]
    async with broker.subscribe("a") as plain:
        assert plain.queue is None
        assert "queue" not in repr(plain)


async def test_an_idle_member_is_chosen_before_a_busy_one_issue_17() -> None:
    """An idle member (a receiver waiting) first; else the fewest pending.

    The idle member gets it even if it was routed a message more recently.
    """
    broker = Broker(int, max_buffer_size=10)
    async with (
        broker.subscribe("j", queue="w") as first,
        broker.subscribe("j", queue="w") as second,
        trio.open_nursery() as nursery,
    ):
        broker.publish_nowait("j", 0)  # to first (least recently routed)
        got: list[int] = []

        async def idle() -> None:
            got.append((await second.receive()).payload)

        nursery.start_soon(idle)
        await trio.testing.wait_all_tasks_blocked()
        broker.publish_nowait("j", 1)  # second waits: it gets it at once
        await trio.testing.wait_all_tasks_blocked()
        assert got == [1]
        broker.publish_nowait("j", 2)  # first holds 1, second 0: second
        broker.publish_nowait("j", 3)  # 1 each: least recently routed, first
        broker.publish_nowait("j", 4)  # first 2, second 1: second
        assert [first.receive_nowait().payload for _ in range(2)] == [0, 3]
        assert [second.receive_nowait().payload for _ in range(2)] == [2, 4]


async def latencies_queue_group(jobs: int) -> list[float]:
    """Seconds from publish to done, for a 1 ms and a 100 ms worker in a group."""
    broker = Broker(float, max_buffer_size=1000)
    done: list[float] = []

    async def worker(sub: Subscription[float], seconds: float) -> None:
        async for message in sub:
            await trio.sleep(seconds)
            done.append(trio.current_time() - message.payload)

    async with (
        broker.subscribe("job", queue="w") as slow,
        broker.subscribe("job", queue="w") as fast,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(worker, slow, 0.1)
        nursery.start_soon(worker, fast, 0.001)
        for _ in range(jobs):
            await broker.publish("job", trio.current_time())
            await trio.sleep(0.01)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    return done


async def latencies_shared_channel(jobs: int) -> list[float]:
    """The same workers pulling from one trio memory channel."""
    send, receive = trio.open_memory_channel[float](1000)
    done: list[float] = []

    async def worker(seconds: float) -> None:
        async for published in receive:
            await trio.sleep(seconds)
            done.append(trio.current_time() - published)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker, 0.1)
        nursery.start_soon(worker, 0.001)
        for _ in range(jobs):
            await send.send(trio.current_time())
            await trio.sleep(0.01)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    return done


async def test_a_slow_member_does_not_hold_work_back_issue_17(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 1 ms and a 100 ms worker, a job every 10 ms (virtual time).

    The group does as well as one shared trio channel: before, it pushed work
    to the busy slow worker while the fast one sat idle (mean 21 to 54 ms, max
    200 to 490 ms, against 10.4 and 100 for the channel).
    """
    ours = await latencies_queue_group(200)
    theirs = await latencies_shared_channel(200)
    assert len(ours) == len(theirs) == 200
    mean_ours, mean_theirs = sum(ours) / 200, sum(theirs) / 200
    assert mean_ours <= mean_theirs * 1.1
    assert max(ours) <= max(theirs) + 0.002
