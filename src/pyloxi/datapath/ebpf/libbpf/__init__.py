"""Thin, typed ctypes binding to the system ``libbpf.so.1`` (written against libbpf 1.1.2).

One module per kind of thing:

* :mod:`.ffi` — the library's prototypes and struct mirrors (no checks);
* :mod:`.errors` — :class:`BpfError`, and libbpf's messages routed to logging;
* :mod:`.maps` — :class:`Map` (single elements, key walks, batch ops, per-CPU values);
* :mod:`.objects` — :class:`BpfObject` (open with map pinning, reuse live maps, load);
* :mod:`.info` — program ids and info, programs reached again by id;
* :mod:`.tc` — TC clsact attach/detach/query;
* :mod:`.xdp` — XDP attach/detach/query, native or generic;
* :mod:`.testrun` — ``BPF_PROG_TEST_RUN``;
* :mod:`.bpffs` — the bpf filesystem maps are pinned on.

The names below are the binding's public API, importable from the package as a whole.
"""

from __future__ import annotations

from .bpffs import is_bpffs, mount_bpffs
from .errors import BpfError
from .info import ProgInfo, prog_fd_by_id, prog_id, prog_info
from .maps import BPF_ANY, BPF_EXIST, BPF_F_LOCK, BPF_NOEXIST, Map, MapType, possible_cpus
from .objects import BpfObject
from .tc import tc_attach, tc_attached_prog_id, tc_detach, tc_hook_destroy
from .testrun import TestRunResult, prog_test_run, run_syscall_prog
from .xdp import xdp_attach, xdp_attached_prog_id, xdp_detach

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "BPF_F_LOCK",
    "BpfError",
    "BpfObject",
    "Map",
    "MapType",
    "TestRunResult",
    "is_bpffs",
    "mount_bpffs",
    "ProgInfo",
    "possible_cpus",
    "prog_fd_by_id",
    "prog_id",
    "prog_info",
    "prog_test_run",
    "run_syscall_prog",
    "tc_attach",
    "tc_attached_prog_id",
    "tc_detach",
    "tc_hook_destroy",
    "xdp_attach",
    "xdp_attached_prog_id",
    "xdp_detach",
]
