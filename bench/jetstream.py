"""W14: JetStream through the bridge, against plain nats-py of the same shape.

One nats-server with JetStream (file storage in a temporary folder), started
here on a free loopback port. Each case is measured in turn with its plain
nats-py twin, in rounds, on a stream of its own per round; the ratio is the
median of the per-round ratios of messages per second (bridge / plain: above
1, the bridge is faster).

* publish, one at a time: ``await js.publish`` N times, each waiting for its
  PubAck, against nats-py's ``await js.publish`` in a loop;
* publish, 16 publishers at once: 16 tasks (coroutines) doing the same;
* both publish cases also against plain nats-py called from trio by hand
  (its loop in a thread, one crossing there and back per call): what any
  trio program pays to use nats-py;
* consume: a durable consumer's messages, fetched in batches of 64, each
  acked, with a no-op handler, against nats-py's ``fetch(64)`` and ``ack``;
* the outbox: ``publish`` returns once the message is committed; how many
  messages per second are accepted, and how long until all are stored; and
  what one commit costs: one publisher, a commit (and its ``fsync``) each.

Plain nats-py runs in asyncio in a worker thread; the bridge in this trio run
(its nats-py in a thread of its own). Runnable alone: ``python
bench/jetstream.py [SCALE]``; ``--json SCALE`` for ``bench/run.py``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.bridge.server import NatsServer

from trio_pubsub import Broker
from trio_pubsub.nats import decode_bytes, encode_bytes, open_jetstream

PAYLOAD = b"0123456789abcdef"
BYTES: dict[str, Any] = {"encode": encode_bytes, "decode": decode_bytes}
PUBLISHERS = 16
BATCH = 64


# -- plain nats-py ------------------------------------------------------------------


async def _plain(url: str, work: Callable[[Any], Awaitable[float]]) -> float:
    import nats

    nc = await nats.connect(url)
    try:
        return await work(nc.jetstream())
    finally:
        await nc.close()


def plain(url: str, work: Callable[[Any], Awaitable[float]]) -> float:
    """Seconds ``work(js)`` took, in asyncio, in a thread (called through trio)."""
    return asyncio.run(_plain(url, work))


def plain_publish(
    stream: str, count: int, publishers: int
) -> Callable[[Any], Awaitable[float]]:
    async def work(js: Any) -> float:
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        start = time.perf_counter()

        async def one(offset: int) -> None:
            for _ in range(offset, count, publishers):
                await js.publish(f"{stream}.x", PAYLOAD)

        await asyncio.gather(*(one(i) for i in range(publishers)))
        return time.perf_counter() - start

    return work


def plain_consume(stream: str, count: int) -> Callable[[Any], Awaitable[float]]:
    async def work(js: Any) -> float:
        psub = await js.pull_subscribe(f"{stream}.>", durable="plain", stream=stream)
        start = time.perf_counter()
        taken = 0
        while taken < count:
            for msg in await psub.fetch(BATCH, timeout=5):
                await msg.ack()
                taken += 1
        return time.perf_counter() - start

    return work


# -- plain nats-py, called from trio by hand -------------------------------------


async def from_trio_publish(
    url: str, stream: str, count: int, publishers: int
) -> float:
    """Plain nats-py's ``js.publish`` called from trio, as a user could by hand.

    nats-py runs on an asyncio loop in a thread of its own (it is
    asyncio-only); each call crosses there with
    ``asyncio.run_coroutine_threadsafe`` and back with a done callback that
    wakes the trio task (``TrioToken.run_sync_soon``): no worker thread, the
    cheapest crossing there is by hand. What the bridge pays for being
    called from trio, without its batching.
    """
    import threading

    import nats

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    token = trio.lowlevel.current_trio_token()

    async def call(coroutine: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        done = trio.Event()
        future.add_done_callback(lambda _: token.run_sync_soon(done.set))
        await done.wait()
        return future.result()

    try:
        nc = await call(nats.connect(url))
        js = nc.jetstream()
        await call(js.add_stream(name=stream, subjects=[f"{stream}.>"]))
        start = time.perf_counter()

        async def one(offset: int) -> None:
            for _ in range(offset, count, publishers):
                await call(js.publish(f"{stream}.x", PAYLOAD))

        async with trio.open_nursery() as nursery:
            for i in range(publishers):
                nursery.start_soon(one, i)
        took = time.perf_counter() - start
        await call(nc.close())
        return took
    finally:
        loop.call_soon_threadsafe(loop.stop)
        await trio.to_thread.run_sync(thread.join)
        loop.close()


# -- the bridge ------------------------------------------------------------------


async def bridge_publish(url: str, stream: str, count: int, publishers: int) -> float:
    broker = Broker(bytes)
    async with open_jetstream(
        broker, url, stream=stream, subjects=[f"{stream}.>"], **BYTES
    ) as js:
        start = time.perf_counter()

        async def one(offset: int) -> None:
            for _ in range(offset, count, publishers):
                await js.publish(f"{stream}.x", PAYLOAD)

        async with trio.open_nursery() as nursery:
            for i in range(publishers):
                nursery.start_soon(one, i)
        return time.perf_counter() - start


async def bridge_consume(url: str, stream: str, count: int) -> float:
    broker = Broker(bytes)
    async with (
        open_jetstream(broker, url, stream=stream, **BYTES) as js,
        js.consumer(f"{stream}.>", durable="ours", batch=BATCH) as consumer,
    ):
        start = time.perf_counter()
        taken = 0
        async for message in consumer:
            await message.ack()
            taken += 1
            if taken == count:
                break
        return time.perf_counter() - start


async def bridge_outbox(
    url: str, stream: str, count: int, folder: Path, publishers: int = PUBLISHERS
) -> tuple[float, float]:
    """Seconds until every publish returned (committed), and until all stored."""
    broker = Broker(bytes)
    start = time.perf_counter()
    async with open_jetstream(
        broker,
        url,
        stream=stream,
        subjects=[f"{stream}.>"],
        outbox=folder / f"{stream}.sqlite",
        drain_timeout=120,
        **BYTES,
    ) as js:
        start = time.perf_counter()

        async def one(offset: int) -> None:
            for _ in range(offset, count, publishers):
                await js.publish(f"{stream}.x", PAYLOAD)

        async with trio.open_nursery() as nursery:
            for i in range(publishers):
                nursery.start_soon(one, i)
        accepted = time.perf_counter() - start
    stored = time.perf_counter() - start  # (the exit drains the outbox)
    assert js.statistics().outbox_pending == 0
    return accepted, stored


async def measure(scale: float) -> dict[str, Any]:
    count = max(500, int(5_000 * scale))
    rounds = 5 if scale >= 1 else 3
    out: dict[str, Any] = {"count": count, "rounds": rounds}
    with tempfile.TemporaryDirectory() as folder:
        server = NatsServer(store=Path(folder) / "store")
        server.start()
        try:
            url = server.url
            serial = 0

            def name() -> str:
                nonlocal serial
                serial += 1
                return f"S{serial}"

            for label, publishers in (
                ("publish, one at a time", 1),
                (f"publish, {PUBLISHERS} publishers", PUBLISHERS),
            ):
                ratios, ours_rates, plain_rates = [], [], []
                by_hand_rates, by_hand_ratios = [], []
                for _ in range(rounds):
                    p = await trio.to_thread.run_sync(
                        plain, url, plain_publish(name(), count, publishers)
                    )
                    h = await from_trio_publish(url, name(), count, publishers)
                    o = await bridge_publish(url, name(), count, publishers)
                    plain_rates.append(count / p)
                    by_hand_rates.append(count / h)
                    ours_rates.append(count / o)
                    ratios.append(p / o)
                    by_hand_ratios.append(h / o)
                out[label] = {
                    "plain": statistics.median(plain_rates),
                    "ours": statistics.median(ours_rates),
                    "ratio": statistics.median(ratios),
                    "from trio": statistics.median(by_hand_rates),
                    "ratio from trio": statistics.median(by_hand_ratios),
                }
            ratios, ours_rates, plain_rates = [], [], []
            for _ in range(rounds):
                stream = name()
                await bridge_publish(url, stream, count, PUBLISHERS)
                p = await trio.to_thread.run_sync(
                    plain, url, plain_consume(stream, count)
                )
                o = await bridge_consume(url, stream, count)
                plain_rates.append(count / p)
                ours_rates.append(count / o)
                ratios.append(p / o)
            out["consume, fetch 64 and ack each"] = {
                "plain": statistics.median(plain_rates),
                "ours": statistics.median(ours_rates),
                "ratio": statistics.median(ratios),
            }
            accepted, stored = [], []
            for _ in range(rounds):
                a, s = await bridge_outbox(url, name(), count, Path(folder))
                accepted.append(count / a)
                stored.append(count / s)
            out["outbox"] = {
                "accepted": statistics.median(accepted),
                "stored": statistics.median(stored),
            }
            # One publisher: a commit (and its fsync) a message, nothing shared.
            alone = count // 5
            commits = []
            for _ in range(rounds):
                a, _ = await bridge_outbox(url, name(), alone, Path(folder), 1)
                commits.append(a / alone)
            out["outbox commit"] = statistics.median(commits)
        finally:
            server.stop()
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--json":
        scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
        print(json.dumps(trio.run(measure, scale)))
        return
    result = trio.run(measure, float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
    for key, row in result.items():
        print(key, row)


if __name__ == "__main__":
    main()
