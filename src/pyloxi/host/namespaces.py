"""Entering namespaces (Python 3.11 has no os.setns)."""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, nstype) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def enter_netns(name: str) -> None:
    """Move this (still single-threaded) process into a named network namespace."""
    setns(f"/var/run/netns/{name}", CLONE_NEWNET)
    log.info("entered network namespace %s", name)


def share_host_mounts() -> bool:
    """`ip netns exec` gives its child a private mount namespace with a fresh /sys, where a
    bpffs mounted by us would vanish with the process, and the pinned maps with it. Rejoin the
    host's mount namespace (the network namespace stays) so pins outlive a restart."""
    try:
        if os.stat("/proc/self/ns/mnt").st_ino == os.stat("/proc/1/ns/mnt").st_ino:
            return False
        setns("/proc/1/ns/mnt", CLONE_NEWNS)
    except OSError as exc:
        log.warning("cannot join the host mount namespace (%s); pins may not survive restarts", exc)
        return False
    log.info("joined the host mount namespace so pinned maps survive restarts")
    return True
