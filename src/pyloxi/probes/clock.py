"""The time source of the probe scheduler, injectable so that tests can drive time themselves.

The scheduler never sleeps: it sets timers. So a clock is "what time is it" plus "call me at",
on the monotonic scale, and the wall-clock time that statuses show.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Monotonic seconds: what probe intervals and deadlines are measured in."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Run `callback` in the event loop once time() reaches `when`."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch: when a probe ran or a verdict changed, as statuses show it."""
        ...


class LoopClock:
    """The running event loop's clock (the default). Only called from the loop's thread."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_at(when, callback)

    def wall(self) -> float:
        return time.time()
