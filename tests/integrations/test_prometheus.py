"""trio_pubsub.prometheus against a real exposition scraped over HTTP (issue 18).

prometheus_client serves the registry on 127.0.0.1 from its own thread; the
test fetches it with urllib in a worker thread, as Prometheus would, and
parses it with prometheus_client's own parser.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from trio_pubsub import Broker, Message, OverflowPolicy, Retry, Router
from trio_pubsub.prometheus import BrokerCollector, RouterCollector

GUARD = 20  # seconds: a guard against hanging, never a measure

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def served() -> Iterator[tuple[CollectorRegistry, str]]:
    registry = CollectorRegistry()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield registry, f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    server.server_close()
    thread.join(GUARD)


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


async def scrape(url: str) -> Samples:
    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=GUARD) as response:
            body: bytes = response.read()
            return body.decode()

    return parse(await trio.to_thread.run_sync(fetch))


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


async def workload(broker: Broker[int]) -> None:
    """Drops, a disconnect, a queue group, and a subscription that leaves."""
    for i in range(3):
        async with broker.subscribe("orders.>", name="brief") as brief:
            await broker.publish(f"orders.{i}.created", i)
            brief.receive_nowait()
    for i in range(20):
        broker.publish_nowait(f"orders.{i}.paid", i)
    broker.publish_nowait("feed.tick", 0)
    broker.publish_nowait("feed.tick", 1)  # the feed's second drop cuts it off


async def test_the_scraped_values_equal_the_statistics(
    served: tuple[CollectorRegistry, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="trio_pubsub")
    registry, url = served
    broker = Broker(int)
    registry.register(BrokerCollector(broker, name="shop"))
    async with (
        broker.subscribe("orders.>", name="audit", max_buffer_size=1000) as audit,
        broker.subscribe("orders.*.paid", name="metrics", max_buffer_size=2) as metrics,
        broker.subscribe(
            "orders.*.paid", queue="billing", name="billing", max_buffer_size=4
        ),
        broker.subscribe(
            "orders.*.paid", queue="billing", name="billing", max_buffer_size=4
        ),
        broker.subscribe("feed.>", policy=OverflowPolicy.DISCONNECT, max_buffer_size=1),
    ):
        await workload(broker)
        await trio.sleep(0.5)  # so that pending messages have an age
        audit.receive_nowait()
        samples = await scrape(url)
        totals = broker.statistics()
        infos = broker.subscriptions()
        shop = labels(broker="shop")
        assert samples[("trio_pubsub_published_total", shop)] == totals.published
        assert samples[("trio_pubsub_disconnected_total", shop)] == 1
        assert samples[("trio_pubsub_subscriptions", shop)] == totals.subscriptions
        assert totals.subscriptions == 4  # the feed was cut off
        for name in ("delivered", "dropped"):
            series = {
                key: value
                for key, value in samples.items()
                if key[0] == f"trio_pubsub_{name}_total"
            }
            # the series of the open ones plus one for those that left
            assert sum(series.values()) == getattr(totals, name)
        for info in infos:
            if info.queue is not None:
                continue  # the two billing members share one series, below
            key = labels(
                broker="shop", subscription=info.name, pattern=info.pattern, queue=""
            )
            stats = info.statistics
            assert samples[("trio_pubsub_delivered_total", key)] == stats.delivered
            assert samples[("trio_pubsub_dropped_total", key)] == stats.dropped
            assert samples[("trio_pubsub_pending", key)] == stats.pending
            assert samples[("trio_pubsub_high_water", key)] == stats.high_water
            age = samples[("trio_pubsub_oldest_pending_age_seconds", key)]
            assert 0.5 <= age < GUARD
        members = [info.statistics for info in infos if info.queue == "billing"]
        billing = labels(
            broker="shop",
            subscription="billing",
            pattern="orders.*.paid",
            queue="billing",
        )
        assert samples[("trio_pubsub_delivered_total", billing)] == sum(
            s.delivered for s in members
        )
        assert samples[("trio_pubsub_dropped_total", billing)] == sum(
            s.dropped for s in members
        )
        assert samples[("trio_pubsub_pending", billing)] == 8
        left = labels(broker="shop", subscription="", pattern="", queue="")
        # "brief" received one of each of its three, and the feed left with
        # one pending: both count there now
        assert samples[("trio_pubsub_delivered_total", left)] == 3 + 1
        assert metrics.statistics().dropped == 18
        assert {label for _, key in samples for label, _ in key} <= {
            "broker",
            "subscription",
            "pattern",
            "queue",
        }
        # counters end in _total, everything is in base units
        names = {name for name, _ in samples}
        assert all(n.endswith(("_total", "_seconds")) or n in GAUGES for n in names), (
            names
        )


GAUGES = {
    "trio_pubsub_subscriptions",
    "trio_pubsub_pending",
    "trio_pubsub_high_water",
}


def test_a_scrape_after_the_run_reads_the_final_counts() -> None:
    registry = CollectorRegistry()
    broker = Broker(int)
    registry.register(BrokerCollector(broker))

    async def main() -> None:
        async with broker.subscribe("a", name="a"):
            broker.publish_nowait("a", 1)
            # from the trio thread itself: read at once
            inside = parse(generate_latest(registry).decode())
            key = labels(broker="default", subscription="a", pattern="a", queue="")
            assert inside[("trio_pubsub_pending", key)] == 1

    trio.run(main)
    after = parse(generate_latest(registry).decode())  # the run has ended
    assert after[("trio_pubsub_published_total", labels(broker="default"))] == 1
    assert after[("trio_pubsub_subscriptions", labels(broker="default"))] == 0


def test_a_broker_never_used_in_a_run_reads_zeros() -> None:
    registry = CollectorRegistry()
    registry.register(BrokerCollector(Broker[Any](), name="idle"))
    samples = parse(generate_latest(registry).decode())
    assert samples[("trio_pubsub_published_total", labels(broker="idle"))] == 0


def test_one_collector_reports_several_brokers() -> None:
    """A registry takes one collector of these names; it takes more brokers."""
    registry = CollectorRegistry()
    first, second = Broker[Any](), Broker[Any]()
    collector = BrokerCollector(first, name="first")
    collector.add_broker(second, name="second")
    registry.register(collector)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(BrokerCollector(first, name="other"))
    with pytest.raises(ValueError, match="reported as 'second' already"):
        collector.add_broker(first, name="second")
    with pytest.raises(TypeError, match="non-empty str"):
        BrokerCollector(first, name="")

    async def main() -> None:
        first.publish_nowait("a", 1)
        second.publish_nowait("a", 1)
        second.publish_nowait("b", 2)

    trio.run(main)
    samples = parse(generate_latest(registry).decode())
    assert samples[("trio_pubsub_published_total", labels(broker="first"))] == 1
    assert samples[("trio_pubsub_published_total", labels(broker="second"))] == 2


async def test_a_routers_handlers_are_scraped_with_their_durations_issue_30(
    served: tuple[CollectorRegistry, str],
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="trio_pubsub")
    registry, url = served
    broker = Broker(int)
    router: Router[int] = Router(broker)

    @router.handler(
        "jobs", name="work", retry=Retry(attempts=2, backoff=1.0), dead_letter="dead"
    )
    async def work(message: Message[int]) -> None:
        await trio.sleep(0.02 if message.payload >= 0 else 3.0)
        if message.payload < 0:
            raise ValueError("poison")

    collector = RouterCollector(router, name="shop")
    registry.register(collector)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.serve)
        with pytest.raises(RuntimeError, match="before serve"):
            collector.add_router(router, name="late")  # (nothing is added)
        for payload in (1, 2, -1):
            await broker.publish("jobs", payload)
        await trio.sleep(30)
        # scraped from prometheus_client's own thread, over HTTP
        samples = await scrape(url)
        router.stop()
    who = {"router": "shop", "handler": "work"}
    assert samples["trio_pubsub_handler_received_total", labels(**who)] == 3
    assert samples["trio_pubsub_handler_handled_total", labels(**who)] == 2
    assert samples["trio_pubsub_handler_retried_total", labels(**who)] == 1
    assert samples["trio_pubsub_handler_dead_lettered_total", labels(**who)] == 1
    assert samples["trio_pubsub_handler_failed_total", labels(**who)] == 0
    assert samples["trio_pubsub_handler_duplicates_total", labels(**who)] == 0
    assert samples["trio_pubsub_handler_in_flight", labels(**who)] == 0
    handled = labels(**who, outcome="handled")
    failed = labels(**who, outcome="failed")
    assert samples["trio_pubsub_handler_duration_seconds_count", handled] == 2
    assert samples["trio_pubsub_handler_duration_seconds_sum", handled] == (
        pytest.approx(0.04)
    )
    assert samples["trio_pubsub_handler_duration_seconds_count", failed] == 2
    assert samples["trio_pubsub_handler_duration_seconds_sum", failed] == (
        pytest.approx(6.0)
    )
    # 0.02 s falls in the 0.025 bucket; 3 s in the 5 s one
    bucket = "trio_pubsub_handler_duration_seconds_bucket"
    assert samples[bucket, labels(**who, outcome="handled", le="0.01")] == 0
    assert samples[bucket, labels(**who, outcome="handled", le="0.025")] == 2
    assert samples[bucket, labels(**who, outcome="failed", le="2.5")] == 0
    assert samples[bucket, labels(**who, outcome="failed", le="5.0")] == 2
    assert samples[bucket, labels(**who, outcome="failed", le="+Inf")] == 2
    assert "late" not in generate_latest(registry).decode()
