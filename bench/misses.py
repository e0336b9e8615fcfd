"""W3b: what a cache miss costs over a hit on the same subjects, and why.

A miss at N=100,000 patterns reaches more subscriptions than one at N=10, so
comparing misses alone mixes the lookup's growth with the deliveries'. Here
every subject is published twice in a row: first as a miss (parsed, matched,
cached), then as a hit with exactly the same deliveries. The difference is what
routing a new subject costs. Chunks of subjects are smaller than the cache, so
the second pass always hits.

``nodes_per_miss`` walks the trie as ``SubjectTrie.match`` does and counts the
nodes it visits, and ``length_dead_per_miss`` how many of them a pruning by
length could skip: diagnostics that read internals. ``python bench/misses.py``
prints both with W3b at N = 10, 1,000 and 100,000.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any, Protocol

import workloads as w

from trio_pubsub._broker import pipeline
from trio_pubsub._subject import parse_subject


class HasBroker(Protocol):
    @property
    def broker(self) -> Any: ...

    def drain(self) -> None: ...


def miss_minus_hit_us(ours: HasBroker, subjects: list[str]) -> float:
    """µs per subject: publishing ``subjects`` uncached, minus publishing them again."""
    publish = ours.broker.publish_nowait
    gc.collect()
    start = time.perf_counter()
    for i, subject in enumerate(subjects):
        publish(subject, i)
    middle = time.perf_counter()
    for i, subject in enumerate(subjects):
        publish(subject, i)
    end = time.perf_counter()
    ours.drain()
    return ((middle - start) - (end - middle)) / len(subjects) * 1e6


def paired_growth(
    reference: w.Ours, ours: w.Ours, repeats: int, chunk: int, seed: int
) -> tuple[float, float, float]:
    """Median miss-minus-hit at N=10 and at N, and the median of their ratios.

    Each repeat measures the reference broker (N=10) and then ``ours`` on new
    subjects of the same kind, one right after the other.
    """
    subjects = w.fresh_subjects(chunk * 2 * (repeats + 1), seed=seed)
    small: list[float] = []
    big: list[float] = []
    for repeat in range(repeats + 1):  # the first pair warms up
        base = repeat * 2 * chunk
        a = miss_minus_hit_us(reference, subjects[base : base + chunk])
        b = miss_minus_hit_us(ours, subjects[base + chunk : base + 2 * chunk])
        if repeat:
            small.append(a)
            big.append(b)
    ratios = [b / a for a, b in zip(small, big, strict=True)]
    return statistics.median(small), statistics.median(big), statistics.median(ratios)


def nodes_per_miss(ours: w.Ours, subjects: list[str]) -> float:
    """Mean trie nodes a match visits per subject (root included)."""
    root: Any = pipeline(ours.broker).routes._trie._root
    visited = 0
    for subject in subjects:
        tokens = parse_subject(subject)
        end = len(tokens)
        stack = [(root, 0)]
        while stack:
            node, index = stack.pop()
            visited += 1
            while index < end:
                literal = node.literal
                child = literal.get(tokens[index]) if literal else None
                index += 1
                if node.star is not None:
                    if child is not None:
                        stack.append((child, index))
                    node = node.star
                elif child is not None:
                    node = child
                else:
                    break
                visited += 1
    return visited / len(subjects)


_ALL = (1 << 64) - 1


def _reach(root: Any) -> dict[int, int]:
    """For each node (by id), the token counts its patterns can still take.

    Bit k: some pattern below ends exactly k tokens further (63: 63 or more).
    """
    order: list[Any] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend((node.literal or {}).values())
        if node.star is not None:
            stack.append(node.star)
    reach: dict[int, int] = {}
    for node in reversed(order):  # children before parents
        mask = (1 if node.exact else 0) | (_ALL ^ 1 if node.rest else 0)
        children = [*(node.literal or {}).values()]
        if node.star is not None:
            children.append(node.star)
        for child in children:
            below = reach[id(child)]
            mask |= ((below << 1) & _ALL) | (1 << 63 if below >> 62 else 0)
        reach[id(node)] = mask
    return reach


def length_dead_per_miss(ours: w.Ours, subjects: list[str]) -> tuple[float, float]:
    """Nodes a match visits per subject, and how many of them pruning could skip.

    Those are the nodes in branches whose patterns cannot end at the subject's
    length.
    """
    root: Any = pipeline(ours.broker).routes._trie._root
    reach = _reach(root)
    visited = dead_visits = 0
    for subject in subjects:
        tokens = parse_subject(subject)
        end = len(tokens)
        stack = [(root, 0, False)]
        while stack:
            node, index, dead = stack.pop()
            while True:
                visited += 1
                dead_visits += dead
                if index >= end:
                    break
                literal = node.literal
                child = literal.get(tokens[index]) if literal else None
                index += 1
                left = min(end - index, 63)
                if node.star is not None:
                    if child is not None:
                        stack.append(
                            (child, index, dead or not reach[id(child)] >> left & 1)
                        )
                    dead = dead or not reach[id(node.star)] >> left & 1
                    node = node.star
                elif child is not None:
                    dead = dead or not reach[id(child)] >> left & 1
                    node = child
                else:
                    break
    return visited / len(subjects), dead_visits / len(subjects)


async def _main() -> None:
    reference = w.Ours()
    await reference.open(w.make_patterns(10).patterns)
    for n in (10, 1_000, 100_000):
        ours = w.Ours()
        await ours.open(w.make_patterns(n).patterns)
        small, big, growth = paired_growth(reference, ours, 7, 2_000, seed=n)
        nodes = nodes_per_miss(ours, w.fresh_subjects(5_000, seed=n + 1))
        _, dead = length_dead_per_miss(ours, w.fresh_subjects(5_000, seed=n + 2))
        print(
            f"N={n:>7,}: miss-hit {big:.3f} us (N=10: {small:.3f}), "
            f"{growth:.2f}x paired, {nodes:.2f} nodes per miss, "
            f"{dead:.2f} of them in branches that cannot end at its length"
        )
        await ours.close()


if __name__ == "__main__":
    import trio

    trio.run(_main)
