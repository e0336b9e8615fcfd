"""Reaching a broker's trio run from other threads.

A broker is bound to no trio run, so it learns one: the run it was created
in, or else the one in which it last entered a subscription, or was first
awaited in ``publish`` or ``async with``. ``TrioRun`` keeps that run's token
and calls into it from another thread with ``trio.from_thread.run``, refusing
first what would deadlock (a call from the run's own thread) or cannot work
(no run learned yet).
"""

from __future__ import annotations

import contextlib
import typing

import trio

from ._errors import BrokerClosedError

if typing.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

R = typing.TypeVar("R")


class TrioRun:
    """The trio run a broker belongs to, as far as it knows."""

    __slots__ = ("token",)

    def __init__(self) -> None:
        self.token: trio.lowlevel.TrioToken | None = None
        self.learn()

    def learn(self) -> bool:
        """Remember the trio run this is called from (outside one: keep the last).

        Returns whether it is another run than the one remembered before.
        """
        with contextlib.suppress(RuntimeError):
            token = trio.lowlevel.current_trio_token()
            if token is not self.token:
                self.token = token
                return True
        return False

    def check_caller(self, what: str) -> None:
        """Refuse a call from the run's own thread, or before a run is known.

        Raises:
            RuntimeError: called from the broker's trio thread (waiting there
                for that thread would never end), or no run is known yet.
        """
        try:
            here = trio.lowlevel.current_trio_token()
        except RuntimeError:
            here = None
        if here is not None and here is self.token:
            raise RuntimeError(
                f"{what} was called from the broker's own trio thread, where it "
                "would wait for itself forever; use 'await broker.publish()' or "
                "'broker.publish_nowait()' there"
            )
        if self.token is None:
            raise RuntimeError(
                "the broker has not been used in a trio run yet, so there is no "
                "trio thread to publish in: create it inside trio.run(), or enter "
                "a subscription first"
            )

    def call(self, async_fn: Callable[[], Awaitable[R]]) -> R:
        """Run ``async_fn`` in the run and wait for it (after :meth:`check_caller`).

        Raises:
            BrokerClosedError: the run has ended.
        """
        assert self.token is not None
        try:
            return trio.from_thread.run(async_fn, trio_token=self.token)
        except trio.RunFinishedError:
            raise BrokerClosedError(
                "the trio run the broker belonged to has ended"
            ) from None
