"""An order service and four subscribers with four different needs.

* metrics   (orders.*.*)     may lose events under load: DROP_NEWEST
* billing   (orders.*.paid)  must see every payment: BLOCK slows the publisher down
* live feed (orders.>)       is cut off when it lags: DISCONNECT
* audit     (orders.>)       keeps everything in a large buffer

Each subscriber is a task that owns its subscription for as long as it runs.
Run it with ``make demo``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from trio_pubsub import (
    Broker,
    OverflowPolicy,
    SlowConsumerError,
    Subscription,
    SubscriptionStatistics,
)

ORDERS = 30


@dataclass(frozen=True)
class OrderEvent:
    """Something that happened to an order."""

    order_id: int
    kind: str  # created, paid or shipped
    amount_cents: int


async def order_service(broker: Broker[OrderEvent]) -> None:
    """Publish created, paid and shipped for each order, at a brisk pace."""
    for order_id in range(1, ORDERS + 1):
        amount = 500 + 137 * order_id % 4000
        for kind in ("created", "paid", "shipped"):
            event = OrderEvent(order_id, kind, amount)
            await broker.publish(f"orders.{order_id}.{kind}", event)
        await trio.sleep(0.005)
    print(f"order service: published {3 * ORDERS} events for {ORDERS} orders")


async def metrics(sub: Subscription[OrderEvent]) -> None:
    """A slow counter: it falls behind and its buffer drops the newest events."""
    counts: dict[str, int] = {}
    async for message in sub:
        counts[message.payload.kind] = counts.get(message.payload.kind, 0) + 1
        await trio.sleep(0.02)
    print(f"metrics: counted {sum(counts.values())} events by kind: {counts}")


async def billing(sub: Subscription[OrderEvent]) -> None:
    """Charges every paid order; BLOCK makes the publisher wait for it."""
    charged: list[int] = []
    async for message in sub:
        await trio.sleep(0.01)  # talking to the payment provider
        charged.append(message.payload.amount_cents)
    print(
        f"billing: charged {len(charged)} of {ORDERS} paid orders, "
        f"${sum(charged) / 100:,.2f} in total"
    )


async def live_feed(sub: Subscription[OrderEvent]) -> None:
    """Shows events on a slow screen; it is disconnected when it lags."""
    shown = 0
    try:
        async for message in sub:
            shown += 1
            if shown <= 3:
                print(f"live feed: {message.subject}")
            await trio.sleep(0.05)
    except SlowConsumerError:
        print(f"live feed: disconnected as a slow consumer after showing {shown}")


async def audit(sub: Subscription[OrderEvent]) -> None:
    """Writes every event down; its buffer is large enough for the whole run."""
    log = [message.subject async for message in sub]
    print(f"audit: recorded {len(log)} events, first {log[0]}, last {log[-1]}")


Report = dict[str, tuple[Subscription[OrderEvent], SubscriptionStatistics]]


async def subscriber(
    broker: Broker[OrderEvent],
    name: str,
    consume: Callable[[Subscription[OrderEvent]], Awaitable[None]],
    sub_options: tuple[str, int, OverflowPolicy],
    report: Report,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Subscribe, tell the nursery we are listening, consume, record counters."""
    pattern, max_buffer_size, policy = sub_options
    async with broker.subscribe(
        pattern, max_buffer_size=max_buffer_size, policy=policy, disconnect_after=3
    ) as sub:
        task_status.started()
        await consume(sub)
        report[name] = (sub, sub.statistics())


async def main() -> None:
    """Run the service and the subscribers, then print everyone's counters."""
    broker = Broker(OrderEvent)
    report: Report = {}
    async with trio.open_nursery() as nursery:
        for name, consume, options in [
            ("metrics", metrics, ("orders.*.*", 8, OverflowPolicy.DROP_NEWEST)),
            ("billing", billing, ("orders.*.paid", 4, OverflowPolicy.BLOCK)),
            ("live feed", live_feed, ("orders.>", 4, OverflowPolicy.DISCONNECT)),
            ("audit", audit, ("orders.>", 1000, OverflowPolicy.DROP_NEWEST)),
        ]:
            # start() returns once the subscription is registered: nothing the
            # service publishes from now on can miss it.
            await nursery.start(subscriber, broker, name, consume, options, report)
        await order_service(broker)
        # Every subscription drains what it holds, then its `async for` ends.
        await broker.aclose()

    print()
    header = ("subscriber", "pattern", "policy", "delivered", "received", "dropped")
    print("{:<10} {:<14} {:<12} {:>9} {:>8} {:>7}".format(*header))
    for name in ("metrics", "billing", "live feed", "audit"):  # in start order
        sub, stats = report[name]
        print(
            f"{name:<10} {sub.pattern:<14} {sub.policy.name:<12} "
            f"{stats.delivered:>9} {stats.received:>8} {stats.dropped:>7}"
        )
    totals = broker.statistics()
    print(
        f"\nbroker: published={totals.published} delivered={totals.delivered} "
        f"dropped={totals.dropped} disconnected={totals.disconnected}"
    )


if __name__ == "__main__":
    # Drop and disconnect warnings are rate-limited; show them beside the output.
    logging.basicConfig(
        stream=sys.stdout, format="  warning: %(message)s", level=logging.WARNING
    )
    trio.run(main)
