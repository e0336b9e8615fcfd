"""Prometheus metrics for a broker and its bridges, read at scrape time.

Needs the ``prometheus`` extra (``prometheus-client``). A collector reads
``statistics()`` and ``subscriptions()`` when Prometheus scrapes it, in the
broker's trio thread (the HTTP server's thread hands the read over and waits),
so publishing does no work for it at all::

    from prometheus_client import CollectorRegistry, start_http_server
    from trio_pubsub.prometheus import BrokerCollector

    registry = CollectorRegistry()
    registry.register(BrokerCollector(broker, name="orders"))
    start_http_server(9464, addr="127.0.0.1", registry=registry)

Names follow Prometheus's rules: base units (seconds), ``_total`` on
counters. Labels are ``broker`` and, per subscription, ``subscription`` (its
name), ``pattern`` and ``queue``; never a subject, whose values are unbounded.
See :doc:`/how-to/monitor-a-broker` for the table of metrics.
"""

from __future__ import annotations

import bisect
import functools
import math
import typing

import trio
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics import Histogram
from prometheus_client.registry import Collector

from . import _port

if typing.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from prometheus_client.metrics_core import Metric

    from . import (
        Broker,
        BrokerStatistics,
        HandlerStatistics,
        Message,
        Middleware,
        Router,
        SubscriptionInfo,
    )
    from .nats import Bridge, BridgeStatistics, JetStreamBridge, JetStreamStatistics

__all__ = [
    "BridgeCollector",
    "BrokerCollector",
    "JetStreamCollector",
    "RouterCollector",
]

R = typing.TypeVar("R")

_SUBSCRIPTION = ["broker", "subscription", "pattern", "queue"]


def _read(
    broker: Broker[typing.Any],
) -> tuple[BrokerStatistics, tuple[SubscriptionInfo, ...]]:
    return broker.statistics(), broker.subscriptions()


def _add(table: dict[str, R], item: R, name: object, what: str) -> None:
    """Report ``item`` under ``name`` (a label value), once."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, not {name!r}")
    if name in table:
        raise ValueError(f"a {what} is reported as {name!r} already")
    table[name] = item


class BrokerCollector(Collector):
    """The metrics of one broker, for a ``prometheus_client.CollectorRegistry``.

    Args:
        broker: The broker to report on.
        name: The value of the ``broker`` label, to tell several brokers apart.

    Per broker: ``trio_pubsub_published_total``,
    ``trio_pubsub_disconnected_total``, ``trio_pubsub_subscriptions``,
    ``trio_pubsub_cache_evictions_total``. Per subscription:
    ``trio_pubsub_delivered_total``, ``trio_pubsub_dropped_total``,
    ``trio_pubsub_pending``, ``trio_pubsub_high_water`` and
    ``trio_pubsub_oldest_pending_age_seconds``. Subscriptions with the same
    name, pattern and queue share one series (name them to tell them apart).
    The two per-subscription counters also have a series with empty
    ``subscription``, ``pattern`` and ``queue`` labels for the subscriptions
    that are no longer open, so that their sum over a broker is its total.

    A registry takes one collector of these metric names: report more brokers
    through the same one with :meth:`add_broker`.
    """

    def __init__(self, broker: Broker[typing.Any], *, name: str = "default") -> None:
        self._brokers: dict[str, Broker[typing.Any]] = {}
        self.add_broker(broker, name=name)

    def add_broker(self, broker: Broker[typing.Any], *, name: str) -> None:
        """Report ``broker`` too, under ``broker=name``.

        Raises:
            TypeError: ``name`` is not a non-empty ``str``.
            ValueError: a broker is reported under ``name`` already.
        """
        _add(self._brokers, broker, name, "broker")

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (for the registry's name check)."""
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        """Read each broker's counters now, in its trio thread, and yield them."""
        readings = {
            name: _port.read_in_run(broker, functools.partial(_read, broker))
            for name, broker in self._brokers.items()
        }
        return list(self._families(readings))

    def _families(
        self,
        readings: dict[str, tuple[BrokerStatistics, tuple[SubscriptionInfo, ...]]]
        | None = None,
    ) -> Iterator[Metric]:
        published = CounterMetricFamily(
            "trio_pubsub_published",
            "Publish calls that returned normally.",
            labels=["broker"],
        )
        disconnected = CounterMetricFamily(
            "trio_pubsub_disconnected",
            "Subscriptions cut off by the DISCONNECT policy.",
            labels=["broker"],
        )
        open_now = GaugeMetricFamily(
            "trio_pubsub_subscriptions",
            "Subscriptions open now (that a new message would be offered to).",
            labels=["broker"],
        )
        evictions = CounterMetricFamily(
            "trio_pubsub_cache_evictions",
            "Subjects the full match cache let go to make room.",
            labels=["broker"],
        )
        delivered = CounterMetricFamily(
            "trio_pubsub_delivered",
            "Message copies that entered a subscription's buffer (or went straight "
            "to a waiting receiver).",
            labels=_SUBSCRIPTION,
        )
        dropped = CounterMetricFamily(
            "trio_pubsub_dropped",
            "Message copies routed to a subscription and never received.",
            labels=_SUBSCRIPTION,
        )
        pending = GaugeMetricFamily(
            "trio_pubsub_pending",
            "Messages in a subscription's buffer now.",
            labels=_SUBSCRIPTION,
        )
        high_water = GaugeMetricFamily(
            "trio_pubsub_high_water",
            "The most messages a subscription's buffer has held at once.",
            labels=_SUBSCRIPTION,
        )
        age = GaugeMetricFamily(
            "trio_pubsub_oldest_pending_age_seconds",
            "How long the oldest pending message of a subscription has waited "
            "(never low; absent when nothing is pending).",
            labels=_SUBSCRIPTION,
        )
        for name, (totals, subscriptions) in (readings or {}).items():
            published.add_metric([name], totals.published)
            disconnected.add_metric([name], totals.disconnected)
            open_now.add_metric([name], totals.subscriptions)
            evictions.add_metric([name], totals.cache_evictions)
            for row in _port.subscription_rows(totals, subscriptions):
                labels = [name, row.name, row.pattern, row.queue or ""]
                delivered.add_metric(labels, row.delivered)
                dropped.add_metric(labels, row.dropped)
                if row.key == _port.LEFT:
                    continue  # nothing is pending in a subscription gone
                pending.add_metric(labels, row.pending)
                high_water.add_metric(labels, row.high_water)
                if row.oldest_pending_age is not None:
                    age.add_metric(labels, row.oldest_pending_age)
        yield from (published, disconnected, open_now, evictions)
        yield from (delivered, dropped, pending, high_water, age)


_BRIDGE_COUNTERS = {
    "exported": "Messages sent to NATS and confirmed by the server.",
    "imported": "Messages from NATS published into the broker.",
    "outbound_dropped": "Local messages not exported (overflow, encode, refused).",
    "inbound_dropped": "Messages from NATS not imported (overflow, decode, grammar).",
    "unconfirmed": "Messages sent as the connection broke: they may not have arrived.",
    "reconnects": "Times the connection was restored after a break.",
    "requests_refused": (
        "Requests from NATS not imported: reply subject not answered, or too many."
    ),
    "requests_expired": "Local requests not sent: nobody waited for the answer.",
}


class BridgeCollector(Collector):
    """The metrics of one NATS bridge, as ``trio_pubsub_bridge_*``.

    Args:
        bridge: The bridge to report on; after it has closed, its final counts.
        name: The value of the ``bridge`` label.

    Counters ``trio_pubsub_bridge_exported_total``, ``..._imported_total``,
    ``..._outbound_dropped_total``, ``..._inbound_dropped_total``,
    ``..._unconfirmed_total``, ``..._reconnects_total``,
    ``..._requests_refused_total``, ``..._requests_expired_total``; gauges
    ``trio_pubsub_bridge_outbound_pending`` and ``trio_pubsub_bridge_connected``
    (1 or 0). Report more bridges through the same collector with
    :meth:`add_bridge`.
    """

    def __init__(self, bridge: Bridge[typing.Any], *, name: str = "default") -> None:
        self._bridges: dict[str, Bridge[typing.Any]] = {}
        self.add_bridge(bridge, name=name)

    def add_bridge(self, bridge: Bridge[typing.Any], *, name: str) -> None:
        """Report ``bridge`` too, under ``bridge=name``.

        Raises:
            TypeError: ``name`` is not a non-empty ``str``.
            ValueError: a bridge is reported under ``name`` already.
        """
        _add(self._bridges, bridge, name, "bridge")

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (for the registry's name check)."""
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        """Read each bridge's counters now, in its broker's trio thread."""
        readings = {
            name: _port.read_in_run(bridge.broker, bridge.statistics)
            for name, bridge in self._bridges.items()
        }
        return list(self._families(readings))

    def _families(
        self, readings: dict[str, BridgeStatistics] | None = None
    ) -> Iterator[Metric]:
        readings = readings or {}
        for field, help_text in _BRIDGE_COUNTERS.items():
            counter = CounterMetricFamily(
                f"trio_pubsub_bridge_{field}", help_text, labels=["bridge"]
            )
            for name, stats in readings.items():
                counter.add_metric([name], getattr(stats, field))
            yield counter
        pending = GaugeMetricFamily(
            "trio_pubsub_bridge_outbound_pending",
            "Local messages waiting to be exported now.",
            labels=["bridge"],
        )
        connected = GaugeMetricFamily(
            "trio_pubsub_bridge_connected",
            "Whether the connection to NATS is up now (1) or not (0).",
            labels=["bridge"],
        )
        for name, stats in readings.items():
            pending.add_metric([name], stats.outbound_pending)
            connected.add_metric([name], int(stats.connected))
        yield pending
        yield connected


_BOUNDS: tuple[float, ...] = tuple(Histogram.DEFAULT_BUCKETS)


class _Durations:
    """Attempt durations by handler and outcome, kept in the trio thread.

    Each series is a list: one count per bucket (not cumulative; the last
    bucket is ``+Inf``), then the sum.
    """

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], list[float]] = {}

    def observe(self, handler: str, outcome: str, seconds: float) -> None:
        row = self.series.get((handler, outcome))
        if row is None:
            row = self.series[handler, outcome] = [0.0] * (len(_BOUNDS) + 1)
        row[bisect.bisect_left(_BOUNDS, seconds)] += 1
        row[-1] += seconds

    def wrap(self, handler: str) -> Middleware[typing.Any]:
        """The middleware that times each attempt of ``handler``."""

        async def timed(
            message: Message[typing.Any],
            call_next: typing.Callable[[Message[typing.Any]], typing.Awaitable[None]],
        ) -> None:
            start = trio.current_time()
            try:
                await call_next(message)
            except Exception:
                self.observe(handler, "failed", trio.current_time() - start)
                raise
            self.observe(handler, "handled", trio.current_time() - start)

        return timed

    def copy(self) -> dict[tuple[str, str], list[float]]:
        return {key: list(row) for key, row in self.series.items()}


_RouterReading = tuple[
    tuple["HandlerStatistics", ...], dict[tuple[str, str], list[float]]
]


def _read_router(router: Router[typing.Any], durations: _Durations) -> _RouterReading:
    return router.statistics(), durations.copy()


class RouterCollector(Collector):
    """The metrics of a :class:`~trio_pubsub.Router`'s handlers.

    Args:
        router: The router to report on. Made before it serves: the
            collector times each attempt through :meth:`~trio_pubsub.Router.use`.
        name: The value of the ``router`` label.

    Counters ``trio_pubsub_handler_received_total``, ``..._handled_total``,
    ``..._retried_total``, ``..._failed_total``, ``..._dead_lettered_total``,
    ``..._duplicates_total``; the gauge ``trio_pubsub_handler_in_flight``; and
    the histogram ``trio_pubsub_handler_duration_seconds`` of each attempt,
    labelled ``outcome`` (``handled`` or ``failed``; an attempt cancelled
    from outside is not timed). Labels: ``router`` and ``handler`` (its
    name). Report more routers through the same collector with
    :meth:`add_router`.

    Raises:
        RuntimeError: the router is serving already.
    """

    def __init__(self, router: Router[typing.Any], *, name: str = "default") -> None:
        self._routers: dict[str, tuple[Router[typing.Any], _Durations]] = {}
        self.add_router(router, name=name)

    def add_router(self, router: Router[typing.Any], *, name: str) -> None:
        """Report ``router`` too, under ``router=name`` (before it serves).

        Raises:
            TypeError: ``name`` is not a non-empty ``str``.
            ValueError: a router is reported under ``name`` already.
            RuntimeError: the router is serving already.
        """
        durations = _Durations()
        _add(self._routers, (router, durations), name, "router")
        try:
            router.use(durations.wrap)
        except BaseException:
            del self._routers[name]  # (serving already: nothing changes)
            raise

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (for the registry's name check)."""
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        """Read each router's counters now, in its broker's trio thread."""
        readings = {
            name: _port.read_in_run(
                router.broker, functools.partial(_read_router, router, durations)
            )
            for name, (router, durations) in self._routers.items()
        }
        return list(self._families(readings))

    def _families(
        self, readings: dict[str, _RouterReading] | None = None
    ) -> Iterator[Metric]:
        readings = readings or {}
        for field, help_text in _port.HANDLER_COUNTERS.items():
            counter = CounterMetricFamily(
                f"trio_pubsub_handler_{field}", help_text, labels=["router", "handler"]
            )
            for name, (handlers, _) in readings.items():
                for stats in handlers:
                    counter.add_metric([name, stats.name], getattr(stats, field))
            yield counter
        in_flight = GaugeMetricFamily(
            "trio_pubsub_handler_in_flight",
            "Messages a handler has taken and not finished now.",
            labels=["router", "handler"],
        )
        duration = HistogramMetricFamily(
            "trio_pubsub_handler_duration_seconds",
            "How long each attempt of a handler took, by its outcome.",
            labels=["router", "handler", "outcome"],
        )
        for name, (handlers, series) in readings.items():
            for stats in handlers:
                in_flight.add_metric([name, stats.name], stats.in_flight)
            for (handler, outcome), row in sorted(series.items()):
                cumulative, buckets = 0.0, []
                for bound, count in zip(_BOUNDS, row, strict=False):
                    cumulative += count
                    buckets.append((_le(bound), cumulative))
                duration.add_metric(
                    [name, handler, outcome], buckets, sum_value=row[-1]
                )
        yield in_flight
        yield duration


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(float(bound))


_JETSTREAM_COUNTERS = {
    "stored": "Messages the server acknowledged as stored.",
    "duplicates": "Messages the server acknowledged as duplicates of stored ones.",
    "unconfirmed": "Messages given up on without a PubAck (maybe stored).",
    "acked": "Consumed messages acknowledged.",
    "naked": "Consumed messages handed back for redelivery.",
    "redelivered": "Consumed messages that had been delivered before.",
    "dead_lettered": "Consumed messages terminated (given up on).",
    "undecodable": "Consumed messages whose payload could not be decoded.",
    "dropped": "Messages not stored: encode failed, refused, or closed first.",
}


class JetStreamCollector(Collector):
    """The metrics of a JetStream bridge, as ``trio_pubsub_jetstream_*``.

    Args:
        bridge: The :class:`~trio_pubsub.nats.JetStreamBridge` to report on;
            after it has closed, its final counts.
        name: The value of the ``jetstream`` label.

    Counters ``trio_pubsub_jetstream_stored_total``, ``..._duplicates_total``,
    ``..._unconfirmed_total``, ``..._acked_total``, ``..._naked_total``,
    ``..._redelivered_total``, ``..._dead_lettered_total``,
    ``..._undecodable_total``, ``..._dropped_total``; the gauge
    ``trio_pubsub_jetstream_outbox_pending``. Labels: ``jetstream`` and
    ``stream`` (the stream's name). Report more bridges through the same
    collector with :meth:`add_jetstream`.
    """

    def __init__(
        self, bridge: JetStreamBridge[typing.Any], *, name: str = "default"
    ) -> None:
        self._bridges: dict[str, JetStreamBridge[typing.Any]] = {}
        self.add_jetstream(bridge, name=name)

    def add_jetstream(self, bridge: JetStreamBridge[typing.Any], *, name: str) -> None:
        """Report ``bridge`` too, under ``jetstream=name``.

        Raises:
            TypeError: ``name`` is not a non-empty ``str``.
            ValueError: a bridge is reported under ``name`` already.
        """
        _add(self._bridges, bridge, name, "JetStream bridge")

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (for the registry's name check)."""
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        """Read each bridge's counters now, in its broker's trio thread."""
        readings = {
            name: (bridge.stream, _port.read_in_run(bridge.broker, bridge.statistics))
            for name, bridge in self._bridges.items()
        }
        return list(self._families(readings))

    def _families(
        self, readings: dict[str, tuple[str, JetStreamStatistics]] | None = None
    ) -> Iterator[Metric]:
        readings = readings or {}
        labels = ["jetstream", "stream"]
        for field, help_text in _JETSTREAM_COUNTERS.items():
            counter = CounterMetricFamily(
                f"trio_pubsub_jetstream_{field}", help_text, labels=labels
            )
            for name, (stream, stats) in readings.items():
                counter.add_metric([name, stream], getattr(stats, field))
            yield counter
        pending = GaugeMetricFamily(
            "trio_pubsub_jetstream_outbox_pending",
            "Messages accepted into the outbox and not yet stored.",
            labels=labels,
        )
        for name, (stream, stats) in readings.items():
            pending.add_metric([name, stream], stats.outbox_pending)
        yield pending
