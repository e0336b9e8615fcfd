"""The leak soak: many subscribe/leave cycles and publishes, memory measured.

Run short in the test suite, and long by ``bench/soak.py``.
"""

from __future__ import annotations

import gc
import logging
import random
import tracemalloc

import attrs
import trio

from trio_pubsub import Broker, OverflowPolicy
from trio_pubsub._broker import pipeline

PATTERNS = [
    "orders.>",
    "orders.*.created",
    "orders.{n}.created",
    "*.{n}.*",
    ">",
    "metrics.cpu.{n}",
    "metrics.*.{n}",
]


@attrs.frozen
class SoakResult:
    cycles: int
    publishes: int
    start_bytes: int
    end_bytes: int
    peak_bytes: int
    trie_nodes: int
    subscriptions: int


async def soak(cycles: int, publishes: int, seed: int = 1) -> SoakResult:
    """Subscribe and leave ``cycles`` times, publishing ``publishes`` messages.

    Drop warnings are switched off meanwhile: a handler that keeps log records
    (pytest's does) would otherwise be what grows.
    """
    logger = logging.getLogger("trio_pubsub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return await _soak(cycles, publishes, seed)
    finally:
        logger.setLevel(level)


async def _soak(cycles: int, publishes: int, seed: int) -> SoakResult:
    rng = random.Random(seed)
    broker = Broker[int](max_buffer_size=8, match_cache_size=256)
    policies = list(OverflowPolicy)
    per_cycle = max(1, publishes // cycles)
    # warm up: let the cache and the allocator reach their working size
    async with broker.subscribe("warm.>"):
        for i in range(512):
            broker.publish_nowait(f"warm.{i}", i)
    gc.collect()
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    sent = 0
    for cycle in range(cycles):
        pattern = rng.choice(PATTERNS).format(n=rng.randint(0, 9999))
        policy = rng.choice(policies)
        async with broker.subscribe(pattern, policy=policy) as sub:
            for _ in range(per_cycle):
                subject = f"orders.{rng.randint(0, 9999)}.created"
                try:
                    broker.publish_nowait(subject, sent)
                except trio.WouldBlock:  # a full BLOCK subscription: drain it
                    while sub.statistics().pending:
                        sub.receive_nowait()
                    broker.publish_nowait(subject, sent)
                sent += 1
            if cycle % 2:
                try:
                    while True:
                        sub.receive_nowait()
                except (trio.WouldBlock, trio.BrokenResourceError):
                    pass
    gc.collect()
    end, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    trie_nodes = pipeline(broker).routes.node_count()
    return SoakResult(
        cycles=cycles,
        publishes=sent,
        start_bytes=start,
        end_bytes=end,
        peak_bytes=peak,
        trie_nodes=trie_nodes,
        subscriptions=broker.statistics().subscriptions,
    )
