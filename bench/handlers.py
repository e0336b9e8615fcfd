"""W13: the Router against a hand-written ``async for`` loop, and what options cost.

One publisher task does ``await broker.publish`` N times; the consumer is
either a hand loop (``async for message in sub: await handle(message)``) on a
``BLOCK`` subscription of 64, or a router handler on the same kind of
subscription. A run ends when the handler has seen every message; its time
is per message. Each case is measured in turn with the hand loop, in rounds,
and the ratio is the median of the per-round ratios (hand loop time / case
time: above 1, the case is faster).

Three questions:

* overhead: the router at concurrency 1, no option, a trivial handler;
  and each option alone (retry, timeout, dead letter, dedupe, key, middleware);
* concurrency where it pays: a handler that waits 1 ms (``trio.sleep(0.001)``,
  standing for I/O), ``concurrency=16`` against ``concurrency=1``;
* ``key=`` with 1,000 keys and concurrency 16, against the same run without
  ``key=``, with the trivial handler and with the 1 ms one.

Runnable alone: ``python bench/handlers.py`` prints the table;
``--json SCALE`` prints it as JSON for ``bench/run.py``.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

from trio_pubsub import Broker, Message, OverflowPolicy, Retry, Router

BUFFER = 64
Handle = Callable[[Message[int]], Awaitable[None]]


async def trivial(message: Message[int]) -> None:
    """No work at all: what is left is the machinery."""


async def one_ms(message: Message[int]) -> None:
    """Waits 1 ms, standing for I/O."""
    await trio.sleep(0.001)


def _headers(count: int, keys: int) -> list[dict[str, str]]:
    return [{"id": str(i), "key": str(i % keys)} for i in range(count)]


async def _publish(
    broker: Broker[int], count: int, headers: list[dict[str, str]]
) -> None:
    publish = broker.publish
    for i in range(count):
        await publish("jobs", i, headers=headers[i])


async def hand_loop(count: int, handle: Handle, keys: int = 1) -> float:
    """Seconds for ``count`` messages through a hand-written loop."""
    broker = Broker[int]()
    headers = _headers(count, keys)
    done = trio.Event()

    async with broker.subscribe(
        "jobs", max_buffer_size=BUFFER, policy=OverflowPolicy.BLOCK
    ) as sub:

        async def consume() -> None:
            seen = 0
            async for message in sub:
                await handle(message)
                seen += 1
                if seen == count:
                    done.set()
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            start = time.perf_counter()
            await _publish(broker, count, headers)
            await done.wait()
            return time.perf_counter() - start
    raise AssertionError("unreachable")


async def routed(count: int, handle: Handle, keys: int = 1, **options: Any) -> float:
    """Seconds for ``count`` messages through a router handler with ``options``."""
    broker = Broker[int]()
    headers = _headers(count, keys)
    router: Router[int] = Router(broker)
    done = trio.Event()
    seen = 0

    async def counted(message: Message[int]) -> None:
        nonlocal seen
        await handle(message)
        seen += 1
        if seen == count:
            done.set()

    router.handler("jobs", name="bench", max_buffer_size=BUFFER, **options)(counted)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        start = time.perf_counter()
        await _publish(broker, count, headers)
        await done.wait()
        elapsed = time.perf_counter() - start
        router.stop()
    stats = router.statistics()[0]
    assert stats.handled == count, stats
    return elapsed


async def _pass(message: Message[int], call_next: Handle) -> None:
    await call_next(message)


OVERHEAD: dict[str, dict[str, Any]] = {
    "router, no option": {},
    "retry=Retry(3) (nothing fails)": {"retry": Retry(attempts=3)},
    "timeout=10": {"timeout": 10.0},
    "dead_letter='dead'": {"dead_letter": "dead"},
    "dedupe='id' (every id new)": {"dedupe": "id"},
    "key= (1,000 keys)": {"key": lambda m: m.headers["key"]},
    "middleware=[a pass-through step]": {"middleware": [_pass]},
    "every option above": {
        "retry": Retry(attempts=3),
        "timeout": 10.0,
        "dead_letter": "dead",
        "dedupe": "id",
        "key": lambda m: m.headers["key"],
        "middleware": [_pass],
    },
}


def _timed(fn: Callable[[], Awaitable[float]]) -> float:
    gc.collect()
    return trio.run(fn)


def _ratio(
    base: Callable[[], Awaitable[float]],
    case: Callable[[], Awaitable[float]],
    rounds: int,
) -> tuple[float, float, float]:
    """Median base time, case time and per-round ratio base/case, in turn."""
    _timed(base)
    _timed(case)  # warm-up
    bases, cases, ratios = [], [], []
    for _ in range(rounds):
        b = _timed(base)
        c = _timed(case)
        bases.append(b)
        cases.append(c)
        ratios.append(b / c)
    return statistics.median(bases), statistics.median(cases), statistics.median(ratios)


def measure(scale: float) -> dict[str, Any]:
    count = max(2_000, int(20_000 * scale))
    sleepy = max(200, int(1_000 * scale))
    rounds = 7 if scale >= 1 else 3
    out: dict[str, Any] = {"count": count, "sleepy": sleepy, "overhead": []}
    for label, options in OVERHEAD.items():
        keys = 1_000 if "key" in options else 1
        base, case, ratio = _ratio(
            lambda k=keys: hand_loop(count, trivial, k),
            lambda o=options, k=keys: routed(count, trivial, k, **o),
            rounds,
        )
        out["overhead"].append(
            {
                "case": label,
                "hand": base / count * 1e6,
                "ours": case / count * 1e6,
                "ratio": ratio,
            }
        )
    one, sixteen, ratio = _ratio(
        lambda: routed(sleepy, one_ms, concurrency=1),
        lambda: routed(sleepy, one_ms, concurrency=16),
        max(3, rounds // 2),
    )
    out["concurrency"] = {
        "one": sleepy / one,
        "sixteen": sleepy / sixteen,
        "ratio": ratio,
    }
    key = lambda m: m.headers["key"]  # noqa: E731
    out["keys"] = []
    for label, handle, n in (("trivial", trivial, count), ("1 ms", one_ms, sleepy * 4)):
        without, with_key, ratio = _ratio(
            lambda h=handle, n=n: routed(n, h, 1_000, concurrency=16),
            lambda h=handle, n=n: routed(n, h, 1_000, concurrency=16, key=key),
            max(3, rounds // 2),
        )
        out["keys"].append(
            {
                "handler": label,
                "without": n / without,
                "with": n / with_key,
                "ratio": ratio,
            }
        )
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--json":
        print(json.dumps(measure(float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)))
        return
    result = measure(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
    print(f"{'case':40} {'hand µs':>9} {'ours µs':>9} {'hand/ours':>9}")
    for row in result["overhead"]:
        hand, ours, ratio = row["hand"], row["ours"], row["ratio"]
        print(f"{row['case']:40} {hand:9.2f} {ours:9.2f} {ratio:9.2f}x")
    c = result["concurrency"]
    print(
        f"1 ms handler: concurrency 1 {c['one']:.0f}/s, "
        f"16 {c['sixteen']:.0f}/s: {c['ratio']:.1f}x"
    )
    for row in result["keys"]:
        print(
            f"key= 1,000 keys, concurrency 16, {row['handler']} handler: "
            f"{row['with']:.0f}/s against {row['without']:.0f}/s without: "
            f"{row['ratio']:.2f}x"
        )


if __name__ == "__main__":
    main()
