"""Extents of the pools the service versions share (ep_pool, slot_pool) and the endpoints'
counter ids (ep_gid), as the control plane hands them out.

A version names its endpoints and its slot table as extents (base, length) of two ARRAY maps
(see struct svc_cfg in bpf/include/pyloxi/maps.h). The backend allocates a version's extents
before it writes the version, and frees the extents a version named once that version is
rewritten (a grace period after it was last live) or its service is gone: packets never read
an extent after it is freed. A pool without room is an error (ENOSPC) that changes nothing.
"""

from __future__ import annotations

import bisect
import errno
from collections.abc import Iterable

from pyloxi.datapath.ebpf.libbpf.errors import BpfError


class Extents:
    """First-fit allocator of [start, start + n) ranges out of [first, size). Free ranges are
    kept sorted and merged, so a long run of creates (the common case) is a bump of the tail."""

    def __init__(self, size: int, what: str, first: int = 0) -> None:
        self.size = size
        self.what = what
        self._starts: list[int] = [first] if size > first else []
        self._lens: list[int] = [size - first] if size > first else []

    @property
    def free(self) -> int:
        return sum(self._lens)

    def alloc(self, n: int) -> int:
        """The start of a free range of n (n > 0), now taken; BpfError(ENOSPC) if none."""
        for i, length in enumerate(self._lens):
            if length >= n:
                start = self._starts[i]
                if length == n:
                    del self._starts[i], self._lens[i]
                else:
                    self._starts[i] += n
                    self._lens[i] -= n
                return start
        raise BpfError(errno.ENOSPC, f"datapath {self.what} pool full ({n} needed, "
                                     f"{self.free} free of {self.size} in pieces)")

    def release(self, start: int, n: int) -> None:
        """Give [start, start + n) back (it must be taken)."""
        if n <= 0:
            return
        i = bisect.bisect_left(self._starts, start)
        if i < len(self._starts) and self._starts[i] < start + n or \
                i > 0 and self._starts[i - 1] + self._lens[i - 1] > start:
            raise ValueError(f"{self.what}: [{start}, {start + n}) is not taken")
        if i > 0 and self._starts[i - 1] + self._lens[i - 1] == start:  # merge left
            i -= 1
            self._lens[i] += n
        else:
            self._starts.insert(i, start)
            self._lens.insert(i, n)
        if i + 1 < len(self._starts) and self._starts[i] + self._lens[i] == self._starts[i + 1]:
            self._lens[i] += self._lens.pop(i + 1)
            del self._starts[i + 1]

    def take(self, start: int, n: int) -> bool:
        """Mark [start, start + n) taken (a restarted daemon's view of the maps); False if
        some of it is not free (the maps are inconsistent: the caller decides)."""
        if n <= 0:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        if i < 0 or self._starts[i] + self._lens[i] < start + n:
            return False
        s, length = self._starts[i], self._lens[i]
        del self._starts[i], self._lens[i]
        if start + n < s + length:
            self._starts.insert(i, start + n)
            self._lens.insert(i, s + length - start - n)
        if start > s:
            self._starts.insert(i, s)
            self._lens.insert(i, start - s)
        return True


class Ids:
    """Single ids (the endpoints' counter ids) out of [first, size): a free list."""

    def __init__(self, size: int, what: str, first: int = 1) -> None:
        self.size = size
        self.what = what
        self._next = first
        self._free: list[int] = []
        self._taken: set[int] = set()

    @property
    def free(self) -> int:
        return self.size - self._next - len(self._taken) + len(self._free)

    def alloc(self, n: int) -> list[int]:
        """n ids, all or none (BpfError ENOSPC)."""
        if n > self.free:
            raise BpfError(errno.ENOSPC, f"datapath {self.what} full ({n} needed, "
                                         f"{self.free} free of {self.size})")
        out = [self._free.pop() for _ in range(min(n, len(self._free)))]
        while len(out) < n:
            if self._next not in self._taken:
                out.append(self._next)
            self._next += 1
        return out

    def release(self, ids: Iterable[int]) -> None:
        for i in ids:
            self._taken.discard(i)
            self._free.append(i)

    def take(self, ids: Iterable[int]) -> None:
        """Ids a restarted daemon finds in use (beyond the bump pointer: skipped by it)."""
        for i in ids:
            if i in self._free:
                self._free.remove(i)
            elif i >= self._next:
                self._taken.add(i)
