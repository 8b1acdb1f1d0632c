"""Keep the cyclic garbage collector's pauses from growing with the rule table.

Each rule is ~40 objects the collector tracks, and they live as long as the rule. A full
(generation 2) collection walks every tracked object: at 10,000 rules that was ~0.7 s on the
benchmark machine, stalling every request meanwhile (the worst create of a 10,000-rule bulk
load took 0.9 s), and it comes back each time the long-lived objects grow by a quarter.

`freeze_after_slow_collections` moves what survives a slow full collection into the permanent
generation (`gc.freeze()`): later collections skip it, so their pauses depend on what was
allocated since, not on how many rules exist. Reference counting still frees frozen objects
(a deleted rule's objects go at once: rules hold no reference cycles); only a cycle among
objects that were alive at a freeze is never collected. Freezing happens only after a full
collection that took longer than `slow_s`, which stops happening once the heap is frozen, so
freezes are rare (a few per bulk load of thousands of rules) and what can leak stays small.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_installed: list[Callable[[str, dict[str, Any]], None]] = []


def freeze_after_slow_collections(slow_s: float = 0.05) -> Callable[[str, dict[str, Any]], None]:
    """Install (once per process) a gc callback that freezes the heap after a full collection
    slower than `slow_s`; returns the callback (for `uninstall`)."""
    if _installed:
        return _installed[0]
    started = [0.0]
    freezes = [0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if took > slow_s:
            gc.freeze()  # called once the collection is done: it only moves the lists
            freezes[0] += 1
            # (not gc.get_freeze_count(): it walks the whole frozen list, ~0.1 s at 16K rules)
            log.debug("full gc took %.0f ms: heap frozen (freeze #%d)", took * 1e3, freezes[0])

    gc.callbacks.append(on_gc)
    _installed.append(on_gc)
    return on_gc


def uninstall() -> None:
    """Remove the callback and thaw the heap (tests)."""
    for cb in _installed:
        gc.callbacks.remove(cb)
    _installed.clear()
    gc.unfreeze()
