"""Timers of the consensus driver: the machine's timeouts and the cadence of heights.

``Timers`` holds the asyncio timer handles of one height so that a new height cancels every
stale one at once (a timeout of an old height would be ignored by the machine anyway, but a
cancelled timer costs nothing). ``start_delay_ms`` is the cadence rule of DESIGN §5 "Time and
cadence" as a pure function of the clock and the chain: when to start deciding the next height.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from fedcoin.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Cadence:
    """Local pacing of heights (not consensus parameters, except ``block_interval_ms``)."""

    block_interval_ms: int
    """The chain's minimum gap between a block and its parent (a genesis parameter)."""
    heartbeat_ms: int = 5000
    """With nothing to include, start the next height this long after the last commit."""

    def __post_init__(self) -> None:
        # Both gaps are non-negative; a zero heartbeat means "never wait for work"
        if self.block_interval_ms < 0 or self.heartbeat_ms < 0:
            raise ConfigError(f"cadence needs non-negative gaps: {self}")


def start_delay_ms(
    cadence: Cadence, *, now_ms: int, parent_ms: int, committed_at_ms: int, busy: bool
) -> int:
    """Milliseconds from ``now_ms`` until the next height should start.

    With work (a transaction pending or an SV task open): once ``block_interval_ms`` has passed
    since the parent's timestamp. Without: a heartbeat after the commit, but never before the
    interval either (a proposal's timestamp must clear it anyway).
    """
    ready = parent_ms + cadence.block_interval_ms
    if not busy:
        ready = max(ready, committed_at_ms + cadence.heartbeat_ms)
    return max(0, ready - now_ms)


class Timers:
    """Timer handles of the current height; ``cancel_all`` on a new height."""

    def __init__(self) -> None:
        self._handles: list[asyncio.TimerHandle] = []

    def after(self, delay_ms: int, callback: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        self._handles = [h for h in self._handles if not h.cancelled()]
        self._handles.append(loop.call_later(max(delay_ms, 0) / 1000, callback))

    def cancel_all(self) -> None:
        for handle in self._handles:
            handle.cancel()
        self._handles = []

    def __len__(self) -> int:
        return len(self._handles)
