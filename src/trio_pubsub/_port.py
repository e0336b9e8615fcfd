"""The one door through which ``trio_pubsub.nats`` reaches into a broker.

A bridge needs four things that the public API does not offer, and gets them
here, so that a change inside the broker touches this module rather than the
bridge:

* :func:`export`: one subscription on several patterns, each message once and
  in order (a subject matching two of them goes out once);
* :func:`stop_routing`: route nothing more to it, keep what it holds;
* :func:`inject`: publish what came from NATS past that subscription (no
  echo), without a checkpoint (the bridge takes one per batch);
* :func:`finish`: wait, as ``publish`` does, for the full ``BLOCK``
  subscriptions an injected message is still due to.

It also passes on the option checks the bridge shares with the broker.
"""

from __future__ import annotations

import typing
from typing import Generic, TypeVar

from trio.lowlevel import enable_ki_protection

from ._options import (
    check_int as check_int,
    check_policy,
    check_seconds as check_seconds,
)
from ._subject import SEPARATOR as SEPARATOR, parse_pattern, parse_queue as parse_queue
from ._subscription import SubscriptionScope

if typing.TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    from ._broker import Broker
    from ._groups import Target
    from ._message import Message
    from ._policy import OverflowPolicy
    from ._subscription import Subscription

T = TypeVar("T")


def export(
    broker: Broker[T],
    patterns: Sequence[str],
    *,
    max_buffer_size: int,
    policy: OverflowPolicy,
) -> AbstractAsyncContextManager[Subscription[T]]:
    """One subscription on several ``patterns``: each message once, in order.

    It gets no retained messages, and counts once in the broker's statistics.

    Raises:
        ValueError: ``patterns`` is empty, or an option is out of range.
        InvalidSubjectError, TypeError: as for ``Broker.subscribe``.
    """
    parsed = list(dict.fromkeys(parse_pattern(p) for p in patterns))
    if not parsed:
        raise ValueError("at least one pattern is needed")
    inbox = broker._inbox(
        ", ".join(SEPARATOR.join(tokens) for tokens in parsed),
        parsed[0],
        also=tuple(parsed[1:]),
        policy=check_policy(policy),
        max_buffer_size=check_int("max_buffer_size", max_buffer_size),
        disconnect_after=None,
    )
    broker._check_open()
    return SubscriptionScope(inbox, broker._attach)


@enable_ki_protection
def stop_routing(subscription: Subscription[T]) -> None:
    """Route nothing more to ``subscription``; it keeps what it holds.

    Its consumer then drains it and sees ``trio.EndOfChannel``; publishers
    waiting for room in it return normally. Idempotent.
    """
    subscription._inbox.drain()


class Pending(Generic[T]):
    """An injected message and the full ``BLOCK`` targets it still goes to."""

    __slots__ = ("full", "message")

    def __init__(self, message: Message[T], full: list[Target[T]]) -> None:
        self.message = message
        self.full = full


@enable_ki_protection
def inject(
    broker: Broker[T],
    skip: Subscription[T] | None,
    subject: str,
    payload: T,
    headers: Mapping[str, str] | None,
) -> Pending[T] | None:
    """Publish to every matching subscription but ``skip``, without waiting.

    Returns ``None`` when it is published, or what :func:`finish` has left to
    do. Takes no checkpoint.

    Raises:
        InvalidSubjectError, TypeError, BrokerClosedError: as ``publish`` does.
    """
    message, targets = broker._snapshot(subject, payload, headers)
    if skip is not None and skip._inbox in targets:
        left_out = skip._inbox
        targets = tuple(target for target in targets if target is not left_out)
    full: list[Target[T]] = []
    broker._deliver(message, targets, full)
    if full:
        return Pending(message, full)
    broker._published += 1
    return None


@enable_ki_protection
async def finish(broker: Broker[T], pending: Pending[T]) -> None:
    """Wait for room in each full target of ``pending``, as ``publish`` does.

    Raises:
        BrokerClosedError: the broker was closed while it waited.
    """
    for target in pending.full:
        await target.put(pending.message)
    broker._published += 1
