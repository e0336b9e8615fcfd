"""The smallest useful program: one wildcard subscription, one policy."""

from __future__ import annotations

import trio

from trio_pubsub import Broker, OverflowPolicy


async def main() -> None:
    broker = Broker(str)  # a Broker[str]; publish checks that payloads are str
    async with broker.subscribe(
        "orders.*.created", max_buffer_size=100, policy=OverflowPolicy.BLOCK
    ) as sub:
        await broker.publish("orders.42.created", "order 42 was created")
        await broker.publish("orders.42.shipped", "not matched by the pattern")
        message = await sub.receive()
        print(f"{message.subject}: {message.payload}")
        stats = sub.statistics()
        print(f"delivered {stats.delivered}, dropped {stats.dropped}")


trio.run(main)
