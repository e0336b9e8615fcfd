"""Many publishers and subscribers on real trio tasks, under the autojump clock.

Random pauses and cancellations come from a seeded generator, so a failure names
the seed that reproduces its workload.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
import trio
import trio.testing

from trio_pubsub import (
    Broker,
    BrokerClosedError,
    OverflowPolicy,
    SlowConsumerError,
    subject_matches,
)

SEEDS = range(12)
PUBLISHERS = 4
MESSAGES = 60
SUBJECTS = ["orders.a.created", "orders.b.created", "orders.a.paid", "metrics.cpu"]
PATTERNS = ["orders.>", "orders.*.created", "orders.a.paid", ">", "metrics.*"]


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_schedule_keeps_every_promise(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    """No duplicates, per-publisher order, nothing lost for BLOCK, the law holds."""
    rng = random.Random(seed)
    broker = Broker[tuple[int, int]](max_buffer_size=4)
    # (publisher, sequence) pairs whose publish returned normally, by subject
    published: dict[str, list[tuple[int, int]]] = defaultdict(list)
    results = []

    async def publisher(index: int) -> None:
        for seq in range(MESSAGES):
            subject = rng.choice(SUBJECTS)
            with trio.CancelScope() as scope:
                if rng.random() < 0.1:
                    scope.deadline = trio.current_time() + rng.random() * 0.01
                try:
                    await broker.publish(subject, (index, seq))
                except BrokerClosedError:
                    return
                published[subject].append((index, seq))
            await trio.sleep(rng.random() * 0.01)

    async def subscriber(
        pattern: str, policy: OverflowPolicy, lifetime: float, delay: float = 0.0
    ) -> None:
        # a delayed subscriber enters while publishers are running (and waiting)
        await trio.sleep(delay)
        got: list[tuple[str, tuple[int, int]]] = []
        error: BaseException | None = None
        scope_of_sub = broker.subscribe(
            pattern,
            policy=policy,
            max_buffer_size=rng.randint(1, 4),
            disconnect_after=rng.randint(1, 3),
        )
        with trio.move_on_after(lifetime) as scope:
            async with scope_of_sub as sub:
                try:
                    async for message in sub:
                        got.append((message.subject, message.payload))
                        await trio.sleep(rng.random() * 0.02)
                except SlowConsumerError as exc:
                    error = exc
        stats = sub.statistics()
        partial = scope.cancelled_caught or delay > 0  # did not see every publish
        results.append((pattern, policy, got, stats, error, partial))

    async def run_schedule() -> None:
        async with trio.open_nursery() as nursery:
            for policy in [*OverflowPolicy, *OverflowPolicy]:  # two of each
                lifetime = rng.choice([0.05, 0.3, 100.0])
                nursery.start_soon(subscriber, rng.choice(PATTERNS), policy, lifetime)
            for policy in OverflowPolicy:  # and one of each that enters late
                delay = rng.random() * 0.2
                nursery.start_soon(
                    subscriber, rng.choice(PATTERNS), policy, 100.0, delay
                )
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as publishers:
                for index in range(PUBLISHERS):
                    publishers.start_soon(publisher, index)
            await broker.aclose()

    # Virtual time under the autojump clock: a deadlock jumps straight to this
    # deadline and fails with TooSlowError instead of hanging the test run.
    with trio.fail_after(3600):
        await run_schedule()

    assert results, f"seed {seed}: no subscriber finished"
    for pattern, policy, got, stats, error, partial in results:
        context = f"seed {seed}, {pattern!r} {policy.name}"
        payloads = [payload for _, payload in got]
        assert len(payloads) == len(set(payloads)), f"{context}: duplicate"
        for index in range(PUBLISHERS):
            sequence = [seq for who, seq in payloads if who == index]
            assert sequence == sorted(sequence), f"{context}: out of order"
        assert stats.received == len(got), context
        # leaving the block discarded whatever was pending, as dropped
        assert stats.pending == 0, context
        # delivered = received + pending + evicted + discarded, and the evicted
        # and discarded ones are part of dropped
        assert stats.received <= stats.delivered <= stats.received + stats.dropped, (
            context
        )
        if policy is OverflowPolicy.BLOCK:
            assert stats.dropped == 0 or partial, f"{context}: BLOCK dropped"
            if not partial:
                # it lived through every publish: it has every message whose
                # publish returned normally on a subject it matches
                expected = {
                    p
                    for s, ps in published.items()
                    for p in ps
                    if subject_matches(pattern, s)
                }
                assert expected <= set(payloads), (
                    f"{context}: lost {sorted(expected - set(payloads))}"
                )
        if error is not None:
            assert policy is OverflowPolicy.DISCONNECT, context
    totals = broker.statistics()
    assert totals.subscriptions == 0
    assert totals.published == sum(len(v) for v in published.values())
