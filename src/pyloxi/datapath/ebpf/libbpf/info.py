"""What the kernel says about a loaded program or map by fd (``bpf_obj_get_info_by_fd``), and
programs reached again by id."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from .errors import check, error
from .ffi import (
    ProgInfoHead,
    bpf_obj_get_info_by_fd,
    bpf_prog_get_fd_by_id,
    c_uint32,
)


def obj_info(fd: int, info: ctypes.Structure, what: str) -> None:
    ln = c_uint32(ctypes.sizeof(info))
    check(bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(ln)), what)


def prog_id(prog_fd: int) -> int:
    """Kernel id of the program behind *prog_fd* (what ``tc_attached_prog_id`` reports)."""
    info = ProgInfoHead()
    obj_info(prog_fd, info, f"bpf_obj_get_info_by_fd(prog fd {prog_fd})")
    return int(info.id)


@dataclass(frozen=True)
class ProgInfo:
    """What the kernel says about a loaded program (``bpf_prog_info``)."""

    id: int
    name: str  # truncated by the kernel to 15 characters
    map_ids: tuple[int, ...]


def prog_fd_by_id(prog_id: int) -> int:
    """A new fd for the loaded program *prog_id* (``bpf_prog_get_fd_by_id``); the caller
    closes it. This is how a program attached by a process that is gone is reached again."""
    fd: int = bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        raise error(-fd, f"bpf_prog_get_fd_by_id({prog_id})")
    return fd


def prog_info(prog_fd: int) -> ProgInfo:
    """Id, name and the ids of the maps the program uses (two calls: count, then the ids)."""
    what = f"bpf_obj_get_info_by_fd(prog fd {prog_fd})"
    info = ProgInfoHead()
    obj_info(prog_fd, info, what)
    n = int(info.nr_map_ids)
    ids = (c_uint32 * max(n, 1))()
    if n:
        info = ProgInfoHead(nr_map_ids=n, map_ids=ctypes.addressof(ids))
        obj_info(prog_fd, info, what)
        n = min(n, int(info.nr_map_ids))  # the kernel reports how many it filled in
    return ProgInfo(id=int(info.id), name=info.name.decode(errors="replace"),
                    map_ids=tuple(int(i) for i in ids[:n]))
