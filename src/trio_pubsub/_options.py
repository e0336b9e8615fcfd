"""Checks of option values, shared by the broker, its subscriptions and the bridge.

Each check names the option and the rule, shows the value with ``!r``, and
returns the value unchanged, so a call can check and assign in one step.
"""

from __future__ import annotations

import math
import typing

from ._policy import OverflowPolicy

# The defaults of Broker()'s options.
MAX_BUFFER_SIZE: typing.Final = 64
POLICY: typing.Final = OverflowPolicy.DROP_NEWEST
DISCONNECT_AFTER: typing.Final = 1
MATCH_CACHE_SIZE: typing.Final = 8192
MATCH_CACHE_BYTES: typing.Final = 8 << 20
MAX_RETAINED: typing.Final = 10_000
MAX_PENDING: typing.Final = 1024  # a thread publisher's queue


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an ``int`` >= ``minimum``.

    Raises:
        TypeError: it is not an int (``bool`` included: ``True`` as a size is
            always a mistake).
        ValueError: it is below ``minimum``.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(
            f"{name} must be an int >= {minimum}, not {type(value).__name__}: {value!r}"
        )
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_timeout(name: str, value: object) -> float | None:
    """Return ``value`` if it is ``None`` or a number of seconds > 0.

    ``math.inf`` is allowed: it waits for ever, as ``None`` does on a broker.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be a number of seconds or None, "
            f"not {type(value).__name__}: {value!r}"
        )
    if not value > 0:
        raise ValueError(f"{name} must be > 0 (or None), not {value!r}")
    return value


def check_seconds(name: str, value: object) -> float:
    """Return ``value`` if it is a number of seconds > 0 and finite.

    Raises:
        TypeError: it is not an ``int`` or ``float`` (or it is a ``bool``).
        ValueError: it is not > 0, or not finite.
    """
    seconds = check_timeout(name, value)
    if seconds is None:
        raise TypeError(f"{name} must be a number, not None")
    if math.isinf(seconds):
        raise ValueError(f"{name} must be > 0 and finite, not {seconds!r}")
    return seconds


def check_policy(value: object) -> OverflowPolicy:
    """Return ``value`` if it is an :class:`OverflowPolicy` member."""
    if not isinstance(value, OverflowPolicy):
        raise TypeError(
            f"policy must be an OverflowPolicy member, not {type(value).__name__}: "
            f"{value!r}"
        )
    return value


def check_name(name: object) -> str | None:
    """Return a subscription's ``name`` if it is ``None`` or a non-empty ``str``."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(
            f"name must be a str or None, not {type(name).__name__}: {name!r}"
        )
    if not name:
        raise ValueError("name must not be empty (None: the pattern)")
    return name


def retain_error(retain: object) -> TypeError:
    """The error for a ``retain`` that is neither ``True`` nor ``False``."""
    return TypeError(f"retain must be a bool, not {type(retain).__name__}: {retain!r}")


def check_message_type(message_type: object) -> None:
    """Refuse a ``message_type`` that ``isinstance`` cannot use.

    A class, a union (``int | str``) or a tuple of classes passes; a Protocol
    that is not runtime-checkable, a subscripted generic (``list[int]``) or
    anything else is refused now rather than at every publish.
    """
    try:
        isinstance(None, message_type)  # type: ignore[arg-type]
    except TypeError as error:
        raise TypeError(
            f"message_type must be a class, a union or a tuple of classes that "
            f"isinstance() accepts, not {message_type!r} ({error})"
        ) from None


def type_name(message_type: object) -> str:
    """How a message type reads in errors and reprs: ``Order``, ``int | str``."""
    if isinstance(message_type, tuple):
        return " | ".join(type_name(t) for t in message_type)
    if isinstance(message_type, type):
        return message_type.__qualname__
    return str(message_type)


def payload_error(message_type: object, payload: object) -> TypeError:
    """The error for a payload that is not of the broker's ``message_type``."""
    return TypeError(
        f"payload must be an instance of {type_name(message_type)}, "
        f"not {type(payload).__name__}: {payload!r}"
    )
