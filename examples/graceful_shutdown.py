"""Two ways to stop: drain (close the broker) or abort (cancel the consumers).

Drain: ``await broker.aclose()`` refuses new messages, and each subscription
delivers what it holds before its ``async for`` ends. Abort: cancelling the
consumers leaves their ``async with`` blocks at once; what they held is discarded
and counted as dropped, so nothing disappears without a trace.
"""

from __future__ import annotations

import trio

from trio_pubsub import Broker, BrokerClosedError


async def worker(
    broker: Broker[str], done: list[str], *, task_status: trio.TaskStatus[None]
) -> None:
    async with broker.subscribe("jobs.>", max_buffer_size=100) as sub:
        task_status.started()
        try:
            async for message in sub:
                await trio.sleep(0.01)  # the work
                done.append(message.payload)
        finally:
            stats = sub.statistics()
            print(
                f"  worker leaves: received {stats.received}, "
                f"pending {stats.pending}, dropped {stats.dropped}"
            )


async def drain() -> None:
    print("drain: close the broker, let the worker finish what it holds")
    broker = Broker(str)
    done: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(worker, broker, done)
        for i in range(10):
            await broker.publish(f"jobs.{i}", f"job {i}")
        await broker.aclose()
        try:
            await broker.publish("jobs.late", "too late")
        except BrokerClosedError as exc:
            print(f"  a publish after closing fails: {exc}")
    print(f"  jobs done: {len(done)} of 10")
    print(f"  broker: {broker.statistics()}")


async def abort() -> None:
    print("abort: cancel the worker, count what it did not get to")
    broker = Broker(str)
    done: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(worker, broker, done)
        for i in range(10):
            await broker.publish(f"jobs.{i}", f"job {i}")
        await trio.sleep(0.035)  # about three jobs' worth of time
        nursery.cancel_scope.cancel()
    print(f"  jobs done: {len(done)} of 10")
    print(f"  broker: {broker.statistics()}")


async def main() -> None:
    await drain()
    print()
    await abort()


if __name__ == "__main__":
    trio.run(main)
