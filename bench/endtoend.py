"""W10: end to end, one publisher and K consumer tasks, against raw trio channels.

What a user sees is publisher plus consumers: the time from the first publish
until every consumer has taken every message it was given. Each consumer
runs ``async for`` with trivial work; each buffer holds 64 messages.

The baselines are raw ``trio`` memory channels, one per consumer:

* ``await send`` on each channel: K checkpoints per message.
* the same shape as the broker's call: ``send_nowait`` to each channel
  (``await send`` on the one that is full, for BLOCK; a counted drop, for
  DROP_NEWEST) and, where the broker's call is ``await publish``, one
  checkpoint per message, as ``await publish`` has.

Runnable alone: ``python bench/endtoend.py`` prints the table.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from types import ModuleType
from typing import Any

import trio
import trio.testing

import trio_pubsub
from trio_pubsub import Broker, OverflowPolicy, Subscription

BUFFER = 64
API: ModuleType = trio_pubsub  # the library measured (ab() swaps in another)
SUBJECT = "jobs.a"

Case = Callable[[int, int], Awaitable[float]]


# -- consumers ----------------------------------------------------------------


async def _consume_sub(sub: Subscription[int], taken: list[int]) -> None:
    count = 0
    async for message in sub:
        count += message.payload is not None
    taken.append(count)


async def _consume_batches(sub: Subscription[int], taken: list[int]) -> None:
    count = 0
    async for batch in sub.batches(BUFFER):
        for message in batch:
            count += message.payload is not None
    taken.append(count)


async def _consume_channel(
    receive: trio.MemoryReceiveChannel[int], taken: list[int]
) -> None:
    count = 0
    async for item in receive:
        count += item is not None
    taken.append(count)


# -- this library ---------------------------------------------------------------


async def _ours(
    consumers: int,
    messages: int,
    policy: OverflowPolicy,
    publisher: Callable[[Broker[int], int], Awaitable[None]],
    consumer: Callable[[Subscription[int], list[int]], Awaitable[None]] = (
        _consume_sub
    ),
    buffer: int = BUFFER,
) -> float:
    api: Any = API
    broker = api.Broker(int)
    taken: list[int] = []
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        for _ in range(consumers):
            sub = await stack.enter_async_context(
                broker.subscribe(
                    SUBJECT,
                    max_buffer_size=buffer,
                    policy=getattr(api.OverflowPolicy, policy.name),
                )
            )
            nursery.start_soon(consumer, sub, taken)
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        await publisher(broker, messages)
        await broker.aclose()  # the consumers drain what they hold, then stop
        await _wait_for(taken, consumers)
        elapsed = time.perf_counter() - start
    if policy is OverflowPolicy.BLOCK:
        assert taken == [messages] * consumers, taken
    return elapsed


async def _wait_for(taken: list[int], consumers: int) -> None:
    """Wait until every consumer has put its count into ``taken``."""
    while len(taken) < consumers:
        await trio.lowlevel.checkpoint()


async def _await_publish(broker: Broker[int], messages: int) -> None:
    for i in range(messages):
        await broker.publish(SUBJECT, i)


async def _bursts(broker: Broker[int], messages: int) -> None:
    publish_nowait = broker.publish_nowait
    for i in range(messages):
        try:
            publish_nowait(SUBJECT, i)
        except trio.WouldBlock:
            await broker.publish(SUBJECT, i)


async def ours_block(consumers: int, messages: int) -> float:
    return await _ours(consumers, messages, OverflowPolicy.BLOCK, _await_publish)


async def ours_block_bursts(consumers: int, messages: int) -> float:
    return await _ours(consumers, messages, OverflowPolicy.BLOCK, _bursts)


async def ours_drop_newest(consumers: int, messages: int) -> float:
    return await _ours(consumers, messages, OverflowPolicy.DROP_NEWEST, _await_publish)


async def ours_batches(consumers: int, messages: int) -> float:
    """BLOCK bursts, the consumers taking up to 64 messages a checkpoint."""
    return await _ours(
        consumers, messages, OverflowPolicy.BLOCK, _bursts, _consume_batches
    )


# -- raw trio channels ------------------------------------------------------------


async def _raw(
    consumers: int,
    messages: int,
    publisher: Callable[[list[trio.MemorySendChannel[Any]], int], Awaitable[None]],
    block: bool = True,
    consumer: Callable[[trio.MemoryReceiveChannel[Any], list[int]], Awaitable[None]] = (
        _consume_channel
    ),
) -> float:
    taken: list[int] = []
    async with trio.open_nursery() as nursery:
        senders = []
        for _ in range(consumers):
            send, receive = trio.open_memory_channel[Any](BUFFER)
            senders.append(send)
            nursery.start_soon(consumer, receive, taken)
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        await publisher(senders, messages)
        for send in senders:
            await send.aclose()
        await _wait_for(taken, consumers)
        elapsed = time.perf_counter() - start
    if block:
        assert taken == [messages] * consumers, taken
    return elapsed


async def _raw_await_send(senders: list[trio.MemorySendChannel[int]], n: int) -> None:
    for i in range(n):
        for send in senders:
            await send.send(i)


async def _raw_same_shape(senders: list[trio.MemorySendChannel[int]], n: int) -> None:
    checkpoint = trio.lowlevel.checkpoint
    for i in range(n):
        for send in senders:
            try:
                send.send_nowait(i)
            except trio.WouldBlock:
                await send.send(i)
        await checkpoint()


async def _raw_bursts(senders: list[trio.MemorySendChannel[int]], n: int) -> None:
    for i in range(n):
        for send in senders:
            try:
                send.send_nowait(i)
            except trio.WouldBlock:
                await send.send(i)


async def _raw_dropping(senders: list[trio.MemorySendChannel[int]], n: int) -> None:
    checkpoint = trio.lowlevel.checkpoint
    dropped = 0
    for i in range(n):
        for send in senders:
            try:
                send.send_nowait(i)
            except trio.WouldBlock:
                dropped += 1
        await checkpoint()


async def raw_await_send(consumers: int, messages: int) -> float:
    return await _raw(consumers, messages, _raw_await_send)


async def raw_same_shape(consumers: int, messages: int) -> float:
    return await _raw(consumers, messages, _raw_same_shape)


async def raw_bursts(consumers: int, messages: int) -> float:
    return await _raw(consumers, messages, _raw_bursts)


async def raw_dropping(consumers: int, messages: int) -> float:
    return await _raw(consumers, messages, _raw_dropping, block=False)


# -- what carrying a message costs a raw channel (the K=1 case) -----------------------


class Carried:
    """A message as a hand-rolled channel pub/sub would carry one: two slots."""

    __slots__ = ("payload", "subject")

    def __init__(self, subject: str, payload: int) -> None:
        self.subject = subject
        self.payload = payload


async def _consume_carried(
    receive: trio.MemoryReceiveChannel[Carried], taken: list[int]
) -> None:
    count = 0
    async for item in receive:
        count += item.payload is not None
    taken.append(count)


async def _raw_same_shape_carrying(
    senders: list[trio.MemorySendChannel[Carried]], n: int
) -> None:
    """``_raw_same_shape``, each message a new ``Carried``."""
    checkpoint = trio.lowlevel.checkpoint
    for i in range(n):
        item = Carried(SUBJECT, i)
        for send in senders:
            try:
                send.send_nowait(item)
            except trio.WouldBlock:
                await send.send(item)
        await checkpoint()


async def raw_same_shape_carrying(consumers: int, messages: int) -> float:
    """``raw_same_shape``, each message a new ``Carried`` read by the consumer."""
    return await _raw(
        consumers, messages, _raw_same_shape_carrying, consumer=_consume_carried
    )


def carry_rows(repeats: int = 5, scale: float = 1.0) -> dict[str, float]:
    """K=1, BLOCK, ``await publish``: ours, raw with ints, raw with objects."""
    n = max(500, int(SIZES[1] * scale))
    ints, objects = paired(raw_same_shape, raw_same_shape_carrying, 1, n, repeats)
    ours, objects_again = paired(ours_block, raw_same_shape_carrying, 1, n, repeats)
    return {
        "ints": ints / n * 1e6,
        "objects": objects / n * 1e6,
        "ours": ours / n * 1e6,
        "objects_again": objects_again / n * 1e6,
    }


# -- consumer alone: the publisher far ahead ------------------------------------------


async def drain_rate(messages: int, batch: int | None) -> float:
    """Seconds for one consumer to take ``messages`` already waiting for it.

    ``batch=None``: ``async for``; otherwise ``async for b in sub.batches(batch)``.
    """
    broker = Broker(int)
    taken: list[int] = []
    async with broker.subscribe(SUBJECT, max_buffer_size=messages) as sub:
        for i in range(messages):
            broker.publish_nowait(SUBJECT, i)
        await broker.aclose()
        start = time.perf_counter()
        if batch is None:
            await _consume_sub(sub, taken)
        else:
            count = 0
            async for got in sub.batches(batch):
                count += len(got)
            taken.append(count)
        elapsed = time.perf_counter() - start
    assert taken == [messages]
    return elapsed


# -- running ------------------------------------------------------------------------

SIZES = {1: 20_000, 10: 4_000, 100: 400}

CASES: list[tuple[str, Case, Case]] = [
    ("BLOCK, await publish", ours_block, raw_same_shape),
    ("BLOCK, bursts", ours_block_bursts, raw_bursts),
    ("DROP_NEWEST, await publish", ours_drop_newest, raw_dropping),
]


def paired(
    first: Case, second: Case, consumers: int, messages: int, repeats: int
) -> tuple[float, float]:
    """Median seconds of ``first`` and ``second``, run in turn after a warm-up."""
    a: list[float] = []
    b: list[float] = []
    for repeat in range(repeats + 1):
        gc.collect()
        x = trio.run(first, consumers, messages)
        gc.collect()
        y = trio.run(second, consumers, messages)
        if repeat:
            a.append(x)
            b.append(y)
    return statistics.median(a), statistics.median(b)


def rows(repeats: int = 5, scale: float = 1.0) -> list[dict[str, Any]]:
    """W10: each case at each K, ours against both raw baselines, in turn."""
    out = []
    for label, ours, same_shape in CASES:
        for consumers, messages in SIZES.items():
            n = max(50, int(messages * scale))
            mine, theirs = paired(ours, same_shape, consumers, n, repeats)
            _, sends = paired(ours, raw_await_send, consumers, n, repeats)
            out.append(
                {
                    "case": label,
                    "consumers": consumers,
                    "ours": mine / n * 1e6,
                    "same_shape": theirs / n * 1e6,
                    "await_send": sends / n * 1e6,
                }
            )
    return out


def batch_rows(repeats: int = 5, scale: float = 1.0) -> list[dict[str, Any]]:
    """Batch receive: async for against batches(64), publisher running ahead."""
    out = []
    for consumers in (1, 10):
        n = max(50, int(20_000 // consumers * scale))
        each, batched = paired(ours_block_bursts, ours_batches, consumers, n, repeats)
        deliveries = n * consumers
        out.append(
            {
                "case": f"end to end, BLOCK bursts, K={consumers}",
                "async_for": each / deliveries * 1e6,
                "batches": batched / deliveries * 1e6,
            }
        )
    n = max(500, int(20_000 * scale))
    each, batched = paired(
        lambda _k, m: drain_rate(m, None),
        lambda _k, m: drain_rate(m, BUFFER),
        1,
        n,
        repeats,
    )
    out.append(
        {
            "case": "one consumer draining a full buffer",
            "async_for": each / n * 1e6,
            "batches": batched / n * 1e6,
        }
    )
    return out


def ab(before: ModuleType, rounds: int, scale: float) -> None:
    """Print before/now time ratios per case, alternating in one process."""
    global API
    now = API

    def with_api(api: ModuleType, case: Case) -> Case:
        async def run(consumers: int, messages: int) -> float:
            global API
            API = api
            try:
                return await case(consumers, messages)
            finally:
                API = now

        return run

    cases = [(label, ours) for label, ours, _ in CASES]
    cases.append(("W10b batches(64), BLOCK bursts", ours_batches))
    for label, ours in cases:
        for consumers, messages in SIZES.items():
            n = max(50, int(messages * scale))
            ratios = []
            for repeat in range(rounds + 1):
                pair = [with_api(before, ours), with_api(now, ours)]
                if repeat % 2:
                    pair.reverse()
                times = {}
                for case in pair:
                    gc.collect()
                    times[case] = trio.run(case, consumers, n)
                if repeat:
                    ratios.append(times[pair[repeat % 2]] / times[pair[1 - repeat % 2]])
            print(
                f"{label:30} K={consumers:<4} before/now "
                f"{statistics.median(ratios):5.3f}x",
                flush=True,
            )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--ab":
        import tempfile
        from pathlib import Path

        from ab import load_before

        with tempfile.TemporaryDirectory() as into:
            ab(load_before(sys.argv[2], Path(into)), rounds=9, scale=0.5)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--json":
        import json

        scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
        print(
            json.dumps(
                {
                    "w10": rows(scale=scale),
                    "batch": batch_rows(scale=scale),
                    "carry": carry_rows(scale=scale),
                }
            )
        )
        return
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    for row in rows(scale=scale):
        print(
            f"{row['case']:30} K={row['consumers']:<4} ours {row['ours']:8.2f} us"
            f"  same shape {row['same_shape']:8.2f} us"
            f" ({row['same_shape'] / row['ours']:5.2f}x)"
            f"  await send {row['await_send']:8.2f} us"
            f" ({row['await_send'] / row['ours']:5.2f}x)",
            flush=True,
        )
    carry = carry_rows(scale=scale)
    print(
        f"K=1 raw same shape: ints {carry['ints']:.2f} us, objects "
        f"{carry['objects']:.2f} us ({carry['ints'] / carry['objects']:.3f}x); "
        f"ours {carry['ours']:.2f} us, "
        f"{carry['objects_again'] / carry['ours']:.3f}x the objects' run",
        flush=True,
    )
    for row in batch_rows(scale=scale):
        print(
            f"{row['case']:40} async for {row['async_for']:7.2f} us  batches "
            f"{row['batches']:7.2f} us  ({row['async_for'] / row['batches']:5.1f}x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
