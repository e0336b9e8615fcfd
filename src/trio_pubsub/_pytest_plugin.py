"""The pytest plugin: ``broker`` and ``broker_factory`` fixtures.

pytest loads this module through the package's ``pytest11`` entry point in
every project where trio-pubsub is installed; it registers its fixtures and
its marker only when the ``testing`` extra is there too (``hypothesis``
importable), so that installing the library alone adds no fixture names to
anyone's tests. See :doc:`/how-to/property-test-routing`.
"""

from __future__ import annotations

import typing

if typing.TYPE_CHECKING:
    import pytest

MARKER = "trio_pubsub"


def pytest_configure(config: pytest.Config) -> None:
    """Register the fixtures and the marker if the ``testing`` extra is installed."""
    try:
        from . import _pytest_fixtures
    except ImportError:
        # The extra is missing: hypothesis (or trio_pubsub.testing) cannot be
        # imported. Nothing is registered; the library works as before.
        return
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): Broker options for the broker fixture of this test",
    )
    config.pluginmanager.register(_pytest_fixtures, "trio_pubsub.fixtures")
