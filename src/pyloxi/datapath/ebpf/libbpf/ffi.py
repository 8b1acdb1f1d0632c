"""ctypes prototypes of the system ``libbpf.so.1`` (libbpf 1.1.2) and mirrors of its structs.

Nothing here checks results: the other modules of this package wrap each call and turn failures
into :class:`~pyloxi.datapath.ebpf.libbpf.errors.BpfError`. Every ``*_opts`` mirror matches
libbpf 1.1.2's header exactly and carries the leading ``sz`` field, which callers always set to
``ctypes.sizeof`` of the mirror.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_BPF_OBJ_NAME_LEN = 16

lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

c_int, c_uint, c_uint32, c_uint64 = ctypes.c_int, ctypes.c_uint, ctypes.c_uint32, ctypes.c_uint64
c_size_t, c_char_p, c_void_p = ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p


class ObjectOpenOpts(ctypes.Structure):
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


class TcHook(ctypes.Structure):
    """``struct bpf_tc_hook``."""

    _fields_ = [
        ("sz", c_size_t),
        ("ifindex", c_int),
        ("attach_point", c_int),  # enum bpf_tc_attach_point
        ("parent", c_uint32),
    ]


class TcOpts(ctypes.Structure):
    """``struct bpf_tc_opts``."""

    _fields_ = [
        ("sz", c_size_t),
        ("prog_fd", c_int),
        ("flags", c_uint32),
        ("prog_id", c_uint32),
        ("handle", c_uint32),
        ("priority", c_uint32),
    ]


class TestRunOpts(ctypes.Structure):
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


class MapBatchOpts(ctypes.Structure):
    """``struct bpf_map_batch_opts``."""

    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


class MapInfo(ctypes.Structure):
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


class ProgInfoHead(ctypes.Structure):
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
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn



# logging
PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)  # (level, fmt, va_list)
libbpf_set_print = _proto("libbpf_set_print", c_void_p, PRINT_FN)
# object / program / map (libbpf.h)
bpf_object__open_file = _proto(
    "bpf_object__open_file", c_void_p, c_char_p, ctypes.POINTER(ObjectOpenOpts)
)
bpf_object__load = _proto("bpf_object__load", c_int, c_void_p)
bpf_object__close = _proto("bpf_object__close", None, c_void_p)
bpf_object__name = _proto("bpf_object__name", c_char_p, c_void_p)
bpf_object__find_program_by_name = _proto(
    "bpf_object__find_program_by_name", c_void_p, c_void_p, c_char_p
)
bpf_object__next_program = _proto("bpf_object__next_program", c_void_p, c_void_p, c_void_p)
bpf_program__name = _proto("bpf_program__name", c_char_p, c_void_p)
bpf_program__fd = _proto("bpf_program__fd", c_int, c_void_p)
bpf_object__find_map_by_name = _proto("bpf_object__find_map_by_name", c_void_p, c_void_p, c_char_p)
bpf_object__next_map = _proto("bpf_object__next_map", c_void_p, c_void_p, c_void_p)
bpf_map__name = _proto("bpf_map__name", c_char_p, c_void_p)
bpf_map__fd = _proto("bpf_map__fd", c_int, c_void_p)
bpf_map__set_max_entries = _proto("bpf_map__set_max_entries", c_int, c_void_p, c_uint32)
bpf_map__pin_path = _proto("bpf_map__pin_path", c_char_p, c_void_p)
bpf_map__is_pinned = _proto("bpf_map__is_pinned", ctypes.c_bool, c_void_p)
bpf_map__reuse_fd = _proto("bpf_map__reuse_fd", c_int, c_void_p, c_int)
bpf_map__type = _proto("bpf_map__type", c_int, c_void_p)
bpf_map__key_size = _proto("bpf_map__key_size", c_uint32, c_void_p)
bpf_map__value_size = _proto("bpf_map__value_size", c_uint32, c_void_p)
bpf_map__max_entries = _proto("bpf_map__max_entries", c_uint32, c_void_p)
bpf_map__map_flags = _proto("bpf_map__map_flags", c_uint32, c_void_p)
libbpf_strerror = _proto("libbpf_strerror", c_int, c_int, c_char_p, c_size_t)
libbpf_num_possible_cpus = _proto("libbpf_num_possible_cpus", c_int)
# low-level syscall wrappers (bpf.h)
bpf_map_update_elem = _proto("bpf_map_update_elem", c_int, c_int, c_void_p, c_void_p, c_uint64)
bpf_map_lookup_elem = _proto("bpf_map_lookup_elem", c_int, c_int, c_void_p, c_void_p)
bpf_map_delete_elem = _proto("bpf_map_delete_elem", c_int, c_int, c_void_p)
bpf_map_get_next_key = _proto("bpf_map_get_next_key", c_int, c_int, c_void_p, c_void_p)
bpf_map_lookup_batch = _proto(
    "bpf_map_lookup_batch",
    c_int,
    c_int,
    c_void_p,
    c_void_p,
    c_void_p,
    c_void_p,
    ctypes.POINTER(c_uint32),
    ctypes.POINTER(MapBatchOpts),
)
bpf_map_delete_batch = _proto(
    "bpf_map_delete_batch",
    c_int,
    c_int,
    c_void_p,
    ctypes.POINTER(c_uint32),
    ctypes.POINTER(MapBatchOpts),
)
bpf_map_update_batch = _proto(
    "bpf_map_update_batch",
    c_int,
    c_int,
    c_void_p,
    c_void_p,
    ctypes.POINTER(c_uint32),
    ctypes.POINTER(MapBatchOpts),
)
bpf_obj_get = _proto("bpf_obj_get", c_int, c_char_p)
bpf_prog_get_fd_by_id = _proto("bpf_prog_get_fd_by_id", c_int, c_uint32)
bpf_map_get_fd_by_id = _proto("bpf_map_get_fd_by_id", c_int, c_uint32)
bpf_obj_get_info_by_fd = _proto(
    "bpf_obj_get_info_by_fd", c_int, c_int, c_void_p, ctypes.POINTER(c_uint32)
)
bpf_prog_test_run_opts = _proto(
    "bpf_prog_test_run_opts", c_int, c_int, ctypes.POINTER(TestRunOpts)
)
# ring buffer (libbpf.h): int (*sample_fn)(void *ctx, void *data, size_t size)
RINGBUF_SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
ring_buffer__new = _proto("ring_buffer__new", c_void_p, c_int, RINGBUF_SAMPLE_FN, c_void_p,
                          c_void_p)
ring_buffer__consume = _proto("ring_buffer__consume", c_int, c_void_p)
ring_buffer__free = _proto("ring_buffer__free", None, c_void_p)
# tc
bpf_tc_hook_create = _proto("bpf_tc_hook_create", c_int, ctypes.POINTER(TcHook))
bpf_tc_hook_destroy = _proto("bpf_tc_hook_destroy", c_int, ctypes.POINTER(TcHook))
bpf_tc_attach = _proto("bpf_tc_attach", c_int, ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts))
bpf_tc_detach = _proto("bpf_tc_detach", c_int, ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts))
bpf_tc_query = _proto("bpf_tc_query", c_int, ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts))
# xdp (libbpf.h; opts NULL: attach/replace whatever is there)
bpf_xdp_attach = _proto("bpf_xdp_attach", c_int, c_int, c_int, c_uint32, c_void_p)
bpf_xdp_detach = _proto("bpf_xdp_detach", c_int, c_int, c_uint32, c_void_p)
bpf_xdp_query_id = _proto("bpf_xdp_query_id", c_int, c_int, c_int, ctypes.POINTER(c_uint32))
# libc
vsnprintf = libc.vsnprintf
vsnprintf.restype = c_int
vsnprintf.argtypes = [c_void_p, c_size_t, c_char_p, c_void_p]
mount = libc.mount
mount.restype = c_int
mount.argtypes = [c_char_p, c_char_p, c_char_p, ctypes.c_ulong, c_void_p]

