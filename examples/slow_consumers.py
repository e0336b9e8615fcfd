"""The four overflow policies side by side, under the same overload.

For each policy, a publisher sends 200 messages as fast as it can to one
subscriber with a buffer of 10 that takes a message every millisecond. Each runs
on a broker of its own, so that BLOCK slowing its publisher down does not slow
the others. The table shows what each policy did with the overload. Once cut
off, a DISCONNECT subscription is no longer routed to, so the messages published
after that are not its drops.
"""

from __future__ import annotations

import logging

import trio

from trio_pubsub import Broker, OverflowPolicy, SlowConsumerError

MESSAGES = 200


async def run(policy: OverflowPolicy) -> str:
    broker = Broker(int, max_buffer_size=10, disconnect_after=5, policy=policy)
    received: list[int] = []
    ending = "drained, then ended"

    async def consumer(*, task_status: trio.TaskStatus[None]) -> None:
        nonlocal ending
        async with broker.subscribe("load") as sub:
            task_status.started()
            try:
                async for message in sub:
                    received.append(message.payload)
                    await trio.sleep(0.001)
            except SlowConsumerError:
                ending = "cut off as a slow consumer"
            stats = sub.statistics()
        assert stats.received == len(received)
        counters.append(stats.dropped)

    counters: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(consumer)
        start = trio.current_time()
        for i in range(MESSAGES):
            await broker.publish("load", i)
        took = (trio.current_time() - start) * 1000
        await broker.aclose()
    shown = f"{received[:3]} ... {received[-3:]}" if received else "[]"
    return (
        f"{policy.name:<12} {took:>8.0f} {len(received):>8} {counters[0]:>7}  "
        f"{ending}; received {shown}"
    )


async def main() -> None:
    print(f"{'policy':<12} {'pub. ms':>8} {'received':>8} {'dropped':>7}")
    for policy in OverflowPolicy:
        print(await run(policy))


if __name__ == "__main__":
    # Drop warnings are beside the point here: the table counts every drop.
    logging.getLogger("trio_pubsub").setLevel(logging.ERROR)
    trio.run(main)
