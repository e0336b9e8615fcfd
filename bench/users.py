"""The users' table of the performance page, derived from ``results.md``.

    python bench/users.py          # rewrites bench/users.md from bench/results.md

``make bench`` runs it after writing ``results.md``; the docs include
``users.md``, and a test checks that it is what ``results.md`` says, so the
page's figures cannot drift from the measurements. Every ratio reads the same
way: how many times as fast as the baseline (above 1: faster).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def sections(text: str) -> dict[str, list[list[str]]]:
    """Each ``### heading``'s table rows (cells stripped), header row included."""
    found: dict[str, list[list[str]]] = {}
    rows: list[list[str]] | None = None
    for line in text.splitlines():
        if line.startswith("### "):
            rows = found.setdefault(line[4:], [])
        elif rows is not None and line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return found


def row(found: dict[str, list[list[str]]], heading: str, *first: str) -> list[str]:
    """The row of the section whose heading starts with ``heading``.

    Raises:
        KeyError: no such section, or no row starting with the cells ``first``.
    """
    for title, rows in found.items():
        if title.startswith(heading):
            for cells in rows:
                if cells[: len(first)] == list(first):
                    return cells
            raise KeyError(f"no row {first} under {title!r}")
    raise KeyError(f"no section {heading!r}")


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("x"))


def per_second(micros: float) -> str:
    """Messages per second, to three significant figures."""
    rate = 1e6 / micros
    digits = len(str(int(rate)))
    return f"{round(rate, 3 - digits):,.0f}"


def table(results: str) -> str:
    found = sections(results)
    w1_1 = row(found, "W1:", "1")
    w1_10 = row(found, "W1:", "10")
    w10_1 = row(found, "W10:", "BLOCK, await publish", "1")
    w10_10 = row(found, "W10:", "BLOCK, await publish", "10")
    drain = row(found, "W10b:", "one consumer draining a full buffer")
    pair = row(found, "W11:", "a pair of trio memory channels (request, answer)")
    request = row(found, "W11:", "`broker.request(timeout=math.inf)` / `msg.respond`")
    one_thread = row(
        found,
        "W8a: `broker.thread_publisher()`",
        "1 thread(s), DROP_NEWEST (buffer large)",
    )
    from_thread = row(
        found, "W8a: publish_from_thread", "publish_from_thread, 1 thread(s)"
    )
    one_way = row(found, "W9p: messages per second one way", "bridge → bridge")
    round_trip = row(found, "W9p round trip", "bridge ⇄ bridge")
    traces = row(found, "W12:", "metrics and traces")
    plain = row(found, "W12:", "plain")

    def speed(ours: float, theirs: float) -> str:
        ratio = theirs / ours
        return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.0f}x"

    lines = [
        "| what you do | messages per second | µs each | as fast as | baseline |",
        "|---|---|---|---|---|",
        f"| `publish_nowait` to one subscriber (subject seen before) "
        f"| {per_second(number(w1_1[1]))} | {number(w1_1[1]):.1f} "
        f"| {speed(number(w1_1[1]), number(w1_1[2]))} "
        f"| one `send_nowait` on a trio memory channel |",
        f"| the same to 10 subscribers | {per_second(number(w1_10[1]))} "
        f"| {number(w1_10[1]):.1f} | {speed(number(w1_10[1]), number(w1_10[2]))} "
        f"| ten `send_nowait`, one per channel |",
        f"| `await publish` to a `BLOCK` subscriber, a consumer task doing "
        f"`async for` | {per_second(number(w10_1[2]))} | {number(w10_1[2]):.1f} "
        f"| {w10_1[4]} | a trio channel fed the same way |",
        f"| the same to 10 consumers (each gets every message) "
        f"| {per_second(number(w10_10[2]))} | {number(w10_10[2]):.1f} "
        f"| {w10_10[4]} | ten trio channels fed the same way |",
        f"| a consumer taking `sub.batches(64)` from a full buffer "
        f"| {per_second(number(drain[2]))} | {number(drain[2]):.2f} "
        f"| {speed(number(drain[2]), number(drain[1]))} "
        f"| `async for message in sub` |",
        f"| `await broker.request(...)`, answered by a task "
        f"| {per_second(number(request[1]))} | {number(request[1]):.0f} "
        f"| {speed(number(request[1]), number(pair[1]))} "
        f"| a pair of trio channels (request, answer) |",
        f"| `broker.thread_publisher()` from one thread "
        f"| {per_second(number(one_thread[1]))} | {number(one_thread[1]):.1f} "
        f"| {speed(number(one_thread[1]), number(from_thread[1]))} "
        f"| `broker.publish_from_thread`, one call a message |",
        f"| NATS bridge to NATS bridge, a process each, one way "
        f"| {per_second(1e6 / number(one_way[1]))} "
        f"| {1e6 / number(one_way[1]):.1f} | {one_way[2]} "
        f"| plain nats-py to plain nats-py |",
        f"| the same there and back | {per_second(1e6 / number(round_trip[1]))} "
        f"| {1e6 / number(round_trip[1]):.1f} | {round_trip[2]} "
        f"| plain nats-py both ways |",
        f"| `publish_nowait` with OpenTelemetry traces on "
        f"| {per_second(number(traces[1]))} | {number(traces[1]):.0f} "
        f"| {speed(number(traces[1]), number(plain[1]))} "
        f"| the same without (metrics alone cost nothing) |",
    ]
    head = results.splitlines()[0]
    return f"{head}\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    results = (HERE / "results.md").read_text()
    (HERE / "users.md").write_text(table(results))
    if "-q" not in sys.argv:
        print((HERE / "users.md").read_text())


if __name__ == "__main__":
    main()
