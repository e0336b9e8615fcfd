"""A/B: the library as it is against the library at an earlier commit, in one process.

    python bench/ab.py --before <commit> [--rounds 15] [--messages 20000]

The package of ``<commit>`` is taken from git (``git archive``), imported under
another name beside the working tree's, and both run the same workloads in
turn, batch after batch: W1 (one literal subject, fan-out F) and W2 (the hot
subjects of N patterns of the W2 mix, all cache hits), W3b (a miss minus
a hit on the same new subjects, see ``misses.py``), and the thread publisher
(two threads, 20,000 messages each, DROP_NEWEST and BLOCK). Each round times one
batch of A and one of B, in alternating order; the figure reported is the
median over rounds of the ratio A/B of the two times (before / now), so drift
of the shared machine between rounds cancels. 1.00x means equal; above 1 the
current code is faster.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import trio
from misses import miss_minus_hit_us
from workloads import (
    Ours,
    cycle,
    fresh_subjects,
    make_patterns,
    thread_publisher_rate,
)

import trio_pubsub
from trio_pubsub import OverflowPolicy

ROOT = Path(__file__).resolve().parent.parent


def load_before(commit: str, into: Path) -> ModuleType:
    """Import ``src/trio_pubsub`` of ``commit`` as ``trio_pubsub_before``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "src/trio_pubsub"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "src" / "trio_pubsub").rename(into / "trio_pubsub_before")
    sys.path.insert(0, str(into))
    return importlib.import_module("trio_pubsub_before")


def side(module: Any) -> Ours:
    """One implementation's broker, with subscriptions held open."""
    return Ours(module.Broker)


def paired(
    a: Callable[[], float], b: Callable[[], float], rounds: int
) -> tuple[float, float, float]:
    """Median time of A, of B, and median of the per-round ratios A/B."""
    times_a: list[float] = []
    times_b: list[float] = []
    ratios: list[float] = []
    for round_ in range(rounds):
        if round_ % 2:
            tb, ta = b(), a()
        else:
            ta, tb = a(), b()
        times_a.append(ta)
        times_b.append(tb)
        ratios.append(ta / tb)
    return (
        statistics.median(times_a),
        statistics.median(times_b),
        statistics.median(ratios),
    )


def _next_miss_minus_hit(side: Ours, chunks: Iterator[list[str]]) -> float:
    return miss_minus_hit_us(side, next(chunks))


async def main(before: ModuleType, rounds: int, messages: int) -> None:
    print(f"{'workload':<34} {'before µs':>10} {'now µs':>10} {'now speed':>10}")

    async def case(name: str, patterns: list[str], subjects: list[str]) -> None:
        old, new = side(before), side(trio_pubsub)
        await old.open(patterns)
        await new.open(patterns)
        old.batch(subjects)  # warm: the hot subjects are cached
        new.batch(subjects)
        t_old, t_new, ratio = paired(
            lambda: old.batch(subjects), lambda: new.batch(subjects), rounds
        )
        per = 1e6 / len(subjects)
        print(f"{name:<34} {t_old * per:>10.3f} {t_new * per:>10.3f} {ratio:>9.3f}x")
        await old.stack.aclose()
        await new.stack.aclose()

    for fanout in (1, 10, 100):
        subject = "orders.42.created"
        await case(f"W1 fan-out {fanout}", [subject] * fanout, [subject] * messages)
    for n in (10, 1_000, 100_000):
        pattern_set = make_patterns(n)
        await case(
            f"W2 cache hits, N={n:,}",
            pattern_set.patterns,
            cycle(pattern_set.hot, messages),
        )
    for n in (10, 100_000):
        old, new = side(before), side(trio_pubsub)
        patterns = make_patterns(n).patterns
        await old.open(patterns)
        await new.open(patterns)
        chunk = 2_000
        fresh = iter(
            fresh_subjects(chunk * 2 * (rounds + 1), seed=n)[i : i + chunk]
            for i in range(0, chunk * 2 * (rounds + 1), chunk)
        )
        miss_minus_hit_us(old, next(fresh))  # warm-up
        miss_minus_hit_us(new, next(fresh))
        t_old, t_new, ratio = paired(
            functools.partial(_next_miss_minus_hit, old, fresh),
            functools.partial(_next_miss_minus_hit, new, fresh),
            rounds,
        )
        name = f"W3b miss minus hit, N={n:,}"
        print(f"{name:<34} {t_old:>10.3f} {t_new:>10.3f} {ratio:>9.3f}x")
        await old.stack.aclose()
        await new.stack.aclose()
    for policy in (OverflowPolicy.DROP_NEWEST, OverflowPolicy.BLOCK):
        times: dict[str, list[float]] = {"old": [], "new": []}
        ratios = []
        for round_ in range(max(3, rounds // 3)):
            order = [("old", before), ("new", trio_pubsub)]
            if round_ % 2:
                order.reverse()
            got = {}
            for label, api in order:
                got[label] = await thread_publisher_rate(2, 20_000, policy, api)
                times[label].append(got[label])
            ratios.append(got["old"] / got["new"])
        name = f"thread publisher, 2 threads, {policy.name}"
        t_old, t_new = statistics.median(times["old"]), statistics.median(times["new"])
        print(
            f"{name:<34} {t_old:>10.3f} {t_new:>10.3f} "
            f"{statistics.median(ratios):>9.3f}x"
        )


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        before = load_before(args.before, Path(scratch))
        print(f"A = {args.before} ({before.__file__}), B = the working tree")
        trio.run(main, before, args.rounds, args.messages)


if __name__ == "__main__":
    run()
