"""broker.thread_publisher(): a batched entry from real threads (issue 20).

On trio's real clock, since threads run on it; ``trio.fail_after`` turns a
deadlock into a failure instead of a hang, and every polling loop is bounded
in count. Nothing asserts on elapsed time.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import pytest
import trio

from trio_pubsub import (
    Broker,
    BrokerClosedError,
    InvalidSubjectError,
    OverflowPolicy,
    ThreadPublisher,
)

GUARD = 30  # seconds before a stuck test fails


async def until(condition: object, what: str) -> None:
    """Poll ``condition()`` (at most 3,000 times, 10 ms apart)."""
    assert callable(condition)
    for _ in range(3000):
        if condition():
            return
        await trio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def test_from_one_thread_everything_arrives_in_order() -> None:
    broker = Broker(int, max_buffer_size=10_000)
    async with broker.subscribe("t.>") as sub:

        def work() -> tuple[int, int]:
            with broker.thread_publisher() as publisher:
                for i in range(1000):
                    publisher.publish(
                        "t.a", i, headers={"n": str(i)} if i == 7 else None
                    )
                publisher.flush()
                flushed = broker.statistics().published
            return flushed, publisher.published

        with trio.fail_after(GUARD):
            flushed, published = await trio.to_thread.run_sync(work)
        assert flushed == published == 1000
        messages = [sub.receive_nowait() for _ in range(1000)]
        assert [m.payload for m in messages] == list(range(1000))
        assert messages[7].headers == {"n": "7"}
        assert messages[8].headers == {}


async def test_four_threads_sharing_one_keep_each_threads_order() -> None:
    broker = Broker(int, max_buffer_size=100_000)
    async with broker.subscribe("t.*") as sub:
        publisher = broker.thread_publisher(max_pending=16)

        def work(number: int) -> None:
            for i in range(2000):
                publisher.publish(f"t.{number}", i)

        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                for number in range(4):
                    nursery.start_soon(trio.to_thread.run_sync, work, number)
            await trio.to_thread.run_sync(publisher.close)
        seen: defaultdict[str, list[int]] = defaultdict(list)
        while sub.statistics().pending:
            message = sub.receive_nowait()
            seen[message.subject].append(message.payload)
    assert {s: len(p) for s, p in seen.items()} == {f"t.{n}": 2000 for n in range(4)}
    assert all(p == list(range(2000)) for p in seen.values())
    assert (publisher.published, publisher.lost, publisher.pending) == (8000, 0, 0)


async def test_a_full_block_buffer_holds_the_thread_back() -> None:
    broker = Broker(int)
    async with broker.subscribe(
        "t", max_buffer_size=2, policy=OverflowPolicy.BLOCK
    ) as sub:
        publisher = broker.thread_publisher(max_pending=3)
        returned: list[int] = []

        def work() -> None:
            for i in range(10):
                publisher.publish("t", i)
                returned.append(i)
            publisher.flush()

        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, work)
                # Two in the buffer, three pending (one of them in the hands of
                # the task waiting for room): the sixth publish waits.
                await until(lambda: publisher.pending == 3, "three pending")
                assert sub.statistics().pending == 2
                assert returned == [0, 1, 2, 3, 4]
                got = []
                async for message in sub:
                    got.append(message.payload)
                    if len(got) == 10:
                        break
        assert got == list(range(10))
        assert sub.statistics().high_water == 2
        assert broker.statistics().dropped == 0


async def test_what_the_broker_could_not_publish_before_it_closed_is_counted() -> None:
    broker = Broker(int)
    async with broker.subscribe("t", max_buffer_size=1, policy=OverflowPolicy.BLOCK):
        publisher = broker.thread_publisher(max_pending=10)

        def queue_five() -> None:
            for i in range(5):
                publisher.publish("t", i)

        with trio.fail_after(GUARD):
            await trio.to_thread.run_sync(queue_five)
            await until(lambda: publisher.published == 1, "one published")
            await broker.aclose()
            await until(lambda: publisher.pending == 0, "nothing pending")
            assert (publisher.published, publisher.lost) == (1, 4)
            with pytest.raises(BrokerClosedError, match="4 queued message"):
                await trio.to_thread.run_sync(publisher.flush)
            with pytest.raises(BrokerClosedError):
                await trio.to_thread.run_sync(publisher.publish, "t", 9)
            assert publisher.lost == 4  # refused in the thread: never queued


async def test_bad_input_is_raised_in_the_calling_thread_and_nothing_is_queued() -> (
    None
):
    broker = Broker(int)
    async with broker.subscribe(">") as sub:
        publisher = broker.thread_publisher()
        attempts: list[tuple[tuple[object, object], dict[str, object], type]] = [
            (("t.*", 1), {}, InvalidSubjectError),
            (("", 1), {}, InvalidSubjectError),
            (("_INBOX.abc.1", 1), {}, InvalidSubjectError),
            ((b"t", 1), {}, TypeError),
            (("t", "one"), {}, TypeError),
            (("t", 1), {"headers": {"k": 2}}, TypeError),
        ]
        raised: list[tuple[type[BaseException], str]] = []

        def work() -> None:
            for args, kwargs, _ in attempts:
                try:
                    publisher.publish(*args, **kwargs)  # type: ignore[arg-type]
                except Exception as error:
                    raised.append((type(error), threading.current_thread().name))
            publisher.publish("t", 1)  # the handle still works
            publisher.flush()

        with trio.fail_after(GUARD):
            await trio.to_thread.run_sync(work)
        assert [kind for kind, _ in raised] == [kind for _, _, kind in attempts]
        assert all(name != threading.main_thread().name for _, name in raised)
        assert [m.payload for m in [sub.receive_nowait()]] == [1]
        assert (publisher.published, publisher.lost, publisher.pending) == (1, 0, 0)


async def test_a_str_subclass_subject_is_published_as_a_plain_str() -> None:
    class Subject(str):
        pass

    broker = Broker(int)
    async with broker.subscribe("t") as sub:
        publisher = broker.thread_publisher()
        with trio.fail_after(GUARD):
            await trio.to_thread.run_sync(publisher.publish, Subject("t"), 1)
            await trio.to_thread.run_sync(publisher.flush)
        assert type(sub.receive_nowait().subject) is str


async def test_from_the_trio_thread_it_refuses_what_would_wait_for_itself() -> None:
    broker = Broker(int)
    publisher = broker.thread_publisher()
    with pytest.raises(RuntimeError, match="own trio thread"):
        publisher.publish("t", 1)
    with pytest.raises(RuntimeError, match="own trio thread"):
        publisher.flush()
    assert publisher.pending == 0
    # Made in another thread, it learns the trio thread at its first batch.
    with trio.fail_after(GUARD):
        other: ThreadPublisher[int] = await trio.to_thread.run_sync(
            lambda: broker.thread_publisher()
        )
        await trio.to_thread.run_sync(other.publish, "t", 1)
        await until(lambda: other.pending == 0, "the first batch")
    with pytest.raises(RuntimeError, match="own trio thread"):
        other.publish("t", 2)


async def test_leaving_the_with_block_flushes_and_closes() -> None:
    broker = Broker(int)
    async with broker.subscribe("t") as sub:

        def work() -> ThreadPublisher[int]:
            with broker.thread_publisher() as publisher:
                publisher.publish("t", 1)
            return publisher

        with trio.fail_after(GUARD):
            publisher = await trio.to_thread.run_sync(work)
            assert sub.receive_nowait().payload == 1
            with pytest.raises(BrokerClosedError, match="thread publisher is closed"):
                await trio.to_thread.run_sync(publisher.publish, "t", 2)
            await trio.to_thread.run_sync(publisher.close)  # idempotent


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), ("8", TypeError)])
async def test_max_pending_must_be_an_int_of_one_or_more(
    value: object, error: type[Exception]
) -> None:
    broker = Broker(int)
    with pytest.raises(error, match="max_pending must be an int >= 1"):
        broker.thread_publisher(max_pending=value)  # type: ignore[arg-type]


async def test_a_closed_broker_gives_no_thread_publisher() -> None:
    broker = Broker(int)
    await broker.aclose()
    with pytest.raises(BrokerClosedError):
        broker.thread_publisher()


def test_after_the_trio_run_ended_a_publish_is_refused_and_counted() -> None:
    async def main() -> tuple[Broker[int], ThreadPublisher[int]]:
        broker = Broker(int)
        return broker, broker.thread_publisher()

    _, publisher = trio.run(main)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            publisher.publish("t", 1)
        except BrokerClosedError as error:
            errors.append(error)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(GUARD)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert "trio run" in str(errors[0])
    assert (publisher.published, publisher.lost, publisher.pending) == (0, 1, 0)


def test_after_a_refused_publish_flush_still_returns_and_says_why() -> None:
    """The run's end, found by one publish, ends the handle: nothing waits on."""

    async def main() -> ThreadPublisher[int]:
        return Broker(int).thread_publisher()

    publisher = trio.run(main)
    errors: list[BaseException] = []

    def publish_one() -> None:
        publisher.publish("t", 1)

    def work() -> None:
        for call in (publish_one, publisher.flush):
            try:
                call()
            except BrokerClosedError as error:
                errors.append(error)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(GUARD)
    assert not thread.is_alive(), "flush() waited for a drain that never comes"
    assert [str(e) for e in errors][1:] == [
        "1 queued message(s) could not be published (the broker's trio run has ended)"
    ]


def test_a_run_that_ends_while_the_task_waits_for_room_counts_the_rest() -> None:
    holder: dict[str, ThreadPublisher[int]] = {}

    async def main() -> None:
        broker = Broker(int)
        # Entered and never left: the buffer stays full to the end of the run.
        await broker.subscribe(
            "t", max_buffer_size=1, policy=OverflowPolicy.BLOCK
        ).__aenter__()
        publisher = holder["p"] = broker.thread_publisher()

        def queue_four() -> None:
            for i in range(4):
                publisher.publish("t", i)

        await trio.to_thread.run_sync(queue_four)
        await until(lambda: publisher.published == 1, "one published")

    trio.run(main)
    publisher = holder["p"]
    # The task waiting for room was cancelled as the run ended
    assert (publisher.published, publisher.lost, publisher.pending) == (1, 3, 0)
    with pytest.raises(BrokerClosedError, match="3 queued message"):
        publisher.flush()
