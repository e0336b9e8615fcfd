"""One catalogue of a broker's per-subscription figures, for every exporter.

``trio_pubsub.prometheus`` and ``trio_pubsub.otel`` both read a broker's
subscriptions through :func:`subscription_rows`, so they report the same
series and the same totals. Subscriptions alike in name, pattern and queue
share one row (counts added, high water and age the most of them), and one
more row, :data:`LEFT`, keeps what subscriptions no longer open were
delivered and dropped: a subscription's own series goes when it leaves, but
a total over the series never goes down. :data:`HANDLER_COUNTERS` is the
same for a router's handlers.
"""

from __future__ import annotations

import typing

import attrs

if typing.TYPE_CHECKING:
    from collections.abc import Iterable

    from ._stats import BrokerStatistics, SubscriptionInfo

HANDLER_COUNTERS: typing.Final = {
    "received": "Messages a handler took from its subscription.",
    "handled": "Messages a handler's attempt handled.",
    "retried": "Attempts after the first.",
    "failed": "Messages given up on without a dead letter, or cancelled.",
    "dead_lettered": "Messages given up on and published as dead letters.",
    "duplicates": "Messages skipped as repeats (dedupe).",
}
"""A router's counters per handler, as both exporters name and describe them."""

LEFT: typing.Final = ("", "", None)
"""The (name, pattern, queue) of the row for subscriptions no longer open."""


@attrs.define
class SubscriptionRow:
    """The figures of the subscriptions that share a name, pattern and queue."""

    name: str
    pattern: str
    queue: str | None
    delivered: int = 0
    received: int = 0
    dropped: int = 0
    pending: int = 0
    high_water: int = 0
    oldest_pending_age: float | None = None

    @property
    def key(self) -> tuple[str, str, str | None]:
        """(name, pattern, queue): :data:`LEFT` for the row of those gone."""
        return (self.name, self.pattern, self.queue)


def subscription_rows(
    totals: BrokerStatistics, subscriptions: Iterable[SubscriptionInfo]
) -> list[SubscriptionRow]:
    """The rows of the open subscriptions, then the :data:`LEFT` row.

    The left row holds the broker's ``delivered`` and ``dropped`` not in any
    open subscription (what those gone had when they left, drained or cut off
    included). What they received is not kept by the broker: it is 0 there.
    """
    rows: dict[tuple[str, str, str | None], SubscriptionRow] = {}
    for info in subscriptions:
        stats = info.statistics
        row = rows.get((info.name, info.pattern, info.queue))
        if row is None:
            row = rows[(info.name, info.pattern, info.queue)] = SubscriptionRow(
                info.name, info.pattern, info.queue
            )
        row.delivered += stats.delivered
        row.received += stats.received
        row.dropped += stats.dropped
        row.pending += stats.pending
        row.high_water = max(row.high_water, stats.high_water)
        age = stats.oldest_pending_age
        if age is not None:
            row.oldest_pending_age = max(row.oldest_pending_age or 0.0, age)
    left = SubscriptionRow(*LEFT)
    left.delivered = totals.delivered - sum(row.delivered for row in rows.values())
    left.dropped = totals.dropped - sum(row.dropped for row in rows.values())
    return [*rows.values(), left]
