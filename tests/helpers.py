"""Small helpers shared by the unit tests."""

from __future__ import annotations

import typing
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import trio

from trio_pubsub import (
    Broker,
    HandlerStatistics,
    OverflowPolicy,
    SlowConsumerError,
    Subscription,
    _port,
)
from trio_pubsub._broker import pipeline
from trio_pubsub._inbox import Tally, _Inbox
from trio_pubsub._routes import RouteTable
from trio_pubsub._subject import parse_subject

T = TypeVar("T")


def drain(sub: Subscription[T]) -> list[T]:
    """Receive every pending message without waiting, up to the end of the stream."""
    out: list[T] = []
    while True:
        try:
            out.append(sub.receive_nowait().payload)
        except (trio.WouldBlock, trio.EndOfChannel, SlowConsumerError):
            return out


def routing_nodes(broker: Broker[typing.Any]) -> int:
    """Nodes in the broker's routing trie, the root included (1: pruned bare)."""
    return pipeline(broker).routes.node_count()


def export_subscription(
    broker: Broker[int], patterns: list[str]
) -> AbstractAsyncContextManager[Subscription[int]]:
    """One subscription on several patterns, as the NATS bridge exports with."""
    return _port.export(
        broker, patterns, max_buffer_size=100, policy=OverflowPolicy.DROP_NEWEST
    )


class LabelledRoutes:
    """A RouteTable of real inboxes, each known by a label, for routing tests.

    ``insert``/``remove`` take parsed pattern tokens and a label; lookups
    return labels. The match cache is the table's own.
    """

    def __init__(self, cache_size: int, cache_bytes: int = 1 << 30) -> None:
        self.table: RouteTable[int] = RouteTable(cache_size, cache_bytes)
        self.tally = Tally(detach=self.table.discard)
        self.inboxes: dict[tuple[tuple[str, ...], str], _Inbox[int]] = {}

    def _inbox(self, tokens: tuple[str, ...], label: str) -> _Inbox[int]:
        inbox = self.inboxes.get((tokens, label))
        if inbox is None:
            inbox = _Inbox(
                label,
                tokens,
                policy=OverflowPolicy.DROP_NEWEST,
                max_buffer_size=1,
                disconnect_after=1,
                tally=self.tally,
            )
        return inbox

    def insert(self, tokens: tuple[str, ...], label: str) -> None:
        inbox = self._inbox(tokens, label)
        if (tokens, label) in self.inboxes:
            raise ValueError(f"{label!r} is already stored under {tokens!r}")
        self.table.add(inbox)
        self.inboxes[tokens, label] = inbox

    def remove(self, tokens: tuple[str, ...], label: str) -> None:
        inbox = self.inboxes.pop((tokens, label))  # KeyError when absent
        self.table.discard(inbox)

    def lookup(self, subject: str) -> list[str]:
        """Through the cache when it has the subject, as the broker does."""
        cached = self.table.cache.get(subject)
        if cached is None:
            cached = self.table.targets(subject, parse_subject(subject))
        return self.labels(cached)

    @staticmethod
    def labels(targets: typing.Iterable[object]) -> list[str]:
        return [typing.cast("_Inbox[int]", t).pattern for t in targets]

    @property
    def cache(self) -> dict[str, list[str]]:
        return {s: self.labels(t) for s, t in self.table.cache.items()}

    def values(self) -> list[str]:
        return [label for _, label in self.inboxes]

    def node_count(self) -> int:
        return self.table.node_count()

    def __len__(self) -> int:
        return len(self.table)


def request_leftovers(broker: Broker[int]) -> tuple[int, list[str]]:
    """What requests left in a broker: waiting replies, reply subjects cached.

    Both are empty once every request has ended; the trie is checked with
    :func:`routing_nodes`.
    """
    cached = [s for s in pipeline(broker).cache if s.split(".")[0] == "_INBOX"]
    waiting = broker.statistics().requests_waiting
    assert waiting == len(pipeline(broker).replies)
    return waiting, cached


def law(stats: HandlerStatistics) -> bool:
    """A router handler's law: every message taken has one outcome or is in flight."""
    return stats.received == (
        stats.handled
        + stats.failed
        + stats.dead_lettered
        + stats.duplicates
        + stats.in_flight
    )
