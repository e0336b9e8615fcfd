"""A hypothesis state machine drives a real Broker against the model of SPEC.md.

Every rule that needs trio runs its step in ``trio.run``: a broker is not tied to
one run, so the machine can keep it between steps. After every step the
invariants compare every counter, and each subscription's pending messages, with
the model.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import pytest
import trio
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tests.model import (
    Model,
    ModelSub,
    model_patterns,
    model_subjects,
    receive_and_compare,
)
from trio_pubsub import Broker, BrokerClosedError, OverflowPolicy, Subscription
from trio_pubsub._broker import pipeline
from trio_pubsub._inbox import _NO_BUFFER

Scope = AbstractAsyncContextManager[Subscription[int]]


class BrokerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.real: list[tuple[Subscription[int], Scope]] = []
        self.payload = 0
        self.cache_size = 0
        self.broker = Broker(int)

    @initialize(cache_size=st.sampled_from([0, 2, 8192]))
    def make_broker(self, cache_size: int) -> None:
        self.cache_size = cache_size
        self.broker = Broker(int, match_cache_size=cache_size)

    @rule(
        pattern=model_patterns,
        policy=st.sampled_from(list(OverflowPolicy)),
        size=st.integers(1, 3),
        after=st.integers(1, 3),
        queue=st.sampled_from([None, None, "g", "h"]),
    )
    def subscribe(
        self,
        pattern: str,
        policy: OverflowPolicy,
        size: int,
        after: int,
        queue: str | None,
    ) -> None:
        if self.model.closed:
            with pytest.raises(BrokerClosedError):
                self.broker.subscribe(pattern)
            return
        scope = self.broker.subscribe(
            pattern,
            queue=queue,
            max_buffer_size=size,
            policy=policy,
            disconnect_after=after,
        )
        sub = trio.run(scope.__aenter__)
        self.real.append((sub, scope))
        self.model.add(ModelSub(pattern, policy, size, after, queue=queue))

    @rule(subject=model_subjects)
    def publish_nowait(self, subject: str) -> None:
        self.payload += 1
        if self.model.closed:
            with pytest.raises(BrokerClosedError):
                self.broker.publish_nowait(subject, self.payload)
            return
        expected = self.model.publish(subject, self.payload)
        if expected is None:
            with pytest.raises(trio.WouldBlock):
                self.broker.publish_nowait(subject, self.payload)
        else:
            assert self.broker.publish_nowait(subject, self.payload) == expected

    @precondition(lambda self: bool(self.real))
    @rule(data=st.data())
    def receive_nowait(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.real) - 1))
        receive_and_compare(self.real[index][0], self.model.subs[index])

    @precondition(lambda self: bool(self.real))
    @rule(data=st.data(), leave=st.booleans())
    def leave_or_close(self, data: st.DataObject, leave: bool) -> None:
        """Leave the block (scope exit) or call sub.close(): the same to the model."""
        index = data.draw(st.integers(0, len(self.real) - 1))
        sub, scope = self.real[index]
        msub = self.model.subs[index]
        if msub.state != "closed":
            msub.dropped += len(msub.buffer)
            msub.buffer.clear()
            msub.state = "closed"
            self.model.forget_empty_groups()
        if leave:
            trio.run(scope.__aexit__, None, None, None)
        else:
            sub.close()

    @rule()
    def aclose(self) -> None:
        trio.run(self.broker.aclose)
        self.model.closed = True
        for msub in self.model.subs:
            if msub.state == "open":
                msub.state = "ended"

    @invariant()
    def counters_match_the_model(self) -> None:
        for (sub, _), msub in zip(self.real, self.model.subs, strict=True):
            stats = sub.statistics()
            assert stats == msub.stats()
            # the law, stated on its own
            assert stats.received + stats.pending + stats.dropped == msub.routed
        self.model.check(self.broker.statistics(), self.cache_size)
        assert not _NO_BUFFER

    @invariant()
    def trie_is_pruned_when_empty(self) -> None:
        if self.broker.statistics().subscriptions == 0:
            assert pipeline(self.broker).routes.node_count() == 1


TestBrokerMachine = BrokerMachine.TestCase
