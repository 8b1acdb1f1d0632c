"""Pins gone, program still attached: a new datapath adopts the live maps (and pins them
again), or refuses when they do not fit. The daemon-level version is
tests/integration/test_restart.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from pyloxi.datapath.ebpf.adopt import DatapathInUse
from pyloxi.datapath.ebpf.backend import EbpfDatapath
from pyloxi.datapath.ebpf.libbpf.info import prog_fd_by_id, prog_info
from pyloxi.datapath.ebpf.libbpf.objects import BpfObject
from pyloxi.datapath.ebpf.libbpf.tc import tc_attached_prog_id, tc_detach

from .conftest import OBJ, Harness, ct_count, handshake


@pytest.fixture
def attached(netns: str):  # type: ignore[no-untyped-def]
    """A datapath attached to dp0 with one flow, then closed: only the program keeps it."""
    pin = f"/sys/fs/bpf/pl{os.getpid()}-adopt"
    dp = EbpfDatapath(pin, obj_path=OBJ)
    h = Harness(dp)
    prog = h.service()
    handshake(h)
    dp.attach(["dp0"])
    ids = {n: m.id for n, m in dp.maps.items()}
    dp.close()
    try:
        yield pin, prog, ids
    finally:
        if tc_attached_prog_id(socket.if_nametoindex("dp0")) is not None:
            tc_detach(socket.if_nametoindex("dp0"))
        shutil.rmtree(pin, ignore_errors=True)


def test_missing_pins_are_adopted_from_the_attached_program(attached) -> None:  # type: ignore[no-untyped-def]
    pin, prog, ids = attached
    shutil.rmtree(pin)  # what a private mount namespace does to them
    dp = EbpfDatapath(pin, obj_path=OBJ, interfaces=["dp0"])
    try:
        kept = [n for n in ("svc_map", "cfg_map", "ep_map", "ct_map", "ct_half", "conn_map")
                if n in ids]  # the state maps of this object's layout
        assert {"svc_map", "ct_map"} <= set(kept)
        for name in kept:
            assert dp.maps[name].id == ids[name], name  # the very same kernel maps
            assert os.path.exists(os.path.join(pin, name)), name  # pinned again
        assert ct_count(Harness(dp)) == 2  # the flow's two entries
        assert len(list(dp.maps["svc_map"].keys())) == 1
        dp.attach(["dp0"])  # the new program replaces the old one on the same maps
        fd = prog_fd_by_id(tc_attached_prog_id(socket.if_nametoindex("dp0")) or 0)
        try:
            assert ids["ct_map"] in prog_info(fd).map_ids
        finally:
            os.close(fd)
    finally:
        dp.close()


def test_pins_win_over_adoption(attached) -> None:  # type: ignore[no-untyped-def]
    pin, _prog, ids = attached
    dp = EbpfDatapath(pin, obj_path=OBJ, interfaces=["dp0"])
    try:
        assert dp.maps["ct_map"].id == ids["ct_map"]
    finally:
        dp.close()


def test_no_attached_program_is_a_fresh_start(netns: str) -> None:
    pin = f"/sys/fs/bpf/pl{os.getpid()}-fresh"
    dp = EbpfDatapath(pin, obj_path=OBJ, interfaces=["dp0", "no-such-if"])
    try:
        assert ct_count(Harness(dp)) == 0
    finally:
        dp.destroy()


def test_refuses_maps_that_do_not_fit(attached) -> None:  # type: ignore[no-untyped-def]
    pin, _prog, _ids = attached
    shutil.rmtree(pin)
    with pytest.raises(DatapathInUse, match="cannot be adopted.*ct_map.*--netns"):
        EbpfDatapath(pin, obj_path=OBJ, interfaces=["dp0"], ct_entries=4096)
    assert tc_attached_prog_id(socket.if_nametoindex("dp0")) is not None  # left alone


def pin_older_object(tmp_path: Path, source: str, pin: str) -> None:
    """Compile `source` and load it with its maps pinned under `pin`: what an older version
    left behind."""
    src, obj = tmp_path / "old.bpf.c", tmp_path / "old.bpf.o"
    src.write_text(source)
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-c", str(src), "-o", str(obj),
                    "-I", f"/usr/include/{os.uname().machine}-linux-gnu"], check=True)
    with BpfObject.open(str(obj), pin_root=pin) as old:
        old.load()


OLD_LAYOUT = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct old_key { __u32 saddr, daddr; __u16 sport, dport; __u8 proto, pad[3]; };
struct old_val { __u8 b[104]; };
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 524288);
	__type(key, struct old_key);
	__type(value, struct old_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_map SEC(".maps");
SEC("tc") int old_tc(struct __sk_buff *skb) { return 0; }
char LICENSE[] SEC("license") = "GPL";
"""


def test_pins_of_an_older_layout_give_a_clear_error(netns: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An upgrade that widened the conntrack key (IPv4-only 16 bytes -> dual-family 40) finds
    the old ct_map pinned: a clear error naming the pin directory and the way out, not libbpf's
    bare EINVAL, and not a silent new table that drops every flow."""
    from pyloxi.datapath.ebpf.adopt import PinnedLayoutMismatch

    pin = f"/sys/fs/bpf/pl{os.getpid()}-oldpins"
    try:
        pin_older_object(tmp_path, OLD_LAYOUT, pin)  # ct_map with the old layout
        assert os.path.exists(f"{pin}/ct_map")
        with pytest.raises(PinnedLayoutMismatch) as exc:
            EbpfDatapath(pin, obj_path=OBJ)
        msg = str(exc.value)
        assert pin in msg and "ct_map: key 16 / value 104" in msg and "key 40 / value 128" in msg
        assert f"rm -r {pin}" in msg
        assert os.path.exists(f"{pin}/ct_map")  # nothing was replaced behind the user's back
    finally:
        shutil.rmtree(pin, ignore_errors=True)


OLD_XDP_PORTS = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xdp_ports SEC(".maps");
SEC("xdp") int old_xdp(struct xdp_md *ctx) { return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"""


def test_refilled_map_of_an_older_layout_is_replaced(netns: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """xdp_ports (a hash before it became an array indexed by ifindex) holds no flow state and
    is filled again at every start: its old pin is replaced, not an error."""
    from pyloxi.datapath.ebpf.libbpf.maps import Map

    pin = f"/sys/fs/bpf/pl{os.getpid()}-oldxdp"
    try:
        pin_older_object(tmp_path, OLD_XDP_PORTS, pin)
        dp = EbpfDatapath(pin, obj_path=OBJ)
        try:
            m = Map.from_pin(f"{pin}/xdp_ports")
            try:
                assert (m.map_type, m.value_size) == (2, 8)   # BPF_MAP_TYPE_ARRAY, xdp_port
            finally:
                m.close()
        finally:
            dp.destroy()
    finally:
        shutil.rmtree(pin, ignore_errors=True)
