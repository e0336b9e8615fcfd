"""Ctrl-C or SIGTERM drains the broker: every job already accepted is done.

Under plain ``trio.run``, Ctrl-C raises KeyboardInterrupt, which unwinds the
program like a cancellation: subscriptions leave at once and what they held
is counted as dropped (an abort). To drain instead, catch the signals with
``trio.open_signal_receiver`` and close the broker: publishers stop, and every
subscription hands over what it holds before its ``async for`` ends.

Run it and press Ctrl-C (or ``kill -TERM`` it). ``--stop-after SECONDS`` sends
the process a real SIGINT itself after that long, for unattended runs.
"""

from __future__ import annotations

import os
import signal
import sys

import trio

from trio_pubsub import Broker, BrokerClosedError, OverflowPolicy, Subscription


async def worker(sub: Subscription[int], done: list[int]) -> None:
    async for message in sub:  # ends once the broker is closed and it is drained
        await trio.sleep(0.002)  # the work itself
        done.append(message.payload)


async def producer(broker: Broker[int], published: list[int]) -> None:
    job = 0
    try:
        while True:
            await broker.publish("jobs", job)  # BLOCK: waits while the worker is busy
            published.append(job)
            job += 1
    except BrokerClosedError:
        pass  # closed: this job was not accepted, and is not counted


async def main(stop_after: float | None) -> None:
    broker = Broker(int)
    published: list[int] = []
    done: list[int] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            broker.subscribe(
                "jobs", policy=OverflowPolicy.BLOCK, max_buffer_size=50
            ) as sub,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(worker, sub, done)
            nursery.start_soon(producer, broker, published)
            print("ready: press Ctrl-C to drain and stop", flush=True)
            if stop_after is not None:
                await trio.sleep(stop_after)
                os.kill(os.getpid(), signal.SIGINT)
            async for signum in signals:
                print(f"got {signal.Signals(signum).name}: draining", flush=True)
                await broker.aclose()
                break
    print(f"jobs accepted: {len(published)}, done: {len(done)}")
    print(f"every accepted job was done: {done == published}")
    print(f"dropped: {broker.statistics().dropped}")


if __name__ == "__main__":
    stop = float(sys.argv[2]) if sys.argv[1:2] == ["--stop-after"] else None
    trio.run(main, stop)
