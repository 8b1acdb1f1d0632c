"""Entering namespaces (Python 3.11 has no os.setns)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)

CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns_fd(fd: int, nstype: int, what: str = "") -> None:
    """Move this thread into the namespace open at `fd`."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({what or fd}): {os.strerror(err)}")


def setns(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        setns_fd(fd, nstype, path)
    finally:
        os.close(fd)


def enter_netns(name: str) -> None:
    """Move this thread (and the threads it starts from now on) into a named network
    namespace. Threads started earlier (OpenBLAS's, once numpy is imported) stay behind; they
    never open a socket."""
    setns(f"/var/run/netns/{name}", CLONE_NEWNET)
    log.info("entered network namespace %s", name)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body with this thread in the named network namespace, then move it back (also
    when the body raises). Only the calling thread moves; threads it starts inside inherit the
    namespace and stay there."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        setns(f"/var/run/netns/{name}", CLONE_NEWNET)
        try:
            yield
        finally:
            setns_fd(home, CLONE_NEWNET, "home network namespace")
    finally:
        os.close(home)


def _mnt_ns(pid: int | str) -> int:
    return os.stat(f"/proc/{pid}/ns/mnt").st_ino


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _starting_mount_ns() -> str | None:
    """The mount namespace this daemon was started from, if it runs in another one: that of
    the nearest ancestor outside ours (the shell that ran `ip netns exec`, or systemd). Failing
    that, pid 1's, if it differs and we may look at it."""
    mine = _mnt_ns("self")
    pid = os.getppid()
    while pid > 1:
        try:
            if _mnt_ns(pid) != mine:
                return f"/proc/{pid}/ns/mnt"
            pid = _ppid(pid)
        except OSError:  # ancestor gone, or not ours to inspect
            break
    try:
        return "/proc/1/ns/mnt" if _mnt_ns(1) != mine else None
    except OSError:  # a pid 1 more privileged than us (EACCES): nothing tells us we moved
        return None


def _threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 1


def share_host_mounts() -> bool:
    """`ip netns exec` gives its child a private mount namespace with a fresh /sys, where a
    bpffs mounted by us would vanish with the process, and the pinned maps with it. Rejoin the
    mount namespace it was started from (the network namespace stays) so pins outlive a
    restart. When that is not possible the datapath still keeps flows across restarts: it
    adopts the maps of the program left attached (EbpfDatapath)."""
    try:
        target = _starting_mount_ns()
    except OSError:
        return False
    if target is None:
        return False  # the same mount namespace as whoever started us: nothing to undo
    # setns(CLONE_NEWNS) refuses (EINVAL) a thread sharing its fs_struct with other threads,
    # and importing numpy already started OpenBLAS threads: give this thread its own
    # fs_struct first. Only this thread and those it starts later then move.
    if _threads() > 1 and _libc.unshare(CLONE_FS) != 0:
        err = ctypes.get_errno()
        log.warning("unshare(CLONE_FS): %s; staying in this mount namespace", os.strerror(err))
        return False
    cwd = os.getcwd()
    try:
        setns(target, CLONE_NEWNS)
    except OSError as exc:  # EPERM without CAP_SYS_CHROOT, ...
        log.info("staying in a private mount namespace (%s): pins vanish with this process, "
                 "a restart adopts the maps of the attached datapath instead", exc)
        return False
    try:  # setns moved us to the new root; relative paths in the arguments mean cwd
        os.chdir(cwd)
    except OSError:
        log.warning("%s does not exist in the joined mount namespace", cwd)
    log.info("joined the mount namespace of pid %s so pinned maps survive restarts",
             target.split("/")[2])
    return True
