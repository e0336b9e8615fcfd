"""Ctrl-C at every line of library code: state stays whole (issue 15).

A trace function counts the lines the library executes during a scenario
that exercises every state change (entry with retained messages, every
policy, hand-off to a waiting receiver, a publisher waiting on a full BLOCK
buffer, a queue group, DISCONNECT, close, clones, drain, a block timeout,
a request answered and one timed out, batches taken from a full
BLOCK buffer with publishers waiting, aclose). Then the scenario is run
once per line k, and at the k-th library line the trace function sends the
process a real SIGINT with ``signal.raise_signal``. Trio's own handler decides
what happens: a KeyboardInterrupt raised right there when the code is not
protected, or one delivered at the next checkpoint when it is.

Whatever happens, once ``trio.run`` has returned or raised, every counter law
must hold: each broker total equals the sum over its subscriptions, nothing is
registered any more (every ``async with`` was left), the routing trie is
pruned back to its root, no request waits for an answer, and trio never
reports an internal error.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import types
import typing
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_pubsub
from trio_pubsub import Broker, Message, OverflowPolicy, Subscription
from trio_pubsub._broker import pipeline
from trio_pubsub._inbox import _Inbox
from trio_pubsub._subscription import SubscriptionScope

from ..helpers import routing_nodes

LIBRARY = str(Path(trio_pubsub.__file__).parent)

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="SIGINT is handled in the main thread only",
)


class Scenario:
    """One run of the workload; keeps what the checks need afterwards."""

    def __init__(self) -> None:
        self.broker = Broker(int)
        # Every subscription's inbox, known before its entry starts, so that
        # one interrupted half-way is counted too.
        self.inboxes: list[_Inbox[int]] = []

    def subscribe(
        self, pattern: str, **options: Any
    ) -> AbstractAsyncContextManager[Subscription[int]]:
        scope = self.broker.subscribe(pattern, **options)
        self.inboxes.append(typing.cast("SubscriptionScope[int]", scope)._inbox)
        return scope

    async def main(self) -> None:
        broker = self.broker
        subscribe = self.subscribe
        broker.publish_nowait("a.r", -1, retain=True)
        async with trio.open_nursery() as nursery:
            async with (
                subscribe(
                    "a.*", max_buffer_size=2, policy=OverflowPolicy.BLOCK
                ) as blocking,
                subscribe(
                    "a.>", max_buffer_size=2, policy=OverflowPolicy.DROP_OLDEST
                ) as oldest,
                subscribe(
                    "a.b", max_buffer_size=1, policy=OverflowPolicy.DISCONNECT
                ) as cut,
                subscribe("a.*", queue="g", max_buffer_size=1),
                subscribe(
                    "a.b", queue="g", max_buffer_size=1, policy=OverflowPolicy.BLOCK
                ) as second,
                subscribe("a.b") as newest,
            ):

                async def consume(
                    sub: Subscription[int], count: int, batch: bool = False
                ) -> None:
                    # The scope may close it under the consumer when interrupted.
                    with contextlib.suppress(trio.ClosedResourceError):
                        for _ in range(count):
                            if batch:  # lets in waiting publishers, several
                                await sub.receive_batch(2)
                            else:
                                await sub.receive()
                            await trio.sleep(0.01)

                nursery.start_soon(consume, blocking, 3, True)
                nursery.start_soon(consume, second, 2)
                await trio.testing.wait_all_tasks_blocked()
                for payload in range(5):
                    await broker.publish("a.b", payload)
                with contextlib.suppress(trio.WouldBlock):
                    broker.publish_nowait("a.c", 9, retain=True)
                async with subscribe("a.>") as late:
                    late.receive_nowait()
                oldest.receive_nowait()
                cut.close()
                async for _message in newest:
                    break
                async with subscribe(
                    "t",
                    max_buffer_size=1,
                    policy=OverflowPolicy.BLOCK,
                    block_timeout=0.05,
                ) as timed:
                    clone = timed.clone()
                    broker.publish_nowait("t", 1)
                    await broker.publish("t", 2)  # times out: dropped for it
                    clone.receive_nowait()
                    await clone.aclose()
                    timed.drain()
                async with subscribe("rq") as responder:

                    async def answer() -> None:
                        with contextlib.suppress(trio.ClosedResourceError):
                            request = await responder.receive()
                            await request.respond(request.payload + 1)

                    nursery.start_soon(answer)
                    await broker.request("rq", 1, timeout=1)
                    with contextlib.suppress(trio.TooSlowError):
                        await broker.request("rq", 2, timeout=0.05)  # unanswered
            await broker.aclose()


S = typing.TypeVar("S", "Scenario", "RouterScenario")


def run_with_interrupt_at(step: int | None, scenario: S) -> tuple[S, int]:
    """Run ``scenario``, raising SIGINT at library line ``step``; count lines."""
    lines = 0

    def local(frame: types.FrameType, event: str, arg: object) -> Callable[..., Any]:
        nonlocal lines
        if event == "line":
            lines += 1
            if lines == step:
                signal.raise_signal(signal.SIGINT)
        return local

    def global_(frame: types.FrameType, event: str, arg: object) -> Any:
        if frame.f_code.co_filename.startswith(LIBRARY):
            return local
        return None

    previous = sys.gettrace()  # coverage's tracer, when it runs: put it back
    sys.settrace(global_)
    try:
        trio.run(scenario.main, clock=trio.testing.MockClock(autojump_threshold=0))
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:
        _, rest = group.split(KeyboardInterrupt)
        if rest is not None:
            raise
    finally:
        sys.settrace(previous)
    return scenario, lines


def check_whole(scenario: Scenario, context: str) -> None:
    broker = scenario.broker
    totals = broker.statistics()
    stats = [inbox.statistics() for inbox in scenario.inboxes]
    assert totals.subscriptions == 0, context
    assert routing_nodes(broker) == 1, context
    assert len(pipeline(broker).replies) == 0, context
    assert totals.delivered == sum(s.delivered for s in stats), context
    assert totals.dropped == sum(s.dropped for s in stats), context
    for s in stats:
        assert s.pending == 0, context  # every scope was left: nothing held
        assert s.delivered <= s.received + s.dropped, context


def test_the_scenario_runs_through_without_interrupt() -> None:
    """Untouched, the scenario ends normally and its counters add up."""
    scenario, lines = run_with_interrupt_at(None, Scenario())
    assert lines > 500  # the sweep below covers a real amount of code
    assert len(scenario.inboxes) == 9
    assert scenario.broker.statistics().disconnected == 1
    check_whole(scenario, "no interrupt")


def test_keyboard_interrupt_at_every_library_line_keeps_state_whole_issue_15() -> None:
    """A SIGINT at any line of library code leaves every counter and registration."""
    _, total = run_with_interrupt_at(None, Scenario())
    failures: list[str] = []
    for step in range(1, total + 1):
        try:
            scenario, _ = run_with_interrupt_at(step, Scenario())
            check_whole(scenario, f"SIGINT at library line {step}")
        except (AssertionError, trio.TrioInternalError, RuntimeError) as error:
            failures.append(f"line {step}: {type(error).__name__}: {error}")
    assert not failures, f"{len(failures)} of {total}:\n" + "\n".join(failures[:20])


class RouterScenario:
    """A router at work: keys, retries, a timeout, dedupe, dead letters, stop."""

    def __init__(self) -> None:
        self.broker = Broker(int)
        self.inboxes: dict[str, _Inbox[int]] = {}
        self.router: trio_pubsub.Router[int] = trio_pubsub.Router(
            typing.cast("Broker[int]", self)
        )

    # The router's broker is this scenario: it records each handler's inbox.
    def subscribe(
        self, pattern: str, **options: Any
    ) -> AbstractAsyncContextManager[Subscription[int]]:
        scope = self.broker.subscribe(pattern, **options)
        inbox = typing.cast("SubscriptionScope[int]", scope)._inbox
        self.inboxes[options["name"]] = inbox
        return scope

    async def publish(self, subject: str, payload: int, **options: Any) -> int:
        return await self.broker.publish(subject, payload, **options)

    async def main(self) -> None:
        router = self.router
        tries: dict[int, int] = {}

        async def work(message: Message[int]) -> None:
            tries[message.payload] = tries.get(message.payload, 0) + 1
            await trio.sleep(0.01)
            if message.payload % 3 == 0 and tries[message.payload] == 1:
                raise ConnectionError("once")
            if message.payload == 4:
                raise ValueError("poison")
            if message.payload == 5:
                await trio.sleep(10)  # past the timeout

        router.handler(
            "j.*",
            name="keyed",
            concurrency=2,
            key=lambda m: m.subject,
            retry=trio_pubsub.Retry(attempts=2, backoff=0.05),
            timeout=1.0,
            dead_letter="dead",
            dedupe="id",
            max_buffer_size=2,
        )(work)
        router.handler("j.*", name="plain", concurrency=2)(work)
        async with trio.open_nursery() as nursery:
            await nursery.start(router.serve)
            for payload in range(7):
                await self.broker.publish(
                    f"j.{payload % 2}", payload, headers={"id": str(payload % 6)}
                )
            await trio.sleep(0.5)
            router.stop()


def run_router_with_interrupt_at(step: int | None) -> tuple[RouterScenario, int]:
    """As :func:`run_with_interrupt_at`, for the router's scenario."""
    return run_with_interrupt_at(step, RouterScenario())


def check_router_whole(scenario: RouterScenario, context: str) -> None:
    assert scenario.broker.statistics().subscriptions == 0, context
    for stats in scenario.router.statistics():
        assert stats.in_flight == 0, context
        assert stats.received == (
            stats.handled + stats.failed + stats.dead_lettered + stats.duplicates
        ), context
        inbox = scenario.inboxes.get(stats.name)
        taken = 0 if inbox is None else inbox.statistics().received
        assert stats.received == taken, context  # nothing taken uncounted


def test_the_router_scenario_runs_through_without_interrupt() -> None:
    scenario, lines = run_router_with_interrupt_at(None)
    assert lines > 500
    keyed, plain = scenario.router.statistics()
    assert (keyed.received, plain.received) == (7, 7)
    assert keyed.duplicates == 1  # payload 6 repeats id "0"
    assert keyed.dead_lettered == 2  # the poison one, and the one timed out
    assert keyed.retried >= 2
    check_router_whole(scenario, "no interrupt")


def test_keyboard_interrupt_at_every_router_line_keeps_its_counters_whole_issue_30() -> (
    None
):
    """A SIGINT at any library line while a router works leaves its law whole."""
    _, total = run_router_with_interrupt_at(None)
    failures: list[str] = []
    for step in range(1, total + 1):
        try:
            scenario, _ = run_router_with_interrupt_at(step)
            check_router_whole(scenario, f"SIGINT at library line {step}")
        except (AssertionError, trio.TrioInternalError, RuntimeError) as error:
            failures.append(f"line {step}: {type(error).__name__}: {error}")
    assert not failures, f"{len(failures)} of {total}:\n" + "\n".join(failures[:20])
