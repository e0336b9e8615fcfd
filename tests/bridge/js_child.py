"""A process for the JetStream crash tests: a producer or a consumer.

``python js_child.py produce URL OUTBOX START TOTAL``: publishes ``START`` ..
``TOTAL - 1`` through an outbox, each with ``msg_id=m-<i>``, and prints each
``i`` once ``publish`` has returned.

``python js_child.py share URL``: consumes ``work.>`` on the durable
``shared``, printing each message's id and acking it, until killed.

``python js_child.py consume URL EFFECTS``: consumes ``work.>`` on the durable
``workers``; for each message it records its effect in its own SQLite file,
keyed by the message id (so a second delivery adds no second effect), prints
the id, then acks. It runs until killed, or, with the environment variable
``DONE`` set, until the file holds that many effects.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from typing import Any

import trio

from trio_pubsub import Broker
from trio_pubsub.nats import decode_json, encode_json, open_jetstream


async def produce(url: str, outbox: str, start: int, total: int) -> None:
    broker = Broker(int)
    async with open_jetstream(
        broker,
        url,
        stream="KILL",
        subjects=["kill.>"],
        encode=encode_json,
        decode=decode_json,
        outbox=outbox,
    ) as js:
        for i in range(start, total):
            await js.publish("kill.x", i, msg_id=f"m-{i}")
            print(i, flush=True)


async def consume(url: str, effects: str) -> None:
    db = sqlite3.connect(effects, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS effect (id TEXT PRIMARY KEY, n INT)")
    db.execute("CREATE TABLE IF NOT EXISTS attempt (id TEXT, delivery INT)")
    done_at = int(os.environ.get("DONE", "0"))
    broker = Broker[Any]()
    async with (
        open_jetstream(
            broker, url, stream="WORK", encode=encode_json, decode=decode_json
        ) as js,
        js.consumer("work.>", durable="workers", ack_wait=1.0, batch=8) as jobs,
    ):
        async for job in jobs:
            msg_id = job.message.headers["Nats-Msg-Id"]
            db.execute("INSERT INTO attempt VALUES (?, ?)", (msg_id, job.deliveries))
            await trio.sleep(0.01)  # the work: a kill may land here
            # the effect and its key in one transaction: at most once each
            db.execute(
                "INSERT OR IGNORE INTO effect VALUES (?, ?)",
                (msg_id, job.message.payload),
            )
            print(msg_id, flush=True)
            await job.ack()
            (effects_now,) = db.execute("SELECT COUNT(*) FROM effect").fetchone()
            if done_at and effects_now >= done_at:
                return


async def share(url: str) -> None:
    broker = Broker[Any]()
    async with (
        open_jetstream(
            broker, url, stream="WORK", encode=encode_json, decode=decode_json
        ) as js,
        js.consumer("work.>", durable="shared", ack_wait=30.0, batch=4) as jobs,
    ):
        async for job in jobs:
            await trio.sleep(0.005)  # some work: the other process gets its turn
            print(job.message.headers["Nats-Msg-Id"], flush=True)
            await job.ack()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "share":
        trio.run(share, args[0])
    elif mode == "produce":
        trio.run(produce, args[0], args[1], int(args[2]), int(args[3]))
    else:
        trio.run(consume, args[0], args[1])
