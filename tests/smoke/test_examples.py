"""Every script in examples/ runs to completion and prints what it promises."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
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
    "wildcards.py": [
        "orders.42.created              yes           yes      yes    yes      -       -",
        "a*.b                            -             -        -     yes      -      yes",
        "publish('orders.*') would fail: invalid subject 'orders.*': wildcards",
    ],
    "slow_consumers.py": [
        "DROP_NEWEST ",
        "DROP_OLDEST ",
        "BLOCK ",
        "cut off as a slow consumer",
    ],
    "graceful_shutdown.py": [
        "a publish after closing fails: the broker is closed",
        "jobs done: 10 of 10",
        "abort: cancel the worker, count what it did not get to",
    ],
    "tutorial_1_first_message.py": [
        "publish: 1 subscription took the message",
        "received on orders.42.created: OrderEvent(order_id=42, kind='created'",
    ],
    "tutorial_2_wildcards.py": [
        "created  got orders.7.created",
        "created  got orders.8.created",
        "order 7  got orders.7.paid",
        "all      got orders.8.paid",
    ],
    "tutorial_3_policies.py": [
        "audit    DROP_NEWEST  received 100, dropped   0",
        "billing  BLOCK        received  50, dropped   0",
        "metrics  DROP_NEWEST  received ",
    ],
    "read_counters.py": [
        "subscription: SubscriptionStatistics(delivered=3, received=1, pending=2, dropped=2, max_buffer_size=3, high_water=3, oldest_pending_age=1.5)",
        "routed to it: 5 = received + pending + dropped",
        "held at most 3 at once; the oldest pending has waited 1.5 s",
        "broker: published=5 dropped=2",
        "export: {'published': 5, 'delivered': 3, 'dropped': 2,",
    ],
    "metrics_dashboard.py": [
        "serving metrics at http://127.0.0.1:",
        'trio_pubsub_published_total{broker="shop"} 200.0',
        'trio_pubsub_dropped_total{broker="shop",pattern="orders.>",queue="",'
        'subscription="metrics"} 192.0',
        'trio_pubsub_dropped_total{broker="shop",pattern="orders.*.paid",'
        'queue="billing",subscription="billing"} 0.0',
    ],
    "property_test_routing.py": ["every routing property holds"],
    "request_reply.py": [
        "tea:  4.50 from pricing-1 in 2 ms",
        "cup: 12.00 from pricing-2 in 2 ms",
        "stock.get: no responders for a request on 'stock.get': no subscription",
        "spoon: no answer within 0.5 s",
        "requests still waiting: 0",
    ],
    "worker_pool.py": [
        # the mock clock makes the split exact: the faster, the more jobs
        "fast      0.010    75    62%",
        "medium    0.030    33    28%",
        "slow      0.090    12    10%",
        "each job done exactly once: True (120 of 120)",
        "audit saw 120 of 120 jobs",
    ],
    "threads.py": [
        "readings: 10 of 10, in order: True",
        "first and last: 20.0 ... 20.9 °C",
        "resize jobs done: [640.0]",
        "dropped: 0",
        "from the trio thread itself: RuntimeError: publish_from_thread() was called",
    ],
    "thread_batches.py": [
        "in the feed thread: invalid subject 'ticks.*': wildcards",
        "ticks: 100000 of 100000 in ",
        "batches, in order per feed: True",
        "dropped: 0",
    ],
    "retained_state.py": [
        "config.db.host     = db1.internal",
        "config.db.port     = 5432",
        "config.log.level   = info",
        "config.log.level   = debug",
        "retained now: [('config.log.level', 'debug')]",
        "subjects retained: 3, evicted: 0",
    ],
    "two_processes.py": [
        "shop heard billing.1.charged: {'charged': 10}",
        "shop heard billing.5.charged: {'charged': 50}",
        "shop bridge: exported 5, imported 5, dropped 0",
        "billing process exited with code 0",
    ],
    "signal_shutdown.py": [
        "got SIGINT: draining",
        "every accepted job was done: True",
        "dropped: 0",
    ],
    "durable_orders.py": [
        "orders stored: 20, still in the outbox: 0",
        "billing killed with SIGKILL after 7 charges",
        "billing restarted: ",
        "every order charged exactly once: True (20 of 20)",
    ],
    "order_pipeline.py": [
        "log: handler 'billing': attempt failed, retried (subject 'orders.3.placed', "
        "attempt 1): ConnectionError: gateway timed out",
        "log: handler 'billing': given up, sent to 'dead' (subject "
        "'orders.17.placed', attempt 1): ValueError: cannot charge a negative",
        "dead letter on dead.orders.17.placed:",
        "  dead-letter-handler: billing",
        "  dead-letter-attempts: 1",
        "  dead-letter-error-type: ValueError",
        "  dead-letter-subject: orders.17.placed",
        "each customer's orders charged in order: True",
        "orders charged: 29 of 30",
        "billing: received 31, handled 29, retried 10, dead-lettered 1, "
        "duplicates 1, failed 0, in flight 0",
    ],
    "quickstart.py": [
        "orders.42.created: order 42 was created",
        "delivered 1, dropped 0",
    ],
}


# Arguments an example needs to finish by itself.
ARGUMENTS: dict[str, list[str]] = {"signal_shutdown.py": ["--stop-after", "0.3"]}


def run(name: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *ARGUMENTS.get(name, [])],
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


def test_slow_consumers_table() -> None:
    """BLOCK loses nothing; the dropping policies count what they did not deliver."""
    rows: dict[str, tuple[int, int]] = {}
    for line in run("slow_consumers.py").splitlines()[1:]:
        cells = line.split()
        rows[cells[0]] = (int(cells[2]), int(cells[3]))
    assert rows["BLOCK"] == (200, 0)
    for policy in ("DROP_NEWEST", "DROP_OLDEST"):
        assert sum(rows[policy]) == 200
        assert rows[policy][1] > 0
    # disconnect_after=5: five drops in a row cut it off (more only if the
    # consumer got a message in between, which resets the streak)
    assert rows["DISCONNECT"][1] >= 5


def test_tutorial_wildcard_routing() -> None:
    """Each listener of step 2 gets exactly what its pattern selects."""
    got = sorted(run("tutorial_2_wildcards.py").splitlines())
    assert got == sorted(
        [
            "all      got orders.7.created",
            "all      got orders.7.paid",
            "all      got orders.8.created",
            "all      got orders.8.paid",
            "created  got orders.7.created",
            "created  got orders.8.created",
            "order 7  got orders.7.created",
            "order 7  got orders.7.paid",
        ]
    )


def test_abort_counts_what_was_not_done() -> None:
    """After an abort, every job is received or counted as dropped."""
    out = run("graceful_shutdown.py").split("abort:")[1]
    leaves = next(line for line in out.splitlines() if "worker leaves" in line)
    received = int(leaves.split("received ")[1].split(",")[0])
    pending = int(leaves.split("pending ")[1].split(",")[0])
    assert received + pending == 10
    assert f"dropped={pending}," in out


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


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_real_signal_drains_the_broker(signum: signal.Signals) -> None:
    """Ctrl-C (SIGINT) or SIGTERM from outside: the example drains and exits 0."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "signal_shutdown.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "ready" in process.stdout.readline()
        time.sleep(0.3)  # let jobs flow (not a measure)
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:  # pragma: no cover - only if it hangs
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert f"got {signum.name}: draining" in out
    assert "every accepted job was done: True" in out
    assert "dropped: 0" in out
    assert "Traceback" not in err


def test_the_landing_page_shows_what_the_quickstart_prints_issue_29() -> None:
    """The output under the quickstart on the index is the real output."""
    page = (EXAMPLES.parent / "docs" / "index.md").read_text()
    shown = page.split("It prints:")[1].split("```text\n")[1].split("```")[0]
    assert run("quickstart.py") == shown


def test_the_performance_table_is_what_the_benchmarks_measured_issue_29() -> None:
    """bench/users.md is derived from bench/results.md, never typed by hand."""
    bench = EXAMPLES.parent / "bench"
    spec = importlib.util.spec_from_file_location("users", bench / "users.py")
    assert spec is not None
    assert spec.loader is not None
    users = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(users)
    derived = users.table((bench / "results.md").read_text())
    assert (bench / "users.md").read_text() == derived
