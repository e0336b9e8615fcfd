"""Property-test an application's routing with hypothesis and trio_pubsub.testing.

A shop routes its events with three subscriptions: billing takes every paid
order, the audit log everything about orders, and the warehouse what ships
from one of its sites. The properties: each subscription receives exactly the
messages its pattern matches (checked against ``reference_match``, a matcher
written apart from the broker); a subject made to match a pattern reaches it;
and a state machine that subscribes, leaves and publishes in any order keeps
every subscription's messages equal to a plain model's.

Run it as a script, or with pytest (it is a test module as well). Time runs on
trio's mock clock inside each example, so waits cost nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import trio
import trio.testing
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from trio_pubsub import Broker, Subscription
from trio_pubsub.testing import (
    drain,
    patterns,
    recorder,
    reference_match,
    subjects,
    subjects_matching,
    subjects_near,
    tokens,
)

ROUTES = {
    "billing": "orders.*.paid",
    "audit": "orders.>",
    "warehouse": "shipping.*.sent",
}
SHOP_TOKENS = tokens(vocabulary=["orders", "shipping", "paid", "sent", "7", "42"])


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main`` under trio on the mock clock (an autojump clock)."""
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(max_examples=50, deadline=None)
@given(st.lists(subjects(tokens=SHOP_TOKENS, max_depth=4), max_size=20))
def test_each_subscription_gets_exactly_what_its_pattern_matches(
    published: list[str],
) -> None:
    async def main() -> None:
        broker = Broker(int)
        async with (
            recorder(broker, ROUTES["billing"]) as billing,
            recorder(broker, ROUTES["audit"]) as audit,
            recorder(broker, ROUTES["warehouse"]) as warehouse,
        ):
            for number, subject in enumerate(published):
                await broker.publish(subject, number)
                await trio.sleep(1)  # the mock clock makes this free
            for name, recording in (
                ("billing", billing),
                ("audit", audit),
                ("warehouse", warehouse),
            ):
                expected = [s for s in published if reference_match(ROUTES[name], s)]
                assert recording.subjects == expected, name

    run(main)


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_a_matching_subject_reaches_its_route(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(ROUTES)))
    subject = data.draw(subjects_matching(ROUTES[name], tokens=SHOP_TOKENS))

    async def main() -> None:
        broker = Broker(int)
        async with broker.subscribe(ROUTES[name]) as sub:
            assert broker.publish_nowait(subject, 1) == 1
            assert [m.subject for m in drain(sub)] == [subject]

    run(main)


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_a_near_miss_does_not_reach_the_route(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(ROUTES)))
    subject = data.draw(subjects_near(ROUTES[name], tokens=SHOP_TOKENS))

    async def main() -> None:
        broker = Broker(int)
        async with broker.subscribe(ROUTES[name]) as sub:
            assert broker.publish_nowait(subject, 1) == 0
            assert drain(sub) == []

    run(main)


class SubscribeAndLeave(RuleBasedStateMachine):
    """Subscriptions come and go; each gets what a plain model says it should.

    A broker belongs to no trio run, so each step that needs trio runs it in
    ``trio.run`` of its own: entering a subscription, leaving it.
    """

    subscriptions = Bundle("subscriptions")

    @initialize()
    def start(self) -> None:
        """A new broker, and no subscription yet."""
        self.broker = Broker(int)
        self.scopes: dict[Subscription[int], AbstractAsyncContextManager[object]] = {}
        self.model: dict[Subscription[int], tuple[str, list[int]]] = {}
        self.count = 0

    @rule(target=subscriptions, pattern=patterns(tokens=SHOP_TOKENS, max_depth=3))
    def subscribe(self, pattern: str) -> Subscription[int]:
        """Enter a subscription on a generated pattern."""
        scope = self.broker.subscribe(pattern, max_buffer_size=1000)
        sub = trio.run(scope.__aenter__)
        self.scopes[sub] = scope
        self.model[sub] = (pattern, [])
        return sub

    @rule(sub=consumes(subscriptions))
    def leave(self, sub: Subscription[int]) -> None:
        """Leave one of them."""
        trio.run(self.scopes.pop(sub).__aexit__, None, None, None)
        del self.model[sub]

    @rule(subject=subjects(tokens=SHOP_TOKENS, max_depth=3))
    def publish(self, subject: str) -> None:
        """Publish on a generated subject: it reaches whom the model says."""
        self.count += 1
        reached = self.broker.publish_nowait(subject, self.count)
        expected = 0
        for pattern, received in self.model.values():
            if reference_match(pattern, subject):
                received.append(self.count)
                expected += 1
        assert reached == expected

    @invariant()
    def every_subscription_holds_what_the_model_says(self) -> None:
        """After each step: each holds exactly what the model routed to it."""
        for sub, (_, received) in self.model.items():
            assert [m.payload for m in drain(sub)] == received
            received.clear()

    def teardown(self) -> None:
        """Leave what is left."""
        for sub in list(self.scopes):
            self.leave(sub)


def test_subscribing_and_leaving_in_any_order() -> None:
    run_state_machine_as_test(
        SubscribeAndLeave, settings=settings(max_examples=25, deadline=None)
    )


if __name__ == "__main__":
    test_each_subscription_gets_exactly_what_its_pattern_matches()
    test_a_matching_subject_reaches_its_route()
    test_a_near_miss_does_not_reach_the_route()
    test_subscribing_and_leaving_in_any_order()
    print("every routing property holds")
