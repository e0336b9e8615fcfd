"""Orders billed reliably: retries, a dead letter, a repeat skipped, order kept.

A shop publishes 30 orders from 5 customers. The billing handler charges each
through a payment gateway that fails now and then (a ConnectionError: worth
retrying after a pause). One order has a negative amount: charging it fails
every time with a ValueError, which is not retried, so it goes to the dead
letters at once, with headers that say who gave up on it, after how many
attempts, and why. One order is published twice (an at-least-once source
does that); the second copy is skipped as a duplicate by its ``order-id``.

Billing handles four orders at once, but one customer's orders one at a
time and in the order they were placed (``key=``): a customer's second
order is never charged before a first one that is still being retried.

It runs on trio's mock clock, so the retry delays pass in no real time; drop
the ``clock=`` argument at the bottom to run it in real time.
"""

from __future__ import annotations

import logging
import sys

import attrs
import trio
import trio.testing

from trio_pubsub import Broker, Message, Retry, Router


@attrs.frozen
class Order:
    """An order as the shop publishes it."""

    customer: str
    number: int
    amount: float


class Gateway:
    """A payment gateway that fails the first try of every third order."""

    def __init__(self) -> None:
        self.tries: dict[int, int] = {}
        self.charged: dict[str, list[int]] = {}

    async def charge(self, order: Order) -> None:
        """Charge ``order``: return once done, raise if it failed."""
        self.tries[order.number] = self.tries.get(order.number, 0) + 1
        await trio.sleep(0.02)  # the call over the network
        if order.amount < 0:
            raise ValueError(f"cannot charge a negative amount ({order.amount})")
        if order.number % 3 == 0 and self.tries[order.number] == 1:
            raise ConnectionError("gateway timed out")
        self.charged.setdefault(order.customer, []).append(order.number)


async def main() -> None:
    broker = Broker(Order)
    router = Router(broker)
    gateway = Gateway()

    @router.handler(
        "orders.*.placed",
        name="billing",
        concurrency=4,
        key=lambda message: message.payload.customer,
        retry=Retry(attempts=4, backoff=0.1, retry_on=(ConnectionError,)),
        timeout=5.0,
        dead_letter="dead",
        dedupe="order-id",
    )
    async def bill(message: Message[Order]) -> None:
        await gateway.charge(message.payload)

    async with broker.subscribe("dead.>", max_buffer_size=100) as dead_letters:
        async with trio.open_nursery() as nursery:
            await nursery.start(router.serve)
            customers = ["ada", "bob", "cy", "dee", "eve"]
            for number in range(1, 31):
                amount = -5.0 if number == 17 else 10.0 * number
                order = Order(customers[number % 5], number, amount)
                headers = {"order-id": f"o-{number}"}
                subject = f"orders.{number}.placed"
                await broker.publish(subject, order, headers=headers)
                if number == 8:  # delivered twice: the repeat is skipped
                    await broker.publish(subject, order, headers=headers)
            router.stop()  # finish what was published, then serve returns

        for _ in range(dead_letters.statistics().pending):
            letter = dead_letters.receive_nowait()
            print(f"dead letter on {letter.subject}:")
            for name in ("handler", "attempts", "error-type", "error", "subject"):
                print(f"  dead-letter-{name}: {letter.headers[f'dead-letter-{name}']}")
    in_order = all(numbers == sorted(numbers) for numbers in gateway.charged.values())
    print(f"each customer's orders charged in order: {in_order}")
    print(f"orders charged: {sum(len(n) for n in gateway.charged.values())} of 30")
    (stats,) = router.statistics()
    print(
        f"billing: received {stats.received}, handled {stats.handled}, "
        f"retried {stats.retried}, dead-lettered {stats.dead_lettered}, "
        f"duplicates {stats.duplicates}, failed {stats.failed}, "
        f"in flight {stats.in_flight}"
    )


if __name__ == "__main__":
    # one line per failed attempt and per dead letter (rate-limited)
    logging.basicConfig(format="log: %(message)s", stream=sys.stdout)
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
