"""W14: what a flooding peer costs a bridge in memory.

``python bench/flood.py``: a nats-server on a free loopback port, a bridge
importing ``req`` and ``big`` into a broker, and a peer on a bare socket:

* requests: 50,000 requests on ``req`` in one burst, to a local subscriber
  that never answers; printed: how many waited for a local answer at most,
  how many were refused ("no responders"), and how much the process's
  resident memory grew;
* payloads: 300 messages of 1 MB on ``big``, to a ``BLOCK`` subscriber with a
  buffer of 1 that never reads; printed: how many the bridge held (imported
  into that buffer, or queued), how many it dropped, and the growth.

Resident memory is read from ``/proc/self/status`` (VmRSS) before and after
each burst has settled.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.bridge.raw import RawClient
from tests.bridge.server import NatsServer

from trio_pubsub import Broker, OverflowPolicy
from trio_pubsub.nats import decode_bytes, encode_bytes, open_bridge

BYTES: dict[str, Any] = {"encode": encode_bytes, "decode": decode_bytes}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def settle(condition: Any, seconds: float = 30) -> None:
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - counters of another thread
            await trio.sleep(0.05)
    await trio.sleep(0.5)


async def requests(url: str, port: int) -> None:
    broker = Broker[bytes]()
    async with (
        open_bridge(broker, url, inbound=["req"], request_timeout=30, **BYTES) as b,
        broker.subscribe("req", max_buffer_size=100_000),  # never answers
    ):
        before = rss_mb()
        peer = await RawClient.connect(port)
        burst = b"".join(
            b"PUB req _INBOX.flood.%d 1\r\n1\r\n" % i for i in range(50_000)
        )
        await peer.send(burst)
        await settle(lambda: b.statistics().imported + b.statistics().dropped == 50_000)
        stats = b.statistics()
        print(
            f"requests: {broker.statistics().requests_waiting:,} waited for a local "
            f"answer, {stats.requests_refused:,} refused, {stats.inbound_dropped:,} "
            f"dropped in all; resident memory +{rss_mb() - before:.0f} MB",
            flush=True,
        )
        await peer.aclose()


async def payloads(url: str, port: int) -> None:
    broker = Broker[bytes]()
    async with (
        open_bridge(broker, url, inbound=["big"], **BYTES) as b,
        broker.subscribe("big", policy=OverflowPolicy.BLOCK, max_buffer_size=1),
    ):
        before = rss_mb()
        peer = await RawClient.connect(port)
        data = b"x" * 1_000_000
        for _ in range(300):
            await peer.pub(b"big", data)
        await peer.flush()
        await settle(lambda: b.statistics().inbound_dropped > 0)
        await trio.sleep(2)  # what is on its way has arrived
        stats = b.statistics()
        print(
            f"payloads: {300 - stats.inbound_dropped} of 300 held (imported or "
            f"queued), {stats.inbound_dropped} dropped; resident memory "
            f"+{rss_mb() - before:.0f} MB",
            flush=True,
        )
        await peer.aclose()


async def main() -> None:
    server = NatsServer()
    server.start()
    try:
        await requests(server.url, server.port)
        await payloads(server.url, server.port)
    finally:
        server.stop()


if __name__ == "__main__":
    trio.run(main)
