from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def js_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with JetStream for one test, its store in ``tmp_path``."""
    server = NatsServer(store=tmp_path / "store")
    server.start()
    yield server
    server.stop()
