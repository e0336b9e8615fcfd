"""A plain-Python model of SPEC.md's counters, shared by the model tests."""

from __future__ import annotations

from collections import deque

import attrs
import pytest
import trio
from hypothesis import strategies as st

from tests.property.test_trie_matches_reference import reference_match
from trio_pubsub import (
    BrokerStatistics,
    OverflowPolicy,
    SlowConsumerError,
    Subscription,
    SubscriptionStatistics,
)

TOKENS = ["a", "b"]
model_patterns = st.lists(st.sampled_from([*TOKENS, "*"]), min_size=0, max_size=2).map(
    lambda body: ".".join(body) if body else ">"
) | st.lists(st.sampled_from([*TOKENS, "*"]), min_size=1, max_size=2).map(
    lambda body: ".".join([*body, ">"])
)
model_subjects = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3).map(".".join)


@attrs.define
class ModelSub:
    pattern: str
    policy: OverflowPolicy
    size: int
    after: int
    buffer: deque[int] = attrs.Factory(deque)
    state: str = "open"  # open, ended, cut, closed
    delivered: int = 0
    received: int = 0
    dropped: int = 0
    streak: int = 0
    routed: int = 0  # messages the broker offered it
    queue: str | None = None
    # the group's clock when it was last routed a message, or joined
    served: int = 0

    def stats(self) -> SubscriptionStatistics:
        return SubscriptionStatistics(
            delivered=self.delivered,
            received=self.received,
            pending=len(self.buffer),
            dropped=self.dropped,
            max_buffer_size=self.size,
        )


@attrs.define
class Model:
    subs: list[ModelSub] = attrs.Factory(list)
    published: int = 0
    disconnected: int = 0
    closed: bool = False
    lookups: int = 0  # publishes that got as far as routing
    # queue name -> a clock ticking at each join and each routed message, while
    # the group has open members
    groups: dict[str, int] = attrs.Factory(dict)

    def add(self, sub: ModelSub) -> None:
        """A subscription enters (and joins its queue group, if any)."""
        if sub.queue is not None:
            self.tick(sub)
        self.subs.append(sub)

    def tick(self, sub: ModelSub) -> None:
        assert sub.queue is not None
        self.groups[sub.queue] = sub.served = self.groups.get(sub.queue, 0) + 1

    def forget_empty_groups(self) -> None:
        """A group whose last member left starts again from scratch."""
        for name in list(self.groups):
            if not any(s.queue == name and s.state == "open" for s in self.subs):
                del self.groups[name]

    def choose(self, members: list[ModelSub]) -> tuple[ModelSub, bool]:
        """The member a group routes to, and whether it has room.

        (No receiver ever waits in the model: it receives with receive_nowait.)
        The fewest pending among those with room, ties to the least recently
        routed; with no room anywhere, the least recently routed.
        """
        order = sorted(members, key=lambda s: s.served)
        roomy = [m for m in order if len(m.buffer) < m.size]
        if roomy:
            return min(roomy, key=lambda s: len(s.buffer)), True
        return order[0], False

    def check(self, stats: BrokerStatistics, cache_size: int) -> None:
        assert (
            stats.published,
            stats.delivered,
            stats.dropped,
            stats.disconnected,
            stats.subscriptions,
        ) == (
            self.published,
            sum(s.delivered for s in self.subs),
            sum(s.dropped for s in self.subs),
            self.disconnected,
            sum(s.state == "open" for s in self.subs),
        )
        assert stats.cache_hits + stats.cache_misses == self.lookups
        assert stats.cache_size <= cache_size
        if cache_size == 0:
            assert stats.cache_hits == 0

    def publish(self, subject: str, payload: int) -> int | None:
        """Return the accepted count, or None for WouldBlock."""
        self.lookups += 1
        matching = [
            s
            for s in self.subs
            if s.state == "open" and reference_match(s.pattern, subject)
        ]
        targets = [s for s in matching if s.queue is None]
        for name in sorted({s.queue for s in matching if s.queue is not None}):
            member, _ = self.choose([s for s in matching if s.queue == name])
            targets.append(member)
        if any(
            s.policy is OverflowPolicy.BLOCK and len(s.buffer) >= s.size
            for s in targets
        ):
            return None
        accepted = 0
        for s in targets:
            if s.queue is not None:
                self.tick(s)
            s.routed += 1
            if len(s.buffer) < s.size:
                s.buffer.append(payload)
                s.delivered += 1
                s.streak = 0
                accepted += 1
            elif s.policy is OverflowPolicy.DROP_OLDEST:
                s.buffer.popleft()
                s.buffer.append(payload)
                s.dropped += 1
                s.delivered += 1
                s.streak = 0
                accepted += 1
            else:
                s.dropped += 1
                s.streak += 1
                if s.policy is OverflowPolicy.DISCONNECT and s.streak >= s.after:
                    s.state = "cut"
                    self.disconnected += 1
        self.forget_empty_groups()
        self.published += 1
        return accepted


def receive_and_compare(sub: Subscription[int], msub: ModelSub) -> None:
    if msub.state == "closed":
        with pytest.raises(trio.ClosedResourceError):
            sub.receive_nowait()
    elif msub.buffer:
        assert sub.receive_nowait().payload == msub.buffer.popleft()
        msub.received += 1
    else:
        expected: type[BaseException] = {
            "open": trio.WouldBlock,
            "ended": trio.EndOfChannel,
            "cut": SlowConsumerError,
        }[msub.state]
        with pytest.raises(expected):
            sub.receive_nowait()
