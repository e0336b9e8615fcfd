"""Publishing from threads: a foreign thread's callback and a trio worker thread.

A stand-in for a C library calls back from a thread of its own with sensor
readings; a blocking job runs in ``trio.to_thread.run_sync``. Both publish
with ``publish_from_thread``, which runs the publish in the broker's trio run
and blocks the calling thread until it is done: here the subscription has the
BLOCK policy and a buffer of 2, so the sensor thread is held back whenever the
consumer is behind, and no reading is lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import trio

from trio_pubsub import Broker, OverflowPolicy

READINGS = 10


def sensor_driver(on_reading: Callable[[float], None]) -> None:
    """What a foreign library does: call back from its own thread."""
    for i in range(READINGS):
        on_reading(20.0 + i / 10)


def resize_image(broker: Broker[float], size: int) -> int:
    time.sleep(0.01)  # blocking work, off the trio thread
    return broker.publish_from_thread("jobs.resize.done", float(size))


async def main() -> None:
    broker = Broker(float)
    async with broker.subscribe(
        ">", policy=OverflowPolicy.BLOCK, max_buffer_size=2
    ) as events:

        def on_reading(celsius: float) -> None:
            broker.publish_from_thread("sensors.temperature", celsius)

        sensor = threading.Thread(target=sensor_driver, args=(on_reading,))
        sensor.start()
        received = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, resize_image, broker, 640)
            for _ in range(READINGS + 1):
                received.append(await events.receive())
                await trio.sleep(0.002)  # a consumer slower than the sensor
        await trio.to_thread.run_sync(sensor.join)

    temperatures = [m.payload for m in received if m.subject.startswith("sensors.")]
    jobs = [m.payload for m in received if m.subject.startswith("jobs.")]
    print(
        f"readings: {len(temperatures)} of {READINGS}, in order: "
        f"{temperatures == sorted(temperatures)}"
    )
    print(f"first and last: {temperatures[0]:.1f} ... {temperatures[-1]:.1f} °C")
    print(f"resize jobs done: {jobs}")
    print(f"dropped: {broker.statistics().dropped}")
    try:
        broker.publish_from_thread("sensors.temperature", 0.0)
    except RuntimeError as error:
        print(f"from the trio thread itself: RuntimeError: {error}")


if __name__ == "__main__":
    trio.run(main)
