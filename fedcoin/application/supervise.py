"""Long-lived loops that no error ends.

``supervised`` runs one step at a time, woken by an event or a tick. A ``FedCoinError`` from a
step is a warning; any other exception is logged once with its traceback and then, while the
same error repeats, only at debug level, so a broken input does not flood the log every tick.
Only cancellation ends the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fedcoin.errors import FedCoinError
from fedcoin.network.node import wait_event


class StepLog:
    """Logs a step's failures: each new error once in full, its repeats quietly."""

    def __init__(self, name: str, log: logging.Logger) -> None:
        self.name = name
        self.log = log
        self.last: tuple[type[BaseException], str] | None = None

    def ok(self) -> None:
        self.last = None

    def failed(self, exc: Exception) -> None:
        key = (type(exc), str(exc))
        repeat, self.last = key == self.last, key
        if repeat:
            self.log.debug("%s failed again: %s", self.name, exc)
        elif isinstance(exc, FedCoinError):
            self.log.warning("%s failed: %s", self.name, exc)
        else:
            self.log.error("%s failed unexpectedly, carrying on", self.name, exc_info=exc)


async def supervised(
    name: str,
    step: Callable[[], Awaitable[None]],
    wake: asyncio.Event,
    tick_seconds: float,
    log: logging.Logger,
) -> None:
    """Run ``step`` forever: after each, wait for ``wake`` or ``tick_seconds``."""
    steps = StepLog(name, log)
    while True:
        wake.clear()
        try:
            await step()
        except Exception as exc:  # noqa: BLE001 - nothing but cancellation may end the loop
            steps.failed(exc)
        else:
            steps.ok()
        await wait_event(wake, tick_seconds)
