"""A bridged process for the cross-process tests: ``python -m tests.bridge.child``.

``worker URL NAME``: import ``jobs.>`` in queue group ``workers`` and
``control.stop`` outside it; print ``ready``, then, after the stop message,
one JSON line with the payloads it got.

``sigint URL``: export and import ``tick.>``, publish a tick every 10 ms, print
``ready`` and wait for Ctrl-C; then print the bridge's statistics and exit 0.

``mirror URL``: export ``loop.>`` through one bridge and import it through
another; print ``ready``, then, after ``loop.stop``, one JSON line with the
payloads it got and how many messages its export sent.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio

from trio_pubsub import Broker
from trio_pubsub.nats import decode_json, encode_json, open_bridge

JSON: dict[str, Any] = {"encode": encode_json, "decode": decode_json}


async def worker(url: str) -> None:
    broker = Broker[Any]()
    got: list[int] = []
    async with (
        open_bridge(broker, url, inbound=["jobs.>"], queue="workers", **JSON),
        open_bridge(broker, url, inbound=["control.stop"], **JSON),
        broker.subscribe(">", max_buffer_size=10_000) as sub,
    ):
        print("ready", flush=True)
        async for message in sub:
            if message.subject == "control.stop":
                break
            got.append(message.payload)
    print(json.dumps(got), flush=True)


async def ticker(url: str) -> None:
    broker = Broker[Any]()
    async with open_bridge(
        broker, url, outbound=["tick.>"], inbound=["tick.>"], **JSON
    ) as bridge:
        print("ready", flush=True)
        try:
            i = 0
            while True:
                await broker.publish("tick.n", i)
                i += 1
                await trio.sleep(0.01)
        finally:
            print(f"stopping: {bridge.statistics()}", flush=True)


async def mirror(url: str) -> None:
    broker = Broker[Any]()
    got: list[Any] = []
    async with (
        open_bridge(broker, url, outbound=["loop.>"], **JSON) as out,
        open_bridge(broker, url, inbound=["loop.>"], **JSON),
        broker.subscribe("loop.>", max_buffer_size=10_000) as sub,
    ):
        print("ready", flush=True)
        async for message in sub:
            if message.subject == "loop.stop":
                break
            got.append(message.payload)
        exported = out.statistics().exported
    print(json.dumps({"got": got, "exported": exported}), flush=True)


def main() -> None:
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "worker":
        trio.run(worker, url)
    elif mode == "mirror":
        trio.run(mirror, url)
    else:
        try:
            trio.run(ticker, url)
        except KeyboardInterrupt:
            print("interrupted", flush=True)


if __name__ == "__main__":
    main()
