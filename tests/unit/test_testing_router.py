"""The test kit's router helpers: serving(), idle(), dead letters (issue 30)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_pubsub import Broker, Message, Retry, Router
from trio_pubsub.testing import serving


async def test_serving_runs_the_router_and_idle_waits_for_every_outcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    seen: list[int] = []

    @router.handler(
        "orders.*",
        name="bill",
        retry=Retry(attempts=3, backoff=2.0, jitter=False),
        dead_letter="dead",
    )
    async def bill(message: Message[int]) -> None:
        if message.payload < 0:
            raise ValueError("negative")
        await trio.sleep(1)
        seen.append(message.payload)

    async with serving(router, dead_letter="dead") as running:
        start = trio.current_time()
        for payload in (1, -1, 2):
            await broker.publish(f"orders.{payload}", payload)
        with trio.fail_after(100):
            await running.idle()
        # idle only once the poison message's retries (2 s + 4 s) are over
        assert trio.current_time() - start >= 6
        assert seen == [1, 2]
        (letter,) = running.dead_letters
        assert letter.subject == "dead.orders.-1"
        assert letter.headers["dead-letter-attempts"] == "3"
        stats = running.statistics("bill")
        assert (stats.handled, stats.dead_lettered, stats.in_flight) == (2, 1, 0)
        with pytest.raises(KeyError):
            running.statistics("nobody")
    assert broker.statistics().subscriptions == 0  # stopped, recorder left


async def test_dead_letters_need_the_prefix(
    autojump_clock: trio.testing.MockClock,
) -> None:
    router: Router[int] = Router(Broker[int]())

    @router.handler("a")
    async def handle(message: Message[int]) -> None: ...

    async with serving(router) as running:
        await running.idle()
        with pytest.raises(RuntimeError, match="dead_letter=PREFIX"):
            _ = running.dead_letters


async def test_idle_waits_for_messages_still_in_the_subscription(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker[int]()
    router: Router[int] = Router(broker)
    done: list[int] = []

    @router.handler("a", max_buffer_size=50)
    async def slow(message: Message[int]) -> None:
        await trio.sleep(1)
        done.append(message.payload)

    async with serving(router) as running:
        for i in range(10):
            broker.publish_nowait("a", i)
        await running.idle()
        assert done == list(range(10))
