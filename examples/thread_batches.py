"""Many messages from threads in, in batches out: a market-data feed.

Two feed threads (stand-ins for a C library's callbacks, or a socket read
loop) publish ticks through ``broker.thread_publisher()``: each ``publish``
checks its message in the feed's thread and queues it, and the broker's trio
thread publishes the queue a batch at a time. The consumer takes what is
pending in batches too (``sub.batches(256)``), one checkpoint per batch. Its
subscription has the BLOCK policy and a buffer of 256: when it falls behind,
the queue fills and the feed threads wait, so no tick is lost.
"""

from __future__ import annotations

import threading
import time

import trio

from trio_pubsub import Broker, InvalidSubjectError, OverflowPolicy

TICKS = 50_000  # per feed


def feed(broker: Broker[float], symbol: str) -> None:
    """A feed thread: one tick after another, never awaiting anything."""
    with broker.thread_publisher(max_pending=1024) as publisher:
        for i in range(TICKS):
            publisher.publish(f"ticks.{symbol}", 100.0 + i / 100)
        try:
            publisher.publish("ticks.*", 0.0)
        except InvalidSubjectError as error:
            print(f"in the feed thread: {error}")
    # Leaving the block flushed it: every tick queued has been published.


async def main() -> None:
    broker = Broker(float)
    async with broker.subscribe(
        "ticks.>", policy=OverflowPolicy.BLOCK, max_buffer_size=256
    ) as ticks:
        threads = [
            threading.Thread(target=feed, args=(broker, symbol))
            for symbol in ("ACME", "INITECH")
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        last: dict[str, float] = {}
        in_order = True
        count = batches = 0
        async for batch in ticks.batches(256):
            batches += 1
            for tick in batch:
                in_order &= tick.payload > last.get(tick.subject, 0.0)
                last[tick.subject] = tick.payload
            count += len(batch)
            if count == 2 * TICKS:
                break
        elapsed = time.perf_counter() - started
        for thread in threads:
            await trio.to_thread.run_sync(thread.join)
    print(
        f"ticks: {count} of {2 * TICKS} in {batches} batches, in order per feed: "
        f"{in_order}"
    )
    print(f"dropped: {broker.statistics().dropped}")
    print(f"about {count / elapsed:,.0f} ticks/s on this machine")


if __name__ == "__main__":
    trio.run(main)
