"""Random sequences of operations keep every counter equal to a plain model."""

from __future__ import annotations

from collections import deque
from contextlib import AbstractAsyncContextManager

import attrs
import pytest
import trio
from hypothesis import given, strategies as st

from tests.property.test_trie_matches_reference import reference_match
from trio_pubsub import (
    Broker,
    BrokerClosedError,
    BrokerStatistics,
    OverflowPolicy,
    SlowConsumerError,
    Subscription,
    SubscriptionStatistics,
)
from trio_pubsub._subscription import _NO_BUFFER

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
        targets = [
            s
            for s in self.subs
            if s.state == "open" and reference_match(s.pattern, subject)
        ]
        if any(
            s.policy is OverflowPolicy.BLOCK and len(s.buffer) >= s.size
            for s in targets
        ):
            return None
        accepted = 0
        for s in targets:
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
        self.published += 1
        return accepted


@pytest.mark.parametrize("cache_size", [0, 2, 8192], ids=["no-cache", "tiny", "cache"])
@given(data=st.data())
async def test_random_operations_match_the_model(
    cache_size: int, data: st.DataObject
) -> None:
    """subscribe/publish_nowait/receive_nowait/leave/close/aclose vs the model."""
    broker = Broker(int, match_cache_size=cache_size)
    model = Model()
    real: list[
        tuple[Subscription[int], AbstractAsyncContextManager[Subscription[int]]]
    ] = []
    payload = 0
    for _ in range(data.draw(st.integers(1, 60), label="steps")):
        op = data.draw(
            st.sampled_from(
                [
                    *("subscribe", "publish", "publish", "publish"),
                    *("receive", "receive", "leave", "close", "aclose"),
                ]
            ),
            label="op",
        )
        if op == "subscribe":
            pattern = data.draw(model_patterns, label="pattern")
            policy = data.draw(st.sampled_from(list(OverflowPolicy)), label="policy")
            size = data.draw(st.integers(1, 3), label="size")
            after = data.draw(st.integers(1, 3), label="after")
            if model.closed:
                with pytest.raises(BrokerClosedError):
                    broker.subscribe(pattern)
                continue
            scope = broker.subscribe(
                pattern, max_buffer_size=size, policy=policy, disconnect_after=after
            )
            real.append((await scope.__aenter__(), scope))
            model.subs.append(ModelSub(pattern, policy, size, after))
        elif op == "publish":
            subject = data.draw(model_subjects, label="subject")
            payload += 1
            if model.closed:
                with pytest.raises(BrokerClosedError):
                    broker.publish_nowait(subject, payload)
            else:
                expected = model.publish(subject, payload)
                if expected is None:
                    with pytest.raises(trio.WouldBlock):
                        broker.publish_nowait(subject, payload)
                else:
                    assert broker.publish_nowait(subject, payload) == expected
        elif op in ("receive", "leave", "close") and real:
            index = data.draw(st.integers(0, len(real) - 1), label="index")
            sub, scope = real[index]
            msub = model.subs[index]
            if op == "receive":
                receive_and_compare(sub, msub)
            else:
                if msub.state != "closed":
                    msub.dropped += len(msub.buffer)
                    msub.buffer.clear()
                    msub.state = "closed"
                if op == "leave":
                    await scope.__aexit__(None, None, None)
                else:
                    sub.close()
        elif op == "aclose":
            await broker.aclose()
            model.closed = True
            for msub in model.subs:
                if msub.state == "open":
                    msub.state = "ended"
        for (sub, _), msub in zip(real, model.subs, strict=True):
            assert sub.statistics() == msub.stats()
        model.check(broker.statistics(), cache_size)
        assert not _NO_BUFFER  # the placeholder of idle subscriptions stays empty


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
