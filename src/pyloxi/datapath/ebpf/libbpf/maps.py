"""BPF maps by fd: single elements, key walks, batch operations and per-CPU values."""

from __future__ import annotations

import ctypes
import errno as _errno
import logging
import os
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import ENOTSUPP, BpfError, check, error
from .ffi import (
    MapBatchOpts,
    MapInfo,
    bpf_map_delete_batch,
    bpf_map_delete_elem,
    bpf_map_get_fd_by_id,
    bpf_map_get_next_key,
    bpf_map_lookup_batch,
    bpf_map_lookup_elem,
    bpf_map_update_batch,
    bpf_map_update_elem,
    bpf_obj_get,
    c_uint32,
    libbpf_num_possible_cpus,
)
from .info import obj_info

if TYPE_CHECKING:
    from .objects import BpfObject

log = logging.getLogger(__name__)

# update flags (uapi linux/bpf.h)
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
BPF_F_LOCK = 4


class MapType:
    """``enum bpf_map_type`` values used by callers (plain ints, the kernel's numbering)."""

    UNSPEC = 0
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    CGROUP_STORAGE = 19
    REUSEPORT_SOCKARRAY = 20
    PERCPU_CGROUP_STORAGE = 21
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27


PERCPU_MAP_TYPES = frozenset(
    {
        MapType.PERCPU_HASH,
        MapType.PERCPU_ARRAY,
        MapType.LRU_PERCPU_HASH,
        MapType.PERCPU_CGROUP_STORAGE,
    }
)


_ncpus: int | None = None


def possible_cpus() -> int:
    """Number of possible CPUs (``libbpf_num_possible_cpus``): the per-CPU value count."""
    global _ncpus
    if _ncpus is None:
        _ncpus = check(libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")
    return _ncpus


def _grown(buf: bytearray | memoryview, size: int) -> bytearray:
    out = bytearray(size)
    out[: len(buf)] = buf
    return out


def _round8(n: int) -> int:
    return (n + 7) & ~7



def _buf(data: bytes, size: int, what: str) -> ctypes.Array[ctypes.c_char]:
    if len(data) != size:
        raise BpfError(_errno.EINVAL, f"{what}: expected {size} bytes, got {len(data)}")
    return ctypes.create_string_buffer(data, size)



class Map:
    """A BPF map addressed by fd. Keys and values are raw ``bytes`` of the map's exact sizes.

    For per-CPU maps a *value* is the whole per-CPU blob: ``round_up(value_size, 8) * ncpus``
    bytes (``value_blob_size``); :meth:`lookup_percpu` / :meth:`update_percpu` /
    :meth:`split_percpu` work with one ``value_size`` slice per possible CPU instead.
    """

    fd: int
    name: str
    key_size: int
    value_size: int
    max_entries: int
    map_type: int
    map_flags: int
    id: int

    def __init__(self, fd: int, *, owns_fd: bool, owner: BpfObject | None = None) -> None:
        info = MapInfo()
        obj_info(fd, info, f"bpf_obj_get_info_by_fd(map fd {fd})")
        self.fd = fd
        self.name = info.name.decode()
        self.key_size = int(info.key_size)
        self.value_size = int(info.value_size)
        self.max_entries = int(info.max_entries)
        self.map_type = int(info.type)
        self.map_flags = int(info.map_flags)
        self.id = int(info.id)
        self._owner = owner
        self._finalizer = weakref.finalize(self, os.close, fd) if owns_fd else None

    def __repr__(self) -> str:
        return (
            f"Map(name={self.name!r}, type={self.map_type}, key_size={self.key_size}, "
            f"value_size={self.value_size}, max_entries={self.max_entries}, fd={self.fd})"
        )

    # lifecycle
    @classmethod
    def from_pin(cls, path: str) -> Map:
        """Open a pinned map (``bpf_obj_get``); the returned Map owns its fd (see :meth:`close`)."""
        return cls._owning(bpf_obj_get(os.fsencode(path)), f"bpf_obj_get({path})")

    @classmethod
    def from_id(cls, map_id: int) -> Map:
        """Open a map by kernel id (``bpf_map_get_fd_by_id``); the Map owns its fd."""
        return cls._owning(bpf_map_get_fd_by_id(map_id), f"bpf_map_get_fd_by_id({map_id})")

    @classmethod
    def _owning(cls, fd: int, call: str) -> Map:
        if fd < 0:
            raise error(-fd, call)
        try:
            return cls(fd, owns_fd=True)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        """Close the fd if this Map owns it (``from_pin``); object maps die with their object."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Map:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fd(self) -> int:
        if self._owner is not None and self._owner.closed:
            raise BpfError(_errno.EBADF, f"map {self.name!r}: its BpfObject is closed")
        if self._finalizer is not None and not self._finalizer.alive:
            raise BpfError(_errno.EBADF, f"map {self.name!r}: closed")
        return self.fd

    # sizes
    @property
    def percpu(self) -> bool:
        return self.map_type in PERCPU_MAP_TYPES

    @property
    def value_blob_size(self) -> int:
        """Bytes of one value as the syscall sees it (per-CPU: padded slot per possible CPU)."""
        if self.percpu:
            return _round8(self.value_size) * possible_cpus()
        return self.value_size

    def split_percpu(self, blob: bytes) -> list[bytes]:
        """Split a per-CPU value blob into one ``value_size`` slice per possible CPU."""
        stride = _round8(self.value_size)
        return [blob[i : i + self.value_size] for i in range(0, len(blob), stride)]

    # single-element ops
    def lookup(self, key: bytes) -> bytes | None:
        """Value for *key* (per-CPU maps: the whole blob), or None if absent."""
        k = _buf(key, self.key_size, f"map {self.name!r} key")
        v = ctypes.create_string_buffer(self.value_blob_size)
        ret = bpf_map_lookup_elem(self._fd(), k, v)
        if ret == -_errno.ENOENT:
            return None
        check(ret, f"bpf_map_lookup_elem({self.name})")
        return v.raw

    def lookup_percpu(self, key: bytes) -> list[bytes] | None:
        """Per-CPU map value for *key* as one slice per possible CPU, or None if absent."""
        if not self.percpu:
            raise BpfError(
                _errno.EINVAL, f"map {self.name!r} (type {self.map_type}) is not per-CPU"
            )
        blob = self.lookup(key)
        return None if blob is None else self.split_percpu(blob)

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        """Insert/replace (``BPF_ANY``/``BPF_NOEXIST``/``BPF_EXIST``); per-CPU: the whole blob."""
        k = _buf(key, self.key_size, f"map {self.name!r} key")
        v = _buf(value, self.value_blob_size, f"map {self.name!r} value")
        check(bpf_map_update_elem(self._fd(), k, v, flags), f"bpf_map_update_elem({self.name})")

    def update_percpu(self, key: bytes, values: list[bytes], flags: int = BPF_ANY) -> None:
        """Per-CPU update with one ``value_size`` slice per possible CPU."""
        ncpus = possible_cpus()
        if len(values) != ncpus:
            raise BpfError(_errno.EINVAL, f"map {self.name!r}: need {ncpus} per-CPU values")
        pad = b"\0" * (_round8(self.value_size) - self.value_size)
        self.update(key, b"".join(bytes(v) + pad for v in values), flags)

    def delete(self, key: bytes) -> bool:
        """Delete *key*; False if it was absent."""
        k = _buf(key, self.key_size, f"map {self.name!r} key")
        ret = bpf_map_delete_elem(self._fd(), k)
        if ret == -_errno.ENOENT:
            return False
        check(ret, f"bpf_map_delete_elem({self.name})")
        return True

    def keys(self) -> Iterator[bytes]:
        """All keys, by ``bpf_map_get_next_key`` (a hash walk restarts if the cursor is deleted)."""
        fd = self._fd()
        cur: ctypes.Array[ctypes.c_char] | None = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while True:
            ret = bpf_map_get_next_key(fd, cur, nxt)
            if ret == -_errno.ENOENT:
                return
            check(ret, f"bpf_map_get_next_key({self.name})")
            key = nxt.raw
            yield key
            cur = ctypes.create_string_buffer(key, self.key_size)

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    # batch ops
    def lookup_batch(self, batch: int = 4096) -> Iterator[tuple[bytes, bytes]]:
        """Yield every ``(key, value)`` using ``bpf_map_lookup_batch``, *batch* per syscall.

        ENOENT marks the end (possibly with a last partial batch); ENOSPC (a hash bucket larger
        than the batch) grows the batch. Map types without batch support fall back to a
        ``get_next_key`` + ``lookup`` walk.
        """
        for kraw, vraw, n in self.lookup_batch_raw(batch):
            ks, vs = len(kraw) // n, len(vraw) // n
            for i in range(n):
                yield kraw[i * ks : (i + 1) * ks], vraw[i * vs : (i + 1) * vs]

    def lookup_batch_raw(self, batch: int = 4096) -> Iterator[tuple[bytes, bytes, int]]:
        """Like :meth:`lookup_batch`, but one ``(keys, values, count)`` chunk per syscall, the
        entries packed back to back: for vectorised readers (numpy) of big maps."""
        fd = self._fd()
        ks, vs = self.key_size, self.value_blob_size
        batch = max(1, batch)
        token_in = ctypes.create_string_buffer(max(ks, 8))
        token_out = ctypes.create_string_buffer(max(ks, 8))
        opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts))
        first = True
        keys = ctypes.create_string_buffer(ks * batch)
        vals = ctypes.create_string_buffer(vs * batch)
        while True:
            count = c_uint32(batch)
            ret = bpf_map_lookup_batch(
                fd, None if first else token_in, token_out, keys, vals, ctypes.byref(count), opts
            )
            if ret == -_errno.ENOSPC and count.value == 0:
                batch *= 2
                keys = ctypes.create_string_buffer(ks * batch)
                vals = ctypes.create_string_buffer(vs * batch)
                continue
            if first and ret in (-_errno.EINVAL, -ENOTSUPP, -_errno.EOPNOTSUPP):
                log.debug("map %s: no lookup_batch (%d), walking keys", self.name, ret)
                for k, v in self._walk_items():
                    yield k, v, 1
                return
            if ret < 0 and ret != -_errno.ENOENT:
                check(ret, f"bpf_map_lookup_batch({self.name})")
            n = count.value
            if n:
                yield keys.raw[: n * ks], vals.raw[: n * vs], n
            if ret == -_errno.ENOENT:
                return
            ctypes.memmove(token_in, token_out, len(token_out))
            first = False

    def lookup_batch_all(self, batch: int = 65536, keys: bytearray | memoryview | None = None,
                         vals: bytearray | memoryview | None = None, start: int = 0
                         ) -> tuple[bytearray | memoryview, bytearray | memoryview, int]:
        """Every entry, read with ``bpf_map_lookup_batch`` straight into two buffers (keys,
        values, back to back): ``(keys, values, count)``, count entries in all, the buffers
        possibly longer. For big maps read whole (conntrack aging): no bytes object per batch
        and no join. Without buffers, they are bytearrays sized to the map; with them (writable,
        e.g. a memoryview of an uninitialised numpy array, whose untouched pages cost nothing
        where a bytearray writes zeros over all of it), entries go after the first *start*
        (several maps of one layout in one pair of buffers), and are copied into bigger ones
        if they must grow."""
        fd = self._fd()
        ks, vs = self.key_size, self.value_blob_size
        batch = max(1, batch)
        if keys is None or vals is None:
            cap = self.max_entries + batch  # LRU maps can briefly go past max_entries
            keys, vals, start = bytearray(ks * cap), bytearray(vs * cap), 0
        cap = min(len(keys) // ks, len(vals) // vs)
        got = start
        token_in = ctypes.create_string_buffer(max(ks, 8))
        token_out = ctypes.create_string_buffer(max(ks, 8))
        opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts))
        first = True
        while True:
            if cap - got < batch:  # more entries than the map holds: grow (entries racing in)
                cap += max(batch, cap // 4)
                keys, vals = _grown(keys, ks * cap), _grown(vals, vs * cap)
            kbase = ctypes.addressof((ctypes.c_char * len(keys)).from_buffer(keys))
            vbase = ctypes.addressof((ctypes.c_char * len(vals)).from_buffer(vals))
            count = c_uint32(batch)
            ret = bpf_map_lookup_batch(fd, None if first else token_in, token_out,
                                       kbase + got * ks, vbase + got * vs,
                                       ctypes.byref(count), opts)
            if ret == -_errno.ENOSPC and count.value == 0:
                batch *= 2  # a bucket holds more than a batch
                continue
            if first and ret in (-_errno.EINVAL, -ENOTSUPP, -_errno.EOPNOTSUPP):
                items = list(self._walk_items())
                keys[got * ks:] = b"".join(k for k, _ in items)
                vals[got * vs:] = b"".join(v for _, v in items)
                return keys, vals, got + len(items)
            if ret < 0 and ret != -_errno.ENOENT:
                check(ret, f"bpf_map_lookup_batch({self.name})")
            got += count.value
            if ret == -_errno.ENOENT:
                return keys, vals, got
            ctypes.memmove(token_in, token_out, len(token_out))
            first = False

    def lookup_array_range(self, start: int, count: int) -> bytes:
        """Values of array indexes ``start .. start+count-1`` packed back to back (per-CPU: whole
        blobs), in one ``bpf_map_lookup_batch`` call: an array's batch token is the index read
        last, so a token of ``start - 1`` resumes at ``start``. Metrics read a service's
        endpoint counters this way, one syscall per service instead of one per endpoint."""
        if count <= 0:
            return b""
        if self.key_size != 4:
            raise BpfError(_errno.EINVAL, f"map {self.name!r}: not an array (key size)")
        vs = self.value_blob_size
        vals = ctypes.create_string_buffer(vs * count)
        keys = ctypes.create_string_buffer(4 * count)
        token_in = ctypes.create_string_buffer((start - 1).to_bytes(4, "little"), 8) \
            if start > 0 else None
        token_out = ctypes.create_string_buffer(8)
        got = 0
        opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts))
        while got < count:
            n = c_uint32(count - got)
            ret = bpf_map_lookup_batch(self._fd(), token_in, token_out, keys,
                                       ctypes.byref(vals, got * vs), ctypes.byref(n), opts)
            if ret < 0 and ret != -_errno.ENOENT:
                check(ret, f"bpf_map_lookup_batch({self.name}) at {start + got}")
            got += n.value
            if ret == -_errno.ENOENT or n.value == 0:  # end of the array
                break
            token_in = ctypes.create_string_buffer(token_out.raw, 8)
        return vals.raw[: got * vs]

    def _walk_items(self) -> Iterator[tuple[bytes, bytes]]:
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def items(self, batch: int = 4096) -> Iterator[tuple[bytes, bytes]]:
        return self.lookup_batch(batch)

    def delete_batch(self, keys: list[bytes]) -> int:
        """Delete *keys*; returns how many existed and were deleted (absent keys are skipped).

        Uses ``bpf_map_delete_batch``; map types without it (EINVAL/ENOTSUPP) fall back to
        per-key deletes.
        """
        if not keys:
            return 0
        fd, ks = self._fd(), self.key_size
        for k in keys:
            if len(k) != ks:
                raise BpfError(_errno.EINVAL, f"map {self.name!r} key: expected {ks} bytes")
        buf = ctypes.create_string_buffer(b"".join(keys), ks * len(keys))
        opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts))
        deleted, start, n = 0, 0, len(keys)
        while start < n:
            count = c_uint32(n - start)
            ret = bpf_map_delete_batch(
                fd, ctypes.byref(buf, start * ks), ctypes.byref(count), opts
            )
            if ret in (-_errno.EINVAL, -ENOTSUPP, -_errno.EOPNOTSUPP) and deleted == 0:
                log.debug("map %s: no delete_batch (%d), deleting per key", self.name, ret)
                return deleted + sum(self.delete(k) for k in keys[start:])
            done = min(count.value, n - start)
            deleted += done
            if ret == 0:
                break
            if ret == -_errno.ENOENT:  # keys[start + done] is absent: skip it and go on
                start += done + 1
                continue
            check(ret, f"bpf_map_delete_batch({self.name}) after {deleted} deletions")
        return deleted

    def update_batch(self, keys: list[bytes], values: list[bytes], flags: int = BPF_ANY) -> None:
        """Write all pairs with ``bpf_map_update_batch`` (per-CPU: whole blobs as values).

        The kernel's batch update accepts only ``BPF_ANY`` (optionally ``| BPF_F_LOCK``);
        ``BPF_NOEXIST``/``BPF_EXIST`` are applied per key instead, stopping at the first failure.
        """
        if len(keys) != len(values):
            raise BpfError(
                _errno.EINVAL, f"map {self.name!r}: {len(keys)} keys, {len(values)} values"
            )
        if not keys:
            return
        fd, ks, vs = self._fd(), self.key_size, self.value_blob_size
        if any(len(k) != ks for k in keys) or any(len(v) != vs for v in values):
            raise BpfError(
                _errno.EINVAL, f"map {self.name!r}: keys must be {ks} bytes, values {vs} bytes"
            )
        if flags & ~BPF_F_LOCK:
            for k, v in zip(keys, values, strict=True):
                self.update(k, v, flags)
            return
        kbuf = ctypes.create_string_buffer(b"".join(keys), ks * len(keys))
        vbuf = ctypes.create_string_buffer(b"".join(values), vs * len(values))
        opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts), elem_flags=flags)
        start, n = 0, len(keys)
        while start < n:
            count = c_uint32(n - start)
            ret = bpf_map_update_batch(
                fd,
                ctypes.byref(kbuf, start * ks),
                ctypes.byref(vbuf, start * vs),
                ctypes.byref(count),
                opts,
            )
            if ret < 0:
                done = start + min(count.value, n - start) if count.value < n - start else start
                raise error(
                    -ret, f"bpf_map_update_batch({self.name}): failed after {done} of {n} entries"
                )
            if count.value == 0:  # defensive: never spin
                raise BpfError(_errno.EIO, f"bpf_map_update_batch({self.name}) made no progress")
            start += count.value

