"""The public surface is exactly SPEC.md's names."""

from __future__ import annotations

import trio

import trio_pubsub

SPEC_NAMES = {
    "Broker",
    "BrokerClosedError",
    "BrokerError",
    "BrokerStatistics",
    "HandlerStatistics",
    "InvalidSubjectError",
    "Lagged",
    "Message",
    "NoRespondersError",
    "OverflowPolicy",
    "Retry",
    "Router",
    "SlowConsumerError",
    "Subscription",
    "SubscriptionInfo",
    "SubscriptionStatistics",
    "subject_matches",
    "validate_pattern",
    "validate_subject",
}
# Beyond SPEC's names: the type of what broker.thread_publisher() returns (SPEC
# calls it "a handle"), for users' annotations.
# And the type of Subscription.state (issue 30: a public state for a
# subscription cut off by DISCONNECT).
BEYOND_SPEC = {
    "Dedupe",
    "Leased",
    "Middleware",
    "Source",
    "SubscriptionState",
    "ThreadPublisher",
}
TYPE_ALIASES = {"Middleware"}  # (no __module__ of their own to set)


def test_all_is_the_spec_names_sorted() -> None:
    """__all__ lists the public names of SPEC.md (and BEYOND_SPEC), sorted."""
    assert set(trio_pubsub.__all__) == SPEC_NAMES | BEYOND_SPEC
    assert trio_pubsub.__all__ == sorted(trio_pubsub.__all__)


def test_public_names_live_in_the_package() -> None:
    """Reprs and tracebacks show trio_pubsub.X, not a private module."""
    for name in set(trio_pubsub.__all__) - TYPE_ALIASES:
        assert getattr(trio_pubsub, name).__module__ == "trio_pubsub", name


def test_error_tree() -> None:
    """Each error has the library base and a builtin or trio parent."""
    assert issubclass(trio_pubsub.InvalidSubjectError, trio_pubsub.BrokerError)
    assert issubclass(trio_pubsub.InvalidSubjectError, ValueError)
    assert issubclass(trio_pubsub.BrokerClosedError, trio_pubsub.BrokerError)
    assert issubclass(trio_pubsub.BrokerClosedError, trio.ClosedResourceError)
    assert issubclass(trio_pubsub.SlowConsumerError, trio_pubsub.BrokerError)
    assert issubclass(trio_pubsub.SlowConsumerError, trio.BrokenResourceError)
    assert issubclass(trio_pubsub.NoRespondersError, trio_pubsub.BrokerError)
    assert issubclass(trio_pubsub.BrokerError, Exception)


def test_py_typed_ships() -> None:
    """The package is marked as typed."""
    from importlib.resources import files

    assert files("trio_pubsub").joinpath("py.typed").is_file()


def test_the_integrations_export_what_spec_and_reference_name() -> None:
    """trio_pubsub.prometheus, .otel and .testing: their __all__, sorted."""
    from trio_pubsub import otel, prometheus, testing

    assert prometheus.__all__ == [
        "BridgeCollector",
        "BrokerCollector",
        "JetStreamCollector",
        "RouterCollector",
    ]
    assert otel.__all__ == [
        "Instrumentation",
        "JetStreamInstrumentation",
        "RouterInstrumentation",
        "instrument",
        "instrument_jetstream",
        "instrument_router",
    ]
    assert testing.__all__ == [
        "Recording",
        "Serving",
        "drain",
        "patterns",
        "patterns_matching",
        "patterns_near",
        "recorder",
        "reference_match",
        "serving",
        "subjects",
        "subjects_matching",
        "subjects_near",
        "tokens",
    ]
    for module in (prometheus, otel, testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_the_nats_package_exports_its_names_issue_31() -> None:
    """trio_pubsub.nats: the bridges, JetStream's names (SPEC's and beyond), codecs."""
    from trio_pubsub import nats

    assert nats.__all__ == [
        "Bridge",
        "BridgeStatistics",
        "Consumer",
        "DurableMessage",
        "JetStreamBridge",
        "JetStreamStatistics",
        "StoredMessage",
        "decode_bytes",
        "decode_json",
        "decode_str",
        "encode_bytes",
        "encode_json",
        "encode_str",
        "open_bridge",
        "open_jetstream",
    ]
    for name in nats.__all__:
        assert hasattr(nats, name), name
