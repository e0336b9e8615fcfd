"""A short leak soak: memory returns to where it started, the trie to its root."""

from __future__ import annotations

from tests.stress.soak import soak


async def test_subscribe_leave_cycles_leak_nothing() -> None:
    """5,000 cycles and 50,000 publishes leave memory within 64 KiB of its start."""
    result = await soak(cycles=5_000, publishes=50_000)
    assert result.subscriptions == 0
    assert result.trie_nodes == 1, "the trie was not pruned back to its root"
    assert result.publishes >= 50_000
    assert result.end_bytes - result.start_bytes < 64 * 1024, result
