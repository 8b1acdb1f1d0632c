"""Exclusive directory locks: one daemon per state directory and per bpffs pin directory.

The lock is a flock on the directory itself (opened read-only), so it works on any filesystem,
bpffs included, needs no write access (a read-only state directory can still be locked) and
vanishes with the process however it dies (no stale lock file to clean up after `kill -9`).
flock is per open file description on the inode: two daemons in different mount namespaces
(`ip netns exec`) that see the same directory still exclude each other.
"""

from __future__ import annotations

import fcntl
import os


class LockError(Exception):
    """The directory is locked by another process (or cannot be locked)."""


class DirLock:
    """Holds an exclusive flock on `path` until `release()` or the process ends."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what
        os.makedirs(path, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            st = os.fstat(self._fd)
            self.release()
            holder = holder_pid(st.st_dev, st.st_ino)
            by = f"pid {holder}" if holder else "another process"
            raise LockError(f"{what} {path} is in use by {by} (another pyloxi daemon?); "
                            f"two daemons must not share it") from None
        except OSError as exc:
            self.release()
            raise LockError(f"cannot lock {what} {path}: {exc.strerror}") from exc

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def holder_pid(dev: int, ino: int) -> int | None:
    """The pid holding a flock on (dev, ino), from /proc/locks; None if unknown."""
    want = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 00:2e:5678 0 EOF" ("->" marks a blocked waiter)
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue
        if parts[5] == want and parts[4].isdigit() and int(parts[4]) != os.getpid():
            return int(parts[4])
    return None
