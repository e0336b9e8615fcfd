"""The pytest plugin, run as users run it: pytest in a process of its own."""

from __future__ import annotations

import textwrap

import pytest

from trio_pubsub import Broker, OverflowPolicy

pytest_plugins = ["pytester"]

USER_TESTS = """
import pytest
import trio

from trio_pubsub import Broker, OverflowPolicy


@pytest.mark.trio
async def test_the_broker_fixture_carries_messages(broker):
    assert isinstance(broker, Broker)
    async with broker.subscribe("orders.>") as sub:
        await broker.publish("orders.1", "paid")
        assert (await sub.receive()).payload == "paid"


@pytest.mark.trio_pubsub(max_buffer_size=1, policy=OverflowPolicy.DROP_NEWEST)
@pytest.mark.trio
async def test_the_marker_sets_the_options(broker):
    async with broker.subscribe("a") as sub:
        broker.publish_nowait("a", 1)
        broker.publish_nowait("a", 2)
        assert sub.statistics().dropped == 1


@pytest.mark.trio_pubsub(max_buffer_size=1)
@pytest.mark.trio
async def test_the_call_wins_over_the_marker(broker_factory):
    typed = broker_factory(int, max_buffer_size=7)
    async with typed.subscribe("x") as sub, broker_factory().subscribe("x") as other:
        assert (sub.max_buffer_size, other.max_buffer_size) == (7, 1)
    assert broker_factory() is not broker_factory()


@pytest.mark.trio_pubsub(8)
def test_a_positional_marker_argument_is_refused(broker):
    pass
"""


def run_user_suite(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=USER_TESTS)
    return pytester.runpytest_subprocess("--strict-markers", "-p", "trio", *args)


def test_the_fixtures_and_the_marker_work_in_a_users_suite(
    pytester: pytest.Pytester,
) -> None:
    result = run_user_suite(pytester)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        ["*TypeError: @pytest.mark.trio_pubsub takes Broker options by name only*"]
    )


def test_the_fixtures_are_listed_with_their_docs(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures")
    result.stdout.fnmatch_lines(
        [
            "broker_factory -- *",
            "*Make brokers for one test*",
            "broker -- *",
            "*A new broker for the test*",
        ]
    )


def test_without_the_testing_extra_nothing_is_registered(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hypothesis that cannot be imported, first on the path: what a
    # project that installed trio-pubsub without [testing] sees.
    blocked = pytester.mkdir("blocked")
    (blocked / "hypothesis").mkdir()
    (blocked / "hypothesis" / "__init__.py").write_text(
        'raise ImportError("hypothesis is not installed here")\n'
    )
    monkeypatch.setenv("PYTHONPATH", str(blocked))
    pytester.makepyfile(
        test_plain=textwrap.dedent(
            """
            def test_needs_the_fixture(broker):
                pass
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:hypothesispytest")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'broker' not found*"])
    markers = pytester.runpytest_subprocess("-p", "no:hypothesispytest", "--markers")
    assert "trio_pubsub(" not in markers.stdout.str()


@pytest.mark.trio_pubsub(policy=OverflowPolicy.DROP_OLDEST)
async def test_the_plugin_is_active_in_this_suite(broker: Broker[object]) -> None:
    # This suite installs the testing extra's hypothesis, so the fixture is here.
    async with broker.subscribe("x") as sub:
        assert sub.policy is OverflowPolicy.DROP_OLDEST
