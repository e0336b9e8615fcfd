"""Every script in examples/ runs to completion and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Lines each example must print; every example must have an entry.
EXPECTED: dict[str, list[str]] = {
    "demo.py": [
        "order service: published 90 events for 30 orders",
        "billing: charged 30 of 30 paid orders",
        "audit: recorded 90 events",
        "live feed: disconnected as a slow consumer",
        "disconnected=1",
    ],
    "quickstart.py": [
        "orders.42.created: order 42 was created",
        "SubscriptionStatistics(delivered=1, received=1, pending=0, dropped=0,",
    ],
}


def run(name: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs(name: str) -> None:
    """The example exits cleanly and prints its expected lines."""
    assert name in EXPECTED, f"add the expected output of {name} to EXPECTED"
    out = run(name)
    for line in EXPECTED[name]:
        assert line in out, out


def test_demo_table_obeys_the_law() -> None:
    """In the demo's table, BLOCK and audit lose nothing and drops are counted."""
    rows = {}
    for line in run("demo.py").splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[-1].isdigit() and parts[-3].isdigit():
            name = " ".join(parts[:-5])
            rows[name] = tuple(int(p) for p in parts[-3:])
    assert rows["billing"] == (30, 30, 0)
    assert rows["audit"] == (90, 90, 0)
    delivered, received, dropped = rows["metrics"]
    assert delivered == received
    assert delivered + dropped == 90
    delivered, received, dropped = rows["live feed"]
    assert delivered == received
    assert dropped >= 3
