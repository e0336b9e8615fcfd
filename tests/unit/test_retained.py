"""Retained messages, rule by rule.

Stored by publish(retain=True), served first to new subscriptions, read by
retained(), bounded, and cleared by clear_retained().
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from hypothesis import given, strategies as st

from tests.helpers import drain
from tests.model import model_patterns, model_subjects
from trio_pubsub import (
    Broker,
    BrokerClosedError,
    InvalidSubjectError,
    OverflowPolicy,
    SlowConsumerError,
    subject_matches,
)
from trio_pubsub._broker import pipeline
from trio_pubsub._retained import RetainedStore

STATE = {
    "config.db.host": "db1",
    "config.db.port": "5432",
    "config.cache": "on",
    "status.api": "up",
    "status.worker.3": "busy",
}


def retain_all(broker: Broker[str]) -> None:
    for subject, value in STATE.items():
        broker.publish_nowait(subject, value, retain=True)


async def test_retained_reads_by_pattern_in_subject_order(cache_size: int) -> None:
    broker = Broker(str, match_cache_size=cache_size)
    retain_all(broker)
    assert [m.subject for m in broker.retained("config.>")] == [
        "config.cache",
        "config.db.host",
        "config.db.port",
    ]
    assert [m.payload for m in broker.retained("*.*")] == ["on", "up"]
    assert [m.subject for m in broker.retained("status.*.3")] == ["status.worker.3"]
    assert broker.retained("config.db") == []
    assert len(broker.retained(">")) == 5
    assert broker.statistics().retained == 5
    with pytest.raises(InvalidSubjectError):
        broker.retained("config.>.x")


async def test_a_new_subscription_gets_retained_first_then_live(
    cache_size: int,
) -> None:
    broker = Broker(str, match_cache_size=cache_size)
    retain_all(broker)
    broker.publish_nowait("config.db.host", "db2", retain=True)  # replaces db1
    broker.publish_nowait("config.db.user", "app")  # not retained
    async with broker.subscribe("config.db.*") as sub:
        broker.publish_nowait("config.db.port", "6543")
        assert drain(sub) == ["db2", "5432", "6543"]
        stats = sub.statistics()
        assert (stats.delivered, stats.received, stats.dropped) == (3, 3, 0)


async def test_plain_publishes_and_other_subjects_leave_the_store_alone() -> None:
    broker = Broker(str)
    broker.publish_nowait("a", "kept", retain=True)
    broker.publish_nowait("a", "not retained")
    assert [m.payload for m in broker.retained("a")] == ["kept"]


async def test_clear_retained_forgets_one_subject() -> None:
    broker = Broker(str)
    retain_all(broker)
    assert broker.clear_retained("config.cache") is True
    assert broker.clear_retained("config.cache") is False
    assert broker.clear_retained("never.seen") is False
    assert [m.subject for m in broker.retained("config.>")] == [
        "config.db.host",
        "config.db.port",
    ]
    for subject in list(STATE):
        broker.clear_retained(subject)
    assert broker.statistics().retained == 0
    assert pipeline(broker).retained.node_count() == 1  # pruned back to the root
    with pytest.raises(InvalidSubjectError):
        broker.clear_retained("config.*")
    with pytest.raises(TypeError):
        broker.clear_retained(3)  # type: ignore[arg-type]


async def test_the_store_evicts_the_least_recently_updated_subject() -> None:
    broker = Broker(int, max_retained=3)
    for i, subject in enumerate(["a", "b", "c"]):
        broker.publish_nowait(subject, i, retain=True)
    broker.publish_nowait("a", 10, retain=True)  # a is now the most recent
    broker.publish_nowait("d", 11, retain=True)  # evicts b
    assert [m.subject for m in broker.retained(">")] == ["a", "c", "d"]
    stats = broker.statistics()
    assert (stats.retained, stats.retained_evicted) == (3, 1)

    nothing = Broker(int, max_retained=0)
    nothing.publish_nowait("a", 1, retain=True)
    assert nothing.retained(">") == []
    assert nothing.statistics().retained_evicted == 1


def test_max_retained_is_checked() -> None:
    with pytest.raises(ValueError, match="max_retained must be an int >= 0"):
        Broker[int](max_retained=-1)
    with pytest.raises(TypeError, match="max_retained"):
        Broker[int](max_retained=1.5)  # type: ignore[arg-type]


async def test_retain_must_be_a_bool_and_nothing_changes_otherwise() -> None:
    broker = Broker(int)
    async with broker.subscribe("a") as sub:
        with pytest.raises(TypeError, match="retain must be a bool, not str"):
            broker.publish_nowait("a", 1, retain="yes")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="retain must be a bool"):
            await broker.publish("a", 1, retain=1)  # type: ignore[arg-type]
        assert drain(sub) == []
        assert broker.retained(">") == []
        assert broker.statistics().published == 0


@pytest.mark.parametrize(
    ("policy", "received", "dropped"),
    [
        (OverflowPolicy.DROP_NEWEST, ["db1", "5432"], 1),
        (OverflowPolicy.DROP_OLDEST, ["5432", "on"], 1),
    ],
)
async def test_retained_messages_go_through_the_policy(
    policy: OverflowPolicy, received: list[str], dropped: int
) -> None:
    broker = Broker(str)
    broker.publish_nowait("config.db.host", "db1", retain=True)
    broker.publish_nowait("config.db.port", "5432", retain=True)
    broker.publish_nowait("config.z", "on", retain=True)
    async with broker.subscribe("config.>", max_buffer_size=2, policy=policy) as sub:
        stats = sub.statistics()
        assert (stats.pending, stats.dropped) == (2, dropped)
        assert drain(sub) == received
        assert broker.statistics().dropped == dropped


async def test_a_disconnect_subscription_can_be_cut_off_on_entry() -> None:
    broker = Broker(str)
    retain_all(broker)
    async with broker.subscribe(
        ">", max_buffer_size=1, policy=OverflowPolicy.DISCONNECT, disconnect_after=2
    ) as sub:
        assert drain(sub) == ["on"]  # config.cache, the first in subject order
        with pytest.raises(SlowConsumerError):
            sub.receive_nowait()
        stats = sub.statistics()
        assert (stats.received, stats.dropped) == (1, 2)  # the rest not routed
    assert broker.statistics().disconnected == 1


async def test_a_block_subscription_takes_every_retained_message_then_live_ones_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(str)
    retain_all(broker)
    async with broker.subscribe(
        ">", max_buffer_size=2, policy=OverflowPolicy.BLOCK
    ) as sub:
        stats = sub.statistics()
        assert (stats.pending, stats.dropped) == (5, 0)  # more than its size
        with pytest.raises(trio.WouldBlock):
            broker.publish_nowait("status.api", "down")
        done: list[int] = []

        async def publish_live() -> None:
            done.append(await broker.publish("status.api", "down"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_live)
            await trio.sleep(1)
            received = [(await sub.receive()).payload for _ in range(3)]
            await trio.sleep(1)
            assert done == []  # two retained ones still pending: the buffer is full
            received.append((await sub.receive()).payload)
            await trio.sleep(1)
            assert done == [1]  # room at last
        received += drain(sub)
        assert received == ["on", "db1", "5432", "up", "busy", "down"]
        assert sub.statistics().dropped == 0


async def test_a_subscription_entered_during_a_retaining_publish_gets_it_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(str, policy=OverflowPolicy.BLOCK, max_buffer_size=1)
    async with broker.subscribe("a") as early:
        await broker.publish("a", "first")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: broker.publish("a", "second", retain=True))
            await trio.sleep(1)  # waiting for early
            async with broker.subscribe("a") as late:
                assert drain(late) == ["second"]  # retained, not live
                assert early.receive_nowait().payload == "first"
                assert drain(early) == ["second"]  # live: in the room just made
                await trio.sleep(1)
                assert drain(late) == []  # not a second time


async def test_a_refused_publish_nowait_retains_nothing() -> None:
    broker = Broker(str, policy=OverflowPolicy.BLOCK, max_buffer_size=1)
    async with broker.subscribe("a"):
        broker.publish_nowait("a", "fills it")
        with pytest.raises(trio.WouldBlock):
            broker.publish_nowait("a", "refused", retain=True)
    assert broker.retained(">") == []


async def test_queue_group_members_get_no_retained_messages() -> None:
    broker = Broker(str)
    retain_all(broker)
    async with broker.subscribe(">", queue="workers") as member:
        assert drain(member) == []
        broker.publish_nowait("status.api", "down")
        assert drain(member) == ["down"]


async def test_a_closed_broker_keeps_its_retained_messages_readable() -> None:
    broker = Broker(str)
    retain_all(broker)
    await broker.aclose()
    with pytest.raises(BrokerClosedError):
        broker.publish_nowait("a", "x", retain=True)
    assert len(broker.retained(">")) == 5
    assert broker.clear_retained("status.api") is True


@given(
    stored=st.lists(model_subjects, max_size=12),
    cleared=st.lists(model_subjects, max_size=4),
    pattern=model_patterns,
    limit=st.integers(0, 8),
)
def test_the_store_matches_what_a_scan_would(
    stored: list[str], cleared: list[str], pattern: str, limit: int
) -> None:
    """RetainedStore against a plain dict scanned with subject_matches."""
    from trio_pubsub._subject import parse_pattern

    store: RetainedStore[int] = RetainedStore(limit)
    reference: dict[str, int] = {}
    for value, subject in enumerate(stored):
        store.put(subject, value)
        reference.pop(subject, None)
        reference[subject] = value
        if limit == 0:
            reference.clear()
        elif len(reference) > limit:
            del reference[next(iter(reference))]
    for subject in cleared:
        assert store.discard(subject) == (reference.pop(subject, None) is not None)
    expected = [reference[s] for s in sorted(reference) if subject_matches(pattern, s)]
    assert store.matching(parse_pattern(pattern)) == expected
    assert len(store) == len(reference)
    # a root, and at least one node per token of the longest stored subject
    longest = max((len(s.split(".")) for s in reference), default=0)
    assert store.node_count() >= 1 + longest
    for subject in list(reference):
        store.discard(subject)
    assert store.node_count() == 1


class _Refuse(logging.Filter):
    """A filter that raises: the log call inside the library then raises."""

    def filter(self, record: logging.LogRecord) -> bool:
        raise RuntimeError("this filter refuses every record")


@pytest.mark.parametrize(
    "policy",
    [OverflowPolicy.DROP_NEWEST, OverflowPolicy.DROP_OLDEST, OverflowPolicy.DISCONNECT],
)
async def test_an_entry_whose_retained_overflow_log_raises_leaves_nothing_issue_28(
    policy: OverflowPolicy,
) -> None:
    """The warning about the overflow raises inside the entry: nothing stays.

    Before, the subscription stayed registered (and routed to) after its
    ``async with`` had raised.
    """
    broker = Broker(int)
    for i in range(3):
        await broker.publish(f"a.{i}", i, retain=True)
    refuse = _Refuse()
    logger = logging.getLogger("trio_pubsub")
    logger.addFilter(refuse)
    try:
        with pytest.raises(RuntimeError, match="refuses every record"):
            async with broker.subscribe(
                "a.*", max_buffer_size=1, policy=policy, disconnect_after=1
            ):
                pytest.fail("the entry should have raised")  # pragma: no cover
    finally:
        logger.removeFilter(refuse)
    assert broker.subscriptions() == ()
    assert broker.statistics().subscriptions == 0
    assert await broker.publish("a.9", 9) == 0
    stats = broker.statistics()
    # what it took it gave up again, counted, and what it refused too
    assert stats.delivered >= 1
    assert stats.dropped >= stats.delivered
