"""publish_from_thread with real threads.

Workers, plain threads, many at once, and shutdown while they publish.

These run on trio's real clock, since threads do; ``trio.fail_after`` turns a
deadlock into a failure instead of a hang. Nothing asserts on elapsed time.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import pytest
import trio
import trio.testing

from trio_pubsub import Broker, BrokerClosedError, InvalidSubjectError, OverflowPolicy

GUARD = 30  # seconds before a stuck test fails


async def test_a_to_thread_worker_publishes_and_gets_the_result() -> None:
    broker = Broker(int)
    async with broker.subscribe("jobs.>") as sub:

        def work() -> int:
            return broker.publish_from_thread("jobs.done", 7, headers={"by": "worker"})

        with trio.fail_after(GUARD):
            assert await trio.to_thread.run_sync(work) == 1
        message = sub.receive_nowait()
        assert (message.subject, message.payload, message.headers) == (
            "jobs.done",
            7,
            {"by": "worker"},
        )


async def test_errors_of_the_publish_reach_the_thread() -> None:
    broker = Broker(int)

    def bad_subject() -> int:
        return broker.publish_from_thread("jobs.*", 1)

    def bad_payload() -> int:
        return broker.publish_from_thread("jobs", "one")  # type: ignore[arg-type]

    async with broker.subscribe(">"):
        with trio.fail_after(GUARD):
            with pytest.raises(InvalidSubjectError):
                await trio.to_thread.run_sync(bad_subject)
            with pytest.raises(TypeError):
                await trio.to_thread.run_sync(bad_payload)


async def test_a_plain_thread_waits_for_a_block_subscription() -> None:
    broker = Broker(int, policy=OverflowPolicy.BLOCK, max_buffer_size=1)
    results: list[int] = []
    async with broker.subscribe("a") as sub:
        await broker.publish("a", 0)  # full from now on
        thread = threading.Thread(
            target=lambda: results.append(broker.publish_from_thread("a", 1))
        )
        with trio.fail_after(GUARD):
            thread.start()
            # The thread cannot finish before a receive makes room.
            # (another thread's doing: no trio event to wait for)
            while not sub._inbox.senders:  # noqa: ASYNC110
                await trio.sleep(0.001)
            assert results == []
            assert (await sub.receive()).payload == 0
            await trio.to_thread.run_sync(thread.join)
            assert results == [1]
            assert (await sub.receive()).payload == 1


async def test_many_threads_lose_nothing_and_keep_their_order() -> None:
    threads, per_thread = 8, 150
    broker = Broker[tuple[int, int]](policy=OverflowPolicy.BLOCK, max_buffer_size=4)
    seen: defaultdict[int, list[int]] = defaultdict(list)

    def publisher(number: int) -> None:
        for i in range(per_thread):
            broker.publish_from_thread(f"t.{number}", (number, i))

    async with broker.subscribe("t.*") as sub:
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                for number in range(threads):
                    nursery.start_soon(trio.to_thread.run_sync, publisher, number)
                for _ in range(threads * per_thread):
                    number, i = (await sub.receive()).payload
                    seen[number].append(i)
    assert {n: seen[n] for n in range(threads)} == {
        n: list(range(per_thread)) for n in range(threads)
    }
    assert broker.statistics().published == threads * per_thread
    assert broker.statistics().dropped == 0


async def test_shutdown_while_threads_publish() -> None:
    """Threads publishing when the broker closes get BrokerClosedError.

    Those waiting on the full BLOCK subscription and those publishing later
    alike; every publish is accounted for.
    """
    broker = Broker(int, policy=OverflowPolicy.BLOCK, max_buffer_size=2)
    outcomes: list[str] = []
    lock = threading.Lock()

    def publisher() -> None:
        for i in range(100):
            try:
                broker.publish_from_thread("a", i)
            except BrokerClosedError:
                with lock:
                    outcomes.append("closed")
                return
            with lock:
                outcomes.append("published")

    async with broker.subscribe("a") as sub:
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(trio.to_thread.run_sync, publisher)
                received = [(await sub.receive()).payload for _ in range(10)]
                await broker.aclose()
        received += [m.payload async for m in sub]
    assert outcomes.count("closed") == 4  # every thread saw the close
    assert outcomes.count("published") == broker.statistics().published
    # each published message reached the BLOCK subscription, and nothing else did
    assert len(received) == broker.statistics().published == sub.statistics().received


async def test_the_broker_refuses_its_own_trio_thread() -> None:
    broker = Broker(int)
    with pytest.raises(RuntimeError, match="own trio thread"):
        broker.publish_from_thread("a", 1)


def test_a_broker_never_used_in_trio_has_no_thread_to_publish_in() -> None:
    broker = Broker(int)
    with pytest.raises(RuntimeError, match="not been used in a trio run yet"):
        broker.publish_from_thread("a", 1)


def test_the_broker_learns_its_run_at_first_async_use_and_forgets_it_at_the_end() -> (
    None
):
    broker = Broker(int)  # created outside trio.run
    results: list[int] = []

    async def main() -> None:
        async with broker.subscribe("a") as sub:  # the first async use
            thread = threading.Thread(
                target=lambda: results.append(broker.publish_from_thread("a", 1))
            )
            thread.start()
            await trio.to_thread.run_sync(thread.join)
            assert sub.receive_nowait().payload == 1

    trio.run(main)
    assert results == [1]
    with pytest.raises(BrokerClosedError, match=r"trio run .* has ended"):
        broker.publish_from_thread("a", 2)


def test_an_await_publish_also_teaches_the_broker_its_run() -> None:
    broker = Broker(int)  # created outside trio.run, and no subscription

    async def main() -> int:
        await broker.publish("a", 0)  # the first async use

        def late() -> int:
            return broker.publish_from_thread("a", 1)

        return await trio.to_thread.run_sync(late)

    assert trio.run(main) == 0  # published in that run, to no subscription
    assert broker.statistics().published == 2


async def test_after_aclose_a_thread_gets_broker_closed_error() -> None:
    broker = Broker(int)  # created inside trio.run: it knows its run
    await broker.aclose()

    def late() -> int:
        return broker.publish_from_thread("a", 1)

    with pytest.raises(BrokerClosedError):
        await trio.to_thread.run_sync(late)


def test_a_thread_waiting_when_the_run_ends_gets_broker_closed() -> None:
    """The run ends under a publish that waits for room: BrokerClosedError.

    trio cancels what ``from_thread.run`` runs in its system nursery when the
    run ends; the thread saw that ``trio.Cancelled`` before (issue 27, item 8).
    """
    broker = Broker(int)
    outcome: list[object] = []
    started = threading.Event()

    def publisher() -> None:
        started.set()
        try:
            outcome.append(broker.publish_from_thread("a", 2))
        except BaseException as error:  # what it raises is what is tested
            outcome.append(error)

    thread = threading.Thread(target=publisher)

    async def main() -> None:
        # A full BLOCK subscription that the run leaves entered: the thread's
        # publish waits for room until the run ends.
        scope = broker.subscribe("a", max_buffer_size=1, policy=OverflowPolicy.BLOCK)
        await scope.__aenter__()
        await broker.publish("a", 1)
        thread.start()
        await trio.to_thread.run_sync(started.wait)
        with trio.fail_after(GUARD):
            while not publishing():  # noqa: ASYNC110 - trio's own tasks
                await trio.sleep(0.01)
            await trio.testing.wait_all_tasks_blocked()  # parked, waiting for room

    def publishing() -> bool:
        """Whether trio runs the thread's publish in a system task now."""
        root = trio.lowlevel.current_root_task()
        assert root is not None
        return any(
            "publish" in task.name
            for nursery in root.child_nurseries
            for task in nursery.child_tasks
        )

    trio.run(main)
    thread.join(GUARD)
    assert len(outcome) == 1
    assert isinstance(outcome[0], BrokerClosedError), outcome
    assert "has ended" in str(outcome[0])
