"""Brokers in separate OS processes, through a real nats-server; and Ctrl-C."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from trio_pubsub import Broker
from trio_pubsub.nats import decode_json, encode_json, open_bridge

from .server import NatsServer
from .test_bridge import GUARD, wait_until

ROOT = Path(__file__).resolve().parents[2]
JSON: dict[str, Any] = {"encode": encode_json, "decode": decode_json}

# What a clean exit never writes to stderr.
UNCLEAN = ("Traceback", "Exception ignored", "Unclosed", "never awaited", "destroyed")


async def start_child(nursery: trio.Nursery, *args: str) -> trio.Process:
    process: trio.Process = await nursery.start(
        functools.partial(
            trio.run_process,
            [sys.executable, "-W", "always", "-m", "tests.bridge.child", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            check=False,
        )
    )
    return process


async def read_lines(stream: trio.abc.ReceiveStream, lines: list[str]) -> None:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *done, buffer = buffer.split(b"\n")
        lines.extend(line.decode() for line in done)


async def test_queue_group_shares_work_across_processes(
    nats_server: NatsServer,
) -> None:
    source = Broker[Any]()
    outputs: list[list[str]] = [[], []]
    async with (
        open_bridge(source, nats_server.url, outbound=[">"], **JSON),
        trio.open_nursery() as nursery,
    ):
        children = []
        for out in outputs:
            child = await start_child(nursery, "worker", nats_server.url)
            assert child.stdout is not None
            nursery.start_soon(read_lines, child.stdout, out)
            children.append(child)
        with trio.fail_after(GUARD):
            await wait_until(lambda: all("ready" in out for out in outputs))
            for i in range(400):
                await source.publish(f"jobs.{i % 7}", i)
            await trio.sleep(0.5)  # let the jobs reach the workers first
            await source.publish("control.stop", None)
            for child in children:
                await child.wait()
    shares = [json.loads(out[-1]) for out in outputs]
    assert sorted(shares[0] + shares[1]) == list(range(400))  # each job once
    assert all(len(share) > 0 for share in shares)  # both did work
    assert all(child.returncode == 0 for child in children)


async def test_sigint_exits_cleanly(nats_server: NatsServer) -> None:
    """A real SIGINT: trio raises KeyboardInterrupt, the bridge closes, no noise."""
    for _ in range(3):
        out: list[str] = []
        err: list[str] = []
        async with trio.open_nursery() as nursery:
            child = await start_child(nursery, "sigint", nats_server.url)
            assert child.stdout is not None
            assert child.stderr is not None
            nursery.start_soon(read_lines, child.stdout, out)
            nursery.start_soon(read_lines, child.stderr, err)
            with trio.fail_after(GUARD):
                await wait_until(functools.partial(list.__contains__, out, "ready"))
                await trio.sleep(0.2)  # ticks flow both ways
                child.send_signal(signal.SIGINT)
                await child.wait()
        assert child.returncode == 0, err
        assert out[-1] == "interrupted", out
        stopping = next(line for line in out if line.startswith("stopping:"))
        assert "connected=True" in stopping
        assert not any(word in line for line in err for word in UNCLEAN), err


async def test_two_processes_bridging_the_same_patterns_exchange_once_issue_16(
    nats_server: NatsServer,
) -> None:
    """Two processes, each exporting and importing loop.> through two bridges.

    A message published in one reaches the other once, and neither sends back
    what it imported (before, it went round for ever).
    """
    url = nats_server.url
    broker = Broker[Any]()
    out: list[str] = []
    async with (
        open_bridge(broker, url, outbound=["loop.>"], **JSON) as export,
        open_bridge(broker, url, inbound=["loop.>"], **JSON),
        broker.subscribe("loop.>", max_buffer_size=10_000) as sub,
        trio.open_nursery() as nursery,
    ):
        child = await start_child(nursery, "mirror", url)
        assert child.stdout is not None
        nursery.start_soon(read_lines, child.stdout, out)
        with trio.fail_after(GUARD):
            await wait_until(lambda: "ready" in out)
            await trio.sleep(0.2)  # its import's subscription is on the server
            await broker.publish("loop.one", 1)
            await trio.sleep(1)  # time for a loop to show (not a measure)
            await broker.publish("loop.stop", None)
            await child.wait()
        got: list[Any] = []
        while len(got) < 3:  # its own, its import of it, and loop.stop's import
            got.append(sub.receive_nowait().payload)
        assert got == [1, 1, None]
        assert export.statistics().exported == 2
    child_report = json.loads(out[-1])
    assert child_report == {"got": [1], "exported": 0}
    assert child.returncode == 0
