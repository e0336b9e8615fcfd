"""Cancel a task at each of its checkpoints in turn and check that nothing breaks.

An instrument counts the steps of the task under test and cancels its scope at
step k, for k = 1, 2, ... until a run finishes without being cancelled, so every
checkpoint of subscription entry, publish (including its wait on a full BLOCK
subscription), receive, subscription exit and aclose is hit once.
"""

from __future__ import annotations

import trio
import trio.testing

from trio_pubsub import Broker, OverflowPolicy, Subscription
from trio_pubsub._broker import pipeline


class CancelAtStep(trio.abc.Instrument):
    def __init__(self, task: trio.lowlevel.Task, step: int, scope: trio.CancelScope):
        self.task = task
        self.step = step
        self.scope = scope
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1
            if self.steps == self.step:
                self.scope.cancel()


async def run_once(step: int) -> bool:
    """Run the scenario cancelled at ``step``; return whether it was cancelled."""
    broker = Broker(int)
    returned: list[int] = []  # payloads whose publish returned normally
    seen_by_blocking: list[int] = []
    mine_holder: list[Subscription[int]] = []
    cancelled = False

    async def consumer(blocking: Subscription[int]) -> None:
        async for message in blocking:
            await trio.sleep(1)  # slow: the publisher has to wait for room
            seen_by_blocking.append(message.payload)

    async def under_test() -> None:
        nonlocal cancelled
        with trio.CancelScope() as scope:
            instrument = CancelAtStep(trio.lowlevel.current_task(), step, scope)
            trio.lowlevel.add_instrument(instrument)
            try:
                async with broker.subscribe("t.>") as mine:
                    mine_holder.append(mine)
                    for payload in (1, 2):
                        await broker.publish("t.x", payload)
                        returned.append(payload)
                        assert (await mine.receive()).payload == payload
                await broker.aclose()
            finally:
                trio.lowlevel.remove_instrument(instrument)
        cancelled = scope.cancelled_caught

    async with broker.subscribe(
        "t.*", max_buffer_size=1, policy=OverflowPolicy.BLOCK
    ) as blocking:
        async with trio.open_nursery() as nursery:
            broker.publish_nowait("t.x", 0)  # full: the first publish must wait
            nursery.start_soon(consumer, blocking)
            await under_test()
            await broker.aclose()  # if the cancelled task did not get there
        blocking_stats = blocking.statistics()

    context = f"cancelled at step {step}"
    # BLOCK: every message whose publish returned was received, in order, once
    assert (
        seen_by_blocking[: len(returned) + 1] == [0, *returned][: len(seen_by_blocking)]
    )
    assert set(returned) <= set(seen_by_blocking), context
    assert len(seen_by_blocking) == len(set(seen_by_blocking)), context
    assert blocking_stats.dropped == 0, context
    # the subscription under test is gone, and its counters add up
    if mine_holder:
        stats = mine_holder[0].statistics()
        assert stats.pending == 0, context
        assert stats.received <= stats.delivered <= stats.received + stats.dropped
    totals = broker.statistics()
    assert totals.subscriptions == 0, context
    assert totals.published == 1 + len(returned), context
    assert pipeline(broker).routes.node_count() == 1, context
    return cancelled


async def test_cancel_at_every_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every step of the scenario, cancelled in turn, leaves everything consistent."""
    step = 1
    while True:
        # virtual time: a deadlock fails at this deadline instead of hanging
        with trio.fail_after(3600):
            if not await run_once(step):
                break
        step += 1
        assert step < 200, "the scenario never finished uncancelled"
    # the scenario has several checkpoints: entry, two publishes (one waits),
    # two receives, aclose
    assert step > 6
