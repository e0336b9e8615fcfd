"""Message: what a subscription receives, with or without headers.

A message published without headers is a plain ``Message`` with two slots, built
on every publish; ``headers`` is then a class-level empty mapping, so the common
path sets nothing more than subject and payload. A message published with
headers is a ``_HeadedMessage``, a private subclass with a third slot. Both
compare, hash and print as ``Message`` values, and ``Message(subject, payload,
headers=...)`` builds whichever fits, through :func:`new_message`, the one
constructor.

A request (``Broker.request``) is a ``_RequestMessage``, with two slots more:
its reply subject, and the publish that :meth:`Message.respond` calls. Only
requests pay for them.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable, Mapping
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

    @property
    def reply(self) -> str | None:
        """The subject to answer a request on, or ``None`` if it is no request.

        Set on the messages :meth:`Broker.request` sends: a subject under the
        reserved prefix ``_INBOX.``, routed only to the request that made it,
        while it waits. Answer with :meth:`respond`.
        """
        return None

    async def respond(
        self: Message[T], payload: T, *, headers: Mapping[str, str] | None = None
    ) -> int:
        """Answer this request: publish ``payload`` on its :attr:`reply` subject.

        The same as ``await broker.publish(message.reply, payload,
        headers=headers)``, and a trio checkpoint. The first answer is the one
        the request returns; it then ends, and so does its reply subject.

        Returns:
            1 if the request took this answer, 0 if it had ended already
            (answered, timed out or cancelled): the answer went to nobody.

        Raises:
            ValueError: this message is not a request (its ``reply`` is ``None``).
            TypeError: as for :meth:`Broker.publish` (the payload is not of the
                broker's ``message_type``, or ``headers`` is not a mapping of
                ``str`` to ``str``).
            BrokerClosedError: the broker is closed.
        """
        raise ValueError(
            f"the message on {self.subject!r} is not a request (its reply is "
            "None): only messages sent by Broker.request() can be answered"
        )


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


Publish = Callable[..., Awaitable[int]]
"""``Broker.publish``, as a request holds it to be answered through."""


@attrs.frozen(init=False, repr=False)
class _RequestMessage(_HeadedMessage):  # type: ignore[override]  # __attrs_init__
    """A request: a message with a reply subject, answered by ``respond()``."""

    _reply: str
    _publish: Publish = attrs.field(eq=False, hash=False)

    @property
    def reply(self) -> str:
        return self._reply

    async def respond(
        self: Message[T], payload: T, *, headers: Mapping[str, str] | None = None
    ) -> int:
        request = typing.cast("_RequestMessage", self)
        return await request._publish(request._reply, payload, headers=headers)

    def __repr__(self) -> str:
        headers = f", headers={dict(self._headers)!r}" if self._headers else ""
        return (
            f"Message(subject={self.subject!r}, payload={self.payload!r}"
            f"{headers}, reply={self._reply!r})"
        )


# attrs' frozen __init__ sets each field through object.__setattr__; writing the
# slots through their descriptors builds the same frozen value for less, and a
# Message is built on every publish.
# (The broker builds a plain message with these three itself on its hottest
# path, a publish on a cached subject: one call less a publish.)
new_object = object.__new__
set_subject = Message.__dict__["subject"].__set__
set_payload = Message.__dict__["payload"].__set__
_set_headers = _HeadedMessage.__dict__["_headers"].__set__
_set_reply = _RequestMessage.__dict__["_reply"].__set__
_set_publish = _RequestMessage.__dict__["_publish"].__set__


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
            headed: Message[T] = new_object(_HeadedMessage)
            set_subject(headed, subject)
            set_payload(headed, payload)
            _set_headers(headed, frozen)
            return headed
    message: Message[T] = new_object(Message)
    set_subject(message, subject)
    set_payload(message, payload)
    return message


def request_message(message: Message[T], reply: str, publish: Publish) -> Message[T]:
    """The request that ``message`` (built by :func:`new_message`) becomes.

    Its headers are ``message``'s, checked already; ``publish`` is called as
    ``publish(reply, payload, headers=...)`` by :meth:`Message.respond`.
    """
    request: Message[T] = new_object(_RequestMessage)
    set_subject(request, message.subject)
    set_payload(request, message.payload)
    _set_headers(request, message.headers)
    _set_reply(request, reply)
    _set_publish(request, publish)
    return request
