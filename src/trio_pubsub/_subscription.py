"""The public receiving end, Subscription, and the scope that registers it.

A ``Subscription`` is a thin handle on an ``_Inbox`` (``_inbox.py``), which does
the work; it is made only by the scope that ``Broker.subscribe()`` returns.

A handle may have a :class:`Watcher` (set with :func:`watch`, by an
instrumentation such as trio_pubsub.otel): it is told when the consumer asks
for a message and when one is handed over. Unwatched, a receive pays one test.
"""

from __future__ import annotations

import typing

# A runtime import, so that the API reference can resolve the annotation.
from collections.abc import AsyncIterator  # noqa: TC003
from typing import Generic, TypeVar

import trio
from trio.lowlevel import enable_ki_protection

from ._inbox import State, SubscriptionState
from ._message import Message
from ._options import check_int
from ._policy import OverflowPolicy  # noqa: TC001

if typing.TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from ._inbox import _Inbox
    from ._stats import SubscriptionStatistics

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Watcher(typing.Protocol):
    """What watches one subscription handle (see :func:`watch`)."""

    def asked(self) -> None:
        """The consumer asks for the next message: the last one is processed."""

    def handed(self, message: Message[typing.Any]) -> None:
        """A message is handed to the consumer."""

    def cloned(self, clone: Subscription[typing.Any]) -> Watcher | None:
        """The handle was cloned: the watcher of ``clone``, if any."""


@typing.final
class Subscription(trio.abc.ReceiveChannel[Message[T_co]]):
    """The receiving end of one subscription, from ``async with broker.subscribe()``.

    It receives every message published on a subject that its pattern matches
    from the moment the ``async with`` is entered until it is left, in the order
    they were published, minus those its overflow policy drops (counted in
    :meth:`statistics`). Iterate with ``async for``, or call :meth:`receive`.

    A ``trio.abc.ReceiveChannel``: it can be passed wherever one is expected,
    used as an async context manager (which closes this handle), and cloned
    (:meth:`clone`).

    Do not create it yourself: :meth:`Broker.subscribe` does.
    """

    __slots__ = ("_closed", "_inbox", "_watcher")

    _inbox: _Inbox[T_co]
    _closed: bool
    _watcher: Watcher | None

    def __init__(self) -> None:
        raise TypeError(
            "Subscription objects come from 'async with broker.subscribe(...)'; "
            "they cannot be created directly"
        )

    @classmethod
    def _of(cls, inbox: _Inbox[T_co]) -> Subscription[T_co]:
        """A new handle on ``inbox`` (the first, or a clone)."""
        sub = object.__new__(cls)
        sub._inbox = inbox
        sub._closed = False
        sub._watcher = None
        inbox.handles += 1
        return sub

    def __repr__(self) -> str:
        inbox = self._inbox
        queue = "" if inbox.queue is None else f" queue={inbox.queue!r}"
        name = "" if inbox.name == inbox.pattern else f" name={inbox.name!r}"
        return (
            f"<trio_pubsub.Subscription {inbox.pattern!r}{name}{queue} "
            f"policy={inbox.policy.name} max_buffer_size={inbox.max_buffer_size} "
            f"state={inbox.state.name.lower()}>"
        )

    @property
    def pattern(self) -> str:
        """The pattern this subscription listens on."""
        return self._inbox.pattern

    @property
    def name(self) -> str:
        """Its label in logs and ``Broker.subscriptions()``, the pattern by default."""
        return self._inbox.name

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

    @property
    def state(self) -> SubscriptionState:
        """Where it is in its life; ``OPEN`` while the broker routes to it.

        ``CUT_OFF`` the moment ``DISCONNECT`` cuts it off, ``DRAINED`` after
        :meth:`drain`, ``ENDED`` once the broker is closed, ``CLOSED`` once it
        has left; what it holds can still be received in all but ``CLOSED``.
        """
        return self._inbox.state

    async def wait_stopped(self) -> SubscriptionState:
        """Wait until the broker routes nothing more to it; return its state.

        Returns as soon as it is cut off by ``DISCONNECT``, drained, ended by
        the broker's :meth:`~Broker.aclose` or closed, without waiting for its
        consumer to drain what it holds: a task busy elsewhere (sending to a
        slow client, say) can watch for it and act at once. A trio checkpoint,
        also when it has stopped already; cancelling it changes nothing.
        """
        await self._inbox.stop_event().wait()
        return self._inbox.state

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
            trio.ClosedResourceError: this handle or the subscription was
                closed, or its ``async with`` block has been left.

        If cancelled, no message is taken: the next call gets it.
        """
        if self._closed:
            raise self._handle_closed()
        watcher = self._watcher
        if watcher is None:
            return await self._inbox.receive(self)
        watcher.asked()
        message = await self._inbox.receive(self)
        watcher.handed(message)
        return message

    @enable_ki_protection
    def receive_nowait(self) -> Message[T_co]:
        """Return the next message if one is pending, without waiting.

        Raises:
            trio.WouldBlock: no message is pending and the stream has not ended.
            trio.EndOfChannel: as for :meth:`receive`.
            SlowConsumerError: as for :meth:`receive`.
            trio.ClosedResourceError: as for :meth:`receive`.
        """
        if self._closed:
            raise self._handle_closed()
        watcher = self._watcher
        if watcher is None:
            return self._inbox.take()
        watcher.asked()
        message = self._inbox.take()
        watcher.handed(message)
        return message

    @enable_ki_protection
    async def receive_batch(self, max_items: int) -> list[Message[T_co]]:
        """Wait for the next messages and return up to ``max_items`` of them.

        A trio checkpoint, one for the whole batch: for a consumer that can
        take several messages at once, and falls behind now and then. It
        waits only while the buffer is empty, then returns at least one
        message, the oldest first; publishers waiting for room in a ``BLOCK``
        buffer are let in for the room it makes, as with :meth:`receive`.

        Args:
            max_items: The most messages to return (an int >= 1).

        Returns:
            One message or more, in the order they were published.

        Raises:
            TypeError, ValueError: ``max_items`` is not an int >= 1.
            trio.EndOfChannel: as for :meth:`receive`, once nothing is pending.
            SlowConsumerError: as for :meth:`receive`.
            trio.ClosedResourceError: as for :meth:`receive`.

        If cancelled, no message is taken.
        """
        check_int("max_items", max_items)
        if self._closed:
            raise self._handle_closed()
        return await self._inbox.receive_batch(max_items, self)

    def batches(self, max_items: int) -> AsyncIterator[list[Message[T_co]]]:
        """Iterate over batches: ``async for batch in sub.batches(64)``.

        Each step is :meth:`receive_batch` (``max_items`` at most, one
        checkpoint); the loop ends where ``async for message in sub`` ends.

        Raises:
            TypeError, ValueError: ``max_items`` is not an int >= 1 (at the call).
        """
        return _Batches(self, check_int("max_items", max_items))

    def _handle_closed(self) -> trio.ClosedResourceError:
        return trio.ClosedResourceError(
            f"this handle on subscription {self._inbox.name!r} is closed"
        )

    @enable_ki_protection
    def clone(self) -> Subscription[T_co]:
        """Return another handle on the same subscription and buffer.

        Each message goes to one handle: whichever asks first. Closing a handle
        closes that handle only; the subscription leaves early when its last
        handle is closed, and always when its ``async with`` block is left,
        after which every handle raises ``trio.ClosedResourceError``, as the
        clones of a closed trio memory channel do.

        Raises:
            trio.ClosedResourceError: this handle is closed.
        """
        if self._closed:
            raise self._handle_closed()
        clone = Subscription._of(self._inbox)
        if self._watcher is not None:
            clone._watcher = self._watcher.cloned(clone)
        return clone

    @enable_ki_protection
    def close(self) -> None:
        """Close this handle; with its last handle, leave the subscription early.

        Leaving takes no new messages and discards the pending ones (counted as
        dropped). Afterwards :meth:`receive` on this handle raises
        ``trio.ClosedResourceError``, and so do tasks waiting in it now.
        Idempotent; leaving the ``async with`` block leaves the subscription
        whatever handles are open.
        """
        if not self._closed:
            self._closed = True
            self._inbox.release(self, self._handle_closed)

    @enable_ki_protection
    async def aclose(self) -> None:
        """Like :meth:`close`, and a trio checkpoint (``trio.abc.AsyncResource``)."""
        self.close()
        await trio.lowlevel.checkpoint()

    @enable_ki_protection
    def drain(self) -> None:
        """Route nothing more to it; keep what it holds; then end the stream.

        Returns at once. What it holds can still be received; after that,
        ``receive()`` raises ``trio.EndOfChannel`` and ``async for`` ends, as
        NATS drains a subscription to retire a queue member without loss.
        Publishers waiting for room in it return normally. Idempotent; nothing
        happens once it has ended, been cut off or closed.
        """
        self._inbox.drain()

    def statistics(self) -> SubscriptionStatistics:
        """Return a snapshot of this subscription's counters."""
        return self._inbox.statistics()

    def __aiter__(self) -> Subscription[T_co]:
        return self

    @enable_ki_protection
    async def __anext__(self) -> Message[T_co]:
        # _Inbox.receive written out, the frame of the message a loop spends
        # most time in: its waiting half stays in _inbox.
        if self._closed:
            raise self._handle_closed()
        if self._watcher is not None:
            return await self._watched_next(self._watcher)
        inbox = self._inbox
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            if inbox.buffer or inbox.gaps or inbox.state is not State.OPEN:
                message = inbox.take()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return message
            return await inbox.wait(self)
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def _watched_next(self, watcher: Watcher) -> Message[T_co]:
        watcher.asked()
        try:
            message = await self._inbox.receive(self)
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        watcher.handed(message)
        return message


@typing.final
class _Batches(Generic[T_co]):
    """What :meth:`Subscription.batches` returns: an async iterator of lists."""

    __slots__ = ("_max_items", "_sub")

    def __init__(self, sub: Subscription[T_co], max_items: int) -> None:
        self._sub = sub
        self._max_items = max_items

    def __aiter__(self) -> _Batches[T_co]:
        return self

    async def __anext__(self) -> list[Message[T_co]]:
        try:
            return await self._sub.receive_batch(self._max_items)
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


def watch(sub: Subscription[T], watcher: Watcher | None) -> None:
    """Have ``watcher`` watch the handle ``sub`` (``None``: stop watching).

    Its clones made from now on are watched by what ``watcher.cloned`` says.
    """
    sub._watcher = watcher
