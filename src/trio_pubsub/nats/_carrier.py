"""The seam between the link and what carries messages out over its connection.

The link (``_link.py``) owns the thread, the connection, the callbacks and
the queue of batches from the trio side; a carrier takes one batch at a time
in the loop's thread and sends it, settling every message in exactly one of
the link's counters. Core NATS (``_core.CoreNats``: PUB, then PING/PONG) is
the first carrier; one for JetStream (publish acknowledgements, dedupe ids)
sits beside it without the link changing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._link import Outgoing


class Carrier(Protocol):
    """What carries batches out, in the loop's thread."""

    async def carry(self, batch: list[Outgoing]) -> None:
        """Send ``batch``; each message ends in one of the link's counters.

        ``exported`` (the server has it), ``unconfirmed`` (sent as the
        connection broke), ``refused`` (not sent: refused, the connection
        closed for good, or the bridge closed first: then this is cancelled
        and counts what is left before it re-raises) or ``expired`` (a
        request nobody waits for any more). The link counts the batch as
        settled once this returns or raises.
        """
        ...
