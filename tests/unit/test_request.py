"""Request/reply: Broker.request, Message.reply and Message.respond (issue 17)."""

from __future__ import annotations

import functools
import math
import pickle
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from trio_pubsub import (
    Broker,
    BrokerClosedError,
    InvalidSubjectError,
    Message,
    NoRespondersError,
    OverflowPolicy,
    Subscription,
)
from trio_pubsub._broker import pipeline

from ..helpers import drain, request_leftovers, routing_nodes

BLOCK = OverflowPolicy.BLOCK

Answer = Callable[[Message[int]], Awaitable[object]]


async def serve(
    broker: Broker[int],
    pattern: str,
    answer: Answer,
    *,
    task_status: trio.TaskStatus[Subscription[int]] = trio.TASK_STATUS_IGNORED,
    **options: object,
) -> None:
    """A responder: answer every request on ``pattern`` with ``answer``."""
    async with broker.subscribe(pattern, **options) as sub:  # type: ignore[arg-type]
        task_status.started(sub)
        async for message in sub:
            await answer(message)


async def double(message: Message[int]) -> None:
    await message.respond(message.payload * 2)


async def test_a_request_returns_the_first_answer_and_leaves_nothing_behind() -> None:
    broker = Broker(int)
    nodes = routing_nodes(broker)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, broker, "math.double", double)
        nodes_with_responder = routing_nodes(broker)
        answer = await broker.request("math.double", 21, timeout=1)
        assert answer.payload == 42
        assert answer.subject.startswith("_INBOX.")
        assert answer.reply is None
        assert request_leftovers(broker) == (0, [])
        assert routing_nodes(broker) == nodes_with_responder
        nursery.cancel_scope.cancel()
    assert routing_nodes(broker) == nodes
    stats = broker.statistics()
    # the request and its answer are both publishes; only the request entered
    # a subscription's buffer
    assert (stats.published, stats.delivered, stats.dropped) == (2, 1, 0)


async def test_each_request_has_a_reply_subject_of_its_own() -> None:
    broker = Broker(int)
    other = Broker(int)
    seen: list[str] = []

    async def note(message: Message[int]) -> None:
        assert message.reply is not None
        seen.append(message.reply)
        await message.respond(0)

    async with trio.open_nursery() as nursery:
        await nursery.start(serve, broker, "q", note)
        await nursery.start(serve, other, "q", note)
        for _ in range(3):
            await broker.request("q", 1, timeout=1)
            await other.request("q", 1, timeout=1)
        nursery.cancel_scope.cancel()
    assert len(set(seen)) == 6
    # _INBOX.<random per broker>.<count>: two brokers never share a prefix
    assert len({reply.rsplit(".", 1)[0] for reply in seen}) == 2
    assert all(reply.split(".")[0] == "_INBOX" for reply in seen)


async def test_a_second_answer_reaches_nobody_and_is_no_drop() -> None:
    broker = Broker(int)
    results: list[int] = []

    async def twice(message: Message[int]) -> None:
        results.append(await message.respond(1))
        results.append(await message.respond(2))

    async with trio.open_nursery() as nursery:
        await nursery.start(serve, broker, "q", twice)
        answer = await broker.request("q", 0, timeout=1)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert answer.payload == 1
    assert results == [1, 0]
    stats = broker.statistics()
    assert (stats.published, stats.delivered, stats.dropped) == (3, 1, 0)
    assert request_leftovers(broker) == (0, [])


async def test_publish_on_the_reply_subject_answers_as_respond_does() -> None:
    broker = Broker(int)

    async def by_publish(message: Message[int]) -> None:
        assert message.reply is not None
        assert await broker.publish(message.reply, 7) == 1
        assert broker.publish_nowait(message.reply, 8) == 0  # ended already

    async with trio.open_nursery() as nursery:
        await nursery.start(serve, broker, "q", by_publish)
        assert (await broker.request("q", 0, timeout=1)).payload == 7
        nursery.cancel_scope.cancel()


async def test_no_subscription_at_all_raises_at_once_and_publishes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with broker.subscribe("other"):
        start = trio.current_time()
        with pytest.raises(NoRespondersError, match="no subscription matches") as info:
            await broker.request("orders.1", 1, timeout=10)
        assert trio.current_time() == start
    assert info.value.subject == "orders.1"
    assert broker.statistics().published == 0
    assert request_leftovers(broker) == (0, [])


async def test_every_responder_dropping_it_raises_at_once_and_counts_the_drop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with broker.subscribe("q", max_buffer_size=1) as full:
        broker.publish_nowait("q", 0)
        start = trio.current_time()
        with pytest.raises(NoRespondersError, match="dropped it"):
            await broker.request("q", 1, timeout=10)
        assert trio.current_time() == start
        assert full.statistics().dropped == 1
        assert drain(full) == [0]
    assert request_leftovers(broker) == (0, [])


async def test_no_answer_in_time_is_too_slow_and_a_late_answer_goes_nowhere(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with broker.subscribe("q") as sub:
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await broker.request("q", 1, timeout=2.5)
        assert trio.current_time() - start == pytest.approx(2.5)
        assert request_leftovers(broker) == (0, [])
        request = sub.receive_nowait()
        assert request.reply is not None
        assert await request.respond(2) == 0
        assert broker.statistics().dropped == 0
    assert request_leftovers(broker) == (0, [])


async def test_the_timeout_covers_waiting_for_room_in_a_block_buffer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with broker.subscribe("q", max_buffer_size=1, policy=BLOCK) as sub:
        broker.publish_nowait("q", 0)
        with pytest.raises(trio.TooSlowError):
            await broker.request("q", 1, timeout=1)
        assert drain(sub) == [0]
        assert broker.statistics().published == 1  # the cancelled request: not
    assert request_leftovers(broker) == (0, [])


async def test_a_request_waits_for_room_then_for_its_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with trio.open_nursery() as nursery:

        async def slow_double(message: Message[int]) -> None:
            await trio.sleep(1)
            if message.reply is not None:
                await message.respond(message.payload * 2)

        await nursery.start(
            functools.partial(serve, max_buffer_size=1, policy=BLOCK),
            broker,
            "q",
            slow_double,
        )
        broker.publish_nowait("q", 5)  # a plain message: answered to nobody
        broker.publish_nowait("q", 6)
        start = trio.current_time()
        answer = await broker.request("q", 7, timeout=10)
        assert answer.payload == 14
        assert trio.current_time() - start == pytest.approx(3)
        nursery.cancel_scope.cancel()


async def test_a_cancelled_request_leaves_nothing_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int)
    async with broker.subscribe("q") as sub:
        with trio.move_on_after(1) as scope:
            await broker.request("q", 1, timeout=math.inf)
        assert scope.cancelled_caught
        assert request_leftovers(broker) == (0, [])
        assert await sub.receive_nowait().respond(1) == 0


async def test_a_queue_group_answers_once() -> None:
    broker = Broker(int)
    answered: list[str] = []

    def member(name: str) -> Answer:
        async def answer(message: Message[int]) -> None:
            answered.append(name)
            await message.respond(len(answered))

        return answer

    async with trio.open_nursery() as nursery:
        for name in "abc":
            await nursery.start(
                functools.partial(serve, queue="workers"), broker, "jobs", member(name)
            )
        answers = [
            (await broker.request("jobs", i, timeout=1)).payload for i in range(6)
        ]
        nursery.cancel_scope.cancel()
    assert answers == [1, 2, 3, 4, 5, 6]
    assert sorted(answered) == sorted("abcabc")  # each member did its share


async def test_closing_the_broker_ends_a_waiting_request() -> None:
    broker = Broker(int)
    async with broker.subscribe("q"), trio.open_nursery() as nursery:

        async def ask() -> None:
            with pytest.raises(BrokerClosedError, match="waited for its answer"):
                await broker.request("q", 1, timeout=math.inf)

        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        assert broker.statistics().requests_waiting == 1
        await broker.aclose()
    assert request_leftovers(broker) == (0, [])
    with pytest.raises(BrokerClosedError):
        await broker.request("q", 1, timeout=1)


async def test_headers_travel_both_ways() -> None:
    broker = Broker(int)

    async def echo_headers(message: Message[int]) -> None:
        assert message.headers == {"trace": "t1"}
        await message.respond(0, headers={"status": "ok"})

    async with trio.open_nursery() as nursery:
        await nursery.start(serve, broker, "q", echo_headers)
        answer = await broker.request("q", 0, timeout=1, headers={"trace": "t1"})
        nursery.cancel_scope.cancel()
    assert answer.headers == {"status": "ok"}


async def test_the_answer_is_checked_as_a_publish_is() -> None:
    broker = Broker(int)
    errors: list[BaseException] = []

    async def wrong(message: Message[int]) -> None:
        with pytest.raises(TypeError, match="payload") as info:
            await message.respond("forty-two")  # type: ignore[arg-type]
        errors.append(info.value)
        with pytest.raises(TypeError, match="header 'a' must have a str value"):
            await message.respond(1, headers={"a": 1})  # type: ignore[dict-item]
        await message.respond(42)

    async with trio.open_nursery() as nursery:
        await nursery.start(serve, broker, "q", wrong)
        assert (await broker.request("q", 0, timeout=1)).payload == 42
        nursery.cancel_scope.cancel()
    assert len(errors) == 1


async def test_only_requests_can_be_answered() -> None:
    broker = Broker(int)
    async with broker.subscribe("q") as sub:
        await broker.publish("q", 1)
        message = sub.receive_nowait()
        assert message.reply is None
        with pytest.raises(ValueError, match="not a request"):
            await message.respond(2)
    with pytest.raises(ValueError, match="not a request"):
        await Message("a", 1, headers={"h": "v"}).respond(2)


async def test_reply_subjects_are_reserved() -> None:
    broker = Broker(int)
    before = broker.statistics()
    for subject in [
        "_INBOX",
        "_INBOX.x",
        "_INBOX.x.1",
        pipeline(broker).replies.prefix[:-1],
    ]:
        with pytest.raises(InvalidSubjectError, match="reserved for reply subjects"):
            await broker.publish(subject, 1)
        with pytest.raises(InvalidSubjectError, match="reserved for reply subjects"):
            broker.publish_nowait(subject, 1)
        with pytest.raises(InvalidSubjectError, match="none listens under _INBOX"):
            await broker.request(subject, 1, timeout=1)
    # one of ours, but never issued: published to nobody
    assert await broker.publish(pipeline(broker).replies.prefix + "99", 1) == 0
    assert broker.statistics().published == before.published + 1
    with pytest.raises(InvalidSubjectError, match="never retained"):
        await broker.publish(pipeline(broker).replies.prefix + "99", 1, retain=True)
    with pytest.raises(InvalidSubjectError, match="never retained"):
        broker.publish_nowait("_INBOX.x", 1, retain=True)
    for pattern in ["_INBOX", "_INBOX.>", "_INBOX.*.1"]:
        with pytest.raises(InvalidSubjectError, match="no subscription can listen"):
            broker.subscribe(pattern)
    # _INBOXES, INBOX: ordinary subjects
    assert await broker.publish("_INBOXES.a", 1) == 0
    assert request_leftovers(broker) == (0, [])
    assert broker.retained(">") == []


async def test_wildcard_subscribers_never_see_answers() -> None:
    broker = Broker(int)
    async with broker.subscribe(">") as everything, trio.open_nursery() as nursery:
        await nursery.start(serve, broker, "q", double)
        assert (await broker.request("q", 2, timeout=1)).payload == 4
        nursery.cancel_scope.cancel()
        assert everything.receive_nowait().subject == "q"
        with pytest.raises(trio.WouldBlock):
            everything.receive_nowait()


async def test_the_timeout_is_checked_first() -> None:
    broker = Broker(int)
    async with broker.subscribe("q"):
        for timeout, error in [
            (None, TypeError),
            ("1", TypeError),
            (True, TypeError),
            (0, ValueError),
            (-1.0, ValueError),
            (math.nan, ValueError),
        ]:
            with pytest.raises(error, match="timeout"):
                await broker.request("q", 1, timeout=timeout)  # type: ignore[arg-type]
    assert broker.statistics().published == 0


async def test_a_thousand_requests_leave_the_cache_and_the_trie_as_they_were() -> None:
    broker = Broker(int, match_cache_size=16)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, broker, "q.*", double)
        nodes = routing_nodes(broker)
        for i in range(1000):
            answer = await broker.request(f"q.{i % 4}", i, timeout=1)
            assert answer.payload == 2 * i
        assert request_leftovers(broker) == (0, [])
        assert routing_nodes(broker) == nodes
        assert sorted(pipeline(broker).cache) == ["q.0", "q.1", "q.2", "q.3"]
        nursery.cancel_scope.cancel()


async def test_a_request_prints_and_compares_with_its_reply_subject() -> None:
    broker = Broker(int)
    async with broker.subscribe("q") as sub:
        with trio.move_on_after(0.01):
            await broker.request("q", 1, timeout=math.inf, headers={"h": "v"})
        request = sub.receive_nowait()
    reply = request.reply
    assert repr(request) == (
        f"Message(subject='q', payload=1, headers={{'h': 'v'}}, reply={reply!r})"
    )
    assert request == request
    assert request != Message("q", 1, headers={"h": "v"})
    assert hash(request) == hash(request)
    # a copy made by pickle is a plain message: it cannot be answered
    copy = pickle.loads(pickle.dumps(request))
    assert copy == Message("q", 1, headers={"h": "v"})
    assert copy.reply is None


def test_a_request_can_be_the_broker_s_first_call_in_a_run() -> None:
    """Made outside any run, the broker learns its run from a request."""
    broker = Broker(int)

    async def ask() -> bool:
        with pytest.raises(NoRespondersError):
            await broker.request("q", 1, timeout=1)
        return pipeline(broker).run.token is trio.lowlevel.current_trio_token()

    assert trio.run(ask)


async def test_an_answer_after_the_broker_closed_is_refused() -> None:
    broker = Broker(int)
    async with broker.subscribe("q") as sub:
        with trio.move_on_after(0.01):
            await broker.request("q", 1, timeout=math.inf)
        request = sub.receive_nowait()
    await broker.aclose()
    with pytest.raises(BrokerClosedError):
        await request.respond(1)


async def test_answering_without_waiting_while_a_block_subscription_is_full() -> None:
    """publish_nowait on a reply subject: a reply never blocks."""
    broker = Broker(int)
    async with (
        broker.subscribe("full", max_buffer_size=1, policy=BLOCK),
        broker.subscribe("q") as sub,
        trio.open_nursery() as nursery,
    ):
        broker.publish_nowait("full", 0)

        async def answer() -> None:
            request = await sub.receive()
            assert request.reply is not None
            assert broker.publish_nowait(request.reply, 5) == 1

        nursery.start_soon(answer)
        assert (await broker.request("q", 1, timeout=1)).payload == 5
