"""The one door through which the integrations reach into a broker.

They are ``trio_pubsub.nats``, ``trio_pubsub.prometheus`` and
``trio_pubsub.otel``. This module calls the broker's pipeline
(``_delivery.Delivery``) and the modules' own functions; it reads no private
attribute and keeps no state.

A bridge needs what the public API does not offer, and gets it here, so that a
change inside the broker touches this module rather than the bridge:

* :func:`export`: one subscription on several patterns, each message once and
  in order (a subject matching two of them goes out once);
* :func:`pipeline`: the broker's pipeline, whose methods a bridge calls for
  each message: ``inject`` (publish what came from NATS past every export of
  the broker, without a checkpoint: the bridge takes one per batch),
  ``finish`` (wait, as ``publish`` does, for the full ``BLOCK``
  subscriptions an injected message is still due to), ``inject_request`` (a
  request from NATS, with a ``Reply`` to wait on for the answer), ``decline``
  (NATS said "no responders" to one of the broker's requests) and
  ``time_left`` (how long a request still waits); and ``replies.prefix``,
  the start of the broker's reply subjects, which the bridge listens on;
* :func:`is_reserved`: a subject under ``_INBOX.``, which nothing from NATS
  may be published on;
* for metric collectors, which other threads call: :func:`read_in_run`,
  and the one catalogue of per-subscription figures they all report,
  :func:`subscription_rows`;
* for OpenTelemetry, the supported hooks: :func:`on_subscribe` (wrap every
  new subscription's scope), :func:`watch` (see what a subscription handle
  hands its consumer) and :func:`bind_publishers` (wrap ``publish`` and
  ``publish_nowait``).

It also passes on the option checks the bridge shares with the broker, and
the token matcher, for subjects from NATS that the broker's grammar refuses.
"""

from __future__ import annotations

import typing
from typing import Generic, TypeVar

from ._broker import (
    Publish as Publish,
    PublishNowait as PublishNowait,
    bind_publishers as bind_publishers,
    pipeline as pipeline,
)
from ._delivery import Pending as Pending
from ._message import new_message as new_message
from ._metrics import (
    HANDLER_COUNTERS as HANDLER_COUNTERS,
    LEFT as LEFT,
    SubscriptionRow as SubscriptionRow,
    subscription_rows as subscription_rows,
)
from ._options import (
    check_int as check_int,
    check_policy,
    check_seconds as check_seconds,
)
from ._reply import Reply as Reply
from ._subject import (
    REPLY_ROOT,
    SEPARATOR as SEPARATOR,
    is_reserved as is_reserved,
    parse_pattern,
    parse_queue as parse_queue,
    reserved_pattern,
    tokens_match as tokens_match,
)
from ._subscription import (
    SubscriptionScope,
    Watcher as Watcher,
    watch as watch,
)

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from contextlib import AbstractAsyncContextManager

    from ._broker import Broker
    from ._delivery import Delivery
    from ._inbox import _Inbox
    from ._policy import OverflowPolicy
    from ._subscription import Subscription

T = TypeVar("T")
R = TypeVar("R")


def export(
    broker: Broker[T],
    patterns: Sequence[str],
    *,
    max_buffer_size: int,
    policy: OverflowPolicy,
) -> AbstractAsyncContextManager[Subscription[T]]:
    """One subscription on several ``patterns``: each message once, in order.

    It gets no retained messages, counts once in the broker's statistics, and
    is skipped by ``inject`` while it is open.

    Raises:
        ValueError: ``patterns`` is empty, or an option is out of range.
        InvalidSubjectError, TypeError: as for ``Broker.subscribe``.
    """
    parsed: dict[tuple[str, ...], None] = {}
    for pattern in patterns:
        tokens = parse_pattern(pattern)
        if tokens[0] == REPLY_ROOT:
            raise reserved_pattern(pattern)
        parsed[tokens] = None
    if not parsed:
        raise ValueError("at least one pattern is needed")
    first, *rest = parsed
    delivery = pipeline(broker)
    inbox = delivery.new_inbox(
        ", ".join(SEPARATOR.join(tokens) for tokens in parsed),
        first,
        also=tuple(rest),
        policy=check_policy(policy),
        max_buffer_size=check_int("max_buffer_size", max_buffer_size),
        disconnect_after=None,
    )
    delivery.check_open()
    return _Export(delivery, inbox)


class _Export(Generic[T]):
    """The scope of an export: registered, and known to ``inject``, inside."""

    __slots__ = ("_delivery", "_inbox", "_scope")

    def __init__(self, delivery: Delivery[T], inbox: _Inbox[T]) -> None:
        self._delivery = delivery
        self._inbox = inbox
        self._scope = SubscriptionScope(inbox, delivery.attach)

    async def __aenter__(self) -> Subscription[T]:
        subscription = await self._scope.__aenter__()
        self._delivery.exports.add(self._inbox)
        return subscription

    async def __aexit__(self, *exc_info: object) -> None:
        self._delivery.exports.discard(self._inbox)
        await self._scope.__aexit__(None, None, None)


def check_unreserved(pattern: str) -> None:
    """Refuse a pattern (valid already) on the reserved reply subjects.

    Raises:
        InvalidSubjectError: its first token is ``_INBOX``.
    """
    if pattern.split(SEPARATOR, 1)[0] == REPLY_ROOT:
        raise reserved_pattern(pattern)


def read_in_run(broker: Broker[T], read: Callable[[], R]) -> R:
    """Call ``read()`` where it is safe to look at ``broker``: in its trio thread.

    See ``TrioRun.read``.
    """
    return pipeline(broker).run.read(read)


def on_subscribe(
    broker: Broker[T],
    hook: Callable[
        [AbstractAsyncContextManager[Subscription[T]]],
        AbstractAsyncContextManager[Subscription[T]],
    ]
    | None,
) -> None:
    """Have ``hook`` wrap the scope of every subscription ``subscribe`` makes.

    ``None`` removes it. For trio_pubsub.otel, which watches what consumers
    receive; nothing on the publish path reads it.
    """
    pipeline(broker).on_subscribe = hook


def reply_prefix(broker: Broker[T]) -> str:
    """``_INBOX.<random>.``: every reply subject of ``broker`` starts so."""
    return pipeline(broker).replies.prefix
