"""Gossip: one pipeline per incoming message, handlers registered by the application.

    seen? → decode → validate (handler) → mark seen → deliver → relay to every peer but the source

A handler validates and delivers; it raises ``Ignore`` (drop quietly: late, duplicate,
useless) or ``Reject`` (drop and penalise: invalid). The router — not the handler — turns
those into a silent drop or a score penalty, and never echoes a message back to its source.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

from fedcoin.network.messages import Message

Handler = Callable[[Message, object], Awaitable[None]]


class SeenCache:
    """Bounded set of recently seen message ids; the oldest are forgotten first."""

    def __init__(self, capacity: int = 65_536) -> None:
        self.capacity = capacity
        self.ids: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, message_id: bytes) -> bool:
        return message_id in self.ids

    def add(self, message_id: bytes) -> None:
        self.ids[message_id] = None
        self.ids.move_to_end(message_id)
        while len(self.ids) > self.capacity:
            self.ids.popitem(last=False)


class Handlers:
    """The typed registry of handlers: one per message class, registered explicitly."""

    def __init__(self) -> None:
        self._by_type: dict[type[Message], Handler] = {}

    def register(self, cls: type[Message], handler: Handler) -> None:
        if cls in self._by_type:
            raise ValueError(f"a handler for {cls.__name__} is already registered")
        self._by_type[cls] = handler

    def get(self, cls: type[Message]) -> Handler | None:
        return self._by_type.get(cls)
