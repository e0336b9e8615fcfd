"""Every invalid argument of every public call.

Each raises the documented error with a message naming the input, and changes
no counter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from trio_pubsub import (
    Broker,
    BrokerClosedError,
    InvalidSubjectError,
    subject_matches,
    validate_pattern,
    validate_subject,
)

# The broker is Any here: these calls are wrong on purpose.
Call = Callable[[Any], object]

BAD_CALLS: list[tuple[str, Call, type[BaseException], str]] = [
    # (id, call, exception, text the message must contain)
    ("subscribe pattern int", lambda b: b.subscribe(7), TypeError, "7"),
    ("subscribe pattern empty", lambda b: b.subscribe(""), InvalidSubjectError, "''"),
    (
        "subscribe pattern space",
        lambda b: b.subscribe("a b"),
        InvalidSubjectError,
        "'a b'",
    ),
    (
        "subscribe pattern '>' inside",
        lambda b: b.subscribe("a.>.b"),
        InvalidSubjectError,
        "'a.>.b'",
    ),
    (
        "subscribe pattern empty token",
        lambda b: b.subscribe("a..b"),
        InvalidSubjectError,
        "'a..b'",
    ),
    (
        "subscribe size 0",
        lambda b: b.subscribe("a", max_buffer_size=0),
        ValueError,
        "max_buffer_size",
    ),
    (
        "subscribe size str",
        lambda b: b.subscribe("a", max_buffer_size="1"),
        TypeError,
        "max_buffer_size",
    ),
    (
        "subscribe policy str",
        lambda b: b.subscribe("a", policy="block"),
        TypeError,
        "'block'",
    ),
    (
        "subscribe disconnect_after 0",
        lambda b: b.subscribe("a", disconnect_after=0),
        ValueError,
        "disconnect_after",
    ),
    ("publish_nowait subject int", lambda b: b.publish_nowait(3, 1), TypeError, "3"),
    (
        "publish_nowait subject list",
        lambda b: b.publish_nowait(["a"], 1),
        TypeError,
        "['a']",
    ),
    (
        "publish_nowait wildcard *",
        lambda b: b.publish_nowait("a.*", 1),
        InvalidSubjectError,
        "'a.*'",
    ),
    (
        "publish_nowait wildcard >",
        lambda b: b.publish_nowait("a.>", 1),
        InvalidSubjectError,
        "'a.>'",
    ),
    (
        "publish_nowait empty token",
        lambda b: b.publish_nowait("a.", 1),
        InvalidSubjectError,
        "'a.'",
    ),
    (
        "publish_nowait tab",
        lambda b: b.publish_nowait("a\tb", 1),
        InvalidSubjectError,
        "'a\\tb'",
    ),
    (
        "publish_nowait payload type",
        lambda b: b.publish_nowait("a", "x"),
        TypeError,
        "'x'",
    ),
]

ASYNC_BAD_CALLS: list[
    tuple[str, Callable[[Any], Awaitable[object]], type[BaseException], str]
] = [
    ("publish subject bytes", lambda b: b.publish(b"a", 1), TypeError, "b'a'"),
    ("publish wildcard", lambda b: b.publish("*", 1), InvalidSubjectError, "'*'"),
    ("publish payload type", lambda b: b.publish("a", 1.5), TypeError, "1.5"),
]


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [pytest.param(c, e, t, id=i) for i, c, e, t in BAD_CALLS],
)
async def test_bad_sync_call(call: Call, error: type[BaseException], text: str) -> None:
    """The call raises the documented error naming the input; nothing changes."""
    broker = Broker(int, max_buffer_size=1)
    async with broker.subscribe("a.>") as sub:
        broker.publish_nowait("a.b", 1)
        broker.publish_nowait("a.b", 2)  # a drop, so that every counter moves
        before = broker.statistics(), sub.statistics()
        with pytest.raises(error) as info:
            call(broker)
        assert text in str(info.value)
        assert (broker.statistics(), sub.statistics()) == before


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [pytest.param(c, e, t, id=i) for i, c, e, t in ASYNC_BAD_CALLS],
)
async def test_bad_async_call(
    call: Callable[[Any], Awaitable[object]],
    error: type[BaseException],
    text: str,
) -> None:
    """Publish validates before delivering: error named, counters unchanged."""
    broker = Broker(int)
    async with broker.subscribe(">") as sub:
        await broker.publish("a", 1)
        before = broker.statistics(), sub.statistics()
        with pytest.raises(error) as info:
            await call(broker)
        assert text in str(info.value)
        assert (broker.statistics(), sub.statistics()) == before


@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"max_buffer_size": -1}, ValueError, "max_buffer_size"),
        ({"disconnect_after": "2"}, TypeError, "disconnect_after"),
        ({"policy": None}, TypeError, "policy"),
        ({"match_cache_size": 1.0}, TypeError, "match_cache_size"),
    ],
)
def test_bad_broker_construction(
    options: dict[str, object], error: type[BaseException], name: str
) -> None:
    """Broker() names the bad option."""
    with pytest.raises(error, match=name):
        Broker(int, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: validate_subject("a.*"), InvalidSubjectError),
        (lambda: validate_pattern(">.a"), InvalidSubjectError),
        (lambda: validate_pattern(None), TypeError),  # type: ignore[arg-type]
        (lambda: subject_matches("a", "a b"), InvalidSubjectError),
        (lambda: subject_matches(1, "a"), TypeError),  # type: ignore[arg-type]
    ],
)
def test_bad_helper_calls(
    call: Callable[[], object], error: type[BaseException]
) -> None:
    """The grammar helpers raise the same errors as the broker."""
    with pytest.raises(error):
        call()


async def test_calls_on_a_closed_broker_change_nothing() -> None:
    """publish, publish_nowait and subscribe on a closed broker: BrokerClosedError."""
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        broker.publish_nowait("a", 1)
        await broker.aclose()
        before = broker.statistics(), sub.statistics()
        with pytest.raises(BrokerClosedError, match="closed"):
            broker.publish_nowait("a", 2)
        with pytest.raises(BrokerClosedError):
            await broker.publish("a", 2)
        with pytest.raises(BrokerClosedError):
            broker.subscribe("a")
        assert (broker.statistics(), sub.statistics()) == before
        assert sub.receive_nowait().payload == 1


async def test_receive_on_closed_or_exited_subscription() -> None:
    """Receive after close() or after the block: ClosedResourceError naming it."""
    broker = Broker(int)
    async with broker.subscribe("orders.>") as sub:
        sub.close()
        with pytest.raises(trio.ClosedResourceError, match=r"'orders\.>'"):
            await sub.receive()
    async with broker.subscribe("x") as later:
        pass
    with pytest.raises(trio.ClosedResourceError, match="'x'"):
        later.receive_nowait()
    with pytest.raises(trio.ClosedResourceError):
        await later.__anext__()


async def test_subscriber_exception_leaves_others_alone() -> None:
    """A subscriber that raises is removed; other subscribers and publishers go on."""
    broker = Broker(int)
    seen: list[int] = []

    async def steady(task_status: trio.TaskStatus[None]) -> None:
        async with broker.subscribe("a") as sub:
            task_status.started()
            seen.extend([m.payload async for m in sub])

    async def faulty(task_status: trio.TaskStatus[None]) -> None:
        with pytest.raises(ZeroDivisionError):
            async with broker.subscribe("a") as sub:
                task_status.started()
                async for message in sub:
                    1 / (message.payload - 2)  # fails on 2

    async with trio.open_nursery() as nursery:
        await nursery.start(steady)
        await nursery.start(faulty)
        for i in range(5):
            await broker.publish("a", i)
            await trio.testing.wait_all_tasks_blocked()
        assert broker.statistics().subscriptions == 1
        await broker.aclose()
    assert seen == [0, 1, 2, 3, 4]
