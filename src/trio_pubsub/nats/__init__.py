"""Bridge a broker's subjects to a NATS server: ``pip install 'trio-pubsub[nats]'``.

:func:`open_bridge` exports what is published locally on some patterns to NATS
and publishes what arrives from NATS on others into the broker, with the same
subjects. The NATS client (nats-py) is asyncio-only, so it runs on its own
event loop in a thread that the bridge starts and stops; messages cross
between the two in batches. See :doc:`/explanation/outgrowing-one-process`.
"""

try:
    import nats as _nats  # noqa: F401
except ImportError as exc:  # pragma: no cover - the tests run with the extra
    raise ImportError(
        "trio_pubsub.nats needs the NATS client, which the 'nats' extra installs: "
        "pip install 'trio-pubsub[nats]'"
    ) from exc

from ._bridge import (
    Bridge as Bridge,
    BridgeStatistics as BridgeStatistics,
    open_bridge as open_bridge,
)
from ._codecs import (
    decode_bytes as decode_bytes,
    decode_json as decode_json,
    decode_str as decode_str,
    encode_bytes as encode_bytes,
    encode_json as encode_json,
    encode_str as encode_str,
)
from ._jetstream import (
    Consumer as Consumer,
    DurableMessage as DurableMessage,
    JetStreamBridge as JetStreamBridge,
    JetStreamStatistics as JetStreamStatistics,
    StoredMessage as StoredMessage,
    open_jetstream as open_jetstream,
)

__all__ = [
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
