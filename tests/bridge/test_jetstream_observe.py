"""JetStream's counters in Prometheus and OpenTelemetry, and a trace across it.

A real nats-server with JetStream; a real prometheus_client HTTP endpoint on
127.0.0.1 scraped over HTTP; the OpenTelemetry SDK's in-memory reader and
span exporter (issue 31).
"""

from __future__ import annotations

import urllib.request
from typing import Any

import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from trio_pubsub import Broker, Message, Retry, Router
from trio_pubsub.nats import decode_json, encode_json, open_jetstream
from trio_pubsub.otel import instrument, instrument_jetstream, instrument_router
from trio_pubsub.prometheus import JetStreamCollector

from .server import NatsServer

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
