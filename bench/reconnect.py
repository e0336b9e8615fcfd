"""W13: reconnecting after a server restart, and what an outage's backlog meets.

``python bench/reconnect.py spread``: 20 processes, each with one connection to
one nats-server, which is killed (SIGKILL) and started again on the same port
3 s later. Each process prints the moment (``time.time()``) its connection
came back; the spread is the time from the first to the last. Run once with
20 bridges, once with 20 JetStream bridges (a server with JetStream, a
stream each process checks on entry) and once with 20 plain nats-py clients
(nats-py's own reconnect: a fixed ``reconnect_time_wait`` of 0.5 s, no
jitter, which the bridge used before it drew its own waits).

``python bench/reconnect.py backlog [ROUNDS] [SECONDS]``: one bridge exports,
another imports (two brokers, each with its own connection); the server is
killed, the exporter publishes 1,000 messages a second for the outage, then
the server comes back. Printed per
round: how many were confirmed by the server (``exported``), how many the
importer got, and how long after the exporter's reconnection its backlog
was confirmed. Core NATS keeps nothing for a subscriber that is not there:
what goes out before the importer has subscribed again reaches nobody.

``python bench/reconnect.py child <kind> <url>`` is one process of either.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.bridge.server import NatsServer

from trio_pubsub import Broker, OverflowPolicy
from trio_pubsub.nats import decode_json, encode_json, open_bridge, open_jetstream

PROCESSES = 20
DOWN = 3.0  # seconds the server stays down in "spread"
JSON: dict[str, Any] = {"encode": encode_json, "decode": decode_json}


class _Reconnected(logging.Handler):
    """Notes the moment the bridge logs that it has reconnected."""

    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.at is None and "reconnected" in record.getMessage():
            self.at = time.time()


async def _bridge_child(url: str) -> None:
    handler = _Reconnected()
    logger = logging.getLogger("trio_pubsub.nats")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    async with open_bridge(Broker[Any](), url, outbound=["x"], **JSON):
        print("ready", flush=True)
        with trio.fail_after(60):
            while handler.at is None:  # noqa: ASYNC110 - set in another thread
                await trio.sleep(0.01)
        print(json.dumps(handler.at), flush=True)


async def _jetstream_child(url: str) -> None:
    handler = _Reconnected()
    logger = logging.getLogger("trio_pubsub.nats")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    async with open_jetstream(
        Broker[Any](), url, stream="SPREAD", subjects=["spread.>"], **JSON
    ):
        print("ready", flush=True)
        with trio.fail_after(60):
            while handler.at is None:  # noqa: ASYNC110 - set in another thread
                await trio.sleep(0.01)
        print(json.dumps(handler.at), flush=True)


def _plain_child(url: str) -> None:
    import asyncio

    import nats

    async def main() -> None:
        came_back = asyncio.Event()
        at: list[float] = []

        async def reconnected() -> None:
            at.append(time.time())
            came_back.set()

        async def quiet(error: Exception) -> None:
            pass  # refused while the server is down: expected

        nc = await nats.connect(
            url,
            reconnect_time_wait=0.5,
            max_reconnect_attempts=-1,
            reconnected_cb=reconnected,
            error_cb=quiet,
        )
        print("ready", flush=True)
        await asyncio.wait_for(came_back.wait(), 60)
        print(json.dumps(at[0]), flush=True)
        await nc.close()

    asyncio.run(main())


def _start(kind: str, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "child", kind, url],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


def spread(kind: str) -> dict[str, float]:
    """Seconds from the first reconnection to the last, and their median gap."""
    store = tempfile.TemporaryDirectory() if kind == "jetstream" else None
    server = NatsServer(store=None if store is None else Path(store.name))
    server.start()
    children = [_start(kind, server.url) for _ in range(PROCESSES)]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        server.kill()
        time.sleep(DOWN)
        restarted = time.time()
        server.start()
        moments = []
        for child in children:
            assert child.stdout is not None
            moments.append(json.loads(child.stdout.readline()))
            child.wait(30)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        server.stop()
        if store is not None:
            store.cleanup()
    moments.sort()
    gaps = [b - a for a, b in itertools.pairwise(moments)]
    return {
        "spread": moments[-1] - moments[0],
        "median_gap": statistics.median(gaps),
        "first_after_restart": moments[0] - restarted,
        "last_after_restart": moments[-1] - restarted,
    }


# -- the backlog ---------------------------------------------------------------------


async def _backlog_round(server: NatsServer, down: float, rate: int) -> dict[str, Any]:
    sender, receiver = Broker[Any](), Broker[Any]()
    times: dict[str, float] = {}
    async with (
        open_bridge(receiver, server.url, inbound=["b"], **JSON) as into,
        open_bridge(
            sender,
            server.url,
            outbound=["b"],
            max_outbound=1_000_000,
            outbound_policy=OverflowPolicy.BLOCK,
            **JSON,
        ) as out,
        receiver.subscribe("b", max_buffer_size=1_000_000) as sub,
    ):
        server.kill()
        with trio.fail_after(30):
            while out.statistics().connected:  # noqa: ASYNC110
                await trio.sleep(0.01)
        count = int(down * rate)
        started = trio.current_time()
        for i in range(count):
            await sender.publish("b", i)
            await trio.sleep_until(started + (i + 1) / rate)
        server.start()
        with trio.fail_after(60):
            while True:
                now = time.time()
                if "out" not in times and out.statistics().reconnects:
                    times["out"] = now
                if "in" not in times and into.statistics().reconnects:
                    times["in"] = now
                if "sent" not in times and out.statistics().exported == count:
                    times["sent"] = now
                if len(times) == 3:
                    break
                await trio.sleep(0.001)
        await trio.sleep(1.0)  # what is still on its way arrives
        got = sub.statistics().pending
        return {
            "published": count,
            "exported": out.statistics().exported,
            "imported": got,
            "lost": out.statistics().exported - got,
            "backlog_confirmed_ms": 1000 * (times["sent"] - times["out"]),
            "importer_after_exporter_ms": 1000 * (times["in"] - times["out"]),
        }


def backlog(rounds: int = 3, down: float = 10.0, rate: int = 1000) -> list[Any]:
    server = NatsServer()
    server.start()
    try:
        return [trio.run(_backlog_round, server, down, rate) for _ in range(rounds)]
    finally:
        server.stop()


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        kind, url = sys.argv[2], sys.argv[3]
        if kind == "bridge":
            trio.run(_bridge_child, url)
        elif kind == "jetstream":
            trio.run(_jetstream_child, url)
        else:
            _plain_child(url)
        return
    what = sys.argv[1] if len(sys.argv) > 1 else "spread"
    if what == "spread":
        kinds = sys.argv[2:] or ["plain", "bridge", "jetstream"]
        for kind in kinds:
            figures = spread(kind)
            print(kind, {k: round(v, 3) for k, v in figures.items()}, flush=True)
    elif what == "backlog":
        rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
        down = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
        for outcome in backlog(rounds, down):
            print({k: round(v) for k, v in outcome.items()}, flush=True)


if __name__ == "__main__":
    main()
