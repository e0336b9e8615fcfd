"""The router's law, checked by a Hypothesis state machine (issue 30).

``received == handled + failed + dead_lettered + duplicates + in_flight`` for
every handler at every step, while messages succeed, fail a few times, time
out, raise errors that are not retried, repeat, and while the router is
stopped or its ``serve`` cancelled.

The router runs in a trio run of its own thread, on a mock clock that moves
only when a rule says so (so that a rule can find attempts, retries and
messages waiting for their key in the middle of their work); each rule hands
one action to that thread and waits. The law is read in the trio thread,
between two scheduling steps.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable

import trio
import trio.from_thread
import trio.testing
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_pubsub import Broker, Message, Retry, Router

KINDS = ("ok", "fail1", "fail2", "fail5", "slow", "fatal")


class Fatal(Exception):
    """Not retried (outside ``retry_on``)."""


async def behave(message: Message[int]) -> None:
    """Do what the message's ``kind`` header says, counting attempts."""
    kind = message.headers["kind"]
    tries = ATTEMPTS[message.payload] = ATTEMPTS.get(message.payload, 0) + 1
    await trio.sleep(0.01)
    if kind == "slow":
        await trio.sleep(100)  # past every timeout
    elif kind == "fatal":
        raise Fatal("no retry")
    elif kind.startswith("fail") and tries <= int(kind[4:]):
        raise ConnectionError(f"attempt {tries}")


ATTEMPTS: dict[int, int] = {}


class RouterLaw(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        ATTEMPTS.clear()
        self.sequence = 0
        self.stopped = False
        self.cancelled = False
        ready = threading.Event()
        self.clock = trio.testing.MockClock()
        self.token: trio.lowlevel.TrioToken | None = None
        self.failure: BaseException | None = None

        async def main() -> None:
            self.token = trio.lowlevel.current_trio_token()
            self.broker = Broker[int]()
            router: Router[int] = Router(self.broker)
            retry = Retry(
                attempts=3, backoff=0.5, max_backoff=2.0, retry_on=(ConnectionError,)
            )
            router.handler(
                "jobs.>",
                name="keyed",
                concurrency=3,
                key=lambda m: m.headers["key"],
                retry=retry,
                timeout=5.0,
                dead_letter="dead",
                dedupe="id",
                max_buffer_size=4,
            )(behave)
            router.handler(
                "jobs.>", name="plain", concurrency=2, retry=retry, timeout=5.0
            )(behave)
            self.router = router
            self.done = trio.Event()
            self.closing = trio.Event()
            async with trio.open_nursery() as nursery:
                self.scope = nursery.cancel_scope
                await nursery.start(router.serve)
                ready.set()
            self.done.set()
            await self.closing.wait()  # answer the rules until teardown

        def run() -> None:
            try:
                trio.run(main, clock=self.clock)
            except BaseException as error:
                self.failure = error
            ready.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(30)
        assert self.failure is None, self.failure

    def call(self, fn: Callable[[], Awaitable[object]]) -> object:
        assert self.failure is None, self.failure
        return trio.from_thread.run(fn, trio_token=self.token)

    @rule(
        kind=st.sampled_from(KINDS),
        key=st.sampled_from("ab"),
        repeat=st.booleans(),
    )
    def publish(self, kind: str, key: str, repeat: bool) -> None:
        self.sequence += 1
        msg_id = str(self.sequence - 1 if repeat else self.sequence)
        headers = {"kind": kind, "key": key, "id": msg_id}

        async def send() -> None:
            with contextlib.suppress(trio.WouldBlock):  # a BLOCK buffer is full
                self.broker.publish_nowait(
                    f"jobs.{key}", self.sequence, headers=headers
                )
            await trio.testing.wait_all_tasks_blocked()

        self.call(send)

    @rule(seconds=st.sampled_from([0.0, 0.005, 0.3, 1.0, 6.0, 30.0]))
    def let_time_pass(self, seconds: float) -> None:
        async def wait() -> None:
            for _ in range(4):
                self.clock.jump(seconds / 4)
                await trio.testing.wait_all_tasks_blocked()

        self.call(wait)

    @precondition(lambda self: not self.stopped)
    @rule()
    def stop(self) -> None:
        self.stopped = True

        async def stop() -> None:
            self.router.stop()

        self.call(stop)

    # (after a few messages: a cancel at the start would test little)
    @precondition(lambda self: not self.cancelled and self.sequence >= 3)
    @rule()
    def cancel_serve(self) -> None:
        self.cancelled = True

        async def cancel() -> None:
            self.scope.cancel()
            await self.done.wait()  # (cancelled tasks need no time to pass)

        self.call(cancel)

    @invariant()
    def the_law_holds(self) -> None:
        async def read() -> None:
            for stats in self.router.statistics():
                assert stats.in_flight >= 0, stats
                assert stats.received == (
                    stats.handled
                    + stats.failed
                    + stats.dead_lettered
                    + stats.duplicates
                    + stats.in_flight
                ), stats
                if self.done.is_set():
                    assert stats.in_flight == 0, stats  # all settled at the end

        self.call(read)

    def teardown(self) -> None:
        async def finish() -> None:
            self.router.stop()
            for _ in range(1000):  # what is held finishes as time passes
                if self.done.is_set():
                    break
                self.clock.jump(1.0)
                await trio.testing.wait_all_tasks_blocked()
            assert self.done.is_set(), "serve did not return after stop()"
            for stats in self.router.statistics():
                assert stats.in_flight == 0, stats
            self.closing.set()

        self.call(finish)
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_the_law_holds_at_every_step() -> None:
    RouterLaw.TestCase.settings = settings(
        max_examples=200, stateful_step_count=30, deadline=None, database=None
    )
    RouterLaw.TestCase().runTest()
