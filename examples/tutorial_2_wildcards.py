"""Tutorial step 2: three subscribers, each a task, routed by wildcards."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from trio_pubsub import Broker, Subscription


@dataclass(frozen=True)
class OrderEvent:
    """Something that happened to an order."""

    order_id: int
    kind: str  # created, paid or shipped
    amount_cents: int


async def listener(
    broker: Broker[OrderEvent],
    name: str,
    pattern: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with broker.subscribe(pattern) as sub:
        task_status.started()  # subscribed: the publisher may start
        await show(name, sub)


async def show(name: str, sub: Subscription[OrderEvent]) -> None:
    async for message in sub:  # ends once the broker is closed and drained
        print(f"{name:<8} got {message.subject}")


async def main() -> None:
    broker = Broker(OrderEvent)
    async with trio.open_nursery() as nursery:
        await nursery.start(listener, broker, "created", "orders.*.created")
        await nursery.start(listener, broker, "order 7", "orders.7.>")
        await nursery.start(listener, broker, "all", "orders.>")
        for order_id in (7, 8):
            for kind in ("created", "paid"):
                event = OrderEvent(order_id, kind, 500)
                await broker.publish(f"orders.{order_id}.{kind}", event)
        await broker.aclose()  # the listeners drain what they hold, then stop


if __name__ == "__main__":
    trio.run(main)
