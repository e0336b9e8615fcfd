"""Queue groups: one member of each group gets a message, as in NATS.

A ``_Group`` is what all members of one queue name share in one broker, whatever
their patterns. For each subject, the routes hold one ``GroupTarget`` per group
with the members that subject reaches; the broker offers a message to it as to
any subscription, and the target passes it on to one member.

Which member (:meth:`GroupTarget._choose`, the one chooser), in this order: a
member with a receiver waiting (it is idle: the message is handed to it at
once); else the member with the fewest pending messages among those with room
(below its size, and no publisher waiting for it); ties, and the first rule
among several idle members, go to the one routed a message least recently. If
no member has room, the least recently routed one gets it all the same, and its
own policy decides (a ``BLOCK`` member makes the publisher wait for it, a
``DROP_NEWEST`` one drops and counts it). A member that joins takes its place
at the back, as if it had just been routed a message. So a slow member is not
handed work while a faster one sits idle, and among equally busy members the
work goes round.

A ``GroupTarget`` has no buffer of its own. To the one inlined copy of the
pipeline (``Delivery.publish_nowait``), which appends to a routed target's
``buffer`` while it is below its ``limit``, it shows an empty one and a
``limit`` of 0, so every message to it takes ``offer()``; subscriptions outside
groups pay nothing for groups.
"""

from __future__ import annotations

import typing
from collections import OrderedDict
from typing import Generic, Protocol, TypeVar

from ._errors import BrokerClosedError
from ._inbox import _NO_BUFFER, WAIT, State, _Inbox
from ._policy import OverflowPolicy

if typing.TYPE_CHECKING:
    from collections import deque

    from ._message import Message

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Target(Protocol[T_contra]):
    """What a publish offers a message to: an inbox, a group's members, a reply."""

    def would_block(self) -> bool:
        """Whether :meth:`offer` would say ``WAIT`` now."""

    def offer(self, message: Message[T_contra]) -> int:
        """Take it (1), refuse it (0), or say ``WAIT`` (-1): full and ``BLOCK``."""

    async def put(self, message: Message[T_contra]) -> bool:
        """Take it once there is room; whether it was taken."""


class Routed(Target[T], Protocol[T]):
    """A target the routes hold, by subject: an inbox, or a group's members.

    Below ``limit``, it takes a message by ``buffer.append`` and one more
    ``tally.delivered`` (the inlined copy in ``Delivery.publish_nowait``).
    """

    @property
    def buffer(self) -> deque[Message[T]]: ...

    @property
    def limit(self) -> int: ...


class _Group:
    """The members of one queue name in one broker, least recently routed first."""

    __slots__ = ("name", "order")

    def __init__(self, name: str) -> None:
        self.name = name
        # Every member, in the order of their last routed message (never routed:
        # when they joined): the front is whose turn it is. An OrderedDict, so a
        # member moves to the back in O(1).
        self.order: OrderedDict[_Inbox[typing.Any], None] = OrderedDict()

    def join(self, inbox: _Inbox[typing.Any]) -> None:
        self.order[inbox] = None  # at the back: it takes its place in the rotation

    def leave(self, inbox: _Inbox[typing.Any]) -> None:
        del self.order[inbox]


@typing.final
class GroupTarget(Generic[T]):
    """The members of one group that one subject reaches, offered as one."""

    __slots__ = ("group", "members")

    # Read by the inlined copy of the pipeline, which then always calls offer().
    buffer: typing.ClassVar[deque[typing.Any]] = _NO_BUFFER
    limit: typing.ClassVar[int] = 0

    def __init__(self, group: _Group, members: frozenset[_Inbox[T]]) -> None:
        self.group = group
        self.members = members

    def _choose(self) -> tuple[_Inbox[T] | None, bool]:
        """The member to route to now, and whether it has room (see the module doc).

        Walks the group from the least recently routed member on; it stops at
        the first idle one (a receiver waiting), else it looks at all of them.
        ``(None, False)`` when every member of the snapshot has left.
        """
        members = self.members
        turn: _Inbox[T] | None = None  # the first member without room
        best: _Inbox[T] | None = None  # the least pending among those with room
        fewest = 0
        for member in self.group.order:
            if member not in members or member.state is not State.OPEN:
                continue
            if member.receivers:
                return member, True
            pending = len(member.buffer)
            # Room, and no publisher waiting for it (as _Inbox.offer() asks)
            if pending < member.max_buffer_size and not member.senders:
                if best is None or pending < fewest:
                    best, fewest = member, pending
            elif turn is None:
                turn = member
        if best is not None:
            return best, True
        return turn, False

    def would_block(self) -> bool:
        member, roomy = self._choose()
        return member is not None and not roomy and member.would_block()

    def offer(self, message: Message[T]) -> int:
        """Route ``message`` to one member without waiting; see the module doc.

        Returns as ``_Inbox.offer`` does: 1 or 0, or ``WAIT`` when no member
        has room and the one whose turn it is has the ``BLOCK`` policy
        (nothing is routed yet).
        """
        member, roomy = self._choose()
        if member is None:
            return 0
        if not roomy and member.policy is OverflowPolicy.BLOCK:
            return WAIT
        self.group.order.move_to_end(member)
        return member.offer(message)

    async def put(self, message: Message[T]) -> bool:
        """Route ``message`` to one member, waiting for a full ``BLOCK`` one.

        If the member it waits for leaves, the message goes to another member
        (chosen again the same way); it is routed to no one only when every
        member of the snapshot has left, or the member's ``block_timeout``
        passes (then it is dropped there).

        Raises:
            BrokerClosedError: the broker was closed before it was routed.
        """
        while True:
            member, roomy = self._choose()
            if member is None:
                if any(m.state is State.ENDED for m in self.members):
                    raise BrokerClosedError(
                        "the broker was closed while a publish waited for room in "
                        f"queue group {self.group.name!r}"
                    )
                return False
            self.group.order.move_to_end(member)
            if roomy or member.policy is not OverflowPolicy.BLOCK:
                return member.offer(message) > 0
            if await member.put(message):
                return True
            if member.state is State.OPEN:
                return False  # its block_timeout passed: dropped there, counted
            # It left while the publisher waited: try the others.
