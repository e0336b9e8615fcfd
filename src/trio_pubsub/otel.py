"""OpenTelemetry metrics and traces for a broker.

Needs the ``otel`` extra (``opentelemetry-api`` only; the application brings
the SDK and its exporters)::

    from trio_pubsub.otel import instrument

    instrumentation = instrument(broker, meter_provider=..., tracer_provider=...)
    ...
    instrumentation.uninstrument()

Names and attributes follow the OpenTelemetry messaging conventions:
``messaging.system`` is ``trio_pubsub``, ``messaging.destination.template`` a
subscription's pattern (never a subject on a metric: subjects are unbounded),
``messaging.consumer.group.name`` its queue group,
``messaging.destination.subscription.name`` its name. See
:doc:`/how-to/monitor-a-broker`.

Counts are read from the broker's own counters when the SDK collects them
(observable instruments), so they cost a publish nothing; with metrics only,
publishing runs the broker's own code, unchanged (the instrumentation watches
new subscriptions through a hook that ``subscribe`` calls). With a tracer,
:func:`instrument` changes the broker's class to a subclass whose publishes
make spans, and :meth:`Instrumentation.uninstrument` changes it back.
"""

from __future__ import annotations

import contextlib
import functools
import typing
from collections.abc import Callable, Iterable, Mapping

import trio
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation

from . import Broker, Message, Subscription, _port

if typing.TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from . import BrokerStatistics, SubscriptionInfo

__all__ = ["Instrumentation", "instrument"]

T = typing.TypeVar("T")

SYSTEM = "trio_pubsub"
_BASE = {"messaging.system": SYSTEM}
_BASE_KEY = tuple(sorted(_BASE.items()))


def _version() -> str:
    from . import __version__

    return __version__


class Instrumentation:
    """The handle :func:`instrument` returns; :meth:`uninstrument` ends it."""

    def __init__(
        self,
        broker: Broker[typing.Any],
        meter_provider: metrics.MeterProvider | None,
        tracer_provider: trace.TracerProvider | None,
    ) -> None:
        self._broker = broker
        self._active = True
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("trio_pubsub", _version())
        self._tracer = (
            None
            if tracer_provider is None
            else tracer_provider.get_tracer("trio_pubsub", _version())
        )
        # the subscription handles entered while instrumented
        self._subscriptions: set[Subscription[typing.Any]] = set()
        # what those that have left had received, by series: the broker keeps
        # no total of it (what they were delivered and dropped it does keep)
        self._received_before: dict[tuple[tuple[str, str], ...], int] = {}
        self._duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Time from async for handing a message over to the "
            "consumer asking for the next one.",
        )

        def per_subscription(field: str) -> Callable[..., Iterable[Observation]]:
            return functools.partial(self._per_subscription, field)

        for create, name, callback, unit, description in (
            (
                meter.create_observable_counter,
                "messaging.client.sent.messages",
                self._sent,
                "{message}",
                "Messages published.",
            ),
            (
                meter.create_observable_counter,
                "messaging.client.consumed.messages",
                per_subscription("received"),
                "{message}",
                "Messages a subscription's consumer received.",
            ),
            (
                meter.create_observable_counter,
                "trio_pubsub.subscription.dropped",
                per_subscription("dropped"),
                "{message}",
                "Messages routed to a subscription and never received.",
            ),
            (
                meter.create_observable_counter,
                "trio_pubsub.subscription.disconnected",
                self._disconnected,
                "{subscription}",
                "Subscriptions cut off by the DISCONNECT policy.",
            ),
            (
                meter.create_observable_up_down_counter,
                "trio_pubsub.subscription.pending",
                per_subscription("pending"),
                "{message}",
                "Messages in a subscription's buffer now.",
            ),
            (
                meter.create_observable_gauge,
                "trio_pubsub.subscription.high_water",
                per_subscription("high_water"),
                "{message}",
                "The most messages a subscription's buffer has held.",
            ),
        ):
            create(name, callbacks=[callback], unit=unit, description=description)

    def uninstrument(self) -> None:
        """Stop: the broker and its subscriptions are plain again. Idempotent.

        The metric instruments stay registered with the meter (OpenTelemetry
        cannot remove them) and report nothing more; consumer spans still
        open are ended.
        """
        if not self._active:
            return
        self._active = False
        if _ACTIVE.get(self._broker) is self:
            del _ACTIVE[self._broker]
        _port.on_subscribe(self._broker, None)
        self._broker.__class__ = Broker
        for sub in self._subscriptions:
            _HANDLES.pop(sub).end()
            sub.__class__ = Subscription
        self._subscriptions.clear()

    # -- observable instruments ----------------------------------------------

    def _read(self) -> tuple[BrokerStatistics, tuple[SubscriptionInfo, ...]]:
        broker = self._broker
        return _port.read_in_run(
            broker, lambda: (broker.statistics(), broker.subscriptions())
        )

    def _sent(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._active:
            return []
        totals, _ = self._read()
        return [
            Observation(totals.published, {**_BASE, "messaging.operation.name": "send"})
        ]

    def _disconnected(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._active:
            return []
        totals, _ = self._read()
        return [Observation(totals.disconnected, _BASE)]

    def _per_subscription(
        self, field: str, options: CallbackOptions
    ) -> Iterable[Observation]:
        """One series per row of the catalogue (``_port.subscription_rows``).

        Subscriptions alike in every attribute share one; the row of those
        that have left (attributes ``messaging.system`` alone) keeps what
        they were dropped, as Prometheus's series with empty labels does, so
        a total never goes down. What they received stays in their own
        series.
        """
        if not self._active:
            return []
        totals, infos = self._read()
        values: dict[tuple[tuple[str, str], ...], int] = {}
        for row in _port.subscription_rows(totals, infos):
            if row.key == _port.LEFT:
                if field == "dropped":
                    values[_BASE_KEY] = row.dropped
                continue
            key = _key(row.name, row.pattern, row.queue)
            values[key] = getattr(row, field)
        if field == "received":
            for key, received in self._received_before.items():
                values[key] = values.get(key, 0) + received
        return [Observation(value, dict(key)) for key, value in values.items()]

    # -- the broker's and subscriptions' hooks -------------------------------

    def _traced_headers(
        self, subject: str, headers: Mapping[str, str] | None
    ) -> tuple[trace.Span | None, Mapping[str, str] | None]:
        """Start a producer span and return it with headers carrying it."""
        if self._tracer is None or not self._active:
            return None, headers
        if headers is not None and not isinstance(
            typing.cast("object", headers), Mapping
        ):
            return None, headers  # the broker refuses them, and says why
        span = self._tracer.start_span(
            "send",
            kind=trace.SpanKind.PRODUCER,
            attributes={
                **_BASE,
                "messaging.operation.name": "send",
                "messaging.operation.type": "send",
                "messaging.destination.name": subject,
            },
        )
        carrier = dict(headers) if headers else {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return span, carrier

    def _watch(self, sub: Subscription[typing.Any]) -> None:
        sub.__class__ = _InstrumentedSubscription
        self._subscriptions.add(sub)
        _HANDLES[sub] = _Handle(self)

    def _forget(self, sub: Subscription[typing.Any]) -> None:
        """The scope of ``sub`` is left: forget it and its clones.

        What it received stays counted in its series.
        """
        inbox = sub._inbox
        for other in [s for s in self._subscriptions if s._inbox is inbox]:
            self._subscriptions.discard(other)
            _HANDLES.pop(other).end()
        key = _key(sub.name, sub.pattern, sub.queue)
        received = sub.statistics().received
        self._received_before[key] = self._received_before.get(key, 0) + received


def _key(name: str, pattern: str, queue: str | None) -> tuple[tuple[str, str], ...]:
    """The attributes of a subscription's series, as a sorted tuple."""
    return tuple(sorted(_attributes(name, pattern, queue).items()))


def _attributes(name: str, pattern: str, queue: str | None) -> dict[str, str]:
    """The metric attributes of one subscription (never a subject)."""
    found = {
        **_BASE,
        "messaging.destination.template": pattern,
        "messaging.destination.subscription.name": name,
    }
    if queue is not None:
        found["messaging.consumer.group.name"] = queue
    return found


class _Handle:
    """What one instrumented subscription handle keeps between two receives."""

    __slots__ = ("attributes", "handed_at", "instrumentation", "span")

    def __init__(self, instrumentation: Instrumentation) -> None:
        self.instrumentation = instrumentation
        self.attributes: dict[str, str] | None = None  # made on first use
        self.handed_at: float | None = None
        self.span: trace.Span | None = None

    def asked(self, sub: Subscription[typing.Any]) -> None:
        """The consumer asks for the next message: the last one is processed."""
        if self.handed_at is not None:
            elapsed = trio.current_time() - self.handed_at
            self.instrumentation._duration.record(elapsed, self.of(sub))
            self.handed_at = None
        self.end()

    def of(self, sub: Subscription[typing.Any]) -> dict[str, str]:
        """The attributes of the subscription's processing."""
        if self.attributes is None:
            self.attributes = {
                **_attributes(sub.name, sub.pattern, sub.queue),
                "messaging.operation.name": "process",
            }
        return self.attributes

    def handed(
        self, sub: Subscription[typing.Any], message: Message[typing.Any]
    ) -> None:
        """A message is handed to the consumer: its processing starts."""
        self.handed_at = trio.current_time()
        tracer = self.instrumentation._tracer
        if tracer is not None:
            parent = trace.get_current_span(propagate.extract(message.headers))
            context = parent.get_span_context()
            self.span = tracer.start_span(
                "process",
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    **self.of(sub),
                    "messaging.operation.type": "process",
                    "messaging.destination.name": message.subject,
                },
                links=[trace.Link(context)] if context.is_valid else None,
            )

    def end(self) -> None:
        if self.span is not None:
            self.span.end()
            self.span = None


_ACTIVE: dict[Broker[typing.Any], Instrumentation] = {}
"""The instrumentation of each instrumented broker (held until uninstrument)."""

_HANDLES: dict[Subscription[typing.Any], _Handle] = {}
"""What each instrumented subscription handle keeps, until its scope is left."""


def _state(broker: Broker[typing.Any]) -> Instrumentation | None:
    return _ACTIVE.get(broker)


class _TracedBroker(Broker[T]):  # type: ignore[misc]  # final, on purpose
    """A Broker while instrumented with traces: each publish makes a span.

    Only with a tracer does instrument() change the broker's class, to this
    one; metrics need no change to publishing at all.
    """

    __slots__ = ()

    async def publish(
        self,
        subject: str,
        payload: T,
        *,
        headers: Mapping[str, str] | None = None,
        retain: bool = False,
    ) -> int:
        span, headers = _traced(self, subject, headers)
        with trace.use_span(span, end_on_exit=True) if span else _NOTHING:
            return await Broker.publish(
                self, subject, payload, headers=headers, retain=retain
            )

    def publish_nowait(
        self,
        subject: str,
        payload: T,
        *,
        headers: Mapping[str, str] | None = None,
        retain: bool = False,
    ) -> int:
        span, headers = _traced(self, subject, headers)
        with trace.use_span(span, end_on_exit=True) if span else _NOTHING:
            return Broker.publish_nowait(
                self, subject, payload, headers=headers, retain=retain
            )


_NOTHING = contextlib.nullcontext()


def _traced(
    broker: Broker[typing.Any], subject: str, headers: Mapping[str, str] | None
) -> tuple[trace.Span | None, Mapping[str, str] | None]:
    state = _state(broker)
    return (None, headers) if state is None else state._traced_headers(subject, headers)


class _WatchedScope(typing.Generic[T]):
    """A subscription's scope that hands its subscription to the instrumentation."""

    __slots__ = ("_scope", "_state", "_sub")

    def __init__(
        self,
        scope: AbstractAsyncContextManager[Subscription[T]],
        state: Instrumentation,
    ) -> None:
        self._scope = scope
        self._state = state
        self._sub: Subscription[T] | None = None

    async def __aenter__(self) -> Subscription[T]:
        sub = await self._scope.__aenter__()
        if self._state._active:
            self._state._watch(sub)
        self._sub = sub
        return sub

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        try:
            return await self._scope.__aexit__(exc_type, exc_value, traceback)
        finally:
            # (after: what it held when it left is counted by then)
            if self._sub is not None:
                self._state._forget(self._sub)


class _InstrumentedSubscription(Subscription[T]):  # type: ignore[misc]  # final
    """A Subscription entered while its broker was instrumented."""

    __slots__ = ()

    async def receive(self) -> Message[T]:
        handle = _HANDLES.get(self)
        if handle is not None:
            handle.asked(self)
        message = await Subscription.receive(self)
        if handle is not None:
            handle.handed(self, message)
        return message

    def receive_nowait(self) -> Message[T]:
        handle = _HANDLES.get(self)
        if handle is not None:
            handle.asked(self)
        message = Subscription.receive_nowait(self)
        if handle is not None:
            handle.handed(self, message)
        return message

    async def __anext__(self) -> Message[T]:
        handle = _HANDLES.get(self)
        if handle is not None:
            handle.asked(self)
        message = await Subscription.__anext__(self)
        if handle is not None:
            handle.handed(self, message)
        return message

    def clone(self) -> Subscription[T]:
        clone = Subscription.clone(self)
        handle = _HANDLES.get(self)
        if handle is not None:
            handle.instrumentation._watch(clone)
        return clone


def instrument(
    broker: Broker[T],
    *,
    meter_provider: metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Instrumentation:
    """Report ``broker``'s metrics, and with a tracer provider, trace its messages.

    Args:
        broker: The broker to instrument.
        meter_provider: Where the metrics go; ``None``: the global one.
        tracer_provider: With one, each publish starts a producer span and
            carries its W3C ``traceparent``/``tracestate`` in the message's
            headers (through the globally configured propagator), and each
            message a consumer receives from a subscription entered after this
            call starts a consumer span linked to it, ended when the consumer
            asks for the next message. ``None``: no traces.

    Returns:
        The handle; :meth:`Instrumentation.uninstrument` ends it.

    Raises:
        ValueError: ``broker`` is instrumented already.
        TypeError: ``broker`` is not a :class:`~trio_pubsub.Broker`.

    Metrics: ``messaging.client.sent.messages``,
    ``messaging.client.consumed.messages``, ``messaging.process.duration``
    (seconds, for subscriptions entered after this call),
    ``trio_pubsub.subscription.dropped``, ``.disconnected``, ``.pending`` and
    ``.high_water``.
    """
    if not isinstance(broker, Broker):
        raise TypeError(f"broker must be a trio_pubsub.Broker, not {broker!r}")
    if broker in _ACTIVE:
        raise ValueError("this broker is instrumented already: uninstrument() first")
    instrumentation = Instrumentation(broker, meter_provider, tracer_provider)
    _ACTIVE[broker] = instrumentation
    _port.on_subscribe(broker, functools.partial(_WatchedScope, state=instrumentation))
    if tracer_provider is not None:
        broker.__class__ = _TracedBroker
    return instrumentation
