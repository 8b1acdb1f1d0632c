"""The two tools of a service install transaction: a log of map writes replayed backwards on
failure, and RCU grace periods (no BPF program run still reads what is about to change)."""

from __future__ import annotations

import ctypes
import logging
import platform
import time

from pyloxi.datapath.ebpf.libbpf.maps import BPF_NOEXIST, Map

log = logging.getLogger(__name__)

_SYS_MEMBARRIER = {"x86_64": 324, "aarch64": 283, "riscv64": 283}.get(platform.machine())
_MEMBARRIER_CMD_GLOBAL = 1
_libc = ctypes.CDLL(None, use_errno=True)


def synchronize_rcu() -> None:
    """Return once every BPF program run that had started has finished (a grace period)."""
    if _SYS_MEMBARRIER is not None and _libc.syscall(
            _SYS_MEMBARRIER, _MEMBARRIER_CMD_GLOBAL, 0, 0) == 0:
        return
    # No membarrier (nohz_full, another arch): a program run lasts microseconds; wait far longer.
    time.sleep(0.05)


class Undo:
    """The writes of one install, each with what it replaced, to replay backwards on failure."""

    def __init__(self) -> None:
        self.steps: list[tuple[Map, bytes, bytes | None]] = []

    def put(self, m: Map, key: bytes, value: bytes) -> None:
        """Overwrite an array element (its old bytes are recorded first)."""
        self.steps.append((m, key, m.lookup(key)))
        m.update(key, value)

    def insert(self, m: Map, key: bytes, value: bytes) -> None:
        """Add a key that must be absent (a failed insert wrote nothing)."""
        m.update(key, value, BPF_NOEXIST)
        self.steps.append((m, key, None))

    def delete(self, m: Map, key: bytes, prev: bytes) -> None:
        self.steps.append((m, key, prev))
        m.delete(key)

    def rollback(self) -> None:
        for m, key, prev in reversed(self.steps):
            try:
                if prev is None:
                    m.delete(key)
                else:
                    m.update(key, prev)
            except OSError:  # keep undoing the rest; the caller reports the original error
                log.exception("rollback of map %s failed", m.name)
        self.steps.clear()
