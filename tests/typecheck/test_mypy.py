"""mypy --strict accepts correct use of the typed API and rejects wrong payloads."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api", reason="needs mypy (the typing group)")

SNIPPET = textwrap.dedent(
    """
    from dataclasses import dataclass

    from trio_pubsub import Broker, Message, Subscription

    @dataclass
    class OrderEvent:
        order_id: int

    async def main() -> None:
        broker = Broker(OrderEvent)
        reveal_type(broker)
        explicit = Broker[OrderEvent]()
        reveal_type(explicit)
        async with broker.subscribe("orders.>") as sub:
            reveal_type(sub)
            async for msg in sub:
                reveal_type(msg)
                reveal_type(msg.payload)
            await broker.publish("orders.1", OrderEvent(1))
            broker.publish_nowait("orders.1", OrderEvent(2))
            await broker.publish("orders.1", "not an order")  # line 22
            explicit.publish_nowait("orders.1", 3)  # line 23
        union: Broker[int | str] = Broker(int | str)
        reveal_type(union)
        union.publish_nowait("u", 1.5)  # line 26
        pair: Broker[int | str] = Broker((int, str))
        pair.publish_nowait("u", "one")
    """
)


def test_mypy_infers_and_rejects(tmp_path: Path) -> None:
    """Broker(T) is Broker[T], payloads are T, and a str payload is an error."""
    source = tmp_path / "snippet.py"
    source.write_text(SNIPPET)
    stdout, stderr, status = mypy_api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-error-summary",
            "--hide-error-context",
            str(source),
        ]
    )
    lines = [line.split(": ", 1)[1] for line in stdout.splitlines() if ": " in line]
    # mypy names the defining module; the public path is trio_pubsub.X
    reveals = [
        re.sub(r"trio_pubsub\._\w+\.", "trio_pubsub.", line)
        for line in lines
        if line.startswith("note: Revealed type")
    ]
    assert reveals == [
        'note: Revealed type is "trio_pubsub.Broker[snippet.OrderEvent]"',
        'note: Revealed type is "trio_pubsub.Broker[snippet.OrderEvent]"',
        'note: Revealed type is "trio_pubsub.Subscription[snippet.OrderEvent]"',
        'note: Revealed type is "trio_pubsub.Message[snippet.OrderEvent]"',
        'note: Revealed type is "snippet.OrderEvent"',
        'note: Revealed type is "trio_pubsub.Broker[int | str]"',
    ], stdout
    errors = [line for line in stdout.splitlines() if ": error: " in line]
    assert len(errors) == 3, stdout
    assert ":22:" in errors[0]
    assert '"str"' in errors[0]
    assert "[arg-type]" in errors[0]
    assert ":23:" in errors[1]
    assert '"int"' in errors[1]
    assert ":26:" in errors[2]
    assert '"float"' in errors[2]
    assert status == 1, stderr
