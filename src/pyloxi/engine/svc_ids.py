"""Service ids for the datapath."""

from __future__ import annotations

from pyloxi.engine.program import MAX_SERVICES
from pyloxi.model.errors import CapacityExceeded


class SvcIds:
    """Service ids 1..MAX_SERVICES-1. Next-fit (not lowest-free) so a just-freed id is not
    handed out again at once: a late counter read or a flow the datapath is still reaping
    cannot be attributed to the wrong service."""

    def __init__(self) -> None:
        self._used: set[int] = set()
        self._next = 1

    def alloc(self) -> int:
        for _ in range(MAX_SERVICES - 1):
            sid = self._next
            self._next = sid % (MAX_SERVICES - 1) + 1
            if sid not in self._used:
                self._used.add(sid)
                return sid
        raise CapacityExceeded("no free service id")

    def free(self, sid: int) -> None:
        self._used.discard(sid)
