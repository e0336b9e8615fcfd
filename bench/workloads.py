"""Workloads, baselines and peers for ``make bench``.

Every function here returns seconds for a batch of operations; ``run.py`` takes
medians over repeats and turns them into ratios measured in the same run.
"""

from __future__ import annotations

import math
import random
import statistics
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import trio

from trio_pubsub import Broker, OverflowPolicy, Subscription, subject_matches

BIG = 10**9  # buffers that never fill during a batch: the fast path is measured
VOCABULARY = [f"t{i:02d}" for i in range(50)]


# -- pattern sets -------------------------------------------------------------


@dataclass
class PatternSet:
    """N patterns (70% literal, 20% one '*', 10% ending in '>') and hot subjects."""

    patterns: list[str]
    hot: list[str]
    matches_per_hot: int = 4
    kinds: dict[str, int] = field(default_factory=dict)


def _tokens(rng: random.Random, vocabulary: list[str]) -> list[str]:
    return [rng.choice(vocabulary) for _ in range(rng.randint(3, 5))]


def make_patterns(n: int, seed: int = 7) -> PatternSet:
    """Build N patterns where each hot subject is matched by exactly 4 of them.

    Hot subjects have 4 or 5 tokens, start with one of the first 10 tokens of the
    vocabulary, and differ in their first 3 tokens; the 4 patterns of a hot
    subject keep those 3 tokens literal: the subject twice, the subject with a
    later token replaced by '*', and a 3- or 4-token prefix followed by '>'. So
    each matches its own subject only. Filler patterns start with one of the
    other 40 tokens, never with a wildcard, and make up the rest of the
    70/20/10 mix.
    """
    rng = random.Random(seed)
    hot_count = max(1, n // 20)
    hot_vocabulary, rest_vocabulary = VOCABULARY[:10], VOCABULARY[10:]
    hot: list[str] = []
    keys: set[tuple[str, ...]] = set()
    while len(hot) < hot_count:
        tokens = [rng.choice(hot_vocabulary)]
        tokens += [rng.choice(VOCABULARY) for _ in range(rng.randint(3, 4))]
        if tuple(tokens[:3]) not in keys:
            keys.add(tuple(tokens[:3]))
            hot.append(".".join(tokens))
    patterns: list[str] = []
    for subject in hot:
        tokens = subject.split(".")
        star = tokens.copy()
        star[rng.randint(3, len(tokens) - 1)] = "*"
        prefix = tokens[: rng.randint(3, len(tokens) - 1)]
        patterns += [subject, subject, ".".join(star), ".".join([*prefix, ">"])]
    patterns = patterns[:n]
    literal = round(0.7 * n) - sum("*" not in p and ">" not in p for p in patterns)
    starred = round(0.2 * n) - sum("*" in p for p in patterns)
    while len(patterns) < n:
        tokens = [rng.choice(rest_vocabulary), *_tokens(rng, VOCABULARY)[1:]]
        if literal > 0:
            literal -= 1
        elif starred > 0:
            tokens[rng.randint(1, len(tokens) - 1)] = "*"
            starred -= 1
        else:
            # 3 to 5 tokens in all, '>' included
            tokens = [*tokens[: rng.randint(2, len(tokens) - 1)], ">"]
        patterns.append(".".join(tokens))
    rng.shuffle(patterns)
    kinds = {
        "literal": sum("*" not in p and ">" not in p for p in patterns),
        "star": sum("*" in p for p in patterns),
        "rest": sum(p.endswith(">") for p in patterns),
    }
    return PatternSet(patterns, hot, kinds=kinds)


def fresh_subjects(count: int, seed: int = 11) -> list[str]:
    """Subjects that never repeat (from the whole vocabulary): all cache misses."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        subject = ".".join(_tokens(rng, VOCABULARY))
        if subject not in seen:
            seen.add(subject)
            out.append(subject)
    return out


def cycle(items: list[str], count: int) -> list[str]:
    return [items[i % len(items)] for i in range(count)]


# -- baselines ------------------------------------------------------------------


class RawFloor:
    """No matching at all: a dict from subject to precomputed trio send channels."""

    def __init__(self, table: dict[str, int]) -> None:
        self.receivers: list[trio.MemoryReceiveChannel[tuple[str, int]]] = []
        self.table: dict[str, list[trio.MemorySendChannel[tuple[str, int]]]] = {}
        for subject, fanout in table.items():
            senders = []
            for _ in range(fanout):
                send, receive = trio.open_memory_channel[tuple[str, int]](BIG)
                senders.append(send)
                self.receivers.append(receive)
            self.table[subject] = senders

    def batch(self, subjects: list[str]) -> float:
        table = self.table
        start = time.perf_counter()
        for i, subject in enumerate(subjects):
            for send in table[subject]:
                send.send_nowait((subject, i))
        elapsed = time.perf_counter() - start
        for receive in self.receivers:
            while True:
                try:
                    receive.receive_nowait()
                except trio.WouldBlock:
                    break
        return elapsed


class NaiveBroker:
    """Split the subject and compare it with every stored pattern, every time."""

    def __init__(self, patterns: list[str]) -> None:
        self.entries = [(p.split("."), deque[tuple[str, int]]()) for p in patterns]

    def publish(self, subject: str, payload: int) -> int:
        tokens = subject.split(".")
        count = 0
        for pattern, buffer in self.entries:
            if _naive_match(pattern, tokens):
                buffer.append((subject, payload))
                count += 1
        return count

    def batch(self, subjects: list[str]) -> float:
        publish = self.publish
        start = time.perf_counter()
        for i, subject in enumerate(subjects):
            publish(subject, i)
        elapsed = time.perf_counter() - start
        for _, buffer in self.entries:
            buffer.clear()
        return elapsed


def _naive_match(pattern: list[str], subject: list[str]) -> bool:
    for index, token in enumerate(pattern):
        if token == ">":
            return len(subject) > index
        if index >= len(subject) or (token != "*" and token != subject[index]):
            return False
    return len(pattern) == len(subject)


# -- this library -----------------------------------------------------------------


class Ours:
    """A Broker with one subscription per pattern, held open by an exit stack.

    ``broker_class`` is another version's Broker in ``ab.py``.
    """

    def __init__(self, broker_class: type[Broker[int]] = Broker) -> None:
        self.broker = broker_class(max_buffer_size=BIG)
        self.stack = AsyncExitStack()
        self.subs: list[Subscription[int]] = []

    async def open(self, patterns: list[str], **options: object) -> None:
        for pattern in patterns:
            sub = await self.stack.enter_async_context(
                self.broker.subscribe(pattern, **options)  # type: ignore[arg-type]
            )
            self.subs.append(sub)

    def drain(self) -> None:
        for sub in self.subs:
            while True:
                try:
                    sub.receive_nowait()
                except trio.WouldBlock:
                    break

    def batch(
        self, subjects: list[str], headers: dict[str, str] | None = None
    ) -> float:
        publish = self.broker.publish_nowait
        start = time.perf_counter()
        if headers is None:
            for i, subject in enumerate(subjects):
                publish(subject, i)
        else:
            for i, subject in enumerate(subjects):
                publish(subject, i, headers=headers)
        elapsed = time.perf_counter() - start
        self.drain()
        return elapsed

    async def close(self) -> None:
        await self.stack.aclose()


async def group_with_full_members(subjects: list[str], members: int) -> float:
    """Median µs per publish to a queue group where all members but one are full.

    Every publish walks past the full members to the one with room: the longest
    walk a group of this size takes without waiting or dropping.
    """
    broker = Broker[int](max_buffer_size=1)
    async with AsyncExitStack() as stack:
        for _ in range(members - 1):
            await stack.enter_async_context(broker.subscribe(subjects[0], queue="g"))
        roomy = await stack.enter_async_context(
            broker.subscribe(subjects[0], queue="g", max_buffer_size=BIG)
        )
        for _ in range(members - 1):  # one message each fills the others
            broker.publish_nowait(subjects[0], -1)
        times = []
        for _ in range(6):  # a warm-up, then 5 repeats
            start = time.perf_counter()
            for i, subject in enumerate(subjects):
                broker.publish_nowait(subject, i)
            times.append(time.perf_counter() - start)
            while True:
                try:
                    roomy.receive_nowait()
                except trio.WouldBlock:
                    break
        assert broker.statistics().dropped == 0
    return statistics.median(times[1:]) / len(subjects) * 1e6


async def thread_publishes(threads: int, per_thread: int) -> float:
    """µs per publish_from_thread call, ``threads`` worker threads at once."""
    broker = Broker[int](max_buffer_size=BIG)

    def worker(number: int) -> None:
        for i in range(per_thread):
            broker.publish_from_thread(f"t.{number}", i)

    async with broker.subscribe("t.*"):
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for number in range(threads):
                nursery.start_soon(trio.to_thread.run_sync, worker, number)
        elapsed = time.perf_counter() - start
    return elapsed / (threads * per_thread) * 1e6


async def thread_publisher_rate(
    threads: int,
    per_thread: int,
    policy: OverflowPolicy = OverflowPolicy.DROP_NEWEST,
    api: Any = None,
) -> float:
    """µs per message through ``broker.thread_publisher()``, ``threads`` at once.

    Each thread has a handle of its own and flushes it at the end; a consumer
    task takes the messages in batches (with ``BLOCK``, through a buffer of
    64, so the threads are held back whenever it falls behind).
    """
    block = policy is OverflowPolicy.BLOCK
    broker_class: Any = Broker if api is None else api.Broker  # (another version's)
    broker = broker_class(max_buffer_size=64 if block else BIG)
    if api is not None:
        policy = getattr(api.OverflowPolicy, policy.name)

    def worker(number: int) -> None:
        with broker.thread_publisher() as publisher:
            for i in range(per_thread):
                publisher.publish(f"t.{number}", i)

    async with broker.subscribe("t.*", policy=policy) as sub:
        taken = 0

        async def consume() -> None:
            nonlocal taken
            async for batch in sub.batches(256):
                taken += len(batch)

        async with trio.open_nursery() as outer:
            outer.start_soon(consume)
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for number in range(threads):
                    nursery.start_soon(trio.to_thread.run_sync, worker, number)
            elapsed = time.perf_counter() - start
            sub.drain()
    assert taken == threads * per_thread, taken
    return elapsed / (threads * per_thread) * 1e6


async def loop_publishes(count: int) -> float:
    """µs per ``await publish`` from a trio task, for comparison."""
    broker = Broker[int](max_buffer_size=BIG)
    async with broker.subscribe("t.*"):
        start = time.perf_counter()
        for i in range(count):
            await broker.publish("t.0", i)
        elapsed = time.perf_counter() - start
    return elapsed / count * 1e6


async def thread_crossings(count: int) -> float:
    """µs per bare ``trio.from_thread.run`` round trip: the floor of a call."""

    def worker() -> None:
        for _ in range(count):
            trio.from_thread.run(trio.lowlevel.checkpoint)

    start = time.perf_counter()
    await trio.to_thread.run_sync(worker)
    return (time.perf_counter() - start) / count * 1e6


def retained_subjects(stored: int) -> list[str]:
    """``stored`` subjects, ten per device: ``dev.<n>.temp.<k>``."""
    return [f"dev.{i // 10}.temp.{i % 10}" for i in range(stored)]


async def retained_entry(stored: int, rounds: int) -> tuple[float, float]:
    """µs to enter and leave a subscription matching 10 retained subjects.

    Also µs for a naive scan of every stored subject for the same 10.
    """
    # The match cache off: with it on, the publishes below would fill it, and
    # entering a wildcard subscription would then be timed scanning the cache.
    broker = Broker[int](max_retained=stored, match_cache_size=0)
    subjects = retained_subjects(stored)
    for i, subject in enumerate(subjects):
        broker.publish_nowait(subject, i, retain=True)
    pattern = "dev.7.temp.*"
    start = time.perf_counter()
    for _ in range(rounds):
        async with broker.subscribe(pattern) as sub:
            assert sub.statistics().pending == 10
    entry = (time.perf_counter() - start) / rounds * 1e6
    scans = max(1, rounds // 20)
    start = time.perf_counter()
    for _ in range(scans):
        found = [s for s in subjects if subject_matches(pattern, s)]
        assert len(found) == 10
    scan = (time.perf_counter() - start) / scans * 1e6
    return entry, scan


# -- peers: they call handlers synchronously instead of enqueueing ------------------


def peer_pyee(table: dict[str, int]) -> Callable[[list[str]], float]:
    from pyee import EventEmitter

    emitter = EventEmitter()
    buffers: list[deque[tuple[str, int]]] = []
    for subject, fanout in table.items():
        for _ in range(fanout):
            buffer: deque[tuple[str, int]] = deque()
            buffers.append(buffer)
            emitter.on(subject, _appender(buffer))

    return _emitting_batch(emitter.emit, buffers)


def peer_blinker(table: dict[str, int]) -> Callable[[list[str]], float]:
    from blinker import Namespace

    namespace = Namespace()
    buffers: list[deque[tuple[str, int]]] = []
    signals = {}
    for subject, fanout in table.items():
        signal = signals[subject] = namespace.signal(subject)
        for _ in range(fanout):
            buffer: deque[tuple[str, int]] = deque()
            buffers.append(buffer)
            signal.connect(_blinker_receiver(buffer), weak=False)

    def batch(subjects: list[str]) -> float:
        start = time.perf_counter()
        for i, subject in enumerate(subjects):
            signals[subject].send(subject, payload=i)
        elapsed = time.perf_counter() - start
        for buffer in buffers:
            buffer.clear()
        return elapsed

    return batch


def peer_pymitter(patterns: list[str]) -> Callable[[list[str]], float]:
    """pymitter has '*' per level but no multi-level wildcard: '>' becomes '*'."""
    from pymitter import EventEmitter

    emitter = EventEmitter(wildcard=True, delimiter=".")
    buffers: list[deque[tuple[str, int]]] = []
    for pattern in patterns:
        buffer: deque[tuple[str, int]] = deque()
        buffers.append(buffer)
        emitter.on(pattern.replace(">", "*"), _appender(buffer))

    return _emitting_batch(emitter.emit, buffers)


def _emitting_batch(
    emit: Callable[[str, str, int], object], buffers: list[deque[tuple[str, int]]]
) -> Callable[[list[str]], float]:
    """Time ``emit(subject, subject, i)`` over a batch, then empty the buffers."""

    def batch(subjects: list[str]) -> float:
        start = time.perf_counter()
        for i, subject in enumerate(subjects):
            emit(subject, subject, i)
        elapsed = time.perf_counter() - start
        for buffer in buffers:
            buffer.clear()
        return elapsed

    return batch


def _appender(buffer: deque[tuple[str, int]]) -> Callable[[str, int], None]:
    def handler(subject: str, payload: int) -> None:
        buffer.append((subject, payload))

    return handler


def _blinker_receiver(buffer: deque[tuple[str, int]]) -> Callable[..., None]:
    def receiver(sender: str, payload: int) -> None:
        buffer.append((sender, payload))

    return receiver


# -- W4: BLOCK subscribers with consumer tasks ------------------------------------


async def block_ours(fanout: int, messages: int) -> float:
    broker = Broker[int]()
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        for _ in range(fanout):
            sub = await stack.enter_async_context(
                broker.subscribe(
                    "jobs.a", max_buffer_size=64, policy=OverflowPolicy.BLOCK
                )
            )
            nursery.start_soon(_consume_sub, sub)
        start = time.perf_counter()
        for i in range(messages):
            await broker.publish("jobs.a", i)
        elapsed = time.perf_counter() - start
        await broker.aclose()
    return elapsed


async def _consume_sub(sub: Subscription[int]) -> None:
    async for _ in sub:
        pass


async def block_raw(fanout: int, messages: int) -> float:
    async with trio.open_nursery() as nursery:
        senders = []
        for _ in range(fanout):
            send, receive = trio.open_memory_channel[tuple[str, int]](64)
            senders.append(send)
            nursery.start_soon(_consume_channel, receive)
        start = time.perf_counter()
        for i in range(messages):
            for send in senders:
                await send.send(("jobs.a", i))
        elapsed = time.perf_counter() - start
        for send in senders:
            await send.aclose()
    return elapsed


async def _consume_channel(receive: trio.MemoryReceiveChannel[tuple[str, int]]) -> None:
    async for _ in receive:
        pass


# -- W5: subscribe/unsubscribe churn --------------------------------------------------


async def churn(patterns: Iterator[str], cycles: int, cache_size: int) -> list[float]:
    """Seconds per subscribe+unsubscribe cycle, with a full cache."""
    broker = Broker[int](match_cache_size=cache_size)
    async with AsyncExitStack() as stack:
        for pattern in make_patterns(2000).patterns:
            await stack.enter_async_context(broker.subscribe(pattern))
        for subject in fresh_subjects(cache_size, seed=3):
            broker.publish_nowait(subject, 0)
        assert broker.statistics().cache_size == cache_size
        times = []
        for _ in range(cycles):
            pattern = next(patterns)
            start = time.perf_counter()
            async with broker.subscribe(pattern):
                pass
            times.append(time.perf_counter() - start)
        assert broker.statistics().cache_size == cache_size
    return times


# -- W6: memory per idle subscription -------------------------------------------------


async def memory_per_subscription(count: int) -> float:
    """Bytes per entered, idle subscription (patterns from the W2 mix)."""
    patterns = make_patterns(count, seed=5).patterns
    broker = Broker[int]()
    async with AsyncExitStack() as stack:
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for pattern in patterns:
            await stack.enter_async_context(broker.subscribe(pattern))
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return grown / count


def check_hot_matches(pattern_set: PatternSet) -> None:
    """Each hot subject is matched by exactly 4 patterns (a sanity check)."""
    for subject in pattern_set.hot[:50]:
        count = sum(subject_matches(p, subject) for p in pattern_set.patterns)
        assert count == pattern_set.matches_per_hot, (subject, count)


# -- request/reply (W11) -------------------------------------------------------


async def request_round_trips(count: int, limit: float = math.inf) -> float:
    """µs per ``await broker.request`` answered by a responder task."""
    broker = Broker[int]()

    async def responder(*, task_status: trio.TaskStatus[None]) -> None:
        async with broker.subscribe("svc.double") as requests:
            task_status.started()
            async for request in requests:
                await request.respond(request.payload * 2)

    async with trio.open_nursery() as nursery:
        await nursery.start(responder)
        start = time.perf_counter()
        for i in range(count):
            await broker.request("svc.double", i, timeout=limit)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return elapsed / count * 1e6


async def channel_round_trips(
    count: int, *, per_request: bool = False, limit: float = math.inf
) -> float:
    """µs per round trip through trio memory channels, the floor of request/reply.

    One channel carries requests to a responder task, a second the answers
    back. With ``per_request``, each request carries a fresh answer channel
    of its own (what request/reply over raw channels takes once requesters are
    many and answers must not cross). With a finite ``limit``, each round
    trip runs inside ``trio.move_on_after(limit)``, as a request with a
    time limit must.
    """
    ask_send, ask_receive = trio.open_memory_channel[
        tuple[int, trio.MemorySendChannel[int] | None]
    ](1)
    answer_send, answer_receive = trio.open_memory_channel[int](1)

    async def responder() -> None:
        async for payload, back in ask_receive:
            await (answer_send if back is None else back).send(payload * 2)

    async def one(i: int) -> None:
        if per_request:
            back, answer = trio.open_memory_channel[int](1)
            await ask_send.send((i, back))
            await answer.receive()
        else:
            await ask_send.send((i, None))
            await answer_receive.receive()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(responder)
        start = time.perf_counter()
        if limit == math.inf:
            for i in range(count):
                await one(i)
        else:
            for i in range(count):
                with trio.move_on_after(limit):
                    await one(i)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return elapsed / count * 1e6


# -- OpenTelemetry (W12) ------------------------------------------------------


async def otel_publish_costs(messages: int, repeats: int) -> dict[str, float]:
    """µs per ``publish_nowait`` (one cached subject, fan-out 1), in turn.

    Plain, instrumented with metrics (the SDK's MeterProvider and an
    in-memory reader), and instrumented with traces as well (the SDK's
    TracerProvider: a span per publish, its context injected in the headers;
    no exporter, so the figure is the making of the spans, not their export).
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from trio_pubsub.otel import instrument

    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    tracers = TracerProvider()
    brokers: dict[str, Broker[int]] = {
        "plain": Broker[int](max_buffer_size=BIG),
        "metrics": Broker[int](max_buffer_size=BIG),
        "metrics and traces": Broker[int](max_buffer_size=BIG),
    }
    handles = [
        instrument(brokers["metrics"], meter_provider=meters),
        instrument(
            brokers["metrics and traces"],
            meter_provider=meters,
            tracer_provider=tracers,
        ),
    ]
    times: dict[str, list[float]] = {key: [] for key in brokers}
    async with AsyncExitStack() as stack:
        subs = {
            key: await stack.enter_async_context(broker.subscribe("m.1"))
            for key, broker in brokers.items()
        }
        for round_ in range(repeats + 1):
            for key, broker in brokers.items():
                publish = broker.publish_nowait
                start = time.perf_counter()
                for i in range(messages):
                    publish("m.1", i)
                elapsed = time.perf_counter() - start
                sub = subs[key]
                while True:
                    try:
                        sub.receive_nowait()
                    except trio.WouldBlock:
                        break
                if round_:  # the first round warms up
                    times[key].append(elapsed / messages * 1e6)
    for handle in handles:
        handle.uninstrument()
    meters.shutdown()
    tracers.shutdown()
    return {key: statistics.median(values) for key, values in times.items()}
