"""Waiting on a condition instead of sleeping a guessed time.

A fixed sleep is either too long (a slower suite) or, on a busy or freshly booted machine, too
short (a flaky one). Tests poll what they are waiting for with a generous deadline instead: a
pass costs only the time the condition really took.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(cond: Callable[[], object], timeout: float, interval: float = 0.05,
               what: str = "condition") -> float:
    """Poll `cond` until it is truthy; return the seconds it took. TimeoutError when no check
    begun within `timeout` seconds succeeded."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(interval)
    raise TimeoutError(f"{what} not met in {timeout:.1f} s")
