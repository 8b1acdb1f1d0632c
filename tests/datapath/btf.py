"""Struct layouts from the BTF of a compiled BPF object (libbpf ``btf__*`` through ctypes).

Test-only: checks that the Python mirrors of map keys/values match the C header, byte for byte.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os

from pyloxi.datapath.ebpf.libbpf.errors import BpfError, capturing, errno_now, error
from pyloxi.datapath.ebpf.libbpf.ffi import lib

__all__ = ["BTF_KIND_STRUCT", "BTF_KIND_UNION", "btf_struct_layout"]

# BTF kinds (uapi linux/btf.h)
BTF_KIND_INT = 1
BTF_KIND_PTR = 2
BTF_KIND_ARRAY = 3
BTF_KIND_STRUCT = 4
BTF_KIND_UNION = 5
BTF_KIND_ENUM = 6
BTF_KIND_FWD = 7
BTF_KIND_TYPEDEF = 8
BTF_KIND_VOLATILE = 9
BTF_KIND_CONST = 10
BTF_KIND_RESTRICT = 11
BTF_KIND_TYPE_TAG = 18


class _BtfType(ctypes.Structure):
    """``struct btf_type``: name_off, info (vlen 0-15, kind 24-28, kind_flag 31), size|type."""

    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size", ctypes.c_uint32)]
    info: int

    @property
    def kind(self) -> int:
        return (self.info >> 24) & 0x1F

    @property
    def vlen(self) -> int:
        return self.info & 0xFFFF

    @property
    def kind_flag(self) -> bool:
        return bool(self.info >> 31)


class _BtfMember(ctypes.Structure):
    """``struct btf_member``; with kind_flag, offset = bitfield_size << 24 | bit_offset."""

    _fields_ = [
        ("name_off", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("offset", ctypes.c_uint32),
    ]


_PBtfType = ctypes.POINTER(_BtfType)

_btf__parse = lib.btf__parse
_btf__parse.restype = ctypes.c_void_p
_btf__parse.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
_btf__free = lib.btf__free
_btf__free.restype = None
_btf__free.argtypes = [ctypes.c_void_p]
_btf__find_by_name_kind = lib.btf__find_by_name_kind
_btf__find_by_name_kind.restype = ctypes.c_int32
_btf__find_by_name_kind.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
_btf__type_by_id = lib.btf__type_by_id
_btf__type_by_id.restype = _PBtfType
_btf__type_by_id.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
_btf__name_by_offset = lib.btf__name_by_offset
_btf__name_by_offset.restype = ctypes.c_char_p
_btf__name_by_offset.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
_btf__resolve_size = lib.btf__resolve_size
_btf__resolve_size.restype = ctypes.c_int64
_btf__resolve_size.argtypes = [ctypes.c_void_p, ctypes.c_uint32]

_MODIFIERS = {
    BTF_KIND_TYPEDEF,
    BTF_KIND_VOLATILE,
    BTF_KIND_CONST,
    BTF_KIND_RESTRICT,
    BTF_KIND_TYPE_TAG,
}


def _type(btf: int, type_id: int) -> _BtfType:
    t = _btf__type_by_id(btf, type_id)
    if not t:
        raise error(errno_now(), f"btf__type_by_id({type_id})")
    bt: _BtfType = t.contents
    return bt


def _strip(btf: int, type_id: int) -> int:
    """Follow typedef/const/volatile/restrict/type_tag to the underlying type id."""
    while (t := _type(btf, type_id)).kind in _MODIFIERS:
        type_id = t.size  # the "type" arm of the union
    return type_id


def _members(btf: int, type_id: int, base: int, prefix: str) -> dict[str, tuple[int, int]]:
    t_ptr = _btf__type_by_id(btf, type_id)
    t = t_ptr.contents
    members = ctypes.cast(ctypes.addressof(t) + ctypes.sizeof(_BtfType), ctypes.POINTER(_BtfMember))
    out: dict[str, tuple[int, int]] = {}
    for i in range(t.vlen):
        m = members[i]
        bit_off = (m.offset & 0xFFFFFF) if t.kind_flag else m.offset
        off = base + bit_off // 8
        name = (_btf__name_by_offset(btf, m.name_off) or b"").decode()
        inner = _strip(btf, m.type)
        if not name and _type(btf, inner).kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            out.update(_members(btf, inner, off, prefix))  # anonymous struct/union: flatten
            continue
        size = _btf__resolve_size(btf, m.type)
        if size < 0:
            raise error(-size, f"btf__resolve_size({prefix}{name})")
        out[prefix + name] = (off, int(size))
    return out


def btf_struct_layout(obj_path: str, struct: str) -> tuple[int, dict[str, tuple[int, int]]]:
    """``(sizeof, {member: (byte offset, byte size)})`` of ``struct <struct>`` (or a union, or a
    typedef naming one) in the BTF of *obj_path* (an ELF object or a raw BTF file).

    Members of anonymous nested structs/unions are flattened into the parent; a bitfield reports
    the byte holding its first bit and the size of its declared type.
    """
    with capturing() as lines:
        btf = _btf__parse(os.fsencode(obj_path), None)
        if not btf:
            raise error(errno_now(), f"btf__parse({obj_path})", lines)
    try:
        type_id = -_errno.ENOENT
        for kind in (BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_TYPEDEF):
            type_id = _btf__find_by_name_kind(btf, struct.encode(), kind)
            if type_id > 0:
                break
        if type_id <= 0:
            raise BpfError(_errno.ENOENT, f"no struct/union {struct!r} in the BTF of {obj_path}")
        type_id = _strip(btf, type_id)
        t = _type(btf, type_id)
        if t.kind not in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            raise BpfError(_errno.EINVAL, f"{struct!r} in {obj_path} is not a struct or union")
        return int(t.size), _members(btf, type_id, 0, "")
    finally:
        _btf__free(btf)
