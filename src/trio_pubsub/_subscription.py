"""The public receiving end, Subscription, and the scope that registers it.

A ``Subscription`` is a thin handle on an ``_Inbox`` (``_inbox.py``), which does
the work; it is made only by the scope that ``Broker.subscribe()`` returns.
"""

from __future__ import annotations

import typing
from typing import Generic, TypeVar

import trio
from trio.lowlevel import enable_ki_protection

from ._message import Message  # noqa: TC001 (the API reference resolves it)
from ._policy import OverflowPolicy  # noqa: TC001

if typing.TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from ._inbox import _Inbox
    from ._stats import SubscriptionStatistics

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@typing.final
class Subscription(Generic[T_co]):
    """The receiving end of one subscription, from ``async with broker.subscribe()``.

    It receives every message published on a subject that its pattern matches
    from the moment the ``async with`` is entered until it is left, in the order
    they were published, minus those its overflow policy drops (counted in
    :meth:`statistics`). Iterate with ``async for``, or call :meth:`receive`.

    Do not create it yourself: :meth:`Broker.subscribe` does.
    """

    __slots__ = ("_inbox",)

    _inbox: _Inbox[T_co]

    def __init__(self) -> None:
        raise TypeError(
            "Subscription objects come from 'async with broker.subscribe(...)'; "
            "they cannot be created directly"
        )

    @classmethod
    def _of(cls, inbox: _Inbox[T_co]) -> Subscription[T_co]:
        sub = object.__new__(cls)
        sub._inbox = inbox
        return sub

    def __repr__(self) -> str:
        inbox = self._inbox
        queue = "" if inbox.queue is None else f" queue={inbox.queue!r}"
        return (
            f"<trio_pubsub.Subscription {inbox.pattern!r}{queue} "
            f"policy={inbox.policy.name} max_buffer_size={inbox.max_buffer_size} "
            f"state={inbox.state.name.lower()}>"
        )

    @property
    def pattern(self) -> str:
        """The pattern this subscription listens on."""
        return self._inbox.pattern

    @property
    def queue(self) -> str | None:
        """The queue group it belongs to, or ``None``."""
        return self._inbox.queue

    @property
    def policy(self) -> OverflowPolicy:
        """What happens when its buffer is full."""
        return self._inbox.policy

    @property
    def max_buffer_size(self) -> int:
        """How many messages its buffer holds."""
        return self._inbox.max_buffer_size

    @enable_ki_protection
    async def receive(self) -> Message[T_co]:
        """Wait for the next message and return it.

        A trio checkpoint. It waits only while the buffer is empty.

        Returns:
            The oldest pending message.

        Raises:
            trio.EndOfChannel: the broker was closed and every pending message
                has been received.
            SlowConsumerError: the ``DISCONNECT`` policy cut this subscription
                off and every pending message has been received.
            trio.ClosedResourceError: the subscription was closed, or its
                ``async with`` block has been left.

        If cancelled, no message is taken: the next call gets it.
        """
        return await self._inbox.receive()

    @enable_ki_protection
    def receive_nowait(self) -> Message[T_co]:
        """Return the next message if one is pending, without waiting.

        Raises:
            trio.WouldBlock: no message is pending and the stream has not ended.
            trio.EndOfChannel: as for :meth:`receive`.
            SlowConsumerError: as for :meth:`receive`.
            trio.ClosedResourceError: as for :meth:`receive`.
        """
        return self._inbox.take()

    @enable_ki_protection
    def close(self) -> None:
        """Leave early: take no new messages and discard the pending ones.

        Discarded messages are counted as dropped. Afterwards :meth:`receive`
        raises ``trio.ClosedResourceError``, and so do tasks waiting in it now.
        Idempotent; leaving the ``async with`` block does the same.
        """
        self._inbox.close()

    def statistics(self) -> SubscriptionStatistics:
        """Return a snapshot of this subscription's counters."""
        return self._inbox.statistics()

    def __aiter__(self) -> Subscription[T_co]:
        return self

    @enable_ki_protection
    async def __anext__(self) -> Message[T_co]:
        try:
            return await self._inbox.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


@typing.final
class SubscriptionScope(Generic[T]):
    """What ``subscribe()`` returns: registers on entry, removes on exit."""

    __slots__ = ("_attach", "_entered", "_inbox")

    def __init__(self, inbox: _Inbox[T], attach: Callable[[_Inbox[T]], None]) -> None:
        self._inbox = inbox
        self._attach = attach
        self._entered = False

    @enable_ki_protection
    async def __aenter__(self) -> Subscription[T]:
        # Checkpoint before registering: a cancellation here leaves nothing behind,
        # and after registering nothing may raise until the body runs.
        await trio.lowlevel.checkpoint()
        if self._entered:
            raise RuntimeError(
                f"this subscribe({self._inbox.pattern!r}) was already entered; "
                "call broker.subscribe() again for a new subscription"
            )
        self._attach(self._inbox)
        self._entered = True
        return Subscription._of(self._inbox)

    @enable_ki_protection
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._inbox.close()
