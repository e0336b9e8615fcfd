"""Message: what a subscription receives, with or without headers.

A message published without headers is a plain ``Message`` with two slots, built
on every publish; ``headers`` is then a class-level empty mapping, so the common
path sets nothing more than subject and payload. A message published with
headers is a ``_HeadedMessage``, a private subclass with a third slot. Both
compare, hash and print as ``Message`` values, and ``Message(subject, payload,
headers=...)`` builds whichever fits, through :func:`new_message`, the one
constructor.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from types import MappingProxyType
from typing import Generic, TypeVar

import attrs

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

NO_HEADERS: typing.Final[Mapping[str, str]] = MappingProxyType({})
"""The headers of every message published without any: empty and read-only."""


def freeze_headers(headers: object) -> Mapping[str, str]:
    """Check ``headers`` and return a read-only copy (``NO_HEADERS`` when empty).

    Raises:
        TypeError: ``headers`` is not a mapping, or a key or value is not a ``str``.
    """
    # type() first: a plain dict is the common case, and cheaper to recognise
    # than through the Mapping ABC.
    if type(headers) is not dict and not isinstance(headers, Mapping):
        raise TypeError(
            "headers must be a mapping of str to str, "
            f"not {type(headers).__name__}: {headers!r}"
        )
    # A copy, so the publisher changing its dict later changes no message.
    copy: dict[str, str] = dict(headers)
    if not copy:
        return NO_HEADERS
    for key, value in copy.items():
        if type(key) is not str or type(value) is not str:
            _check_header(key, value)
    return MappingProxyType(copy)


def _check_header(key: object, value: object) -> None:
    """Accept ``str`` subclasses; refuse anything else, naming it."""
    if not isinstance(key, str):
        raise TypeError(f"header names must be str, not {type(key).__name__}: {key!r}")
    if not isinstance(value, str):
        raise TypeError(
            f"header {key!r} must have a str value, "
            f"not {type(value).__name__}: {value!r}"
        )


@attrs.frozen(init=False)
class Message(Generic[T_co]):
    """One published message, as a subscription receives it.

    ``Message(subject, payload, headers=None)`` builds one, as the broker does;
    ``headers`` is checked and copied as :meth:`Broker.publish` does.
    """

    subject: str
    """The literal subject it was published on (never a pattern)."""
    # (mypy's attrs plugin checks an unused __attrs_init__ taking it: see __init__)
    payload: T_co  # type: ignore[misc]
    """What the publisher sent. Every receiver gets the same object."""

    def __new__(
        cls, subject: str, payload: T, headers: Mapping[str, str] | None = None
    ) -> Message[T]:
        return new_message(subject, payload, headers)

    def __init__(
        self, subject: str, payload: T_co, headers: Mapping[str, str] | None = None
    ) -> None:
        """Built by ``__new__`` already: nothing is left to do."""

    def __reduce__(self) -> tuple[object, ...]:
        headers = dict(self.headers) or None
        return (Message, (self.subject, self.payload, headers))

    @property
    def headers(self) -> Mapping[str, str]:
        """Metadata given to ``publish(..., headers=...)``, read-only.

        A mapping of ``str`` to ``str``, empty when none were given. Every
        receiver of the message gets the same mapping.
        """
        return NO_HEADERS


@attrs.frozen(init=False, repr=False)
class _HeadedMessage(Message[typing.Any]):  # type: ignore[override]  # __attrs_init__
    """A Message published with headers: one slot more, used only then."""

    _headers: Mapping[str, str] = attrs.field(hash=False)  # unhashable, but compared

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    def __repr__(self) -> str:
        return (
            f"Message(subject={self.subject!r}, payload={self.payload!r}, "
            f"headers={dict(self._headers)!r})"
        )


# attrs' frozen __init__ sets each field through object.__setattr__; writing the
# slots through their descriptors builds the same frozen value for less, and a
# Message is built on every publish.
_new_object = object.__new__
_set_subject = Message.__dict__["subject"].__set__
_set_payload = Message.__dict__["payload"].__set__
_set_headers = _HeadedMessage.__dict__["_headers"].__set__


def new_message(
    subject: str, payload: T, headers: Mapping[str, str] | None = None
) -> Message[T]:
    """Build the message a publish sends: the one constructor of every message.

    Without headers (the common case) a plain two-slot ``Message``; with
    headers, checked and copied here, a ``_HeadedMessage`` (or a plain one when
    the mapping is empty).

    Raises:
        TypeError: ``headers`` is not a mapping of ``str`` to ``str``.
    """
    if headers is not None:
        frozen = freeze_headers(headers)
        if frozen:
            headed: Message[T] = _new_object(_HeadedMessage)
            _set_subject(headed, subject)
            _set_payload(headed, payload)
            _set_headers(headed, frozen)
            return headed
    message: Message[T] = _new_object(Message)
    _set_subject(message, subject)
    _set_payload(message, payload)
    return message
