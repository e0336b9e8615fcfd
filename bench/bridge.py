"""W9: messages per second through the NATS bridge, against plain nats-py.

Both run against the same nats-server, started here on a free loopback port,
with 16-byte payloads. One way: one connection (or bridge) publishes N
messages, another receives them; the time runs from the first publish to the
last receipt. Round trip: each message is also sent back by the receiving side
(a relay), and the time runs until the first side has received all of them.
Plain nats-py runs both connections on one asyncio loop of its own, in a
worker thread; the bridges run in this trio run, each with its own thread.

Across processes (``process_rate``), one way: the receiving side and the
publishing side each run in a process of their own, as a bridge is deployed
(one per process), plain nats-py or a broker with its bridge on either side;
the receiving process times the transfer, from its first message to its
last. ``python bridge.py side <role> <url> <count>`` is one such process.
Round trip across processes (``round_trip_rate``): a relay process sends back
what an origin process sends.

``python bridge.py parse`` prints what reading a message costs in nats-py's
thread, plain nats-py against the bridge's client; ``python bridge.py --ab
<commit>`` compares the bridges across processes with those of a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.bridge.server import NatsServer

from trio_pubsub import Broker, OverflowPolicy, Subscription
from trio_pubsub.nats import decode_bytes, encode_bytes, open_bridge

PAYLOAD = b"0123456789abcdef"
BYTES: dict[str, Any] = {"encode": encode_bytes, "decode": decode_bytes}


def start_server() -> NatsServer:
    server = NatsServer()
    server.start()
    return server


# -- plain nats-py, on its own asyncio loop ------------------------------------------


async def _plain(url: str, count: int, *, round_trip: bool) -> float:
    import nats

    sender = await nats.connect(url)
    receiver = await nats.connect(url)
    done = asyncio.Event()
    received = 0

    async def on_back(_msg: Any) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    if round_trip:

        async def relay(msg: Any) -> None:
            await receiver.publish("rt.b", msg.data)

        await receiver.subscribe("rt.a", cb=relay, pending_msgs_limit=count)
        await sender.subscribe("rt.b", cb=on_back, pending_msgs_limit=count)
        subject = "rt.a"
    else:
        await receiver.subscribe("ow", cb=on_back, pending_msgs_limit=count)
        subject = "ow"
    await sender.flush()
    await receiver.flush()
    start = time.perf_counter()
    for _ in range(count):
        await sender.publish(subject, PAYLOAD)
    await sender.flush()
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - start
    await sender.close()
    await receiver.close()
    return count / elapsed


async def plain_rate(url: str, count: int, *, round_trip: bool) -> float:
    """Messages per second with plain nats-py, on a loop in a worker thread."""
    return await trio.to_thread.run_sync(
        lambda: asyncio.run(_plain(url, count, round_trip=round_trip))
    )


# -- through two bridges ----------------------------------------------------------


async def give_all(broker: Broker[bytes], subject: str, count: int) -> None:
    """Publish ``count`` messages as a fast producer does.

    No checkpoint each while there is room (the plain baseline's publish does
    not yield either), one every 256 so that the bridge's tasks run.
    """
    for i in range(count):
        try:
            broker.publish_nowait(subject, PAYLOAD)
        except trio.WouldBlock:
            await broker.publish(subject, PAYLOAD)
        if i % 256 == 255:
            await trio.lowlevel.checkpoint()


async def take_all(sub: Subscription[bytes], count: int) -> None:
    """Receive ``count`` messages as a fast consumer does.

    In runs, without waiting while some are there (the plain baseline's
    callback only counts them).
    """
    while count:
        await sub.receive()
        count -= 1
        while count:
            try:
                sub.receive_nowait()
            except trio.WouldBlock:
                break
            count -= 1


async def bridge_rate(url: str, count: int, *, round_trip: bool) -> float:
    """Messages per second from one broker to another through two bridges."""
    near, far = Broker[bytes](max_buffer_size=count), Broker[bytes]()
    queues: dict[str, Any] = {
        "max_outbound": 10_000,
        "outbound_policy": OverflowPolicy.BLOCK,
        "max_inbound": 10_000,
    }
    there, back = ("rt.a", "rt.b") if round_trip else ("ow", "unused")
    async with (
        open_bridge(
            near, url, outbound=[there], inbound=[back], **queues, **BYTES
        ) as near_bridge,
        open_bridge(far, url, outbound=[back], inbound=[there], **queues, **BYTES),
        far.subscribe(there, max_buffer_size=count) as arrivals,
        near.subscribe(back, max_buffer_size=count) as returns,
        trio.open_nursery() as nursery,
    ):
        if round_trip:

            async def relay() -> None:
                # As the relay across processes: in batches of what has come.
                async for batch in arrivals.batches(256):
                    for message in batch:
                        try:
                            far.publish_nowait(back, message.payload)
                        except trio.WouldBlock:  # the far export queue is full
                            await far.publish(back, message.payload)

            nursery.start_soon(relay)
        finish = returns if round_trip else arrivals
        start = time.perf_counter()
        await give_all(near, there, count)
        with trio.fail_after(120):
            await take_all(finish, count)
        elapsed = time.perf_counter() - start
        assert near_bridge.statistics().dropped == 0
        nursery.cancel_scope.cancel()
    return count / elapsed


# -- across processes: one side each ------------------------------------------------


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process so far (Linux; else empty)."""
    times = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").glob("*"):
        with contextlib.suppress(OSError):
            stat = (task / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            # utime and stime, the 14th and 15th fields of the whole line
            times[task.name] = (int(fields[11]) + int(fields[12])) / tick
    return times


def cpu_line(before: dict[str, float], count: int) -> str:
    """µs of CPU per message since ``before``, thread by thread: ``a+b+...``.

    Only the threads that used any, the busiest first.
    """
    after = thread_cpu()
    used = sorted(
        (after[name] - before.get(name, 0.0) for name in after),
        reverse=True,
    )
    return "+".join(f"{spent / count * 1e6:.2f}" for spent in used if spent > 0)


def _plain_receiver(url: str, count: int) -> None:
    import nats

    async def main() -> None:
        connection = await nats.connect(url)
        done = asyncio.Event()
        received = 0
        first = 0.0

        async def on_message(_msg: Any) -> None:
            nonlocal received, first
            received += 1
            if received == 1:
                first = time.perf_counter()
            if received == count:
                done.set()

        await connection.subscribe("ow", cb=on_message, pending_msgs_limit=count + 1)
        await connection.flush()
        print("ready", flush=True)
        cpu = thread_cpu()
        await asyncio.wait_for(done.wait(), 120)
        rate = (count - 1) / (time.perf_counter() - first)
        print(f"rate {rate} {cpu_line(cpu, count)}", flush=True)
        await connection.close()

    asyncio.run(main())


def _plain_sender(url: str, count: int) -> None:
    import nats

    async def main() -> None:
        connection = await nats.connect(url)
        for _ in range(count):
            await connection.publish("ow", PAYLOAD)
        await connection.flush()
        await connection.close()

    asyncio.run(main())


def _bridge_receiver(url: str, count: int) -> None:
    async def main() -> None:
        far = Broker[bytes]()
        async with (
            open_bridge(far, url, inbound=["ow"], max_inbound=10_000, **BYTES),
            far.subscribe("ow", max_buffer_size=count) as arrivals,
        ):
            print("ready", flush=True)
            cpu = thread_cpu()
            with trio.fail_after(120):
                await arrivals.receive()
                first = time.perf_counter()
                await take_all(arrivals, count - 1)
            rate = (count - 1) / (time.perf_counter() - first)
            print(f"rate {rate} {cpu_line(cpu, count)}", flush=True)

    trio.run(main)


def _bridge_sender(url: str, count: int) -> None:
    async def main() -> None:
        near = Broker[bytes](max_buffer_size=count)
        async with open_bridge(
            near,
            url,
            outbound=["ow"],
            max_outbound=10_000,
            outbound_policy=OverflowPolicy.BLOCK,
            drain=True,  # the block's end waits until everything is sent
            drain_timeout=120,
            **BYTES,
        ):
            await give_all(near, "ow", count)

    trio.run(main)


# Round trip: the relay's process sends back what it receives; the origin's
# sends ``count`` messages and times them until all are back.


def _plain_relay(url: str, count: int) -> None:
    import nats

    async def main() -> None:
        connection = await nats.connect(url)
        done = asyncio.Event()
        relayed = 0

        async def relay(msg: Any) -> None:
            nonlocal relayed
            await connection.publish("rt.b", msg.data)
            relayed += 1
            if relayed == count:
                done.set()

        await connection.subscribe("rt.a", cb=relay, pending_msgs_limit=count + 1)
        await connection.flush()
        print("ready", flush=True)
        cpu = thread_cpu()
        await asyncio.wait_for(done.wait(), 120)
        await connection.flush()
        print(f"cpu {cpu_line(cpu, count)}", flush=True)
        await connection.close()

    asyncio.run(main())


def _plain_origin(url: str, count: int) -> None:
    import nats

    async def main() -> None:
        connection = await nats.connect(url)
        done = asyncio.Event()
        received = 0

        async def on_back(_msg: Any) -> None:
            nonlocal received
            received += 1
            if received == count:
                done.set()

        await connection.subscribe("rt.b", cb=on_back, pending_msgs_limit=count + 1)
        await connection.flush()
        cpu = thread_cpu()
        start = time.perf_counter()
        for _ in range(count):
            await connection.publish("rt.a", PAYLOAD)
        await asyncio.wait_for(done.wait(), 120)
        rate = count / (time.perf_counter() - start)
        print(f"rate {rate} {cpu_line(cpu, count)}", flush=True)
        await connection.close()

    asyncio.run(main())


def _bridge_relay(url: str, count: int) -> None:
    async def main() -> None:
        broker = Broker[bytes]()
        async with (
            open_bridge(
                broker,
                url,
                inbound=["rt.a"],
                outbound=["rt.b"],
                max_inbound=10_000,
                max_outbound=10_000,
                outbound_policy=OverflowPolicy.BLOCK,
                drain=True,
                drain_timeout=120,
                **BYTES,
            ),
            broker.subscribe("rt.a", max_buffer_size=count) as arrivals,
        ):
            print("ready", flush=True)
            cpu = thread_cpu()
            left = count
            with trio.fail_after(120):
                # What has come in, at most 256 at a time: one checkpoint a
                # batch, as nats-py's task takes from its queue without a turn
                # of the loop a message.
                async for batch in arrivals.batches(256):
                    for message in batch:
                        try:
                            broker.publish_nowait("rt.b", message.payload)
                        except trio.WouldBlock:  # the export queue is full
                            await broker.publish("rt.b", message.payload)
                    left -= len(batch)
                    if not left:
                        break
            line = cpu_line(cpu, count)
        print(f"cpu {line}", flush=True)

    trio.run(main)


def _bridge_origin(url: str, count: int) -> None:
    async def main() -> None:
        broker = Broker[bytes](max_buffer_size=count)
        async with (
            open_bridge(
                broker,
                url,
                inbound=["rt.b"],
                outbound=["rt.a"],
                max_inbound=10_000,
                max_outbound=10_000,
                outbound_policy=OverflowPolicy.BLOCK,
                **BYTES,
            ),
            broker.subscribe("rt.b", max_buffer_size=count) as returns,
        ):
            cpu = thread_cpu()
            start = time.perf_counter()
            await give_all(broker, "rt.a", count)
            with trio.fail_after(120):
                await take_all(returns, count)
            rate = count / (time.perf_counter() - start)
            print(f"rate {rate} {cpu_line(cpu, count)}", flush=True)

    trio.run(main)


SIDES = {
    "plain-receiver": _plain_receiver,
    "plain-sender": _plain_sender,
    "bridge-receiver": _bridge_receiver,
    "bridge-sender": _bridge_sender,
    "plain-relay": _plain_relay,
    "plain-origin": _plain_origin,
    "bridge-relay": _bridge_relay,
    "bridge-origin": _bridge_origin,
}


def _environment(source: str | None) -> dict[str, str] | None:
    """The environment of a process importing ``trio_pubsub`` from ``source``."""
    if source is None:
        return None
    return dict(os.environ, PYTHONPATH=source)


def process_rate(
    url: str, count: int, sender: str, receiver: str, source: str | None = None
) -> tuple[float, str]:
    """Messages per second one way, each side in a process of its own.

    ``sender`` and ``receiver`` are ``"plain"`` or ``"bridge"``; ``source``,
    a folder holding another ``trio_pubsub`` for both processes to import.
    Also returns the receiving process's CPU per message, thread by thread
    (``cpu_line``).
    """
    command = [sys.executable, __file__, "side"]
    environment = _environment(source)
    with subprocess.Popen(
        [*command, f"{receiver}-receiver", url, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    ) as receiving:
        assert receiving.stdout is not None
        assert receiving.stdout.readline().strip() == "ready"
        with subprocess.Popen(
            [*command, f"{sender}-sender", url, str(count)], env=environment
        ) as sending:
            line = receiving.stdout.readline().split()
            assert sending.wait(120) == 0
        assert receiving.wait(120) == 0
    assert line[0] == "rate", line
    return float(line[1]), line[2] if len(line) > 2 else ""


def round_trip_rate(
    url: str, count: int, origin: str, relay: str, source: str | None = None
) -> tuple[float, str, str]:
    """Messages per second there and back, each side in a process of its own.

    ``origin`` and ``relay`` are ``"plain"`` or ``"bridge"``; ``source``, as
    for ``process_rate``. Also returns each process's CPU per message,
    thread by thread (``cpu_line``): the origin's, then the relay's.
    """
    command = [sys.executable, __file__, "side"]
    environment = _environment(source)
    with subprocess.Popen(
        [*command, f"{relay}-relay", url, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    ) as relaying:
        assert relaying.stdout is not None
        assert relaying.stdout.readline().strip() == "ready"
        with subprocess.Popen(
            [*command, f"{origin}-origin", url, str(count)],
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        ) as starting:
            assert starting.stdout is not None
            line = starting.stdout.readline().split()
            assert starting.wait(120) == 0
        relayed = relaying.stdout.readline().split()
        assert relaying.wait(120) == 0
    assert line[0] == "rate", line
    assert relayed[0] == "cpu", relayed
    return (
        float(line[1]),
        line[2] if len(line) > 2 else "",
        relayed[1] if len(relayed) > 1 else "",
    )


def ab(before: str, rounds: int = 6, count: int = 60_000) -> None:
    """Print the bridges' rates across processes, ``before`` (a commit) against now.

    Each round runs the plain pair, then bridges at both ends with each
    version in turn: one way (also a plain sender into a bridge), and there
    and back.
    """
    import statistics
    import tarfile
    import tempfile

    def one_way(sender: str) -> Any:
        return lambda url, source: process_rate(url, count, sender, "bridge", source)

    cases = {
        "plain sender -> bridge": one_way("plain"),
        "bridge -> bridge": one_way("bridge"),
        "bridge <-> bridge, round trip": lambda url, source: round_trip_rate(
            url, count, "bridge", "bridge", source
        ),
    }
    with tempfile.TemporaryDirectory() as into:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", before, "src/trio_pubsub"],
            cwd=Path(__file__).resolve().parents[1],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(into, filter="data")
        source = str(Path(into) / "src")
        server = start_server()
        plain: dict[str, list[float]] = {"one way": [], "round trip": []}
        rates: dict[tuple[str, str], list[float]] = {}
        try:
            for round_ in range(rounds):
                plain["one way"].append(
                    process_rate(server.url, count, "plain", "plain")[0]
                )
                plain["round trip"].append(
                    round_trip_rate(server.url, count, "plain", "plain")[0]
                )
                for case, measure in cases.items():
                    for version in (source, None) if round_ % 2 else (None, source):
                        label = "now" if version is None else "before"
                        result = measure(server.url, version)
                        rates.setdefault((case, label), []).append(result[0])
                        print(f"{case:30} {label:6} {result}", flush=True)
        finally:
            server.stop()
    for case in cases:
        base = plain["round trip" if "round" in case else "one way"]
        old, new = rates[(case, "before")], rates[(case, "now")]
        ratios = [
            statistics.median(r / p for r, p in zip(rs, base, strict=True))
            for rs in (old, new)
        ]
        change = statistics.median(n / o for n, o in zip(new, old, strict=True))
        print(
            f"{case}: {ratios[0]:.2f}x -> {ratios[1]:.2f}x plain nats-py, "
            f"now / before {change:.2f}x"
        )


def parse_cost(count: int = 100_000, rounds: int = 7) -> dict[str, float]:
    """µs a message to read MSGs and hand them over, in nats-py's thread.

    ``count`` 16-byte messages, fed to each client's parser in 64 KiB pieces
    as its read loop would: plain nats-py (its parser, a ``Msg``, the
    subscription's queue) and the bridge's client (its own read of plain
    MSGs, a tuple handed to a taker). No connection: the parser is driven
    directly, the best of ``rounds``.
    """
    from nats.aio.client import Client
    from nats.aio.subscription import Subscription

    from trio_pubsub.nats._client import GuardedClient

    wire = b"".join(b"MSG ow 1 16\r\n" + PAYLOAD + b"\r\n" for _ in range(count))

    async def one(client: Client) -> float:
        taken: list[Any] = []
        if isinstance(client, GuardedClient):
            client.takers[1] = (lambda: True, taken.append)
        sub = Subscription(client, 1, "ow", pending_msgs_limit=2 * count)
        client._subs[1] = sub
        best = float("inf")
        for _ in range(rounds):
            taken.clear()
            sub._pending_queue = asyncio.Queue(maxsize=2 * count)
            start = time.perf_counter()
            for at in range(0, len(wire), 65536):
                await client._ps.parse(wire[at : at + 65536])
            best = min(best, time.perf_counter() - start)
            assert (len(taken) or sub._pending_queue.qsize()) == count
        return best / count * 1e6

    async def both() -> dict[str, float]:
        return {
            "nats-py": await one(Client()),
            "bridge": await one(GuardedClient(lambda _: None)),
        }

    return asyncio.run(both())


if __name__ == "__main__" and sys.argv[1:2] == ["parse"]:
    for name, cost in parse_cost().items():
        print(f"{name:8} {cost:.2f} µs a message")
elif __name__ == "__main__" and sys.argv[1:2] == ["side"]:
    SIDES[sys.argv[2]](sys.argv[3], int(sys.argv[4]))
elif __name__ == "__main__" and sys.argv[1:2] == ["--ab"]:
    ab(sys.argv[2])
