"""The Python mirrors of the map layouts agree with the compiled object's BTF and header."""

from __future__ import annotations

import ctypes
import re

import pytest

from pyloxi.datapath.ebpf import layout as L
from pyloxi.engine import program
from pyloxi.engine.firewall import MAX_FW_RULES
from pyloxi.engine.mirror import MAX_MIRRORS

from .btf import btf_struct_layout
from .conftest import OBJ, ROOT


@pytest.mark.parametrize("name", sorted(L.MIRRORS))
def test_struct_matches_btf(name: str) -> None:
    size, members = btf_struct_layout(OBJ, name)
    mirror = L.MIRRORS[name]
    assert ctypes.sizeof(mirror) == size
    for f in mirror._fields_:
        field = f[0]
        offset, fsize = members[field]
        assert getattr(mirror, field).offset == offset, field
        assert getattr(mirror, field).size == fsize, field


def test_limits_agree_with_header() -> None:
    with open(f"{ROOT}/bpf/include/pyloxi/maps.h") as f:
        text = f.read()
    defs = {m[0]: int(m[1]) for m in re.findall(r"#define (PL_\w+)\s+(\d+)", text)}
    assert defs["PL_MAX_SERVICES"] == L.MAX_SERVICES == program.MAX_SERVICES
    assert defs["PL_MAX_EPS"] == L.MAX_EPS == program.MAX_ENDPOINTS
    assert defs["PL_MAX_SLOTS"] == L.MAX_SLOTS == program.MAX_SLOTS
    assert (defs["PL_EP_POOL"], defs["PL_SLOT_CHUNK"], defs["PL_SLOT_POOL"], defs["PL_EP_GIDS"]) \
        == (L.EP_POOL, L.SLOT_CHUNK, L.SLOT_POOL, L.EP_GIDS)
    assert defs["PL_FIB_TICK_SHIFT"] == L.FIB_TICK_SHIFT
    assert defs["PL_NAT_PORT_MIN"] == L.NAT_PORT_MIN
    assert defs["PL_CT_DEL_BATCH"] == L.CT_DEL_BATCH
    assert (defs["PL_CT_DEL_EST"], defs["PL_CT_DEL_HALF"]) == (L.CT_DEL_EST, L.CT_DEL_HALF)
    assert defs["PL_SYNC_BATCH"] == L.SYNC_BATCH
    assert (defs["PL_SYNC_EST"], defs["PL_SYNC_DEL"], defs["PL_SYNC_NEW"]) == (
        L.SYNC_EST, L.SYNC_DEL, L.SYNC_NEW)
    assert defs["PL_SYNC_NEW_ROOM"] == L.SYNC_NEW_ROOM
    assert defs["PL_SYNC_LAYOUT"] == L.SYNC_LAYOUT
    assert defs["PL_FW_MAX"] == L.FW_MAX == MAX_FW_RULES
    assert (defs["PL_FW_DROP"], defs["PL_FW_ALLOW"]) == (L.FW_DROP, L.FW_ALLOW)
    assert (defs["PL_FW_SNAT"], defs["PL_FW_TRAP"], defs["PL_FW_REDIRECT"]) == (
        L.FW_SNAT, L.FW_TRAP, L.FW_REDIRECT)
    assert defs["PL_MIRR_MAX"] == L.MIRR_MAX == MAX_MIRRORS
    assert (defs["PL_MIRR_SPAN"], defs["PL_MIRR_RSPAN"]) == (L.MIRR_SPAN, L.MIRR_RSPAN)
    assert (defs["PL_SYNC_R_LOCAL"], defs["PL_SYNC_R_DELETED"], defs["PL_SYNC_R_EXISTS"]) == (
        L.SYNC_R_LOCAL, L.SYNC_R_DELETED, L.SYNC_R_EXISTS)
    stats = re.search(r"enum pl_stat \{(.*?)\};", text, re.S)
    assert stats is not None
    names = re.findall(r"PL_ST_(\w+)", stats.group(1))
    assert len(names) - 1 == len(L.STAT_NAMES)  # PL_ST_MAX is last
