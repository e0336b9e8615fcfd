from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import NatsServer


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One nats-server for the whole session (tests that kill it make their own)."""
    server = NatsServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_server() -> Iterator[NatsServer]:
    """A nats-server for one test, which it may kill and restart."""
    server = NatsServer()
    server.start()
    yield server
    server.stop()
