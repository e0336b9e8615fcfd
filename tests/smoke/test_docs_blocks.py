"""Every Python block of the docs and the README runs (issue 28).

A block is run as it is when it is a whole program; a fragment (a block that
uses a ``broker``, a ``url`` or a ``bridge`` it does not make) runs inside a
harness written here for it, which makes what it needs, runs it, and checks
what it should have done. A NATS block gets a real nats-server. A block that
defines a pytest test runs under pytest, in a process of its own.

A new block without a harness fails ``test_every_block_has_a_harness``: write
one, so that no block can rot.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests.bridge.server import NatsServer

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks() -> dict[tuple[str, int], str]:
    """Every ```python block, by (file, number from 1 within the file)."""
    found = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        if "_build" in path.parts:
            continue
        text = path.read_text()
        for number, match in enumerate(FENCE.finditer(text), 1):
            found[(str(path.relative_to(ROOT)), number)] = match.group(1)
    return found


PRELUDE = """\
from typing import Any

import trio
import trio.testing

from trio_pubsub import Broker, OverflowPolicy, SubscriptionState
from trio_pubsub.nats import decode_json, encode_json, open_bridge
"""


@attrs.frozen
class Harness:
    """How to run one block.

    ``around`` is the body of ``async def run(url)``, with ``{block}`` where
    the block goes (indented as the marker is); ``replace`` swaps literals of
    the block first. ``kind`` is ``"async"`` (that), ``"program"`` (the block
    is a script) or ``"pytest"`` (the block is a test module).
    """

    kind: str
    around: str = "{block}"
    replace: tuple[tuple[str, str], ...] = ()


BROKER = """\
broker = Broker[Any]()
{block}
"""

BRIDGED = """\
broker = Broker[Any]()
async with open_bridge(
    broker, url, outbound=["x"], encode=encode_json, decode=decode_json
) as bridge:
    {block}
"""

PRICES = """\
broker = Broker[Any]()


async def respond(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with broker.subscribe("prices.get") as asked:
        task_status.started()
        async for message in asked:
            await message.respond({"sku": message.payload["sku"], "price": 3})


async with trio.open_nursery() as nursery:
    await nursery.start(respond)
    {block}
    assert price.payload == {"sku": "tea", "price": 3}
    nursery.cancel_scope.cancel()
"""

BATCHES = """\
broker = Broker[int]()
stored: list[Any] = []


async def store_all(batch: list[Any]) -> None:
    stored.extend(batch)


async with broker.subscribe("a") as sub:
    for i in range(5):
        broker.publish_nowait("a", i)
    await broker.aclose()  # the stream ends once drained
    {block}
assert [m.payload for m in stored] == [0, 1, 2, 3, 4]
"""

PROMETHEUS = """\
broker = Broker[Any]()
{block}
try:
    assert server.server_port > 0
finally:
    server.shutdown()
    server.server_close()
    thread.join()
"""

OTEL = """\
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

broker = Broker[Any]()
meter_provider = MeterProvider()
tracer_provider = TracerProvider()
{block}
meter_provider.shutdown()
"""

ASK_BY_HEADER = """\
broker = Broker[Any]()
ask = {"sku": "tea"}


async def quote(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with broker.subscribe("quotes.ask") as asks:
        task_status.started()
        async for message in asks:
            await broker.publish(message.headers["answer-to"], 3)


async with trio.open_nursery() as nursery:
    await nursery.start(quote)
    {block}
    assert answer.payload == 3
    nursery.cancel_scope.cancel()
"""

# A live feed stuck on a client that never takes a message: the watcher must
# stop the feed once DISCONNECT cuts the subscription off.
FEED = """\
broker = Broker(int)
async with broker.subscribe(
    "feed", max_buffer_size=4, policy=OverflowPolicy.DISCONNECT
) as sub:
    {block}
    stuck = trio.Event()

    async def client_send(payload: Any) -> None:
        await stuck.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed, client_send, sub, nursery.cancel_scope)
        nursery.start_soon(watch, sub, nursery.cancel_scope)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(10):
            broker.publish_nowait("feed", i)
    assert sub.state is SubscriptionState.CUT_OFF
"""

HARNESSES: dict[tuple[str, int], Harness] = {
    ("README.md", 1): Harness("program"),
    ("docs/how-to/bridge-to-nats.md", 1): Harness(
        "async", replace=(('"nats://127.0.0.1:4222"', "url"),)
    ),
    ("docs/how-to/bridge-to-nats.md", 2): Harness("async", BROKER),
    ("docs/how-to/bridge-to-nats.md", 3): Harness("async", PRICES),
    ("docs/how-to/bridge-to-nats.md", 4): Harness("async", BRIDGED),
    ("docs/how-to/bridge-to-nats.md", 5): Harness("async", BROKER),
    ("docs/how-to/choose-a-policy.md", 1): Harness("async", FEED),
    ("docs/how-to/choose-a-policy.md", 2): Harness("async", BROKER),
    ("docs/how-to/consume-in-batches.md", 1): Harness("async", BATCHES),
    ("docs/how-to/monitor-a-broker.md", 1): Harness(
        "async",
        PROMETHEUS,
        replace=(("start_http_server(9464", "start_http_server(0"),),
    ),
    ("docs/how-to/monitor-a-broker.md", 2): Harness("async", OTEL),
    ("docs/how-to/process-events-reliably.md", 1): Harness("async", BROKER),
    ("docs/how-to/process-events-reliably.md", 2): Harness("pytest"),
    ("docs/how-to/property-test-routing.md", 1): Harness("pytest"),
    ("docs/how-to/property-test-routing.md", 2): Harness("pytest"),
    ("docs/how-to/request-reply.md", 1): Harness("async", ASK_BY_HEADER),
    ("docs/reference/api.md", 1): Harness("pytest"),
}


def source(block: str, harness: Harness) -> str:
    """The module that runs ``block`` in ``harness`` (kind ``"async"``)."""
    for old, new in harness.replace:
        assert old in block, f"the harness expects {old!r} in the block"
        block = block.replace(old, new)
    lines = []
    for line in harness.around.splitlines():
        if line.strip() == "{block}":
            indent = line[: len(line) - len(line.lstrip())]
            lines.append(textwrap.indent(block, indent))
        else:
            lines.append(line)
    body = textwrap.indent("\n".join(lines), "    ")
    return f"{PRELUDE}\n\nasync def run(url: str) -> None:\n{body}\n"


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    started = NatsServer()
    started.start()
    yield started
    started.stop()


def test_every_block_has_a_harness() -> None:
    found = set(blocks())
    assert found == set(HARNESSES), (
        f"blocks without a harness: {sorted(found - set(HARNESSES))}; "
        f"harnesses without a block: {sorted(set(HARNESSES) - found)}"
    )


@pytest.mark.parametrize("key", sorted(HARNESSES), ids="{0[0]}#{0[1]}".format)
def test_the_block_runs(
    key: tuple[str, int], server: NatsServer, tmp_path: Path
) -> None:
    block = blocks()[key]
    harness = HARNESSES[key]
    name = f"{key[0]}, block {key[1]}"
    if harness.kind == "program":
        namespace: dict[str, Any] = {"__name__": "__main__"}
        exec(compile(block, name, "exec"), namespace)
    elif harness.kind == "async":
        namespace = {"__name__": "docs_block"}
        exec(compile(source(block, harness), name, "exec"), namespace)
        trio.run(namespace["run"], server.url)
    else:
        module = tmp_path / "test_block.py"
        module.write_text(block)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-o",
                "trio_mode=true",
                str(module),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert re.search(r"\b1 passed\b", done.stdout), done.stdout


def test_every_guide_links_the_api_issue_29() -> None:
    """Each how-to, explanation and the performance page links API names.

    Before, 13 links from prose to the API across 30 pages, none in four of
    them.
    """
    pages = [
        *sorted((ROOT / "docs" / "how-to").glob("*.md")),
        *sorted((ROOT / "docs" / "explanation").glob("*.md")),
        ROOT / "docs" / "performance.md",
    ]
    unlinked = [
        str(page.relative_to(ROOT))
        for page in pages
        if page.name != "index.md" and "{py:" not in page.read_text()
    ]
    assert unlinked == []
