"""The one door for the NATS bridge (_port), without a server."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_pubsub import (
    Broker,
    InvalidSubjectError,
    NoRespondersError,
    OverflowPolicy,
    _port,
)

from ..helpers import drain


@pytest.fixture
def broker(cache_size: int) -> Broker[int]:
    return Broker[int](match_cache_size=cache_size)


async def test_one_subscription_on_several_patterns_gets_each_message_once(
    broker: Broker[int],
) -> None:
    async with (
        broker.subscribe("a.*", queue="g") as member,
        _port.export(
            broker,
            ["a.>", "a.*", "*.b", "a.>"],
            max_buffer_size=100,
            policy=OverflowPolicy.DROP_NEWEST,
        ) as many,
    ):
        assert many.pattern == "a.>, a.*, *.b"
        assert broker.statistics().subscriptions == 2
        for i, subject in enumerate(["a.b", "a.c", "x.b", "a.b.c", "x.y"]):
            broker.publish_nowait(subject, i)
        assert drain(many) == [0, 1, 2, 3]
        assert drain(member) == [0, 1]
    assert broker.statistics().subscriptions == 0
    broker.publish_nowait("a.b", 9)  # nothing left in the trie or the cache


async def test_no_patterns_is_an_error(broker: Broker[int]) -> None:
    with pytest.raises(ValueError, match="at least one pattern"):
        _port.export(broker, [], max_buffer_size=1, policy=OverflowPolicy.BLOCK)


async def test_several_patterns_get_no_retained_messages(broker: Broker[int]) -> None:
    broker.publish_nowait("a.b", 1, retain=True)
    async with _port.export(
        broker, ["a.*", "a.>"], max_buffer_size=4, policy=OverflowPolicy.DROP_NEWEST
    ) as many:
        assert drain(many) == []


async def test_inject_skips_every_export_of_the_broker_issue_16(
    broker: Broker[int],
) -> None:
    """What comes in from NATS reaches every subscription but the exports.

    Two exports (two bridges) on one broker: neither gets what either imports,
    so one bridge importing what the other exports cannot loop.
    """
    async with (
        _port.export(
            broker, ["e.>"], max_buffer_size=4, policy=OverflowPolicy.DROP_NEWEST
        ) as one,
        _port.export(
            broker, ["e.*"], max_buffer_size=4, policy=OverflowPolicy.DROP_NEWEST
        ) as two,
        broker.subscribe("e.*") as other,
    ):
        assert _port.pipeline(broker).inject("e.x", 1, None) is None
        _port.pipeline(broker).inject("e.y", 2, {"h": "v"})
        assert drain(one) == drain(two) == []
        first, second = other.receive_nowait(), other.receive_nowait()
        assert (first.payload, dict(first.headers)) == (1, {})
        assert (second.payload, dict(second.headers)) == (2, {"h": "v"})
        broker.publish_nowait("e.z", 3)  # a local publish: exported as usual
        assert drain(one) == drain(two) == [3]
        assert broker.statistics().published == 3
    async with broker.subscribe("e.>") as later:
        _port.pipeline(broker).inject("e.w", 4, None)  # no export open now
        assert drain(later) == [4]


async def test_publish_except_leaves_waiting_to_the_caller(
    broker: Broker[int],
) -> None:
    async with (
        _port.export(
            broker, ["w"], max_buffer_size=4, policy=OverflowPolicy.DROP_NEWEST
        ) as left_out,
        broker.subscribe("w", policy=OverflowPolicy.BLOCK, max_buffer_size=1) as sub,
    ):
        broker.publish_nowait("w", 0)
        drain(left_out)
        pending = _port.pipeline(broker).inject("w", 1, None)
        assert pending is not None
        assert len(pending.full) == 1
        assert broker.statistics().published == 1  # not yet
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_port.pipeline(broker).finish, pending)
            await trio.testing.wait_all_tasks_blocked()
            assert (await sub.receive()).payload == 0
        assert (await sub.receive()).payload == 1
        assert drain(left_out) == []
        assert broker.statistics().published == 2


async def test_stop_routing_keeps_what_is_held(broker: Broker[int]) -> None:
    async with _port.export(
        broker, ["s.>"], max_buffer_size=4, policy=OverflowPolicy.BLOCK
    ) as many:
        broker.publish_nowait("s.a", 1)
        many.drain()
        many.drain()  # idempotent
        broker.publish_nowait("s.a", 2)  # no longer routed, nothing blocks
        assert (await many.receive()).payload == 1
        with pytest.raises(trio.EndOfChannel):
            await many.receive()
        assert broker.statistics().subscriptions == 0


async def test_aclose_ends_a_subscription_on_several_patterns_once() -> None:
    broker = Broker[int]()
    async with _port.export(
        broker, ["c.*", "c.>"], max_buffer_size=4, policy=OverflowPolicy.DROP_NEWEST
    ) as many:
        broker.publish_nowait("c.x", 1)
        await broker.aclose()
        assert (await many.receive()).payload == 1
        with pytest.raises(trio.EndOfChannel):
            await many.receive()


async def test_stop_routing_releases_waiting_publishers_normally_issue_16(
    broker: Broker[int],
) -> None:
    """A publisher waiting on a drained BLOCK export returns; the broker is open.

    Before, it woke with BrokerClosedError as if the broker had closed.
    """
    async with (
        _port.export(
            broker, ["d"], max_buffer_size=1, policy=OverflowPolicy.BLOCK
        ) as export,
        broker.subscribe("d") as other,
    ):
        broker.publish_nowait("d", 1)
        results: list[int] = []

        async def publisher() -> None:
            results.append(await broker.publish("d", 2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            await trio.testing.wait_all_tasks_blocked()
            export.drain()
        assert results == [1]  # the other subscription took it; the export left
        assert drain(export) == [1]
        assert drain(other) == [1, 2]
        assert broker.statistics().published == 2


def export(broker: Broker[int], patterns: list[str]) -> Any:
    return _port.export(
        broker, patterns, max_buffer_size=10, policy=OverflowPolicy.DROP_NEWEST
    )


async def test_a_decline_ends_a_request_only_no_other_subscription_took(
    broker: Broker[int],
) -> None:
    """As a bridge does on NATS's "no responders" (issue 17)."""
    async with export(broker, ["q"]) as out, trio.open_nursery() as nursery:

        async def decline_it() -> None:
            request = await out.receive()
            assert request.reply is not None
            _port.pipeline(broker).decline(request.reply)

        nursery.start_soon(decline_it)
        with pytest.raises(NoRespondersError, match=r"1 answered no responders"):
            await broker.request("q", 1, timeout=1)
        async with broker.subscribe("q") as local:

            async def decline_then_answer() -> None:
                request = await out.receive()
                assert request.reply is not None
                _port.pipeline(broker).decline(request.reply)
                await trio.testing.wait_all_tasks_blocked()
                await local.receive_nowait().respond(5)
                _port.pipeline(broker).decline(request.reply)  # ended: nothing happens

            nursery.start_soon(decline_then_answer)
            assert (await broker.request("q", 1, timeout=1)).payload == 5
    assert broker.statistics().requests_waiting == 0


async def test_a_decline_while_the_request_still_waits_for_room(
    autojump_clock: trio.testing.MockClock, broker: Broker[int]
) -> None:
    """Declined before a BLOCK subscription has room: that one can still answer."""
    async with (
        export(broker, ["q"]) as out,
        broker.subscribe("q", max_buffer_size=1, policy=OverflowPolicy.BLOCK) as full,
        trio.open_nursery() as nursery,
    ):
        broker.publish_nowait("q", 0)
        out.receive_nowait()

        async def decline_then_make_room() -> None:
            request = await out.receive()
            assert request.reply is not None
            _port.pipeline(broker).decline(request.reply)
            await trio.sleep(1)
            full.receive_nowait()  # room: the request goes in
            await (await full.receive()).respond(9)

        nursery.start_soon(decline_then_make_room)
        assert (await broker.request("q", 1, timeout=10)).payload == 9


async def test_inject_request_waits_on_a_reply_only_if_someone_took_it(
    broker: Broker[int],
) -> None:
    async with export(broker, ["q.>"]):
        # only the export matches: a plain message to nobody, nothing waits
        assert _port.pipeline(broker).inject_request("q.a", 1, None) == (None, None)
        async with broker.subscribe("q.a", max_buffer_size=1) as local:
            pending, reply = _port.pipeline(broker).inject_request("q.a", 2, {"h": "v"})
            assert pending is None
            assert reply is not None
            assert reply.asked == "q.a"
            request = local.receive_nowait()
            assert request.headers == {"h": "v"}
            assert request.reply == reply.subject
            await request.respond(4)
            assert (await reply.wait()).payload == 4
            reply.close()
            # a full DROP_NEWEST one drops it: nothing waits either
            broker.publish_nowait("q.a", 0)
            assert _port.pipeline(broker).inject_request("q.a", 3, None) == (None, None)
            assert local.statistics().dropped == 1
        async with broker.subscribe(
            "q.b", max_buffer_size=1, policy=OverflowPolicy.BLOCK
        ) as blocking:
            broker.publish_nowait("q.b", 0)
            pending, reply = _port.pipeline(broker).inject_request("q.b", 5, None)
            assert pending is not None
            assert reply is not None
            blocking.receive_nowait()
            await _port.pipeline(broker).finish(pending)
            assert blocking.receive_nowait().reply == reply.subject
            reply.close()
    assert broker.statistics().requests_waiting == 0


def test_reserved_patterns_are_refused_for_the_bridge(broker: Broker[int]) -> None:
    _port.check_unreserved("INBOX.>")
    with pytest.raises(InvalidSubjectError, match="are reply subjects"):
        _port.check_unreserved("_INBOX.>")
    with pytest.raises(InvalidSubjectError, match="are reply subjects"):
        export(broker, ["a", "_INBOX.*"])
    assert _port.reply_prefix(broker).startswith("_INBOX.")
