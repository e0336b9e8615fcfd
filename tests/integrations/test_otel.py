"""trio_pubsub.otel against the OpenTelemetry SDK's in-memory reader and exporter.

No mock: the SDK's own ``InMemoryMetricReader`` collects what the
instrumentation reports, and its ``InMemorySpanExporter`` keeps the spans
(issue 18).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

from trio_pubsub import Broker, Message, OverflowPolicy, Retry, Router, Subscription
from trio_pubsub.otel import instrument, instrument_router

Points = dict[tuple[str, tuple[tuple[str, Any], ...]], Any]


@pytest.fixture
def reader() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> Points:
    """Every data point, by metric name and attributes."""
    found: Points = {}
    data = reader.get_metrics_data()
    if data is None:  # nothing to report
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "trio_pubsub"
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = point.attributes or {}
                    key = (metric.name, tuple(sorted(attributes.items())))
                    assert key not in found
                    found[key] = point
    return found


def of(sub: Subscription[Any], **extra: str) -> tuple[tuple[str, Any], ...]:
    attributes = {
        "messaging.system": "trio_pubsub",
        "messaging.destination.template": sub.pattern,
        "messaging.destination.subscription.name": sub.name,
        **extra,
    }
    if sub.queue is not None:
        attributes["messaging.consumer.group.name"] = sub.queue
    return tuple(sorted(attributes.items()))


SYSTEM = (("messaging.system", "trio_pubsub"),)


async def test_the_metrics_equal_the_statistics(
    reader: tuple[MeterProvider, InMemoryMetricReader],
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="trio_pubsub")
    provider, memory = reader
    broker = Broker(int)
    instrumentation = instrument(broker, meter_provider=provider)
    processed = 0
    async with (
        broker.subscribe("orders.>", name="audit", max_buffer_size=100) as audit,
        broker.subscribe("orders.*.paid", name="metrics", max_buffer_size=2) as metrics,
        broker.subscribe("orders.*.paid", queue="billing", max_buffer_size=4) as one,
        broker.subscribe("orders.*.paid", queue="billing", max_buffer_size=4) as two,
        broker.subscribe("feed", policy=OverflowPolicy.DISCONNECT, max_buffer_size=1),
        trio.open_nursery() as nursery,
    ):

        async def consume() -> None:
            nonlocal processed
            async for _ in audit:
                await trio.sleep(0.5)  # the work
                processed += 1

        nursery.start_soon(consume)
        for i in range(6):
            await broker.publish(f"orders.{i}.paid", i)
        broker.publish_nowait("feed", 0)
        broker.publish_nowait("feed", 1)  # cut off
        for _ in range(2):
            one.receive_nowait()
        await trio.sleep(10)  # audit has processed all six and waits
        assert processed == 6
        found = points(memory)
        totals = broker.statistics()
        sent = (("messaging.operation.name", "send"), SYSTEM[0])
        assert found[("messaging.client.sent.messages", sent)].value == 8
        assert totals.published == 8
        assert found[("trio_pubsub.subscription.disconnected", SYSTEM)].value == 1
        for sub in (audit, metrics):
            stats = sub.statistics()
            assert found[("messaging.client.consumed.messages", of(sub))].value == (
                stats.received
            )
            assert found[("trio_pubsub.subscription.dropped", of(sub))].value == (
                stats.dropped
            )
            assert found[("trio_pubsub.subscription.pending", of(sub))].value == (
                stats.pending
            )
            assert found[("trio_pubsub.subscription.high_water", of(sub))].value == (
                stats.high_water
            )
        assert metrics.statistics().dropped == 4
        # the two billing members share one series: the sum of their counts
        billing = of(one)
        assert found[("messaging.client.consumed.messages", billing)].value == 2
        assert found[("trio_pubsub.subscription.pending", billing)].value == (
            one.statistics().pending + two.statistics().pending
        )
        # process duration: from each hand-over to the next ask, six times
        # (the consumer waits for a seventh now)
        duration = found[
            (
                "messaging.process.duration",
                of(audit, **{"messaging.operation.name": "process"}),
            )
        ]
        assert duration.count == 6
        assert duration.sum == pytest.approx(3.0)
        # from another thread, as a periodic exporter reads: the same
        again = await trio.to_thread.run_sync(points, memory)
        assert again[("messaging.client.sent.messages", sent)].value == 8
        nursery.cancel_scope.cancel()
    instrumentation.uninstrument()
    assert type(broker) is Broker
    assert points(memory) == {} or all(
        name == "messaging.process.duration" for name, _ in points(memory)
    )


async def test_a_publish_carries_its_trace_to_the_consumer_s_span(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    broker = Broker(int)
    instrumentation = instrument(broker, tracer_provider=provider)
    async with broker.subscribe("orders.*", name="audit") as sub:
        await broker.publish("orders.1", 1, headers={"id": "a"})
        broker.publish_nowait("orders.2", 2)
        first = await sub.receive()
        second = sub.receive_nowait()
        assert first.headers["id"] == "a"
        assert "traceparent" in first.headers
        assert "traceparent" in second.headers
        with pytest.raises(trio.WouldBlock):
            sub.receive_nowait()  # asks for a third: the second's span ends
    instrumentation.uninstrument()
    finished = exporter.get_finished_spans()
    producers = [s for s in finished if s.kind is SpanKind.PRODUCER]
    consumers = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert [s.name for s in producers] == ["send", "send"]
    assert [(s.attributes or {})["messaging.destination.name"] for s in producers] == [
        "orders.1",
        "orders.2",
    ]
    assert [s.name for s in consumers] == ["process", "process"]
    for producer, consumer in zip(producers, consumers, strict=True):
        assert producer.context is not None
        (link,) = consumer.links
        assert link.context.trace_id == producer.context.trace_id
        assert link.context.span_id == producer.context.span_id
        attributes = consumer.attributes or {}
        assert attributes["messaging.destination.template"] == "orders.*"
        assert attributes["messaging.destination.subscription.name"] == "audit"
        assert attributes["messaging.system"] == "trio_pubsub"


async def test_a_thread_publisher_made_before_instrument_is_traced(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    broker = Broker(int)
    publisher = broker.thread_publisher()  # before the publishers are rebound
    instrumentation = instrument(broker, tracer_provider=provider)
    async with broker.subscribe("orders.*") as sub:
        with trio.fail_after(30):
            await trio.to_thread.run_sync(publisher.publish, "orders.1", 1)
            await trio.to_thread.run_sync(publisher.flush)
        assert "traceparent" in sub.receive_nowait().headers
    instrumentation.uninstrument()
    producers = [
        s for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER
    ]
    assert [(s.attributes or {})["messaging.destination.name"] for s in producers] == [
        "orders.1"
    ]


async def test_uninstrument_leaves_a_plain_broker(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, memory = reader
    broker = Broker(int)
    instrumentation = instrument(broker, meter_provider=provider)
    with pytest.raises(ValueError, match="instrumented already"):
        instrument(broker, meter_provider=provider)
    async with broker.subscribe("a") as sub:
        clone = sub.clone()
        # Watched through the supported hook: no class changes (issue 28;
        # before, both were an _InstrumentedSubscription until uninstrument)
        assert type(sub) is Subscription
        assert type(clone) is Subscription
        assert type(broker) is Broker
        instrumentation.uninstrument()
        instrumentation.uninstrument()  # idempotent
        assert type(broker) is Broker
        assert type(sub) is Subscription
        assert type(clone) is Subscription
        broker.publish_nowait("a", 1)
        assert sub.receive_nowait().headers == {}
    # the instruments report nothing more
    assert points(memory) == {}
    with pytest.raises(TypeError, match=r"must be a trio_pubsub\.Broker"):
        instrument(object())  # type: ignore[arg-type]
    again = instrument(broker, meter_provider=provider)  # a second time is fine
    again.uninstrument()


async def test_without_a_tracer_headers_are_left_alone(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, _ = reader
    broker = Broker(int)
    instrumentation = instrument(broker, meter_provider=provider)
    async with broker.subscribe("a") as sub:
        await broker.publish("a", 1)
        broker.publish_nowait("a", 2, headers={"k": "v"})
        assert sub.receive_nowait().headers == {}
        assert sub.receive_nowait().headers == {"k": "v"}
    instrumentation.uninstrument()


async def test_bad_headers_are_refused_as_without_instrumentation(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, _ = spans
    broker = Broker(int)
    instrumentation = instrument(broker, tracer_provider=provider)
    with pytest.raises(TypeError, match="headers must be a mapping"):
        await broker.publish("a", 1, headers=[("k", "v")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="headers must be a mapping"):
        broker.publish_nowait("a", 1, headers="k=v")  # type: ignore[arg-type]
    instrumentation.uninstrument()


def total(found: Points, name: str) -> int:
    return sum(point.value for (metric, _), point in found.items() if metric == name)


async def test_what_a_subscription_counted_stays_after_it_leaves_issue_28(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    """Totals never go down, and equal statistics() and Prometheus's.

    Before, a subscription's series went with it: 3 dropped in statistics(),
    0 in the SDK's reader afterwards.
    """
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from trio_pubsub.prometheus import BrokerCollector

    provider, metric_reader = reader
    broker = Broker(int)
    instrumentation = instrument(broker, meter_provider=provider)
    registry = CollectorRegistry()
    registry.register(BrokerCollector(broker, name="b"))
    async with broker.subscribe("a", max_buffer_size=2) as sub:
        for i in range(5):
            broker.publish_nowait("a", i)  # 2 held, 3 dropped
        await sub.receive()
    # left: 1 received, 1 discarded as it left, 4 dropped in all
    async with broker.subscribe("a", max_buffer_size=2) as again:
        broker.publish_nowait("a", 9)
        await again.receive()
        found = points(metric_reader)
        assert total(found, "trio_pubsub.subscription.dropped") == 4
        assert total(found, "messaging.client.consumed.messages") == 2
    found = points(metric_reader)
    assert broker.statistics().dropped == 4
    assert total(found, "trio_pubsub.subscription.dropped") == 4
    assert total(found, "messaging.client.consumed.messages") == 2
    scraped = {
        (sample.name, sample.labels.get("subscription")): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    assert scraped[("trio_pubsub_dropped_total", "")] == 4
    instrumentation.uninstrument()


async def test_a_routers_handlers_are_measured_and_each_attempt_traced_issue_30(
    reader: tuple[MeterProvider, InMemoryMetricReader],
    spans: tuple[TracerProvider, InMemorySpanExporter],
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="trio_pubsub")
    meters, metric_reader = reader
    tracers, exporter = spans
    broker = Broker(int)
    instrument(broker, meter_provider=meters, tracer_provider=tracers)
    router: Router[int] = Router(broker)

    @router.handler("jobs", name="work", retry=Retry(attempts=2, backoff=1.0))
    async def work(message: Message[int]) -> None:
        await trio.sleep(0.5)
        if message.payload < 0:
            raise ValueError("poison")

    handle = instrument_router(router, meter_provider=meters, tracer_provider=tracers)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        with pytest.raises(RuntimeError, match="before serve"):
            instrument_router(router, meter_provider=meters)
        await broker.publish("jobs", 1)
        await broker.publish("jobs", -1)
        await trio.sleep(10)
        found = points(metric_reader)
        router.stop()
    who = (*SYSTEM, ("trio_pubsub.handler.name", "work"))
    assert found["trio_pubsub.handler.received", who].value == 2
    assert found["trio_pubsub.handler.handled", who].value == 1
    assert found["trio_pubsub.handler.retried", who].value == 1
    assert found["trio_pubsub.handler.failed", who].value == 1
    assert found["trio_pubsub.handler.in_flight", who].value == 0
    ok = found[
        "trio_pubsub.handler.duration",
        tuple(sorted((*who, ("trio_pubsub.handler.outcome", "handled")))),
    ]
    assert (ok.count, ok.sum) == (1, pytest.approx(0.5))
    bad = found[
        "trio_pubsub.handler.duration",
        tuple(
            sorted(
                (
                    *who,
                    ("trio_pubsub.handler.outcome", "failed"),
                    ("error.type", "ValueError"),
                )
            )
        ),
    ]
    assert (bad.count, bad.sum) == (2, pytest.approx(1.0))
    # one consumer span per attempt, linked to the publish's producer span
    finished = exporter.get_finished_spans()
    producers = {
        span.context.span_id: span
        for span in finished
        if span.kind is SpanKind.PRODUCER and span.name == "send"
    }
    attempts = [
        span
        for span in finished
        if span.kind is SpanKind.CONSUMER
        and (span.attributes or {}).get("trio_pubsub.handler.name") == "work"
    ]
    assert len(attempts) == 3
    for span in attempts:
        (link,) = span.links
        assert link.context.span_id in producers
    failed = [s for s in attempts if (s.attributes or {}).get("error.type")]
    assert [s.attributes["error.type"] for s in failed] == ["ValueError"] * 2  # type: ignore[index]
    assert all(s.status.status_code.name == "ERROR" for s in failed)
    handle.uninstrument()
    handle.uninstrument()  # idempotent
    assert not [
        key
        for key in points(metric_reader)
        if key[0].startswith("trio_pubsub.handler.")
        and key[0] != "trio_pubsub.handler.duration"
    ]
