"""Queue groups against one shared trio channel: a 1 ms and a 100 ms worker.

    python bench/groups.py

A job every 10 ms, 200 jobs, latency from publish to done, run twice: on trio's
autojump clock (virtual time, the figures the test suite holds) and on the
real clock (what the scheduling costs on this machine besides). The scenario is
the one in tests/unit/test_queue_groups.py, imported from there so that both
measure the same thing.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.test_queue_groups import (
    latencies_queue_group,
    latencies_shared_channel,
)


async def main() -> None:
    for name, run in (
        ("queue group", latencies_queue_group),
        ("shared trio channel", latencies_shared_channel),
    ):
        done = await run(200)
        print(
            f"  {name:<20} mean {statistics.mean(done) * 1e3:7.2f} ms   "
            f"p50 {statistics.median(done) * 1e3:7.2f} ms   "
            f"max {max(done) * 1e3:7.2f} ms"
        )


if __name__ == "__main__":
    print("virtual time (autojump clock):")
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    print("real time:")
    trio.run(main)
