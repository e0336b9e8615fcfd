"""trio_pubsub: an in-process, typed publish/subscribe broker for trio.

Modules import one way only, each from those before it in this list:
_errors, _subject, _trie, _retained, _policy, _options, _stats, _metrics, _message,
_log, _inbox, _groups, _reply, _routes, _subscription, _delivery, _threads, _broker,
_port, _handling, _router; and nats/ imports the public API, _port and _log. Only
_inbox parks and wakes tasks by hand (_router's idle workers wait in a trio
ParkingLot); only _inbox, _delivery, _subscription and
_router use trio.lowlevel (_router for Ctrl-C protection and that ParkingLot).
_pytest_plugin and _pytest_fixtures are the pytest plugin, no part of the
core: they import the public API and testing. See the module map in
docs/explanation/design.md.
"""

import contextlib

from ._broker import Broker as Broker
from ._errors import (
    BrokerClosedError as BrokerClosedError,
    BrokerError as BrokerError,
    InvalidSubjectError as InvalidSubjectError,
    Lagged as Lagged,
    NoRespondersError as NoRespondersError,
    SlowConsumerError as SlowConsumerError,
)
from ._handling import (
    Dedupe as Dedupe,
    HandlerStatistics as HandlerStatistics,
    Leased as Leased,
    Middleware as Middleware,
    Retry as Retry,
    Source as Source,
)
from ._inbox import SubscriptionState as SubscriptionState
from ._message import Message as Message
from ._policy import OverflowPolicy as OverflowPolicy
from ._router import Router as Router
from ._stats import (
    BrokerStatistics as BrokerStatistics,
    SubscriptionInfo as SubscriptionInfo,
    SubscriptionStatistics as SubscriptionStatistics,
)
from ._subject import (
    subject_matches as subject_matches,
    validate_pattern as validate_pattern,
    validate_subject as validate_subject,
)
from ._subscription import Subscription as Subscription
from ._threads import ThreadPublisher as ThreadPublisher

__all__ = [
    "Broker",
    "BrokerClosedError",
    "BrokerError",
    "BrokerStatistics",
    "Dedupe",
    "HandlerStatistics",
    "InvalidSubjectError",
    "Lagged",
    "Leased",
    "Message",
    "Middleware",
    "NoRespondersError",
    "OverflowPolicy",
    "Retry",
    "Router",
    "SlowConsumerError",
    "Source",
    "Subscription",
    "SubscriptionInfo",
    "SubscriptionState",
    "SubscriptionStatistics",
    "ThreadPublisher",
    "subject_matches",
    "validate_pattern",
    "validate_subject",
]

__version__ = "0.1.0"

# Show the public path in reprs, tracebacks and docs.
for _name in __all__:
    with contextlib.suppress(AttributeError):  # (a type alias has none to set)
        globals()[_name].__module__ = "trio_pubsub"
del _name
