"""A trace crosses processes through the NATS bridge's headers (issue 18).

Two brokers, each instrumented, bridged through a real nats-server: the
consumer span in the second links to the producer span of the first.
"""

from __future__ import annotations

from typing import Any

import trio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

from trio_pubsub import Broker
from trio_pubsub.nats import decode_json, encode_json, open_bridge
from trio_pubsub.otel import instrument

from .server import NatsServer

GUARD = 20  # seconds: a guard against hanging, never a measure


async def test_the_consumer_span_across_nats_links_to_the_producer_span(
    nats_server: NatsServer,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    here, there = Broker[Any](), Broker[Any]()
    traced = [instrument(b, tracer_provider=provider) for b in (here, there)]
    json: dict[str, Any] = {"encode": encode_json, "decode": decode_json}
    async with (
        open_bridge(here, nats_server.url, outbound=["orders.>"], **json),
        open_bridge(there, nats_server.url, inbound=["orders.>"], **json),
        there.subscribe("orders.>", name="billing") as sub,
    ):
        await here.publish("orders.7.paid", {"order": 7})
        with trio.fail_after(GUARD):
            message = await sub.receive()
        assert "traceparent" in message.headers
        with trio.fail_after(GUARD), trio.move_on_after(0.05):
            await sub.receive()  # asks for the next: the consumer span ends
    for instrumentation in traced:
        instrumentation.uninstrument()
    finished = exporter.get_finished_spans()
    (producer,) = [s for s in finished if s.kind is SpanKind.PRODUCER]
    (consumer,) = [
        s
        for s in finished
        if s.kind is SpanKind.CONSUMER
        and s.attributes is not None
        and s.attributes["messaging.destination.subscription.name"] == "billing"
    ]
    assert producer.context is not None
    (link,) = consumer.links
    assert link.context.trace_id == producer.context.trace_id
    assert link.context.span_id == producer.context.span_id
    provider.shutdown()
