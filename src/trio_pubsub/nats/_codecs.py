"""Ready-made ``encode``/``decode`` pairs for :func:`open_bridge`."""

from __future__ import annotations

import json
from typing import Any

_BYTES_LIKE = (bytes, bytearray, memoryview)


def encode_bytes(payload: bytes | bytearray | memoryview) -> bytes:
    """Send a ``bytes`` payload as it is (``bytearray`` and ``memoryview`` too)."""
    if type(payload) is bytes:
        return payload  # immutable: no copy needed
    if not isinstance(payload, _BYTES_LIKE):
        raise TypeError(f"expected bytes, not {type(payload).__name__}")
    return bytes(payload)


def decode_bytes(data: bytes) -> bytes:
    """Receive the data as ``bytes``."""
    return data


def encode_str(payload: str) -> bytes:
    """Send a ``str`` payload as UTF-8."""
    if not isinstance(payload, str):
        raise TypeError(f"expected str, not {type(payload).__name__}")
    return payload.encode()


def decode_str(data: bytes) -> str:
    """Receive UTF-8 data as a ``str`` (invalid UTF-8 raises, and is dropped)."""
    return data.decode()


def encode_json(payload: Any) -> bytes:
    """Send a payload as compact JSON in UTF-8 (what ``json.dumps`` takes)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def decode_json(data: bytes) -> Any:
    """Receive JSON (invalid JSON raises, and the message is dropped)."""
    return json.loads(data)
