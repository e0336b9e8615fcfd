"""Input chosen to break the core, each case a defect found and fixed (issue 15).

Deep subjects, values that only pretend to be subjects, ``retain`` values that
are not bools, subjects big enough to pin memory through the match cache, and
message types ``isinstance`` cannot use.
"""

from __future__ import annotations

import sys
from typing import Protocol, runtime_checkable

import pytest
import trio
import trio.testing

from trio_pubsub import (
    Broker,
    OverflowPolicy,
    Subscription,
    subject_matches,
    validate_pattern,
)
from trio_pubsub._broker import pipeline

from ..helpers import drain, export_subscription, routing_nodes

DEPTH = 10_000


def deep(tokens: list[str]) -> str:
    return ".".join(tokens)


async def test_ten_thousand_tokens_work_in_every_call_issue_15(
    cache_size: int,
) -> None:
    """Subjects and patterns of 10,000 tokens: no RecursionError anywhere."""
    broker = Broker[int](match_cache_size=cache_size)
    subject = deep(["t"] * DEPTH)
    stars = deep(["*"] * DEPTH)
    rest = deep(["t"] * (DEPTH - 1) + [">"])
    mixed = deep(["*", "t"] * (DEPTH // 2 - 1) + ["*", ">"])
    validate_pattern(stars)
    assert subject_matches(stars, subject)
    assert subject_matches(mixed, subject)
    broker.publish_nowait(subject, 1, retain=True)
    assert [m.payload for m in broker.retained(stars)] == [1]
    assert [m.payload for m in broker.retained(mixed)] == [1]
    async with (
        broker.subscribe(stars) as one,
        broker.subscribe(rest) as two,
        broker.subscribe(mixed, queue="q") as three,
        broker.subscribe(">") as everything,
    ):
        assert await broker.publish(subject, 2) == 4
        assert drain(one) == [1, 2]
        assert drain(two) == [1, 2]
        assert drain(three) == [2]  # queue members get no retained messages
        assert drain(everything) == [1, 2]
    assert broker.clear_retained(subject)
    assert routing_nodes(broker) == 1


async def test_a_deep_block_subscription_leaves_nothing_registered_issue_15() -> None:
    """A BLOCK subscription on a deep pattern enters and leaves; no publish hangs.

    Before the fix, its entry raised RecursionError after registering, so it
    stayed in the trie and a later publish waited for it forever.
    """
    broker = Broker[int]()
    subject = deep(["t"] * 3_000)
    broker.publish_nowait(subject, 0, retain=True)
    async with broker.subscribe(
        deep(["*"] * 3_000), max_buffer_size=1, policy=OverflowPolicy.BLOCK
    ) as sub:
        assert drain(sub) == [0]
    assert broker.statistics().subscriptions == 0
    with trio.move_on_after(1) as scope:
        for payload in range(3):
            await broker.publish(subject, payload)
    assert not scope.cancelled_caught


@pytest.mark.parametrize("retain", [0, 1, None, "", [], "yes", 1.0])
async def test_retain_must_be_a_bool_in_every_publish_issue_15(retain: object) -> None:
    """retain=0, None, '' and the like are TypeErrors, not silently False."""
    broker = Broker[int]()
    async with broker.subscribe("a", max_buffer_size=1, policy=OverflowPolicy.BLOCK):
        broker.publish_nowait("a", 0)  # full: a check after the wait would hang
        with pytest.raises(TypeError, match="retain must be a bool"):
            broker.publish_nowait("a", 1, retain=retain)  # type: ignore[arg-type]
        with (
            trio.move_on_after(1),
            pytest.raises(TypeError, match="retain must be a bool"),
        ):
            await broker.publish("a", 1, retain=retain)  # type: ignore[arg-type]
        assert broker.statistics().published == 1
        assert broker.retained(">") == []


class PretendSubject:
    """Hashes and compares equal to a str, without being one."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other: object) -> bool:
        return other == self.text


@pytest.mark.parametrize("retain", [False, True])
async def test_a_non_str_subject_is_refused_on_a_cache_hit_issue_15(
    retain: bool,
) -> None:
    """An object equal to a cached subject is still a TypeError, and stores nothing."""
    broker = Broker[int]()
    async with broker.subscribe("a.b") as sub:
        broker.publish_nowait("a.b", 1)  # now "a.b" is cached
        assert broker.statistics().cache_size == 1
        fake = PretendSubject("a.b")
        with pytest.raises(TypeError, match="subject must be a str"):
            broker.publish_nowait(fake, 2, retain=retain)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="subject must be a str"):
            await broker.publish(fake, 3, retain=retain)  # type: ignore[arg-type]
        assert drain(sub) == [1]
    assert broker.retained(">") == []
    assert broker.statistics().published == 1


def cache_bytes(broker: Broker[int]) -> int:
    """What the match cache's keys and values take, measured from outside."""
    cache = pipeline(broker).routes.cache
    return sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in cache.items())


async def test_the_match_cache_is_bounded_in_bytes_issue_15() -> None:
    """Huge subjects cannot pin memory through the cache, with or without routes."""
    broker = Broker[int](match_cache_bytes=1 << 20)
    async with broker.subscribe(">") as everything:
        for i in range(400):  # 400 x 50 KB: 20 MB of subjects
            broker.publish_nowait(f"s{i}." + "x" * 50_000, i)
            drain(everything)
        assert cache_bytes(broker) <= 1 << 20
        for i in range(5_000):  # many small ones still fill it up to the bound
            broker.publish_nowait(f"small.{i}." + "y" * 300, i)
            drain(everything)
        assert cache_bytes(broker) <= 1 << 20
        assert broker.statistics().cache_size > 1_000
    hits = broker.statistics().cache_hits
    async with broker.subscribe("small.>") as small:
        broker.publish_nowait("small.4999." + "y" * 300, 1)  # still cached
        assert drain(small) == [1]
    assert broker.statistics().cache_hits == hits + 1


@runtime_checkable
class Checkable(Protocol):
    def ping(self) -> int: ...


class NotCheckable(Protocol):
    def ping(self) -> int: ...


class Pinger:
    def ping(self) -> int:
        return 1


def test_a_protocol_isinstance_cannot_use_is_refused_at_construction_issue_15() -> None:
    """Broker(P) for a plain Protocol is a TypeError at once, not at every publish."""
    with pytest.raises(TypeError, match="message_type"):
        Broker(NotCheckable)
    with pytest.raises(TypeError, match="message_type"):
        Broker(list[int])
    broker = Broker(Checkable)
    broker.publish_nowait("a", Pinger())
    with pytest.raises(TypeError, match="payload"):
        broker.publish_nowait("a", 1)  # type: ignore[arg-type]


async def test_unions_and_tuples_of_classes_are_message_types_issue_15() -> None:
    """Broker(int | str) and Broker((int, str)) check payloads against each class."""
    union: Broker[int | str] = Broker(int | str)
    pair: Broker[int | str] = Broker((int, str))
    for broker in (union, pair):
        async with broker.subscribe("a") as sub:
            broker.publish_nowait("a", 1)
            broker.publish_nowait("a", "one")
            with pytest.raises(TypeError, match="payload must be an instance of"):
                broker.publish_nowait("a", 1.5)  # type: ignore[arg-type]
            assert drain(sub) == [1, "one"]


async def test_subscriptions_count_stays_true_after_aclose_with_an_export_issue_15() -> (
    None
):
    """An export on three patterns counts as one subscription, and 0 after aclose."""
    broker = Broker[int]()
    async with (
        export_subscription(broker, ["a.>", "b.>", "c.*"]),
        broker.subscribe("a.b"),
    ):
        assert broker.statistics().subscriptions == 2
        await broker.aclose()
        assert broker.statistics().subscriptions == 0
    assert broker.statistics().subscriptions == 0


class Text(str):
    """A str subclass, as some libraries hand out."""


async def test_a_str_subclass_subject_is_routed_as_the_plain_str(
    cache_size: int,
) -> None:
    """A str subclass is a valid subject: cached or not, it routes like the str."""
    broker = Broker[int](match_cache_size=cache_size)
    async with broker.subscribe("a.*") as sub:
        broker.publish_nowait(Text("a.b"), 1)
        broker.publish_nowait("a.b", 2)
        broker.publish_nowait(Text("a.b"), 3, retain=True)
        messages = [sub.receive_nowait() for _ in range(3)]
    assert [m.payload for m in messages] == [1, 2, 3]
    assert all(type(m.subject) is str for m in messages)
    assert [type(m.subject) for m in broker.retained(">")] == [str]
    if cache_size:
        assert broker.statistics().cache_size == 1
        assert pipeline(broker).routes.cache_bytes < 1_000  # counted once, not per call


def test_a_subscription_cannot_be_made_by_hand() -> None:
    """Subscription() is refused: only subscribe() makes one, with its inbox."""
    with pytest.raises(TypeError, match=r"broker\.subscribe"):
        Subscription()
