"""The limits and enums of pyloxi.model agree with the C datapath's header, and are defined once.

No root needed: the header is parsed as text (tests/datapath/test_layout.py checks the map
layouts against the compiled object's BTF).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pyloxi.model import enums, limits
from pyloxi.model.enums import PROTO_NUMBERS, NatMode, Selection

ROOT = Path(__file__).resolve().parents[2]
MAPS_H = ROOT / "bpf" / "include" / "pyloxi" / "maps.h"
SRC = ROOT / "src" / "pyloxi"


def _header(name: str = "maps.h") -> str:
    return (MAPS_H.parent / name).read_text()


def _defines(text: str) -> dict[str, int]:
    return {m[0]: int(m[1], 0) for m in re.findall(r"#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)\b",
                                                   text)}


def _enum(text: str, name: str) -> dict[str, int]:
    body = re.search(rf"enum {name}\s*\{{(.*?)\}};", text, re.S)
    assert body is not None, f"enum {name} not in the header"
    return {m[0]: int(m[1]) for m in re.findall(r"(\w+)\s*=\s*(\d+)", body.group(1))}


def _member_type(text: str, struct: str, member: str) -> str:
    body = re.search(rf"struct {struct}\s*\{{(.*?)\}};", text, re.S)
    assert body is not None, f"struct {struct} not in the header"
    m = re.search(rf"(__[us]\d+)\s+{member}\s*;", body.group(1))
    assert m is not None, f"{struct}.{member} not in the header"
    return m.group(1)


@pytest.mark.parametrize(
    ("define", "value"),
    [
        ("PL_MAX_SERVICES", limits.MAX_SERVICES),
        ("PL_MAX_EPS", limits.MAX_ENDPOINTS),
        ("PL_MAX_SLOTS", limits.MAX_SLOTS),
        ("PL_MAX_SVC_KEYS", limits.MAX_SERVICE_KEYS),
    ],
)
def test_limit_equals_header_define(define: str, value: int) -> None:
    assert _defines(_header())[define] == value


def test_field_widths_bound_the_wire_ranges() -> None:
    text = _header()
    assert _member_type(text, "ep_val", "weight") == "__u8"
    assert limits.MAX_WEIGHT == 2**8 - 1
    assert _member_type(text, "svc_key", "port") == "__u16"
    assert limits.PORT_MAX == 2**16 - 1
    # a port range takes one service key per port: one rule can never need them all
    assert limits.MAX_PORTS_PER_SERVICE < limits.MAX_SERVICE_KEYS


def test_selection_and_mode_numbers_equal_the_datapath_enums() -> None:
    text = _header()
    sel = _enum(text, "pl_sel")
    assert sel == {"PL_SEL_RR": Selection.RR, "PL_SEL_HASH": Selection.HASH,
                   "PL_SEL_PRIO": Selection.PRIORITY, "PL_SEL_PERSIST": Selection.PERSIST,
                   "PL_SEL_LC": Selection.LC}
    mode = _enum(text, "pl_mode")
    assert mode == {"PL_MODE_DEFAULT": NatMode.DEFAULT, "PL_MODE_ONEARM": NatMode.ONEARM,
                    "PL_MODE_FULLNAT": NatMode.FULLNAT, "PL_MODE_DSR": NatMode.DSR}


def test_protocol_numbers() -> None:
    assert _defines(_header("parse.h"))["IPPROTO_SCTP"] == PROTO_NUMBERS["sctp"]
    assert PROTO_NUMBERS == {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1}  # IANA
    assert tuple(PROTO_NUMBERS) == enums.PROTOCOLS


# Names that must be defined in pyloxi.model.limits / .enums and only imported elsewhere.
ONE_PLACE = {
    "PROBE_TYPES", "HOST_STATES", "PROTOCOLS", "PROTO_NUMBERS", "MAX_ENDPOINTS", "MAX_SERVICES",
    "SLOT_TABLE_SIZE", "MAX_PORTS_PER_SERVICE", "MAX_WEIGHT", "MAX_IDLE", "MAX_IDLE_TIMEOUT",
    "MAX_PROBE_RETRIES", "MAX_SECONDARY_IPS", "MAX_RETRIES", "MAX_PERIOD", "DEFAULT_IDLE",
    "UINT32_MAX", "MAX_NAME_LEN", "MAX_WORD_LEN",
}  # fmt: skip
HOMES = {
    SRC / "model" / "limits.py",
    SRC / "model" / "enums.py",
    # The map layout mirror copies maps.h value by value (checked against the compiled
    # object's BTF and the header by tests/datapath/test_layout.py, and so equal to ours).
    SRC / "datapath" / "ebpf" / "layout.py",
}


def test_limits_and_enums_are_defined_once() -> None:
    """No module assigns one of these names itself (importing, even re-exporting, is fine)."""
    copies = []
    for path in sorted(SRC.rglob("*.py")):
        if path in HOMES:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and t.id in ONE_PLACE:
                    copies.append(f"{path.relative_to(ROOT)}:{node.lineno} {t.id}")
    assert copies == []


def test_enum_and_word_lists_agree() -> None:
    assert tuple(p.value for p in enums.ProbeType) == enums.PROBE_TYPES
    assert tuple(s.value for s in enums.HostState) == enums.HOST_STATES
    assert set(limits.DEFAULT_IDLE_TIMEOUT) == set(enums.PROTOCOLS)
