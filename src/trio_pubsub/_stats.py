"""Immutable snapshots returned by the ``statistics()`` methods."""

from __future__ import annotations

import typing

import attrs

from ._policy import OverflowPolicy  # noqa: TC001 (the API reference resolves it)


@typing.final
@attrs.frozen
class BrokerStatistics:
    """A snapshot of a broker's counters, from :meth:`Broker.statistics`.

    Two snapshots are equal when their delivery counters are; the match cache's
    figures are left out of the comparison.
    """

    published: int
    """Calls to ``publish``/``publish_nowait`` that returned normally."""
    delivered: int
    """Message copies that entered a subscription's buffer (or went straight to a
    waiting receiver)."""
    dropped: int
    """Message copies routed to a subscription and never received (refused by a
    full buffer, evicted by ``DROP_OLDEST``, or discarded when a subscription ended
    with messages still pending)."""
    disconnected: int
    """Subscriptions cut off by the ``DISCONNECT`` policy."""
    subscriptions: int
    """Subscriptions registered now, i.e. that would be offered a new message."""
    # The match cache's figures are informational: they default to 0 and take
    # no part in ==, so snapshots compare by the delivery counters above.
    cache_hits: int = attrs.field(default=0, eq=False)
    """Publishes whose subject was found in the match cache."""
    cache_misses: int = attrs.field(default=0, eq=False)
    """Publishes whose subject had to be parsed and matched against the trie."""
    cache_size: int = attrs.field(default=0, eq=False)
    """Subjects in the match cache now."""
    retained: int = attrs.field(default=0, eq=False)
    """Subjects whose last message is retained now."""
    retained_evicted: int = attrs.field(default=0, eq=False)
    """Retained messages evicted because the store was full (``max_retained``)."""
    cache_evictions: int = attrs.field(default=0, eq=False)
    """Subjects the match cache has let go to make room (its oldest quarter at a
    time); a high rate beside a full cache means it is too small for the
    subjects in use."""
    requests_waiting: int = attrs.field(default=0, eq=False)
    """Requests (:meth:`Broker.request`) waiting for their answer now."""


@typing.final
@attrs.frozen
class SubscriptionStatistics:
    """A snapshot of one subscription's counters, from :meth:`Subscription.statistics`.

    At every moment, the messages routed to the subscription equal
    ``received + pending + dropped``, and ``delivered`` equals the routed
    messages that were not refused.
    """

    delivered: int
    """Messages that entered its buffer (or went straight to a waiting receiver)."""
    received: int
    """Messages handed to the consumer by ``receive``, ``receive_nowait`` or
    ``async for``."""
    pending: int
    """Messages in its buffer now."""
    dropped: int
    """Messages routed to it that it will never receive."""
    max_buffer_size: int
    """Its buffer's capacity."""
    # Informational, like the broker's cache figures: they default to 0/None
    # and take no part in ==, so snapshots compare by the counters above.
    high_water: int = attrs.field(default=0, eq=False)
    """The most messages its buffer has held at once (a message handed straight
    to a waiting receiver is never held)."""
    oldest_pending_age: float | None = attrs.field(default=None, eq=False)
    """Seconds the oldest pending message has waited, by the broker's trio clock
    (``trio.current_time()``); ``None`` when nothing is pending. Never low:
    publishers read no clock, so a message's arrival is known to come after
    the last look at the clock before it (a ``statistics()`` call, its first
    message, and once its statistics have been read, each receive from it), and
    the figure may be high by the time between that look and the arrival."""


@typing.final
@attrs.frozen
class SubscriptionInfo:
    """One open subscription, as :meth:`Broker.subscriptions` lists it."""

    name: str
    """Its label (``subscribe(..., name=...)``; the pattern by default)."""
    pattern: str
    """The pattern it listens on."""
    queue: str | None
    """The queue group it belongs to, or ``None``."""
    policy: OverflowPolicy
    """What its full buffer does."""
    max_buffer_size: int
    """Its buffer's capacity."""
    statistics: SubscriptionStatistics
    """Its counters when the snapshot was taken."""
