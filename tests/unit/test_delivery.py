"""The delivery pipeline's owner, the facade's bindings, and the one inlined copy."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import trio
import trio.testing

import trio_pubsub
from trio_pubsub import Broker, Message, OverflowPolicy, _port

PACKAGE = Path(trio_pubsub.__file__).parent


async def test_the_class_methods_delegate_as_the_bound_ones_do() -> None:
    """``Broker.publish(broker, ...)`` is what ``broker.publish(...)`` is."""
    broker = Broker[int]()
    async with broker.subscribe("a") as sub:
        assert await Broker.publish(broker, "a", 1, headers={"k": "v"}) == 1
        assert Broker.publish_nowait(broker, "a", 2, retain=True) == 1
        got = [sub.receive_nowait(), sub.receive_nowait()]
    assert [(m.payload, dict(m.headers)) for m in got] == [(1, {"k": "v"}), (2, {})]
    assert [m.payload for m in broker.retained("a")] == [2]
    assert broker.statistics().published == 2


async def test_rebound_publishers_are_called_and_can_be_restored() -> None:
    broker = Broker[int]()
    seen: list[str] = []
    delivery = _port.pipeline(broker)

    async def publish(subject: str, payload: int, **options: object) -> int:
        seen.append(f"publish {subject}")
        return await delivery.publish(subject, payload, **options)  # type: ignore[arg-type]

    def publish_nowait(subject: str, payload: int, **options: object) -> int:
        seen.append(f"nowait {subject}")
        return delivery.publish_nowait(subject, payload, **options)  # type: ignore[arg-type]

    async with broker.subscribe("a") as sub:
        _port.bind_publishers(broker, publish, publish_nowait)
        assert await broker.publish("a", 1) == 1
        assert broker.publish_nowait("a", 2) == 1
        _port.bind_publishers(broker, None, None)
        assert broker.publish_nowait("a", 3) == 1
        assert [sub.receive_nowait().payload for _ in range(3)] == [1, 2, 3]
    assert seen == ["publish a", "nowait a"]


async def test_publish_nowait_while_a_request_waits_takes_the_steps() -> None:
    """With a request waiting, a new subject's targets may hold its reply."""
    broker = Broker[int](match_cache_size=0)
    async with (
        broker.subscribe("q") as responder,
        broker.subscribe(
            "full", max_buffer_size=1, policy=OverflowPolicy.BLOCK
        ) as blocking,
        broker.subscribe("other") as other,
        trio.open_nursery() as nursery,
    ):
        answers: list[Message[int]] = []

        async def ask() -> None:
            answers.append(await broker.request("q", 1, timeout=5))

        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        request = responder.receive_nowait()
        assert request.reply is not None
        assert broker.publish_nowait("other", 7) == 1  # routed, through the steps
        assert broker.publish_nowait("other", 8, retain=True) == 1
        assert [other.receive_nowait().payload for _ in range(2)] == [7, 8]
        assert [m.payload for m in broker.retained("other")] == [8]
        assert broker.publish_nowait("full", 1) == 1
        with pytest.raises(trio.WouldBlock):
            broker.publish_nowait("full", 2)  # all or nothing, as ever
        # publish goes on from the refusal: offered to all, then it waits
        waited: list[int] = []

        async def publish() -> None:
            waited.append(await broker.publish("full", 3, retain=True))

        nursery.start_soon(publish)
        await trio.testing.wait_all_tasks_blocked()
        assert waited == []
        assert [m.payload for m in broker.retained("full")] == [3]
        assert blocking.receive_nowait().payload == 1
        await trio.testing.wait_all_tasks_blocked()
        assert waited == [1]
        assert blocking.receive_nowait().payload == 3
        assert broker.publish_nowait(request.reply, 10, retain=False) == 1
        assert broker.publish_nowait(request.reply, 11) == 0  # answered already
    assert [a.payload for a in answers] == [10]


async def test_a_target_that_left_after_the_snapshot_takes_nothing() -> None:
    """``limit`` is 0 once an inbox is not open, so ``offer`` refuses.

    ``_Inbox.offer`` appends at once below ``limit``; the buffer that was
    emptied as the subscription left must not take a message that way (as
    from the snapshot of a publish that waited on another target meanwhile).
    """
    broker = Broker[int]()
    delivery = _port.pipeline(broker)
    async with broker.subscribe("a") as sub:
        broker.publish_nowait("a", 1)  # the buffer is made: limit is its size
        message, targets = delivery.prepare("a", 2, None)
        sub.close()  # its last handle: it leaves, and its buffer is discarded
        assert delivery.offer(message, targets, []) == 0
        assert sub.statistics().pending == 0
        assert sub.statistics().delivered == 1


def test_only_the_inbox_and_one_inlined_copy_append_to_a_buffer_issue_28() -> None:
    """Delivery has one owner: nothing else appends a message to a buffer.

    Before, ``Broker.publish``, ``Broker.publish_nowait``, ``Broker._deliver``
    and ``_port.inject`` each appended to ``inbox.buffer`` themselves.
    """
    appends: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "append"
                and re.search(r"\bbuffer$", ast.unparse(node.func.value))
            ):
                name = str(path.relative_to(PACKAGE))
                appends[name] = appends.get(name, 0) + 1
    assert appends == {"_inbox.py": 2, "_delivery.py": 1}
