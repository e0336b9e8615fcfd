"""Tutorial step 1: a typed broker, one subscription, one message."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from trio_pubsub import Broker


@dataclass(frozen=True)
class OrderEvent:
    """Something that happened to an order."""

    order_id: int
    kind: str  # created, paid or shipped
    amount_cents: int


async def main() -> None:
    broker = Broker(OrderEvent)  # a Broker[OrderEvent]: publish checks payloads
    async with broker.subscribe("orders.42.created") as sub:
        accepted = await broker.publish(
            "orders.42.created", OrderEvent(42, "created", 1999)
        )
        print(f"publish: {accepted} subscription took the message")
        message = await sub.receive()
        print(f"received on {message.subject}: {message.payload}")


if __name__ == "__main__":
    trio.run(main)
