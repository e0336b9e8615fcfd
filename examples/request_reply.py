"""Request/reply: ask a question on a subject, get the first answer back.

A price service of two workers in the queue group "pricing" answers requests on
``prices.get``: each request goes to one of them, which answers with
``await request.respond(...)``. The shop asks for three prices, then shows the
two ways a request can fail: nobody listens on the subject (NoRespondersError,
at once), or nobody answers in time (trio.TooSlowError). Nothing of a request
stays in the broker afterwards.

It runs on trio's mock clock, so the timings are exact and the run takes no
real time; drop the ``clock=`` argument at the bottom to run it in real time.
"""

from __future__ import annotations

import attrs
import trio
import trio.testing

from trio_pubsub import Broker, NoRespondersError


@attrs.frozen
class Ask:
    """A request for the price of one item."""

    sku: str


@attrs.frozen
class Price:
    """The answer: an item's price."""

    sku: str
    cents: int


CATALOGUE = {"tea": 450, "cup": 1200, "pot": 3900}


async def price_worker(
    broker: Broker[Ask | Price], name: str, *, task_status: trio.TaskStatus[None]
) -> None:
    """Answer price requests, as one member of the queue group "pricing"."""
    async with broker.subscribe("prices.get", queue="pricing") as requests:
        task_status.started()
        async for request in requests:
            ask = request.payload
            assert isinstance(ask, Ask)
            if ask.sku not in CATALOGUE:
                continue  # not ours to answer: the asker times out
            await trio.sleep(0.002)  # look the price up
            await request.respond(
                Price(ask.sku, CATALOGUE[ask.sku]), headers={"worker": name}
            )


async def main() -> None:
    broker: Broker[Ask | Price] = Broker(Ask | Price)
    async with trio.open_nursery() as nursery:
        for name in ("pricing-1", "pricing-2"):
            await nursery.start(price_worker, broker, name)

        for sku in ("tea", "cup", "pot"):
            start = trio.current_time()
            answer = await broker.request("prices.get", Ask(sku), timeout=1.0)
            price = answer.payload
            assert isinstance(price, Price)
            waited = (trio.current_time() - start) * 1000
            print(
                f"{sku}: {price.cents / 100:5.2f} from {answer.headers['worker']}"
                f" in {waited:.0f} ms"
            )

        try:
            await broker.request("stock.get", Ask("tea"), timeout=1.0)
        except NoRespondersError as error:
            print(f"stock.get: {error}")

        try:
            await broker.request("prices.get", Ask("spoon"), timeout=0.5)
        except trio.TooSlowError:
            print("spoon: no answer within 0.5 s")

        print(f"requests still waiting: {broker.statistics().requests_waiting}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
