"""The long leak soak: 100,000 subscribe/leave cycles and 1,000,000 publishes.

Usage: ``python bench/soak.py`` (a shorter version runs in ``make test``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.stress.soak import soak


def main() -> None:
    start = time.perf_counter()
    result = trio.run(soak, 100_000, 1_000_000)
    elapsed = time.perf_counter() - start
    print(f"cycles: {result.cycles:,}, publishes: {result.publishes:,}")
    print(
        f"traced memory: start {result.start_bytes:,} B, end {result.end_bytes:,} B "
        f"(+{result.end_bytes - result.start_bytes:,} B), peak {result.peak_bytes:,} B"
    )
    print(
        f"trie nodes left: {result.trie_nodes}, subscriptions: {result.subscriptions}"
    )
    print(f"took {elapsed:.1f} s")


if __name__ == "__main__":
    main()
