"""Message headers: given at publish, read-only, shared, checked at the call."""

from __future__ import annotations

import copy
import pickle
from collections import OrderedDict
from collections.abc import Mapping

import attrs
import pytest
import trio
import trio.testing

from trio_pubsub import Broker, Message, OverflowPolicy


async def test_every_receiver_shares_one_read_only_mapping(cache_size: int) -> None:
    broker = Broker(str, match_cache_size=cache_size)
    async with broker.subscribe("a.*") as first, broker.subscribe("a.>") as second:
        sent = {"correlation-id": "42", "traceparent": "00-ab-cd-01"}
        assert await broker.publish("a.b", "x", headers=sent) == 2
        one, two = first.receive_nowait(), second.receive_nowait()
        assert one.headers == sent
        assert one.headers is two.headers
        assert isinstance(one.headers, Mapping)
        with pytest.raises(TypeError):
            one.headers["correlation-id"] = "43"  # type: ignore[index]
        sent["correlation-id"] = "changed later"  # the message kept a copy
        assert one.headers["correlation-id"] == "42"
        assert (
            one == two == Message("a.b", "x", headers={**sent, "correlation-id": "42"})
        )


async def test_without_headers_a_message_has_an_empty_mapping(cache_size: int) -> None:
    broker = Broker(str, match_cache_size=cache_size)
    async with broker.subscribe("a") as sub:
        broker.publish_nowait("a", "x")
        broker.publish_nowait("a", "y", headers={})
        broker.publish_nowait("a", "z", headers=None)
        received = [sub.receive_nowait() for _ in range(3)]
        assert [m.headers for m in received] == [{}, {}, {}]
        assert received[0].headers is received[1].headers  # one shared empty one
        assert received[1] == Message("a", "y")  # no headers: the plain value
        assert type(received[1]) is Message
        with pytest.raises(TypeError):
            received[0].headers["k"] = "v"  # type: ignore[index]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([("k", "v")], "headers must be a mapping of str to str, not list"),
        ("k=v", "headers must be a mapping of str to str, not str: 'k=v'"),
        ({1: "v"}, "header names must be str, not int: 1"),
        ({b"k": "v"}, "header names must be str, not bytes: b'k'"),
        ({"k": 1}, "header 'k' must have a str value, not int: 1"),
        ({"k": None}, "header 'k' must have a str value, not NoneType: None"),
    ],
)
async def test_invalid_headers_are_refused_at_the_call(
    headers: object, message: str
) -> None:
    broker = Broker(int)
    async with broker.subscribe(">") as sub:
        before = broker.statistics()
        with pytest.raises(TypeError, match="^" + message.replace("[", r"\[")):
            broker.publish_nowait("a", 1, headers=headers)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="^" + message.replace("[", r"\[")):
            await broker.publish("a", 1, headers=headers)  # type: ignore[arg-type]
        assert broker.statistics() == before
        with pytest.raises(trio.WouldBlock):
            sub.receive_nowait()


async def test_any_mapping_of_str_is_accepted_and_order_is_kept() -> None:
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        given = OrderedDict([("z", "1"), ("a", "2")])
        broker.publish_nowait("a", 1, headers=given)
        assert list(sub.receive_nowait().headers) == ["z", "a"]


async def test_headers_survive_a_wait_for_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(int, policy=OverflowPolicy.BLOCK, max_buffer_size=1)
    async with broker.subscribe("a") as sub:
        await broker.publish("a", 0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: broker.publish("a", 1, headers={"attempt": "2"}))
            await trio.sleep(1)
            assert sub.receive_nowait().headers == {}
            await trio.sleep(1)
        assert sub.receive_nowait().headers == {"attempt": "2"}


def test_message_values_with_headers() -> None:
    plain = Message("a", 1)
    headed = Message("a", 1, headers={"k": "v"})
    assert headed.headers == {"k": "v"}
    assert headed == Message("a", 1, {"k": "v"})
    assert headed != plain
    assert type(Message("a", 1, headers={})) is Message
    assert Message("a", 1, headers={}) == plain
    assert headed != Message("a", 1, headers={"k": "w"})
    assert isinstance(headed, Message)
    assert repr(headed) == "Message(subject='a', payload=1, headers={'k': 'v'})"
    assert repr(plain) == "Message(subject='a', payload=1)"
    assert hash(headed) == hash(Message("a", 1, {"k": "v"}))
    for clone in (
        pickle.loads(pickle.dumps(headed)),
        copy.copy(headed),
        copy.deepcopy(headed),
    ):
        assert clone == headed
    assert pickle.loads(pickle.dumps(plain)) == plain
    assert attrs.evolve(headed, payload=2) == Message("a", 2, {"k": "v"})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        headed.subject = "b"  # type: ignore[misc]
    with pytest.raises(TypeError, match="header 'k' must have a str value"):
        Message("a", 1, headers={"k": 2})  # type: ignore[dict-item]


async def test_str_subclasses_are_str_enough() -> None:
    class Name(str):
        __slots__ = ()

    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        broker.publish_nowait("a", 1, headers={Name("k"): Name("v")})
        assert sub.receive_nowait().headers == {"k": "v"}
