"""The fixtures the pytest plugin registers when the ``testing`` extra is there."""

from __future__ import annotations

import typing

import pytest

# trio_pubsub.testing is the testing extra's own import: without hypothesis
# this module does not import, and the plugin registers nothing.
from . import Broker, testing as _testing  # noqa: F401
from ._pytest_plugin import MARKER

if typing.TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["broker", "broker_factory"]


@pytest.fixture
def broker_factory(request: pytest.FixtureRequest) -> Callable[..., Broker[typing.Any]]:
    """Make brokers for one test: ``broker_factory(message_type=None, **options)``.

    Takes what :class:`~trio_pubsub.Broker` takes. Options given to the test's
    ``@pytest.mark.trio_pubsub(...)`` marker are the defaults; those given to
    the call win. Each call makes a new broker; a broker needs no closing
    once the test's trio run has ended.
    """
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None and marker.args:
        raise TypeError(
            f"@pytest.mark.{MARKER} takes Broker options by name only, "
            f"got {marker.args!r}"
        )
    defaults: dict[str, typing.Any] = {} if marker is None else dict(marker.kwargs)

    def make(
        message_type: typing.Any = None, /, **options: typing.Any
    ) -> Broker[typing.Any]:
        return Broker(message_type, **(defaults | options))

    return make


@pytest.fixture
def broker(broker_factory: Callable[..., Broker[typing.Any]]) -> Broker[typing.Any]:
    """A new broker for the test, with the options of its ``trio_pubsub`` marker."""
    return broker_factory()
