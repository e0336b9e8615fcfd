"""Router options: per-key order, dedupe, middleware, logs (issue 30).

On trio's autojump clock: delays are read from the clock, never slept.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from trio_pubsub import (
    Broker,
    Dedupe,
    Message,
    OverflowPolicy,
    Retry,
    Router,
)

from ..helpers import law

Next = Callable[[Message[int]], Awaitable[None]]


def order_key(message: Message[int]) -> str:
    return message.headers["customer"]


async def test_equal_keys_are_handled_in_order_one_at_a_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    log: list[tuple[str, int]] = []
    running: set[str] = set()
    failed_once: set[int] = set()

    @router.handler(
        "orders", concurrency=4, key=order_key, retry=Retry(attempts=3, backoff=1.0)
    )
    async def handle(message: Message[int]) -> None:
        customer = message.headers["customer"]
        assert customer not in running, "two of one key at once"
        running.add(customer)
        try:
            await trio.sleep(0.5)
            if message.payload % 3 == 0 and message.payload not in failed_once:
                failed_once.add(message.payload)
                raise ConnectionError("flaky")  # retried: later ones must wait
            log.append((customer, message.payload))
        finally:
            running.discard(customer)

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        for i in range(30):
            await broker.publish("orders", i, headers={"customer": f"c{i % 3}"})
        await trio.sleep(100)
        router.stop()
    for customer in ("c0", "c1", "c2"):
        mine = [payload for who, payload in log if who == customer]
        assert mine == sorted(mine)
        assert len(mine) == 10
    (stats,) = router.statistics()
    assert (stats.handled, stats.retried, stats.in_flight) == (30, 10, 0)


@settings(max_examples=40, deadline=None)
@given(
    keys=st.lists(st.integers(0, 4), min_size=1, max_size=40),
    failures=st.lists(st.integers(0, 2), min_size=40, max_size=40),
    concurrency=st.integers(1, 6),
)
def test_per_key_order_holds_under_random_failures(
    keys: list[int], failures: list[int], concurrency: int
) -> None:
    """Each key's messages are handled in publish order, whatever fails when."""
    handled: list[tuple[int, int]] = []
    left = dict(enumerate(failures))  # failures before success, per message

    async def main() -> None:
        broker = Broker[int]()
        router: Router[int] = Router(broker)

        @router.handler(
            "k",
            concurrency=concurrency,
            key=lambda m: m.headers["key"],
            retry=Retry(attempts=3, backoff=0.1, max_backoff=1.0),
        )
        async def handle(message: Message[int]) -> None:
            await trio.sleep(random.random())
            if left[message.payload] > 0:
                left[message.payload] -= 1
                raise ValueError("not yet")
            handled.append((int(message.headers["key"]), message.payload))

        async with trio.open_nursery() as nursery:
            await nursery.start(router.serve)
            for index, key in enumerate(keys):
                await broker.publish("k", index, headers={"key": str(key)})
            router.stop()
        (stats,) = router.statistics()
        assert stats.handled == len(keys)
        assert stats.in_flight == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    for key in set(keys):
        expected = [i for i, k in enumerate(keys) if k == key]
        assert [i for k, i in handled if k == key] == expected


async def test_a_hot_key_takes_one_worker_and_the_others_flow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A slow key holds its own worker; other keys go on at their own pace."""
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    finished: dict[str, list[float]] = {"hot": [], "cold": []}

    @router.handler("k", concurrency=4, key=order_key, max_buffer_size=100)
    async def handle(message: Message[int]) -> None:
        customer = message.headers["customer"]
        await trio.sleep(10 if customer == "hot" else 0.1)
        finished["hot" if customer == "hot" else "cold"].append(trio.current_time())

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        start = trio.current_time()
        for i in range(60):  # one hot message in three
            customer = "hot" if i % 3 == 0 else f"c{i % 7}"
            await broker.publish("k", i, headers={"customer": customer})
        await trio.sleep(1000)
        router.stop()
    # 40 cold messages over 6 keys on the 3 other workers: done in seconds,
    # while the 20 hot ones take their 200 s one after the other
    assert len(finished["cold"]) == 40
    assert max(finished["cold"]) - start < 5
    assert [round(t - start) for t in finished["hot"]] == list(range(10, 201, 10))


async def test_a_full_hold_pushes_back_on_publishers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With key=, what waits for its key is bounded; BLOCK pushes back."""
    broker = Broker[int]()
    router: Router[int] = Router(broker)

    @router.handler("k", concurrency=2, key=order_key, max_buffer_size=4)
    async def handle(message: Message[int]) -> None:
        await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        with trio.move_on_after(0.5):
            for i in range(100):
                await broker.publish("k", i, headers={"customer": "one"})
        # 4 held by the router (one in its attempt) and 4 in the buffer
        (stats,) = router.statistics()
        assert stats.in_flight == 4
        assert broker.subscriptions()[0].statistics.pending == 4
        router.stop()
    (stats,) = router.statistics()
    assert stats.handled == 8
    assert broker.statistics().dropped == 0


async def test_a_key_function_that_raises_fails_its_message(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    seen: list[int] = []

    @router.handler("k", key=order_key, name="keyed", concurrency=2)
    async def handle(message: Message[int]) -> None:
        seen.append(message.payload)

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        await broker.publish("k", 1)  # no customer header: KeyError
        await broker.publish("k", 2, headers={"customer": "a"})
        await trio.sleep(1)
        router.stop()
    assert seen == [2]
    (stats,) = router.statistics()
    assert (stats.failed, stats.handled) == (1, 1)
    assert "its key function failed" in caplog.text


async def test_cancelling_serve_counts_messages_waiting_for_their_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)

    @router.handler("k", concurrency=2, key=order_key)
    async def handle(message: Message[int]) -> None:
        await trio.sleep(10)

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        for i in range(5):
            broker.publish_nowait("k", i, headers={"customer": "same"})
        await trio.sleep(1)
        (stats,) = router.statistics()
        assert (stats.received, stats.in_flight) == (5, 5)
        nursery.cancel_scope.cancel()
    (stats,) = router.statistics()
    assert (stats.received, stats.failed, stats.in_flight) == (5, 5, 0)


async def test_dedupe_skips_a_repeat_inside_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    seen: list[int] = []

    @router.handler("a", dedupe=Dedupe("id", max_entries=2, max_age=60.0))
    async def handle(message: Message[int]) -> None:
        seen.append(message.payload)

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        for payload, msg_id in [(1, "x"), (2, "x"), (3, "y"), (4, "z")]:
            await broker.publish("a", payload, headers={"id": msg_id})
        await trio.sleep(1)
        # "x" fell out of the window by count (two values kept: y, z)
        await broker.publish("a", 5, headers={"id": "x"})
        await broker.publish("a", 6, headers={"id": "z"})  # inside it
        await broker.publish("a", 7)  # no header: always handled
        await broker.publish("a", 8)
        await trio.sleep(61)
        await broker.publish("a", 9, headers={"id": "z"})  # aged out
        await trio.sleep(1)
        router.stop()
    assert seen == [1, 3, 4, 5, 7, 8, 9]
    (stats,) = router.statistics()
    assert (stats.handled, stats.duplicates) == (7, 2)
    assert law(stats)


async def test_a_repeat_waits_for_the_first_and_a_failed_one_is_not_remembered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    attempts: list[float] = []

    @router.handler("a", concurrency=4, dedupe="id")
    async def handle(message: Message[int]) -> None:
        attempts.append(trio.current_time())
        await trio.sleep(1)
        if len(attempts) == 1:
            raise ValueError("the first attempt fails")

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        for payload in (1, 2, 3):  # all "x", all taken at once by 3 workers
            broker.publish_nowait("a", payload, headers={"id": "x"})
        await trio.sleep(10)
        router.stop()
    # the first failed (not remembered), so a second ran after it (not at
    # once: it waited for the first's outcome), and the third repeats it
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] == pytest.approx(1.0)
    (stats,) = router.statistics()
    assert (stats.failed, stats.handled, stats.duplicates) == (1, 1, 1)


async def test_middleware_runs_around_each_attempt_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    trail: list[str] = []

    def step(label: str) -> Callable[[Message[int], Next], Awaitable[None]]:
        async def middleware(message: Message[int], call_next: Next) -> None:
            trail.append(f"{label}>")
            try:
                await call_next(message)
            except trio.TooSlowError:
                trail.append(f"{label}:timeout")
                raise
            trail.append(f"<{label}")

        return middleware

    async def skip_negative(message: Message[int], call_next: Next) -> None:
        if message.payload >= 0:
            await call_next(message)

    names: list[str] = []

    def wrap(name: str) -> Callable[[Message[int], Next], Awaitable[None]]:
        names.append(name)
        return step("router")

    router.use(wrap)

    @router.handler(
        "a",
        middleware=[step("outer"), step("inner"), skip_negative],
        retry=Retry(attempts=2, backoff=1.0),
        timeout=5.0,
    )
    async def handle(message: Message[int]) -> None:
        trail.append(f"handle {message.payload}")
        if message.payload == 1 and trail.count("handle 1") == 1:
            await trio.sleep(10)  # times out; the retry succeeds

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        await broker.publish("a", 1)
        await broker.publish("a", -1)
        await trio.sleep(30)
        router.stop()
    assert trail == [
        "router>",
        "outer>",
        "inner>",
        "handle 1",
        "inner:timeout",
        "outer:timeout",
        "router:timeout",
        "router>",
        "outer>",
        "inner>",
        "handle 1",
        "<inner",
        "<outer",
        "<router",
        "router>",
        "outer>",
        "inner>",
        "<inner",
        "<outer",
        "<router",
    ]
    (stats,) = router.statistics()
    assert (stats.handled, stats.retried) == (2, 1)
    assert names == [stats.name]  # once per handler, with its name


def test_middleware_and_dedupe_options_are_checked_at_the_call() -> None:
    router: Router[int] = Router(Broker[int]())
    with pytest.raises(TypeError, match="middleware must be"):
        router.handler("a", middleware=[42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="dedupe must be"):
        router.handler("a", dedupe=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be"):
        router.handler("a", key=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="function of a handler's name"):
        router.use(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="header"):
        Dedupe("")
    with pytest.raises(ValueError, match="max_age"):
        Dedupe("id", max_age=0)
    with pytest.raises(ValueError, match="max_entries"):
        Dedupe("id", max_entries=0)
    assert router.statistics() == ()


async def test_each_failure_and_dead_letter_logs_one_structured_line(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)

    @router.handler(
        "a",
        name="bill",
        concurrency=1000,
        retry=Retry(attempts=2, backoff=5.0),
        dead_letter="dead",
    )
    async def bill(message: Message[int]) -> None:
        raise ValueError("bad amount")

    caplog.set_level(logging.WARNING, "trio_pubsub")
    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        await broker.publish("a", 1)
        await trio.sleep(30)
        for _ in range(1000):  # a flood: a few lines, not two thousand
            await broker.publish("a", 2)
        await trio.sleep(60)
        router.stop()
    first, second = caplog.records[:2]
    assert (first.handler, first.subject, first.attempt, first.error_type) == (  # type: ignore[attr-defined]
        "bill",
        "a",
        1,
        "ValueError",
    )
    assert "retried" in first.getMessage()
    assert "given up, sent to 'dead'" in second.getMessage()
    assert second.attempt == 2  # type: ignore[attr-defined]
    assert len(caplog.records) < 10
    assert "suppressed" in caplog.text
    (stats,) = router.statistics()
    assert stats.dead_lettered == 1001


async def test_a_failing_queue_member_drops_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A queue member that fails drops nothing: each message has an outcome.

    Measured before the router: a member whose loop raised dropped its
    pending messages rather than leave them to another member.
    """
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    handled: list[int] = []

    @router.handler("jobs", queue="workers", name="flaky")
    async def flaky(message: Message[int]) -> None:
        raise RuntimeError("always")

    @router.handler("jobs", queue="workers", name="steady")
    async def steady(message: Message[int]) -> None:
        handled.append(message.payload)

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        for i in range(20):
            await broker.publish("jobs", i)
        await trio.sleep(1)
        router.stop()
    flaky_stats, steady_stats = router.statistics()
    assert flaky_stats.failed + steady_stats.handled == 20
    assert broker.statistics().dropped == 0


async def test_a_handler_cut_off_by_disconnect_ends_alone(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    other: list[int] = []

    @router.handler(
        "a", name="laggard", policy=OverflowPolicy.DISCONNECT, max_buffer_size=1
    )
    async def laggard(message: Message[int]) -> None:
        await trio.sleep(10)

    @router.handler("a", name="other", key=order_key, max_buffer_size=100)
    async def keep(message: Message[int]) -> None:
        other.append(message.payload)

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        for i in range(5):
            broker.publish_nowait("a", i, headers={"customer": "c"})
        await trio.sleep(20)
        router.stop()
    assert other == [0, 1, 2, 3, 4]
    assert "cut off" in caplog.text
    laggard_stats, _ = router.statistics()
    assert laggard_stats.in_flight == 0
    assert law(laggard_stats)
