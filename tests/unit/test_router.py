"""Router and Retry: handlers with retries, timeouts and dead letters (issue 30).

Every test runs on trio's autojump clock: delays are read from the clock,
never slept in real time.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_pubsub import (
    Broker,
    HandlerStatistics,
    InvalidSubjectError,
    Message,
    Retry,
    Router,
)

from ..helpers import law


async def test_a_handler_handles_every_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    seen: list[int] = []

    @router.handler("orders.*", name="collect")
    async def collect(message: Message[int]) -> None:
        seen.append(message.payload)

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        for i in range(5):
            await broker.publish(f"orders.{i}", i)
        await trio.testing.wait_all_tasks_blocked()
        router.stop()
    assert seen == [0, 1, 2, 3, 4]
    (stats,) = router.statistics()
    assert stats == HandlerStatistics(
        name="collect",
        received=5,
        handled=5,
        retried=0,
        failed=0,
        dead_lettered=0,
        duplicates=0,
        in_flight=0,
    )


async def test_retries_wait_the_backoff_on_the_trio_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    times: list[float] = []

    @router.handler("a", retry=Retry(attempts=4, backoff=1.0, jitter=False))
    async def flaky(message: Message[int]) -> None:
        times.append(trio.current_time())
        if len(times) < 4:
            raise ConnectionError("not yet")

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        start = trio.current_time()
        await broker.publish("a", 1)
        await trio.sleep(100)
        router.stop()
    assert [round(t - start, 6) for t in times] == [0.0, 1.0, 3.0, 7.0]
    (stats,) = router.statistics()
    assert (stats.handled, stats.retried, stats.failed) == (1, 3, 0)
    assert law(stats)


async def test_a_poison_message_becomes_one_dead_letter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)

    @router.handler(
        "orders.*",
        name="billing",
        retry=Retry(attempts=3, backoff=0.5),
        dead_letter="dead",
    )
    async def bill(message: Message[int]) -> None:
        if message.payload < 0:
            raise ValueError(f"negative amount {message.payload}")

    async with (
        broker.subscribe("dead.>", max_buffer_size=10) as dead,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(router.serve)
        await broker.publish("orders.1", 10, headers={"trace": "t1"})
        await broker.publish("orders.2", -5, headers={"trace": "t2"})
        await broker.publish("orders.3", 7)
        await trio.sleep(60)
        router.stop()
        letter = dead.receive_nowait()
        with pytest.raises(trio.WouldBlock):
            dead.receive_nowait()  # exactly once
    assert letter.subject == "dead.orders.2"
    assert letter.payload == -5
    assert dict(letter.headers) == {
        "trace": "t2",
        "dead-letter-handler": "billing",
        "dead-letter-attempts": "3",
        "dead-letter-error-type": "ValueError",
        "dead-letter-error": "negative amount -5",
        "dead-letter-subject": "orders.2",
    }
    (stats,) = router.statistics()
    assert (stats.received, stats.handled, stats.dead_lettered, stats.retried) == (
        3,
        2,
        1,
        2,
    )
    assert law(stats)


async def test_an_error_outside_retry_on_is_not_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    calls: list[int] = []

    @router.handler("a", retry=Retry(attempts=5, retry_on=(ConnectionError,)))
    async def strict(message: Message[int]) -> None:
        calls.append(message.payload)
        raise KeyError("no such order")

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        await broker.publish("a", 1)
        await trio.sleep(10)
        router.stop()
    assert calls == [1]
    (stats,) = router.statistics()
    assert (stats.failed, stats.retried) == (1, 0)


async def test_a_timeout_fails_the_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)

    @router.handler("a", timeout=2.0, retry=Retry(attempts=2, backoff=1.0))
    async def stuck(message: Message[int]) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        start = trio.current_time()
        await broker.publish("a", 1)
        await trio.sleep(60)
        router.stop()
    (stats,) = router.statistics()
    assert (stats.failed, stats.retried) == (1, 1)
    assert trio.current_time() - start >= 4.5


async def test_concurrency_handles_messages_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    done: list[float] = []

    @router.handler("a", concurrency=4)
    async def slow(message: Message[int]) -> None:
        await trio.sleep(1)
        done.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        start = trio.current_time()
        for i in range(8):
            await broker.publish("a", i)
        await trio.sleep(10)
        router.stop()
    # four at a time: two rounds of one second
    assert sorted(round(t - start) for t in done) == [1, 1, 1, 1, 2, 2, 2, 2]


async def test_stop_finishes_what_the_subscription_holds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    seen: list[int] = []

    @router.handler("a", max_buffer_size=100)
    async def slow(message: Message[int]) -> None:
        await trio.sleep(1)
        seen.append(message.payload)

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        for i in range(10):
            broker.publish_nowait("a", i)
        router.stop()  # nothing new, but all ten held are handled
        broker.publish_nowait("a", 99)  # routed to nobody now
    assert seen == list(range(10))
    (stats,) = router.statistics()
    assert (stats.received, stats.handled, stats.in_flight) == (10, 10, 0)


async def test_cancelling_serve_counts_what_was_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)

    @router.handler("a", concurrency=2)
    async def slow(message: Message[int]) -> None:
        await trio.sleep(10)

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        for i in range(3):
            broker.publish_nowait("a", i)
        await trio.sleep(1)
        (stats,) = router.statistics()
        # two in attempts; the third waits in the subscription, not taken
        assert (stats.received, stats.in_flight) == (2, 2)
        assert law(stats)
        nursery.cancel_scope.cancel()
    (stats,) = router.statistics()
    assert (stats.received, stats.failed, stats.in_flight) == (2, 2, 0)
    assert law(stats)
    # the one never taken was dropped when the subscription left, and counted
    assert broker.statistics().dropped == 1


async def test_options_are_checked_at_the_call() -> None:
    router: Router[int] = Router(Broker[int]())
    with pytest.raises(ValueError, match="concurrency"):
        router.handler("a", concurrency=0)
    with pytest.raises(TypeError, match="retry must be"):
        router.handler("a", retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        router.handler("a", timeout=0)
    with pytest.raises(InvalidSubjectError):
        router.handler("a.>.b")

    @router.handler("a", name="one")
    async def one(message: Message[int]) -> None: ...

    with pytest.raises(ValueError, match="registered already"):
        router.handler("b", name="one")(one)
    assert [s.name for s in router.statistics()] == ["one"]


def test_retry_values_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)
    with pytest.raises(ValueError, match="backoff"):
        Retry(backoff=-1)
    with pytest.raises(ValueError, match="max_backoff"):
        Retry(backoff=2.0, max_backoff=1.0)
    with pytest.raises(TypeError, match="retry_on"):
        Retry(retry_on=(KeyboardInterrupt,))
    retry = Retry(backoff=1.0, max_backoff=5.0)
    assert [retry.delay(n, lambda: 1.0) for n in range(1, 6)] == [
        1.0,
        2.0,
        4.0,
        5.0,
        5.0,
    ]
    assert retry.delay(2, lambda: 0.0) == 1.0  # jitter: the upper half


async def test_a_handler_error_never_ends_serve_or_another_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    good: list[int] = []

    @router.handler("a", name="bad")
    async def bad(message: Message[int]) -> None:
        raise RuntimeError("boom")

    @router.handler("a", name="good")
    async def fine(message: Message[int]) -> None:
        good.append(message.payload)

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        for i in range(3):
            await broker.publish("a", i)
        await trio.sleep(1)
        router.stop()
    assert good == [0, 1, 2]
    bad_stats, good_stats = router.statistics()
    assert (bad_stats.failed, good_stats.handled) == (3, 3)


async def test_serve_runs_once_and_takes_no_new_handlers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)

    @router.handler("a")
    async def one(message: Message[int]) -> None: ...

    router.stop()  # before serve: it subscribes, then returns
    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        with pytest.raises(RuntimeError, match="serving already"):
            await router.serve()
        with pytest.raises(RuntimeError, match="before serve"):
            router.handler("b")
    assert broker.statistics().subscriptions == 0


async def test_a_dead_letter_that_cannot_be_published_is_a_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)

    @router.handler("a", dead_letter="dead")
    async def closes(message: Message[int]) -> None:
        await broker.aclose()  # the broker is gone when it gives up
        raise ValueError("too late")

    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        broker.publish_nowait("a", 1)
    (stats,) = router.statistics()
    assert (stats.failed, stats.dead_lettered, stats.in_flight) == (1, 0, 0)
    assert law(stats)
