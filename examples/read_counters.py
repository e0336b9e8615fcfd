"""Read a broker's and a subscription's counters, and export them as a dict.

It runs on trio's mock clock, so the age of the oldest pending message is the
same every run; drop the ``clock=`` argument at the bottom to run it in real
time.
"""

from __future__ import annotations

import logging

import attrs
import trio
import trio.testing

from trio_pubsub import Broker


async def main() -> None:
    broker = Broker(int, max_buffer_size=3)
    async with broker.subscribe("metrics.>") as sub:
        for value in range(5):  # two more than the buffer holds
            broker.publish_nowait("metrics.cpu", value)
        sub.receive_nowait()
        await trio.sleep(1.5)  # the consumer is busy elsewhere

        stats = sub.statistics()
        print(f"subscription: {stats}")
        routed = stats.received + stats.pending + stats.dropped
        print(f"routed to it: {routed} = received + pending + dropped")
        print(
            f"held at most {stats.high_water} at once; the oldest pending "
            f"has waited {stats.oldest_pending_age} s"
        )

        totals = broker.statistics()
        print(f"broker: published={totals.published} dropped={totals.dropped}")
        # frozen attrs classes: a plain dict for a metrics exporter
        print(f"export: {attrs.asdict(totals)}")


if __name__ == "__main__":
    logging.getLogger("trio_pubsub").setLevel(logging.ERROR)
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
