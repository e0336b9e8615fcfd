"""Core NATS as a carrier: PUB, then a PING/PONG round trip to confirm.

Core NATS acknowledges nothing per message; what a PONG confirms is that the
server has processed everything written before its PING. So a batch is
written, then confirmed as a whole: ``exported`` once the PONG comes back on
the same, unbroken connection, ``unconfirmed`` if the connection broke in
between (it may or may not have arrived), ``refused`` if it could not be
written, ``expired`` for a request whose deadline passed first.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import nats.errors
from nats.aio.client import Client

if TYPE_CHECKING:
    from ._link import Link, Outgoing


class CoreNats:
    """The carrier of plain NATS publishes (see ``_carrier.Carrier``)."""

    def __init__(self, link: Link) -> None:
        self._link = link

    async def carry(self, batch: list[Outgoing]) -> None:
        """Publish and confirm ``batch``; each message ends in one counter.

        If the bridge closes meanwhile (this task is cancelled), what was not
        written yet is refused, and what was written and not confirmed is
        unconfirmed, so the ledger stays exact.
        """
        nc = self._link.nc
        assert nc is not None
        assert self._link.up is not None
        counters = self._link.counters
        sent = 0  # messages of the batch taken in hand so far
        in_doubt = 0  # of those, written (or being written) and not confirmed
        try:
            while True:
                # Publish only while connected: during an outage the batch
                # waits here, and those after it in the bridge's bounded queue.
                await self._link.up.wait()
                if counters.closed:
                    self._link.refuse(len(batch) - sent, "the connection is closed")
                    return
                if not nc.is_connected:  # broken, and nats-py has not said so
                    await asyncio.sleep(0.01)
                    continue
                breaks = self._link.breaks
                for subject, data, headers, reply, deadline in batch[sent:]:
                    # (it may break during an await below)
                    # (nats-py's own state, read here rather than through the
                    # client's plainly_connected: once per message, a property
                    # would cost the send loop more than anything else here)
                    connected = nc._status == Client.CONNECTED
                    if not (connected or _is_up(nc)):
                        break
                    sent += 1
                    if deadline is not None and time.monotonic() >= deadline:
                        self._expire(subject)
                        continue
                    in_doubt += 1
                    try:
                        if headers is None and connected:
                            await nc.publish_checked(subject, data, reply or "")
                        else:
                            await nc.publish(
                                subject, data, reply=reply or "", headers=headers
                            )
                    except nats.errors.MaxPayloadError:
                        in_doubt -= 1
                        self._link.refuse(1, "larger than the server's limit", subject)
                    except nats.errors.Error as error:
                        in_doubt -= 1
                        self._link.refuse(1, type(error).__name__, subject)
                published = in_doubt
                confirmed = await self._confirm(breaks)  # (in doubt while it waits)
                in_doubt = 0
                if confirmed:
                    counters.exported += published
                elif published:
                    self._unconfirmed(published, "as the connection broke")
                if sent == len(batch):
                    return
        except asyncio.CancelledError:
            self._link.refuse(
                len(batch) - sent, "the bridge closed before sending them"
            )
            if in_doubt:
                self._unconfirmed(in_doubt, "as the bridge closed")
            raise

    def _expire(self, subject: str) -> None:
        self._link.counters.expired += 1
        self._link.warn(
            "expired",
            "NATS bridge: a request on %r was not sent: its deadline passed "
            "while it waited to go out",
            subject,
        )

    def _unconfirmed(self, count: int, when: str) -> None:
        self._link.counters.unconfirmed += count
        self._link.warn(
            "unconfirmed",
            "NATS bridge: %d message(s) were sent %s and may not have reached "
            "the server",
            count,
            when,
        )

    async def _confirm(self, breaks: int) -> bool:
        """Whether the server has processed all sent before (a PING/PONG).

        A flush is never cancelled (nats-py would then resolve a cancelled
        future); one outlived by a disconnection finishes, or times out, alone.
        """
        nc = self._link.nc
        assert nc is not None
        reader = nc.reader
        if self._link.breaks != breaks or not nc.is_connected or _ended(reader):
            return False
        # (with its read loop ended, nats-py's flush returns at once, without
        # the round trip: hence the check before, and after)
        # (nats-py annotates the timeout as an int; asyncio.wait_for takes any)
        flush = asyncio.ensure_future(nc.flush(timeout=self._link.flush_timeout))  # type: ignore[arg-type]
        flush.add_done_callback(_consume)
        assert self._link.up is not None
        while not flush.done():
            if self._link.breaks != breaks:
                return False
            # Wake up on the PONG, or every 50 ms to look for a disconnection.
            await asyncio.wait([flush], timeout=0.05)
        return (
            flush.exception() is None
            and self._link.breaks == breaks
            and nc.reader is reader
            and not _ended(reader)
        )


def _ended(task: asyncio.Task[None] | None) -> bool:
    return task is None or task.done()


def _is_up(nc: Client) -> bool:
    return nc.is_connected


def _consume(task: asyncio.Future[None]) -> None:
    """Retrieve a background flush's outcome, so that asyncio does not log it."""
    if not task.cancelled():
        task.exception()
