"""Where maps are pinned: the bpf filesystem."""

from __future__ import annotations

import os

from .errors import errno_now, error
from .ffi import mount


def is_bpffs(path: str) -> bool:
    """True if *path* lies on a mounted bpf filesystem (where maps can be pinned)."""
    path = os.path.realpath(path)
    best, fstype = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1].replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, parts[2]
    return fstype == "bpf"


def mount_bpffs(path: str = "/sys/fs/bpf") -> None:
    """Mount a bpf filesystem on *path* (created if missing) unless one is already there."""
    os.makedirs(path, exist_ok=True)
    if is_bpffs(path) and os.path.realpath(path) in _mountpoints():
        return
    if mount(b"bpf", os.fsencode(path), b"bpf", 0, None) != 0:
        raise error(errno_now(), f"mount -t bpf bpf {path}")


def _mountpoints() -> set[str]:
    with open("/proc/self/mounts") as f:
        return {line.split()[1].replace("\\040", " ") for line in f}

