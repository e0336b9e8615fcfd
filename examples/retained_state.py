"""Retained messages: the current configuration for components that start late.

A config service publishes each setting with ``retain=True``. A component that
subscribes later first receives the current value of every setting its
pattern matches, in subject order, and then the live updates, with none missed
and none twice. ``broker.retained()`` reads the store, ``clear_retained()``
forgets a subject.
"""

from __future__ import annotations

import trio

from trio_pubsub import Broker

SETTINGS = {
    "config.db.host": "db1.internal",
    "config.db.port": "5432",
    "config.log.level": "info",
    "status.api": "up",
}


async def main() -> None:
    broker = Broker(str, max_retained=1000)
    for subject, value in SETTINGS.items():
        await broker.publish(subject, value, retain=True)

    # A component starting later: it subscribes and gets the current config.
    async with broker.subscribe("config.>") as config:
        await broker.publish("config.log.level", "debug", retain=True)  # live
        for _ in range(4):
            message = await config.receive()
            print(f"{message.subject:<18} = {message.payload}")

    print(
        "retained now:",
        [(m.subject, m.payload) for m in broker.retained("config.log.*")],
    )
    broker.clear_retained("status.api")
    stats = broker.statistics()
    print(f"subjects retained: {stats.retained}, evicted: {stats.retained_evicted}")


if __name__ == "__main__":
    trio.run(main)
