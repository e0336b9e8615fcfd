"""Tutorial step 3: give each subscriber the overflow policy it needs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from trio_pubsub import Broker, OverflowPolicy


@dataclass(frozen=True)
class OrderEvent:
    """Something that happened to an order."""

    order_id: int
    kind: str  # created, paid or shipped
    amount_cents: int


async def subscriber(
    broker: Broker[OrderEvent],
    name: str,
    pattern: str,
    policy: OverflowPolicy,
    buffer: int,
    seconds_per_message: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with broker.subscribe(pattern, max_buffer_size=buffer, policy=policy) as sub:
        task_status.started()
        async for _ in sub:
            await trio.sleep(seconds_per_message)  # the subscriber's work
        stats = sub.statistics()
    print(
        f"{name:<8} {policy.name:<12} received {stats.received:>3}, "
        f"dropped {stats.dropped:>3}"
    )


async def main() -> None:
    broker = Broker(OrderEvent)
    async with trio.open_nursery() as nursery:
        # slow metrics may lose events; slow billing must not (BLOCK makes the
        # publisher wait for it); fast audit has room for everything
        for name, pattern, policy, buffer, pace in [
            ("metrics", "orders.>", OverflowPolicy.DROP_NEWEST, 5, 0.01),
            ("billing", "orders.*.paid", OverflowPolicy.BLOCK, 5, 0.01),
            ("audit", "orders.>", OverflowPolicy.DROP_NEWEST, 1000, 0),
        ]:
            await nursery.start(subscriber, broker, name, pattern, policy, buffer, pace)
        for order_id in range(50):
            for kind in ("created", "paid"):
                event = OrderEvent(order_id, kind, 500)
                await broker.publish(f"orders.{order_id}.{kind}", event)
        await broker.aclose()
    print(f"broker   {broker.statistics()}")


if __name__ == "__main__":
    logging.getLogger("trio_pubsub").setLevel(logging.ERROR)  # the table says it all
    trio.run(main)
