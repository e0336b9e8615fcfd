"""JetStream's counters in Prometheus and OpenTelemetry, and a trace across it.

A real nats-server with JetStream; a real prometheus_client HTTP endpoint on
127.0.0.1 scraped over HTTP; the OpenTelemetry SDK's in-memory reader and
span exporter (issue 31).
"""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from trio_pubsub import Broker, Message, Retry, Router
from trio_pubsub.nats import decode_json, encode_json, open_jetstream
from trio_pubsub.otel import instrument, instrument_jetstream, instrument_router
from trio_pubsub.prometheus import JetStreamCollector

from .server import NatsServer
from .test_jetstream import plain, stored

GUARD = 30  # seconds: a guard against hanging, never a measure


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=GUARD) as response:
            body: bytes = response.read()
            return body.decode()

    found = {}
    for family in text_string_to_metric_families(await trio.to_thread.run_sync(fetch)):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_counters_are_exported_and_a_trace_crosses_the_stream(
    js_server: NatsServer,
) -> None:
    registry = CollectorRegistry()
    http, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    shop, billing = Broker[Any](), Broker[Any]()
    instrument(shop, meter_provider=meters, tracer_provider=tracers)
    router: Router[Any] = Router(billing)
    handled = trio.Event()
    try:
        with trio.fail_after(GUARD):
            async with (
                open_jetstream(
                    shop,
                    js_server.url,
                    stream="ORDERS",
                    subjects=["orders.>"],
                    outbound=["orders.>"],
                    encode=encode_json,
                    decode=decode_json,
                ) as out,
                open_jetstream(
                    billing,
                    js_server.url,
                    stream="ORDERS",
                    encode=encode_json,
                    decode=decode_json,
                ) as into,
                into.consumer("orders.>", durable="billing") as consumer,
            ):
                registry.register(JetStreamCollector(out, name="shop"))
                instrument_jetstream(out, meter_provider=meters)

                @router.handler(source=consumer, name="bill", retry=Retry(attempts=2))
                async def bill(message: Message[Any]) -> None:
                    handled.set()

                instrument_router(router, tracer_provider=tracers)
                async with trio.open_nursery() as nursery:
                    await nursery.start(router.serve)
                    await shop.publish("orders.1", {"amount": 10})  # exported
                    await handled.wait()
                    router.stop()
                samples = await scrape(f"http://127.0.0.1:{http.server_port}/metrics")
                data = reader.get_metrics_data()
    finally:
        http.shutdown()
        http.server_close()
        thread.join(GUARD)
        meters.shutdown()
    labels = (("jetstream", "shop"), ("stream", "ORDERS"))
    assert samples["trio_pubsub_jetstream_stored_total", labels] == 1
    assert samples["trio_pubsub_jetstream_dropped_total", labels] == 0
    assert samples["trio_pubsub_jetstream_outbox_pending", labels] == 0
    points = {
        metric.name: getattr(metric.data.data_points[0], "value", None)
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name.startswith("trio_pubsub.jetstream.")
    }
    assert points["trio_pubsub.jetstream.stored"] == 1
    assert points["trio_pubsub.jetstream.outbox_pending"] == 0
    # the publish's producer span, and the handler's consumer span linked to it
    spans = exporter.get_finished_spans()
    (send,) = [s for s in spans if s.kind is SpanKind.PRODUCER]
    (process,) = [
        s
        for s in spans
        if s.kind is SpanKind.CONSUMER
        and (s.attributes or {}).get("trio_pubsub.handler.name") == "bill"
    ]
    (link,) = process.links
    assert link.context.trace_id == send.context.trace_id
    assert link.context.span_id == send.context.span_id


async def test_a_jetstream_publish_makes_a_producer_span_that_crosses_the_stream(
    js_server: NatsServer,
) -> None:
    """``instrument_jetstream(tracer_provider=...)``: ``js.publish`` is traced.

    The span is the caller's span's child, its context is stored in the
    message's headers (read back with plain nats-py), a handler's consumer
    span in another broker links to it, and a publish the server refuses
    ends its span with the error.
    """
    exporter = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    shop, billing = Broker[Any](), Broker[Any]()
    router: Router[Any] = Router(billing)
    handled = trio.Event()

    async def make(js: Any) -> None:
        await js.add_stream(name="PAY", subjects=["pay.>"], max_msg_size=256)

    await plain(js_server.url, make)
    with trio.fail_after(GUARD):
        async with (
            open_jetstream(
                shop,
                js_server.url,
                stream="PAY",
                encode=encode_json,
                decode=decode_json,
            ) as out,
            open_jetstream(
                billing,
                js_server.url,
                stream="PAY",
                encode=encode_json,
                decode=decode_json,
            ) as into,
            into.consumer("pay.>", durable="billing") as consumer,
        ):
            instrumentation = instrument_jetstream(out, tracer_provider=tracers)

            @router.handler(source=consumer, name="bill")
            async def bill(message: Message[Any]) -> None:
                handled.set()

            instrument_router(router, tracer_provider=tracers)
            async with trio.open_nursery() as nursery:
                await nursery.start(router.serve)
                with tracers.get_tracer("shop").start_as_current_span("checkout"):
                    await out.publish("pay.1", {"amount": 10}, msg_id="pay-1")
                with pytest.raises(ValueError, match="refused"):
                    await out.publish("pay.2", "x" * 1000)
                await handled.wait()
                router.stop()
            instrumentation.uninstrument()
            await out.publish("pay.3", {"amount": 30})  # no span now
    spans = exporter.get_finished_spans()
    sends = [s for s in spans if s.kind is SpanKind.PRODUCER]
    assert [(s.attributes or {}).get("messaging.destination.name") for s in sends] == [
        "pay.1",
        "pay.2",
    ]
    send, refused = sends
    (checkout,) = [s for s in spans if s.name == "checkout"]
    assert send.parent is not None
    assert send.parent.span_id == checkout.context.span_id
    attributes = send.attributes or {}
    assert attributes["messaging.message.id"] == "pay-1"
    assert attributes["trio_pubsub.jetstream.stream"] == "PAY"
    assert refused.status.status_code is StatusCode.ERROR
    (process,) = [s for s in spans if s.kind is SpanKind.CONSUMER]
    (link,) = process.links
    assert link.context.span_id == send.context.span_id
    # the context is in the stored message's headers, as any client reads it
    headers = [h for _, _, h in await stored(js_server.url, "PAY")]
    trace_id = format(send.context.trace_id, "032x")
    assert trace_id in headers[0]["traceparent"]
    assert "traceparent" not in headers[1]  # pay.3, after uninstrument
