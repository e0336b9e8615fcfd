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
publishing runs the broker's own code, unchanged. Everything goes through the
broker's supported hooks, and no class changes: new subscriptions are seen
through a hook that ``subscribe`` calls, what their handles hand to consumers
through a watcher on each handle, and with a tracer, ``broker.publish`` and
``publish_nowait`` are bound to wrappers that make spans;
:meth:`Instrumentation.uninstrument` undoes each.
"""

from __future__ import annotations

import contextlib
import functools
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping

import trio
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation

from . import Broker, Message, Router, _port

if typing.TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from . import (
        BrokerStatistics,
        HandlerStatistics,
        Middleware,
        Subscription,
        SubscriptionInfo,
    )
    from .nats import JetStreamBridge

__all__ = [
    "Instrumentation",
    "JetStreamInstrumentation",
    "RouterInstrumentation",
    "instrument",
    "instrument_jetstream",
    "instrument_router",
]

T = typing.TypeVar("T")

SYSTEM = "trio_pubsub"
_BASE = {"messaging.system": SYSTEM}
_BASE_KEY = tuple(sorted(_BASE.items()))


def _version() -> str:
    from . import __version__

    return __version__


def _meter_and_tracer(
    meter_provider: metrics.MeterProvider | None,
    tracer_provider: trace.TracerProvider | None,
) -> tuple[metrics.Meter, trace.Tracer | None]:
    """The library's meter (the global provider's by default), and its tracer."""
    provider = meter_provider or metrics.get_meter_provider()
    meter = provider.get_meter("trio_pubsub", _version())
    if tracer_provider is None:
        return meter, None
    return meter, tracer_provider.get_tracer("trio_pubsub", _version())


class Instrumentation:
    """What :func:`~trio_pubsub.otel.instrument` returns; ``uninstrument()`` ends it."""

    def __init__(
        self,
        broker: Broker[typing.Any],
        meter_provider: metrics.MeterProvider | None,
        tracer_provider: trace.TracerProvider | None,
    ) -> None:
        self._broker = broker
        self._active = True
        meter, self._tracer = _meter_and_tracer(meter_provider, tracer_provider)
        # the watchers of the subscription handles entered while instrumented
        self._handles: set[_Handle] = set()
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
        if self._tracer is not None:
            _port.bind_publishers(self._broker, None, None)
        for handle in self._handles:
            handle.stop()
        self._handles.clear()

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
        span = _start_send(self._tracer, subject, _BASE)
        carrier = dict(headers) if headers else {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return span, carrier

    def _watch(self, sub: Subscription[typing.Any], family: set[_Handle]) -> _Handle:
        """Watch the handle ``sub``, one of ``family`` (a subscription's handles)."""
        handle = _Handle(self, sub, family)
        family.add(handle)
        self._handles.add(handle)
        _port.watch(sub, handle)
        return handle

    def _forget(self, sub: Subscription[typing.Any], family: set[_Handle]) -> None:
        """The scope of ``sub`` is left: forget it and its clones.

        What it received stays counted in its series.
        """
        for handle in family:
            self._handles.discard(handle)
            handle.stop()
        family.clear()
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
    """The watcher of one subscription handle: what it keeps between receives."""

    __slots__ = ("attributes", "family", "handed_at", "instrumentation", "span", "sub")

    def __init__(
        self,
        instrumentation: Instrumentation,
        sub: Subscription[typing.Any],
        family: set[_Handle],
    ) -> None:
        self.instrumentation = instrumentation
        self.sub = sub
        self.family = family  # the watchers of the subscription's handles
        self.attributes: dict[str, str] | None = None  # made on first use
        self.handed_at: float | None = None
        self.span: trace.Span | None = None

    def asked(self) -> None:
        """The consumer asks for the next message: the last one is processed."""
        if self.handed_at is not None:
            elapsed = trio.current_time() - self.handed_at
            self.instrumentation._duration.record(elapsed, self.of())
            self.handed_at = None
        self.end()

    def of(self) -> dict[str, str]:
        """The attributes of the subscription's processing."""
        if self.attributes is None:
            sub = self.sub
            self.attributes = {
                **_attributes(sub.name, sub.pattern, sub.queue),
                "messaging.operation.name": "process",
            }
        return self.attributes

    def handed(self, message: Message[typing.Any]) -> None:
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
                    **self.of(),
                    "messaging.operation.type": "process",
                    "messaging.destination.name": message.subject,
                },
                links=[trace.Link(context)] if context.is_valid else None,
            )

    def cloned(self, clone: Subscription[typing.Any]) -> _Handle | None:
        """A clone of the handle is watched too, as one of the family."""
        if not self.instrumentation._active or self not in self.family:
            return None
        return self.instrumentation._watch(clone, self.family)

    def end(self) -> None:
        if self.span is not None:
            self.span.end()
            self.span = None

    def stop(self) -> None:
        """Watch the handle no more; end its open span."""
        _port.watch(self.sub, None)
        self.end()


def _start_send(
    tracer: trace.Tracer, subject: str, attributes: Mapping[str, str]
) -> trace.Span:
    """A producer span ``send`` to ``subject``, with ``attributes`` besides."""
    return tracer.start_span(
        "send",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            **attributes,
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
            "messaging.destination.name": subject,
        },
    )


_ACTIVE: dict[Broker[typing.Any], Instrumentation] = {}
"""The instrumentation of each instrumented broker (held until uninstrument)."""


def _traced_publishers(
    broker: Broker[T], state: Instrumentation
) -> tuple[_port.Publish, _port.PublishNowait]:
    """``publish`` and ``publish_nowait`` of ``broker``, each making a span."""
    delivery = _port.pipeline(broker)
    publish, publish_nowait = delivery.publish, delivery.publish_nowait

    async def traced_publish(
        subject: str,
        payload: T,
        *,
        headers: Mapping[str, str] | None = None,
        retain: bool = False,
    ) -> int:
        span, headers = state._traced_headers(subject, headers)
        with trace.use_span(span, end_on_exit=True) if span else _NOTHING:
            return await publish(subject, payload, headers=headers, retain=retain)

    def traced_publish_nowait(
        subject: str,
        payload: T,
        *,
        headers: Mapping[str, str] | None = None,
        retain: bool = False,
    ) -> int:
        span, headers = state._traced_headers(subject, headers)
        with trace.use_span(span, end_on_exit=True) if span else _NOTHING:
            return publish_nowait(subject, payload, headers=headers, retain=retain)

    return traced_publish, traced_publish_nowait


_NOTHING = contextlib.nullcontext()


class _WatchedScope(typing.Generic[T]):
    """A subscription's scope that hands its subscription to the instrumentation."""

    __slots__ = ("_family", "_scope", "_state", "_sub")

    def __init__(
        self,
        scope: AbstractAsyncContextManager[Subscription[T]],
        state: Instrumentation,
    ) -> None:
        self._scope = scope
        self._state = state
        self._sub: Subscription[T] | None = None
        self._family: set[_Handle] = set()

    async def __aenter__(self) -> Subscription[T]:
        sub = await self._scope.__aenter__()
        if self._state._active:
            self._state._watch(sub, self._family)
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
                self._state._forget(self._sub, self._family)


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
        _port.bind_publishers(broker, *_traced_publishers(broker, instrumentation))
    return instrumentation


HANDLER = "trio_pubsub.handler.name"
OUTCOME = "trio_pubsub.handler.outcome"


class RouterInstrumentation:
    """What :func:`~trio_pubsub.otel.instrument_router` returns (``uninstrument``)."""

    def __init__(
        self,
        router: Router[typing.Any],
        meter_provider: metrics.MeterProvider | None,
        tracer_provider: trace.TracerProvider | None,
    ) -> None:
        self._router = router
        self._active = True
        meter, self._tracer = _meter_and_tracer(meter_provider, tracer_provider)
        self._duration = meter.create_histogram(
            "trio_pubsub.handler.duration",
            unit="s",
            description="How long each attempt of a handler took, by its outcome.",
        )
        for field, description in _port.HANDLER_COUNTERS.items():
            meter.create_observable_counter(
                f"trio_pubsub.handler.{field}",
                callbacks=[functools.partial(self._observe, field)],
                unit="{message}",
                description=description,
            )
        meter.create_observable_up_down_counter(
            "trio_pubsub.handler.in_flight",
            callbacks=[functools.partial(self._observe, "in_flight")],
            unit="{message}",
            description="Messages a handler has taken and not finished now.",
        )

    def uninstrument(self) -> None:
        """Stop: attempts are no longer timed or traced, counts no longer read.

        Idempotent. The steps stay in the router's chain (a router's
        middleware is fixed once it serves) and only pass messages on.
        """
        self._active = False

    def _observe(self, field: str, options: CallbackOptions) -> Iterable[Observation]:
        if not self._active:
            return []
        router = self._router
        handlers: tuple[HandlerStatistics, ...] = _port.read_in_run(
            router.broker, router.statistics
        )
        return [
            Observation(getattr(stats, field), {**_BASE, HANDLER: stats.name})
            for stats in handlers
        ]

    def wrap(self, handler: str) -> Middleware[typing.Any]:
        """The step that times, and traces, each attempt of ``handler``."""
        attributes = {**_BASE, HANDLER: handler}

        async def observed(
            message: Message[typing.Any],
            call_next: Callable[[Message[typing.Any]], typing.Awaitable[None]],
        ) -> None:
            if not self._active:
                await call_next(message)
                return
            span = self._start_span(handler, message)
            start = trio.current_time()
            with trace.use_span(span, end_on_exit=True) if span else _NOTHING:
                try:
                    await call_next(message)
                except Exception as error:
                    kind = type(error).__qualname__
                    if span is not None:  # (before use_span ends it)
                        span.set_attribute("error.type", kind)
                    self._duration.record(
                        trio.current_time() - start,
                        {**attributes, OUTCOME: "failed", "error.type": kind},
                    )
                    raise
            self._duration.record(
                trio.current_time() - start, {**attributes, OUTCOME: "handled"}
            )

        return observed

    def _start_span(
        self, handler: str, message: Message[typing.Any]
    ) -> trace.Span | None:
        """A consumer span for one attempt, linked to the message's producer."""
        if self._tracer is None:
            return None
        parent = trace.get_current_span(propagate.extract(message.headers))
        context = parent.get_span_context()
        return self._tracer.start_span(
            "process",
            kind=trace.SpanKind.CONSUMER,
            attributes={
                **_BASE,
                HANDLER: handler,
                "messaging.operation.name": "process",
                "messaging.operation.type": "process",
                "messaging.destination.name": message.subject,
            },
            links=[trace.Link(context)] if context.is_valid else None,
        )


def instrument_router(
    router: Router[T],
    *,
    meter_provider: metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> RouterInstrumentation:
    """Report a router's handler counters, time each attempt, trace attempts.

    Call it before the router serves: it adds a step to every handler's
    chain through :meth:`~trio_pubsub.Router.use`.

    Args:
        router: The router to instrument.
        meter_provider: Where the metrics go; ``None``: the global one.
        tracer_provider: With one, each attempt is a consumer span
            (``process``), linked to the span that published the message
            (the W3C context :func:`instrument` puts in its headers), with
            ``error.type`` and an error status when the attempt fails.
            ``None``: no traces.

    Returns:
        The handle; :meth:`RouterInstrumentation.uninstrument` ends it.

    Raises:
        TypeError: ``router`` is not a :class:`~trio_pubsub.Router`.
        RuntimeError: the router is serving already.

    Metrics, each with ``trio_pubsub.handler.name``:
    ``trio_pubsub.handler.received``, ``.handled``, ``.retried``, ``.failed``,
    ``.dead_lettered``, ``.duplicates`` (counters), ``.in_flight``, and the
    histogram ``trio_pubsub.handler.duration`` (seconds, per attempt, with
    ``trio_pubsub.handler.outcome``: ``handled`` or ``failed``, and
    ``error.type`` on failures; an attempt cancelled from outside is not
    timed).
    """
    if not isinstance(router, Router):
        raise TypeError(f"router must be a trio_pubsub.Router, not {router!r}")
    instrumentation = RouterInstrumentation(router, meter_provider, tracer_provider)
    router.use(instrumentation.wrap)
    return instrumentation


_JETSTREAM_FIELDS = (
    "stored",
    "duplicates",
    "unconfirmed",
    "acked",
    "naked",
    "redelivered",
    "dead_lettered",
    "undecodable",
    "dropped",
)


class JetStreamInstrumentation:
    """What :func:`~trio_pubsub.otel.instrument_jetstream` returns."""

    def __init__(
        self,
        bridge: JetStreamBridge[typing.Any],
        meter_provider: metrics.MeterProvider | None,
        tracer_provider: trace.TracerProvider | None,
    ) -> None:
        self._bridge = bridge
        self._active = True
        meter, self._tracer = _meter_and_tracer(meter_provider, tracer_provider)
        self._attributes = {**_BASE, "trio_pubsub.jetstream.stream": bridge.stream}
        if self._tracer is not None:
            bridge.trace_publish = self._traced
        for field in _JETSTREAM_FIELDS:
            meter.create_observable_counter(
                f"trio_pubsub.jetstream.{field}",
                callbacks=[functools.partial(self._observe, field)],
                unit="{message}",
            )
        meter.create_observable_up_down_counter(
            "trio_pubsub.jetstream.outbox_pending",
            callbacks=[functools.partial(self._observe, "outbox_pending")],
            unit="{message}",
            description="Messages accepted into the outbox and not yet stored.",
        )

    def uninstrument(self) -> None:
        """Report and trace nothing more (the instruments stay registered).

        Idempotent.
        """
        self._active = False
        if self._bridge.trace_publish == self._traced:
            self._bridge.trace_publish = None

    @contextlib.contextmanager
    def _traced(self, subject: str, headers: dict[str, str]) -> Iterator[None]:
        """A producer span around one ``publish``, carried in its headers."""
        assert self._tracer is not None
        span = _start_send(
            self._tracer,
            subject,
            {**self._attributes, "messaging.message.id": headers["Nats-Msg-Id"]},
        )
        propagate.inject(headers, context=trace.set_span_in_context(span))
        with trace.use_span(span, end_on_exit=True):
            yield

    def _observe(self, field: str, options: CallbackOptions) -> Iterable[Observation]:
        if not self._active:
            return []
        bridge = self._bridge
        stats = _port.read_in_run(bridge.broker, bridge.statistics)
        return [Observation(getattr(stats, field), self._attributes)]


def instrument_jetstream(
    bridge: JetStreamBridge[T],
    *,
    meter_provider: metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> JetStreamInstrumentation:
    """Report a JetStream bridge's counters as OpenTelemetry metrics.

    Observable counters ``trio_pubsub.jetstream.stored``, ``.duplicates``,
    ``.unconfirmed``, ``.acked``, ``.naked``, ``.redelivered``,
    ``.dead_lettered``, ``.undecodable``, ``.dropped`` and the up-down counter
    ``.outbox_pending``, with ``trio_pubsub.jetstream.stream``, read at
    collection time.

    With a tracer provider, each :meth:`~trio_pubsub.nats.JetStreamBridge.publish`
    makes a producer span ``send`` (ended when ``publish`` returns, with the
    error if it raises; ``messaging.message.id`` is the ``Nats-Msg-Id``) and
    stores its W3C context in the message's headers. What is exported
    through ``outbound=`` carries the span of the broker's own ``publish``
    (instrument the broker with :func:`instrument`); consumers link to
    either (instrument the routers with :func:`instrument_router`).
    """
    return JetStreamInstrumentation(bridge, meter_provider, tracer_provider)
