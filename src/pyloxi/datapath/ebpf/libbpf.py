"""Thin, typed ctypes binding to the system ``libbpf.so.1`` (written against libbpf 1.1.2).

Scope: open/load BPF objects (with map pinning under a bpffs root), map access (single-element,
get_next_key walks, batch ops, per-CPU values), TC clsact attach/detach/query and
``BPF_PROG_TEST_RUN``. BTF struct layouts live in :mod:`pyloxi.datapath.ebpf.btf`.

Conventions of libbpf >= 1.0 that this module relies on:

* functions returning ``int`` return ``-errno`` on failure (including the low-level ``bpf_*``
  syscall wrappers of ``bpf.h``);
* functions returning pointers return ``NULL`` and set ``errno``.

Every failure raises :class:`BpfError` (an :class:`OSError`) whose message carries the operation,
the kernel's ``strerror`` text and the warnings libbpf printed during the call (for a failed load
that includes the tail of the verifier log). libbpf's own messages are routed to the
``pyloxi.datapath.ebpf.libbpf`` logger.

All the ``*_opts`` structs mirror libbpf 1.1.2's headers exactly and carry the leading ``sz``
field, which is always set to ``ctypes.sizeof`` of the mirror.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno as _errno
import logging
import os
import platform
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

log = logging.getLogger(__name__)

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
    "tc_attach",
    "tc_attached_prog_id",
    "tc_detach",
    "tc_hook_destroy",
]

# --- constants (uapi linux/bpf.h) ---

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
BPF_F_LOCK = 4

# enum bpf_tc_attach_point / enum bpf_tc_flags (libbpf.h)
BPF_TC_INGRESS = 1 << 0
BPF_TC_EGRESS = 1 << 1
BPF_TC_CUSTOM = 1 << 2
BPF_TC_F_REPLACE = 1 << 0

ENOTSUPP = 524  # kernel-internal "operation not supported", leaks out of the bpf() syscall
_BPF_OBJ_NAME_LEN = 16
_LIBBPF_ERRNO_START = 4000  # enum libbpf_errno: LIBBPF_ERRNO__START


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


class BpfError(OSError):
    """A libbpf or kernel failure: ``errno`` is the error number, ``strerror`` the full message."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(errno, message)

    def __str__(self) -> str:
        if self.errno == ENOTSUPP:
            name = "ENOTSUPP"
        elif self.errno >= _LIBBPF_ERRNO_START:
            name = f"LIBBPF_ERRNO {self.errno}"
        else:
            name = _errno.errorcode.get(self.errno, str(self.errno))
        return f"[{name}] {self.strerror}"


# --- library loading & prototypes ---

_lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

c_int, c_uint, c_uint32, c_uint64 = ctypes.c_int, ctypes.c_uint, ctypes.c_uint32, ctypes.c_uint64
c_size_t, c_char_p, c_void_p = ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p


class _ObjectOpenOpts(ctypes.Structure):
    """``struct bpf_object_open_opts`` (libbpf 1.1.2)."""

    _fields_ = [
        ("sz", c_size_t),
        ("object_name", c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", c_char_p),
        ("_stub_attach_prog_fd", c_uint32),  # __u32 :32; removed attach_prog_fd
        ("kconfig", c_char_p),
        ("btf_custom_path", c_char_p),
        ("kernel_log_buf", c_void_p),
        ("kernel_log_size", c_size_t),
        ("kernel_log_level", c_uint32),
    ]


class _TcHook(ctypes.Structure):
    """``struct bpf_tc_hook``."""

    _fields_ = [
        ("sz", c_size_t),
        ("ifindex", c_int),
        ("attach_point", c_int),  # enum bpf_tc_attach_point
        ("parent", c_uint32),
    ]


class _TcOpts(ctypes.Structure):
    """``struct bpf_tc_opts``."""

    _fields_ = [
        ("sz", c_size_t),
        ("prog_fd", c_int),
        ("flags", c_uint32),
        ("prog_id", c_uint32),
        ("handle", c_uint32),
        ("priority", c_uint32),
    ]


class _TestRunOpts(ctypes.Structure):
    """``struct bpf_test_run_opts``."""

    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


class _MapBatchOpts(ctypes.Structure):
    """``struct bpf_map_batch_opts``."""

    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


class _MapInfo(ctypes.Structure):
    """``struct bpf_map_info`` (uapi, aligned(8))."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("max_entries", c_uint32),
        ("map_flags", c_uint32),
        ("name", ctypes.c_char * _BPF_OBJ_NAME_LEN),
        ("ifindex", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("netns_dev", c_uint64),
        ("netns_ino", c_uint64),
        ("btf_id", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
        ("_pad", c_uint32),
        ("map_extra", c_uint64),
    ]


class _ProgInfoHead(ctypes.Structure):
    """Leading part of ``struct bpf_prog_info`` (the kernel accepts a shorter info_len)."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", c_uint32),
        ("xlated_prog_len", c_uint32),
        ("jited_prog_insns", c_uint64),
        ("xlated_prog_insns", c_uint64),
        ("load_time", c_uint64),
        ("created_by_uid", c_uint32),
        ("nr_map_ids", c_uint32),
        ("map_ids", c_uint64),
        ("name", ctypes.c_char * _BPF_OBJ_NAME_LEN),
    ]


def _proto(name: str, restype: object, *argtypes: object) -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    fn = getattr(_lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


# logging
_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)  # (level, fmt, va_list)
_libbpf_set_print = _proto("libbpf_set_print", c_void_p, _PRINT_FN)
# object / program / map (libbpf.h)
_bpf_object__open_file = _proto(
    "bpf_object__open_file", c_void_p, c_char_p, ctypes.POINTER(_ObjectOpenOpts)
)
_bpf_object__load = _proto("bpf_object__load", c_int, c_void_p)
_bpf_object__close = _proto("bpf_object__close", None, c_void_p)
_bpf_object__name = _proto("bpf_object__name", c_char_p, c_void_p)
_bpf_object__find_program_by_name = _proto(
    "bpf_object__find_program_by_name", c_void_p, c_void_p, c_char_p
)
_bpf_object__next_program = _proto("bpf_object__next_program", c_void_p, c_void_p, c_void_p)
_bpf_program__name = _proto("bpf_program__name", c_char_p, c_void_p)
_bpf_program__fd = _proto("bpf_program__fd", c_int, c_void_p)
_bpf_object__find_map_by_name = _proto("bpf_object__find_map_by_name", c_void_p, c_void_p, c_char_p)
_bpf_object__next_map = _proto("bpf_object__next_map", c_void_p, c_void_p, c_void_p)
_bpf_map__name = _proto("bpf_map__name", c_char_p, c_void_p)
_bpf_map__fd = _proto("bpf_map__fd", c_int, c_void_p)
_bpf_map__set_max_entries = _proto("bpf_map__set_max_entries", c_int, c_void_p, c_uint32)
_bpf_map__pin_path = _proto("bpf_map__pin_path", c_char_p, c_void_p)
_bpf_map__is_pinned = _proto("bpf_map__is_pinned", ctypes.c_bool, c_void_p)
_bpf_map__reuse_fd = _proto("bpf_map__reuse_fd", c_int, c_void_p, c_int)
_bpf_map__type = _proto("bpf_map__type", c_int, c_void_p)
_bpf_map__key_size = _proto("bpf_map__key_size", c_uint32, c_void_p)
_bpf_map__value_size = _proto("bpf_map__value_size", c_uint32, c_void_p)
_bpf_map__max_entries = _proto("bpf_map__max_entries", c_uint32, c_void_p)
_bpf_map__map_flags = _proto("bpf_map__map_flags", c_uint32, c_void_p)
_libbpf_strerror = _proto("libbpf_strerror", c_int, c_int, c_char_p, c_size_t)
_libbpf_num_possible_cpus = _proto("libbpf_num_possible_cpus", c_int)
# low-level syscall wrappers (bpf.h)
_bpf_map_update_elem = _proto("bpf_map_update_elem", c_int, c_int, c_void_p, c_void_p, c_uint64)
_bpf_map_lookup_elem = _proto("bpf_map_lookup_elem", c_int, c_int, c_void_p, c_void_p)
_bpf_map_delete_elem = _proto("bpf_map_delete_elem", c_int, c_int, c_void_p)
_bpf_map_get_next_key = _proto("bpf_map_get_next_key", c_int, c_int, c_void_p, c_void_p)
_bpf_map_lookup_batch = _proto(
    "bpf_map_lookup_batch",
    c_int,
    c_int,
    c_void_p,
    c_void_p,
    c_void_p,
    c_void_p,
    ctypes.POINTER(c_uint32),
    ctypes.POINTER(_MapBatchOpts),
)
_bpf_map_delete_batch = _proto(
    "bpf_map_delete_batch",
    c_int,
    c_int,
    c_void_p,
    ctypes.POINTER(c_uint32),
    ctypes.POINTER(_MapBatchOpts),
)
_bpf_map_update_batch = _proto(
    "bpf_map_update_batch",
    c_int,
    c_int,
    c_void_p,
    c_void_p,
    ctypes.POINTER(c_uint32),
    ctypes.POINTER(_MapBatchOpts),
)
_bpf_obj_get = _proto("bpf_obj_get", c_int, c_char_p)
_bpf_prog_get_fd_by_id = _proto("bpf_prog_get_fd_by_id", c_int, c_uint32)
_bpf_map_get_fd_by_id = _proto("bpf_map_get_fd_by_id", c_int, c_uint32)
_bpf_obj_get_info_by_fd = _proto(
    "bpf_obj_get_info_by_fd", c_int, c_int, c_void_p, ctypes.POINTER(c_uint32)
)
_bpf_prog_test_run_opts = _proto(
    "bpf_prog_test_run_opts", c_int, c_int, ctypes.POINTER(_TestRunOpts)
)
# tc
_bpf_tc_hook_create = _proto("bpf_tc_hook_create", c_int, ctypes.POINTER(_TcHook))
_bpf_tc_hook_destroy = _proto("bpf_tc_hook_destroy", c_int, ctypes.POINTER(_TcHook))
_bpf_tc_attach = _proto("bpf_tc_attach", c_int, ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts))
_bpf_tc_detach = _proto("bpf_tc_detach", c_int, ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts))
_bpf_tc_query = _proto("bpf_tc_query", c_int, ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts))
# libc
_vsnprintf = _libc.vsnprintf
_vsnprintf.restype = c_int
_vsnprintf.argtypes = [c_void_p, c_size_t, c_char_p, c_void_p]
_mount = _libc.mount
_mount.restype = c_int
_mount.argtypes = [c_char_p, c_char_p, c_char_p, ctypes.c_ulong, c_void_p]


# --- libbpf print callback → logging, with per-thread capture of warnings for error messages ---

_LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)  # LIBBPF_WARN, _INFO, _DEBUG
# x86-64 SysV and AArch64 pass va_list as a pointer to a small struct; copying that struct is what
# va_copy() does, which lets us measure the formatted length before formatting.
_VA_LIST_SIZE = {"x86_64": 24, "AMD64": 24, "aarch64": 32, "arm64": 32}.get(platform.machine())
_FALLBACK_BUF = 64 * 1024
_MAX_CAPTURE = 6000  # characters of libbpf warnings kept in a BpfError message
_tls = threading.local()


def _format(fmt: bytes, va_list: int) -> str:
    if _VA_LIST_SIZE is not None:
        copy = ctypes.create_string_buffer(_VA_LIST_SIZE)
        ctypes.memmove(copy, va_list, _VA_LIST_SIZE)
        size = _vsnprintf(None, 0, fmt, ctypes.addressof(copy)) + 1
    else:
        size = _FALLBACK_BUF
    buf = ctypes.create_string_buffer(max(size, 1))
    _vsnprintf(buf, len(buf), fmt, va_list)
    return buf.value.decode(errors="replace")


class _Capture(list[str]):
    """libbpf warnings printed by one thread during one call. They are logged when the call
    ends: at WARNING if it succeeded, at DEBUG if it raised (the text is then in the BpfError) or
    if the caller marked the failure as expected (e.g. EEXIST from ``bpf_tc_hook_create``)."""

    expected = False


def _print_cb(level: int, fmt: bytes | None, va_list: int | None) -> int:
    try:
        pylevel = _LEVELS[level] if 0 <= level < len(_LEVELS) else logging.DEBUG
        capture: _Capture | None = getattr(_tls, "capture", None)
        want_capture = capture is not None and pylevel >= logging.WARNING
        if fmt is None or not (want_capture or log.isEnabledFor(pylevel)):
            return 0
        text = _format(fmt, va_list or 0).rstrip("\n")
        if want_capture and capture is not None:
            capture.append(text)
        else:
            log.log(pylevel, "%s", text)
    except Exception:  # never let an exception cross back into C
        log.exception("libbpf print callback failed")
    return 0


_print_cb_ref = _PRINT_FN(_print_cb)  # module-level reference: must outlive every libbpf call
_libbpf_set_print(_print_cb_ref)


@contextlib.contextmanager
def _capturing() -> Iterator[_Capture]:
    """Collect the libbpf warnings printed by this thread while the block runs."""
    prev = getattr(_tls, "capture", None)
    lines = _Capture()
    _tls.capture = lines
    failed = True
    try:
        yield lines
        failed = False
    finally:
        _tls.capture = prev
        level = logging.DEBUG if failed or lines.expected else logging.WARNING
        for line in lines:
            log.log(level, "%s", line)


def _error(err: int, what: str, libbpf_lines: list[str] | None = None) -> BpfError:
    err = abs(err) or _errno.EIO
    if err == ENOTSUPP:
        reason = "Operation not supported (ENOTSUPP)"
    elif err >= _LIBBPF_ERRNO_START:  # libbpf's own codes (LIBBPF_ERRNO__FORMAT, ...)
        buf = ctypes.create_string_buffer(256)
        _libbpf_strerror(err, buf, len(buf))
        reason = buf.value.decode(errors="replace")
    else:
        reason = os.strerror(err)
    msg = f"{what}: {reason}"
    if libbpf_lines:
        detail = "\n".join(libbpf_lines)
        if len(detail) > _MAX_CAPTURE:
            detail = "…" + detail[-_MAX_CAPTURE:]
        msg += "\n" + detail
    return BpfError(err, msg)


def _check(ret: int, what: str, lines: list[str] | None = None) -> int:
    if ret < 0:
        raise _error(-ret, what, lines)
    return ret


def _errno_now() -> int:
    return ctypes.get_errno() or _errno.EIO


def _buf(data: bytes, size: int, what: str) -> ctypes.Array[ctypes.c_char]:
    if len(data) != size:
        raise BpfError(_errno.EINVAL, f"{what}: expected {size} bytes, got {len(data)}")
    return ctypes.create_string_buffer(data, size)


# --- helpers ---

_ncpus: int | None = None


def possible_cpus() -> int:
    """Number of possible CPUs (``libbpf_num_possible_cpus``): the per-CPU value count."""
    global _ncpus
    if _ncpus is None:
        _ncpus = _check(_libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")
    return _ncpus


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
    if _mount(b"bpf", os.fsencode(path), b"bpf", 0, None) != 0:
        raise _error(_errno_now(), f"mount -t bpf bpf {path}")


def _mountpoints() -> set[str]:
    with open("/proc/self/mounts") as f:
        return {line.split()[1].replace("\\040", " ") for line in f}


def _obj_info(fd: int, info: ctypes.Structure, what: str) -> None:
    ln = c_uint32(ctypes.sizeof(info))
    _check(_bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(ln)), what)


def prog_id(prog_fd: int) -> int:
    """Kernel id of the program behind *prog_fd* (what ``tc_attached_prog_id`` reports)."""
    info = _ProgInfoHead()
    _obj_info(prog_fd, info, f"bpf_obj_get_info_by_fd(prog fd {prog_fd})")
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
    fd = _bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        raise _error(-fd, f"bpf_prog_get_fd_by_id({prog_id})")
    return fd


def prog_info(prog_fd: int) -> ProgInfo:
    """Id, name and the ids of the maps the program uses (two calls: count, then the ids)."""
    what = f"bpf_obj_get_info_by_fd(prog fd {prog_fd})"
    info = _ProgInfoHead()
    _obj_info(prog_fd, info, what)
    n = int(info.nr_map_ids)
    ids = (c_uint32 * max(n, 1))()
    if n:
        info = _ProgInfoHead(nr_map_ids=n, map_ids=ctypes.addressof(ids))
        _obj_info(prog_fd, info, what)
        n = min(n, int(info.nr_map_ids))  # the kernel reports how many it filled in
    return ProgInfo(id=int(info.id), name=info.name.decode(errors="replace"),
                    map_ids=tuple(int(i) for i in ids[:n]))


def _round8(n: int) -> int:
    return (n + 7) & ~7


# --- maps ---


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
        info = _MapInfo()
        _obj_info(fd, info, f"bpf_obj_get_info_by_fd(map fd {fd})")
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
        return cls._owning(_bpf_obj_get(os.fsencode(path)), f"bpf_obj_get({path})")

    @classmethod
    def from_id(cls, map_id: int) -> Map:
        """Open a map by kernel id (``bpf_map_get_fd_by_id``); the Map owns its fd."""
        return cls._owning(_bpf_map_get_fd_by_id(map_id), f"bpf_map_get_fd_by_id({map_id})")

    @classmethod
    def _owning(cls, fd: int, call: str) -> Map:
        if fd < 0:
            raise _error(-fd, call)
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
        ret = _bpf_map_lookup_elem(self._fd(), k, v)
        if ret == -_errno.ENOENT:
            return None
        _check(ret, f"bpf_map_lookup_elem({self.name})")
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
        _check(_bpf_map_update_elem(self._fd(), k, v, flags), f"bpf_map_update_elem({self.name})")

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
        ret = _bpf_map_delete_elem(self._fd(), k)
        if ret == -_errno.ENOENT:
            return False
        _check(ret, f"bpf_map_delete_elem({self.name})")
        return True

    def keys(self) -> Iterator[bytes]:
        """All keys, by ``bpf_map_get_next_key`` (a hash walk restarts if the cursor is deleted)."""
        fd = self._fd()
        cur: ctypes.Array[ctypes.c_char] | None = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while True:
            ret = _bpf_map_get_next_key(fd, cur, nxt)
            if ret == -_errno.ENOENT:
                return
            _check(ret, f"bpf_map_get_next_key({self.name})")
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
        opts = _MapBatchOpts(sz=ctypes.sizeof(_MapBatchOpts))
        first = True
        keys = ctypes.create_string_buffer(ks * batch)
        vals = ctypes.create_string_buffer(vs * batch)
        while True:
            count = c_uint32(batch)
            ret = _bpf_map_lookup_batch(
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
                _check(ret, f"bpf_map_lookup_batch({self.name})")
            n = count.value
            if n:
                yield keys.raw[: n * ks], vals.raw[: n * vs], n
            if ret == -_errno.ENOENT:
                return
            ctypes.memmove(token_in, token_out, len(token_out))
            first = False

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
        opts = _MapBatchOpts(sz=ctypes.sizeof(_MapBatchOpts))
        deleted, start, n = 0, 0, len(keys)
        while start < n:
            count = c_uint32(n - start)
            ret = _bpf_map_delete_batch(
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
            _check(ret, f"bpf_map_delete_batch({self.name}) after {deleted} deletions")
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
        opts = _MapBatchOpts(sz=ctypes.sizeof(_MapBatchOpts), elem_flags=flags)
        start, n = 0, len(keys)
        while start < n:
            count = c_uint32(n - start)
            ret = _bpf_map_update_batch(
                fd,
                ctypes.byref(kbuf, start * ks),
                ctypes.byref(vbuf, start * vs),
                ctypes.byref(count),
                opts,
            )
            if ret < 0:
                done = start + min(count.value, n - start) if count.value < n - start else start
                raise _error(
                    -ret, f"bpf_map_update_batch({self.name}): failed after {done} of {n} entries"
                )
            if count.value == 0:  # defensive: never spin
                raise BpfError(_errno.EIO, f"bpf_map_update_batch({self.name}) made no progress")
            start += count.value


# --- objects ---


class BpfObject:
    """An opened (and, after :meth:`load`, loaded) BPF ELF object. Context manager."""

    def __init__(self, ptr: int, path: str, pin_root: str | None) -> None:
        self._ptr: int | None = ptr
        self.path = path
        self.pin_root = pin_root
        self.loaded = False
        self._maps: dict[str, Map] = {}

    @classmethod
    def open(cls, path: str, *, pin_root: str | None = None) -> BpfObject:
        """``bpf_object__open_file``; *pin_root* is where ``LIBBPF_PIN_BY_NAME`` maps are pinned
        (and, when a compatible pin already exists there, reused at :meth:`load`).
        *pin_root* is created if missing; it must be on a bpffs."""
        opts = _ObjectOpenOpts(sz=ctypes.sizeof(_ObjectOpenOpts))
        if pin_root is not None:
            os.makedirs(pin_root, exist_ok=True)
            opts.pin_root_path = os.fsencode(pin_root)
        with _capturing() as lines:
            ptr = _bpf_object__open_file(os.fsencode(path), ctypes.byref(opts))
            if not ptr:
                raise _error(_errno_now(), f"bpf_object__open_file({path})", lines)
        return cls(ptr, path, pin_root)

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def _obj(self) -> int:
        if self._ptr is None:
            raise BpfError(_errno.EBADF, f"BPF object {self.path}: closed")
        return self._ptr

    def close(self) -> None:
        """``bpf_object__close``: frees programs and maps (pinned maps stay pinned)."""
        if self._ptr is not None:
            ptr, self._ptr = self._ptr, None
            self._maps.clear()
            _bpf_object__close(ptr)

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    @property
    def name(self) -> str:
        return (_bpf_object__name(self._obj()) or b"").decode()

    def program_names(self) -> list[str]:
        obj, names, prog = self._obj(), [], None
        while prog := _bpf_object__next_program(obj, prog):
            names.append((_bpf_program__name(prog) or b"").decode())
        return names

    def map_names(self) -> list[str]:
        obj, names, m = self._obj(), [], None
        while m := _bpf_object__next_map(obj, m):
            names.append((_bpf_map__name(m) or b"").decode())
        return names

    def _find_map(self, name: str) -> int:
        m = _bpf_object__find_map_by_name(self._obj(), name.encode())
        if not m:
            raise _error(
                _errno_now(),
                f"no map {name!r} in {self.path} (maps: {', '.join(self.map_names()) or '-'})",
            )
        return m

    def set_max_entries(self, map_name: str, max_entries: int) -> None:
        """Resize a map before :meth:`load` (``bpf_map__set_max_entries``)."""
        ret = _bpf_map__set_max_entries(self._find_map(map_name), max_entries)
        _check(ret, f"bpf_map__set_max_entries({map_name}, {max_entries})")

    def pin_path(self, map_name: str) -> str | None:
        """Where libbpf pins *map_name* (None if the map is not pinned by name)."""
        p = _bpf_map__pin_path(self._find_map(map_name))
        return p.decode() if p else None

    def pinned_map_names(self) -> list[str]:
        """Maps the object pins by name (``LIBBPF_PIN_BY_NAME``): its persistent state."""
        return [n for n in self.map_names() if self.pin_path(n)]

    def reuse_map(self, map_name: str, existing: Map) -> None:
        """Before :meth:`load`: make *map_name* use the live map *existing* instead of creating
        one (``bpf_map__reuse_fd``, which dups the fd; *existing* may be closed afterwards).
        Refused unless type, key/value sizes, flags and size match: a program loaded against a
        map of another layout would misread every entry."""
        m = self._find_map(map_name)
        want = (_bpf_map__type(m), _bpf_map__key_size(m), _bpf_map__value_size(m),
                _bpf_map__map_flags(m), _bpf_map__max_entries(m))
        have = (existing.map_type, existing.key_size, existing.value_size, existing.map_flags,
                existing.max_entries)
        if want != have:
            raise BpfError(
                _errno.EINVAL,
                f"map {map_name!r}: the live map (id {existing.id}) has type/key/value/flags/"
                f"entries {have}, this object wants {want}",
            )
        with _capturing() as lines:
            _check(_bpf_map__reuse_fd(m, existing.fd), f"bpf_map__reuse_fd({map_name})", lines)

    def load(self) -> None:
        """``bpf_object__load``: create/reuse maps, verify and load programs, pin maps."""
        with _capturing() as lines:
            ret = _bpf_object__load(self._obj())
            _check(ret, f"bpf_object__load({self.path})", lines)
        self.loaded = True

    def program_fd(self, name: str) -> int:
        """fd of the loaded program *name* (the C function name). Owned by the object."""
        prog = _bpf_object__find_program_by_name(self._obj(), name.encode())
        if not prog:
            raise _error(
                _errno_now(),
                f"no program {name!r} in {self.path} "
                f"(programs: {', '.join(self.program_names()) or '-'})",
            )
        fd = _bpf_program__fd(prog)
        if fd < 0:
            raise _error(-fd, f"program {name!r} of {self.path} has no fd (object not loaded?)")
        return fd

    def map(self, name: str) -> Map:
        """The loaded map *name*. Its fd belongs to this object and is closed by :meth:`close`."""
        if name in self._maps:
            return self._maps[name]
        fd = _bpf_map__fd(self._find_map(name))
        if fd < 0:
            raise _error(-fd, f"map {name!r} of {self.path} has no fd (object not loaded?)")
        m = Map(fd, owns_fd=False, owner=self)
        self._maps[name] = m
        return m


# --- BPF_PROG_TEST_RUN ---


@dataclass(frozen=True)
class TestRunResult:
    """Outcome of ``bpf_prog_test_run_opts``; ``duration_ns`` is the average per repetition."""

    __test__ = False  # not a pytest test class

    retval: int
    data: bytes
    duration_ns: int
    ctx: bytes | None = None


def prog_test_run(
    prog_fd: int,
    data: bytes,
    *,
    repeat: int = 1,
    ctx: bytes | None = None,
    data_size_out: int = 2048,
) -> TestRunResult:
    """Run a program on *data* (``BPF_PROG_TEST_RUN``). TC/XDP need >= 14 bytes (Ethernet).

    *ctx* (e.g. a ``struct __sk_buff`` for TC) is passed in and the program's ctx is returned in
    ``TestRunResult.ctx``. ``data_size_out`` must cover the output packet, else ENOSPC.
    """
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(max(data_size_out, 1))
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts))
    opts.data_in = ctypes.cast(din, c_void_p)
    opts.data_size_in = len(data)
    opts.data_out = ctypes.cast(dout, c_void_p)
    opts.data_size_out = len(dout)
    opts.repeat = repeat
    cin = cout = None
    if ctx is not None:
        cin = ctypes.create_string_buffer(ctx, len(ctx))
        cout = ctypes.create_string_buffer(len(ctx))
        opts.ctx_in = ctypes.cast(cin, c_void_p)
        opts.ctx_size_in = len(ctx)
        opts.ctx_out = ctypes.cast(cout, c_void_p)
        opts.ctx_size_out = len(ctx)
    with _capturing() as lines:
        ret = _bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
        _check(ret, f"bpf_prog_test_run_opts(prog fd {prog_fd}, {len(data)} bytes)", lines)
    out_ctx = cout.raw[: opts.ctx_size_out] if cout is not None else None
    return TestRunResult(
        retval=int(opts.retval),
        data=dout.raw[: opts.data_size_out],
        duration_ns=int(opts.duration),
        ctx=out_ctx,
    )


def run_syscall_prog(prog_fd: int, ctx: bytes | None = None) -> int:
    """Run a ``SEC("syscall")`` program once (test_run with no packet); returns its retval."""
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts))
    cin = None
    if ctx is not None:
        cin = ctypes.create_string_buffer(ctx, len(ctx))
        opts.ctx_in = ctypes.cast(cin, c_void_p)
        opts.ctx_size_in = len(ctx)
    with _capturing() as lines:
        ret = _bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
        _check(ret, f"bpf_prog_test_run_opts(syscall prog fd {prog_fd})", lines)
    return int(opts.retval)


# --- TC clsact ---


def _hook(ifindex: int, ingress: bool) -> _TcHook:
    return _TcHook(
        sz=ctypes.sizeof(_TcHook),
        ifindex=ifindex,
        attach_point=BPF_TC_INGRESS if ingress else BPF_TC_EGRESS,
    )


def _where(ifindex: int, ingress: bool, handle: int, priority: int) -> str:
    return f"ifindex {ifindex} {'ingress' if ingress else 'egress'} handle {handle} prio {priority}"


def tc_attach(
    ifindex: int, prog_fd: int, *, ingress: bool = True, handle: int = 1, priority: int = 1
) -> int:
    """Attach *prog_fd* as a direct-action cls_bpf filter on the clsact hook of *ifindex*.

    Creates the clsact qdisc if needed (EEXIST is fine) and uses ``BPF_TC_F_REPLACE``, so
    attaching another program at the same handle/priority swaps it atomically. Returns the
    attached program id.
    """
    hook = _hook(ifindex, ingress)
    where = _where(ifindex, ingress, handle, priority)
    with _capturing() as lines:
        ret = _bpf_tc_hook_create(ctypes.byref(hook))
        if ret < 0 and ret != -_errno.EEXIST:
            raise _error(-ret, f"bpf_tc_hook_create({where})", lines)
        lines.expected = ret == -_errno.EEXIST  # clsact already there: fine
    opts = _TcOpts(
        sz=ctypes.sizeof(_TcOpts),
        prog_fd=prog_fd,
        flags=BPF_TC_F_REPLACE,
        handle=handle,
        priority=priority,
    )
    with _capturing() as lines:
        ret = _bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts))
        _check(ret, f"bpf_tc_attach({where}, prog fd {prog_fd})", lines)
    return int(opts.prog_id)


def tc_detach(ifindex: int, *, ingress: bool = True, handle: int = 1, priority: int = 1) -> None:
    """Remove the filter at *handle*/*priority* (ENOENT if there is none). Keeps the qdisc."""
    hook = _hook(ifindex, ingress)
    opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), handle=handle, priority=priority)
    where = _where(ifindex, ingress, handle, priority)
    with _capturing() as lines:
        _check(
            _bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts)), f"bpf_tc_detach({where})", lines
        )


def tc_attached_prog_id(
    ifindex: int, *, ingress: bool = True, handle: int = 1, priority: int = 1
) -> int | None:
    """Id of the program attached at *handle*/*priority* (``bpf_tc_query``), None if none."""
    hook = _hook(ifindex, ingress)
    opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), handle=handle, priority=priority)
    where = _where(ifindex, ingress, handle, priority)
    with _capturing() as lines:
        ret = _bpf_tc_query(ctypes.byref(hook), ctypes.byref(opts))
        # ENOENT: no such filter; EINVAL: no clsact qdisc on the device at all
        if ret in (-_errno.ENOENT, -_errno.EINVAL):
            lines.expected = True
            return None
        _check(ret, f"bpf_tc_query({where})", lines)
    return int(opts.prog_id)


def tc_hook_destroy(ifindex: int) -> None:
    """Delete the clsact qdisc of *ifindex* (and so every tc filter on it).

    Idempotent: a missing qdisc (ENOENT, or EINVAL "Invalid handle" from the kernel) is fine."""
    hook = _TcHook(
        sz=ctypes.sizeof(_TcHook), ifindex=ifindex, attach_point=BPF_TC_INGRESS | BPF_TC_EGRESS
    )
    with _capturing() as lines:
        ret = _bpf_tc_hook_destroy(ctypes.byref(hook))
        lines.expected = ret in (-_errno.ENOENT, -_errno.EINVAL)
        if ret < 0 and not lines.expected:
            raise _error(-ret, f"bpf_tc_hook_destroy(ifindex {ifindex})", lines)
