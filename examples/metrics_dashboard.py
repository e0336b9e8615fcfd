"""Serve a broker's metrics to Prometheus while a small shop runs.

Starts prometheus_client's HTTP server on 127.0.0.1 and prints its address;
point Prometheus (or curl) at it. The shop publishes 200 paid orders to three
kinds of subscriber: a billing queue group that must lose nothing (BLOCK), a
metrics subscription that may drop (DROP_NEWEST, and it never catches up),
and a live feed that is cut off when it lags (DISCONNECT). At the end it
scrapes its own endpoint once, over HTTP, and prints the broker's lines.

Needs the ``prometheus`` extra. ``--hold 60`` keeps serving for a minute after
the shop is done, to look at it from outside.
"""

from __future__ import annotations

import argparse
import logging
import urllib.request
from collections.abc import Awaitable, Callable

import trio
import trio.lowlevel
from prometheus_client import CollectorRegistry, start_http_server

from trio_pubsub import Broker, OverflowPolicy
from trio_pubsub.prometheus import BrokerCollector

ORDERS = 200


async def shop(broker: Broker[int], report: Callable[[], Awaitable[None]]) -> None:
    """Publish the orders; ``report()`` while every subscription is still open."""
    billed = 0
    all_billed = trio.Event()

    async def billing_worker(*, task_status: trio.TaskStatus[None]) -> None:
        async with broker.subscribe(
            "orders.*.paid",
            queue="billing",
            name="billing",
            policy=OverflowPolicy.BLOCK,
            max_buffer_size=4,
        ) as orders:
            task_status.started()
            async for _ in orders:
                await trio.lowlevel.checkpoint()  # charge the card
                nonlocal billed
                billed += 1
                if billed == ORDERS:
                    all_billed.set()

    async with (
        broker.subscribe("orders.>", name="metrics", max_buffer_size=8),
        broker.subscribe(
            "orders.>",
            name="live-feed",
            policy=OverflowPolicy.DISCONNECT,
            max_buffer_size=4,
        ),
        trio.open_nursery() as nursery,
    ):
        for _ in range(2):
            await nursery.start(billing_worker)
        for number in range(ORDERS):
            await broker.publish(f"orders.{number}.paid", number)
        await all_billed.wait()
        await report()
        nursery.cancel_scope.cancel()


async def main(hold: float) -> None:
    broker = Broker(int)
    registry = CollectorRegistry()
    registry.register(BrokerCollector(broker, name="shop"))
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    print(f"serving metrics at {url}")

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            text: bytes = response.read()
            return text.decode()

    async def report() -> None:
        exposition = await trio.to_thread.run_sync(fetch)  # as Prometheus would
        for line in exposition.splitlines():
            if line.startswith(("trio_pubsub_published", "trio_pubsub_dropped")):
                print(line)
        if hold:
            print(f"serving for {hold:g} s more")
            await trio.sleep(hold)

    try:
        await shop(broker, report)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=0.0, metavar="SECONDS")
    logging.getLogger("trio_pubsub").setLevel(logging.ERROR)
    trio.run(main, parser.parse_args().hold)
