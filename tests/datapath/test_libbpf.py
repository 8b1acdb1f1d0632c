"""The ctypes libbpf binding against the real kernel, with the tiny program in bpf/mini.bpf.c.

Needs root (BPF, a dummy link). Pinned maps go under <bpffs>/pyloxi-test-<pid>, removed at the
end whatever happens; if /sys/fs/bpf is not a bpffs, a private bpffs is mounted in a tmp dir.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import shutil
import socket
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyloxi.datapath.ebpf import libbpf as lb
from pyloxi.datapath.ebpf.libbpf.bpffs import is_bpffs, mount_bpffs
from pyloxi.datapath.ebpf.libbpf.errors import BpfError
from pyloxi.datapath.ebpf.libbpf.info import prog_id
from pyloxi.datapath.ebpf.libbpf.maps import BPF_EXIST, BPF_NOEXIST, Map, MapType, possible_cpus
from pyloxi.datapath.ebpf.libbpf.objects import BpfObject
from pyloxi.datapath.ebpf.libbpf.tc import (
    tc_attach,
    tc_attached_prog_id,
    tc_detach,
    tc_hook_destroy,
)
from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run

from .btf import btf_struct_layout

SRC = Path(__file__).parent / "bpf" / "mini.bpf.c"
TC_ACT_OK, TC_ACT_SHOT = 0, 2
MARK = 0xAA
KEY = struct.Struct("<IHBx")  # struct mini_key
VAL = struct.Struct("<QQI6sH16s4x")  # struct mini_val (union as 16 raw bytes, tail pad)


def _clang(out: Path, *defines: str) -> Path:
    cmd = ["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3"]
    cmd += ["-I/usr/include/x86_64-linux-gnu", *defines, "-c", str(SRC), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="session")
def mini_o(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _clang(tmp_path_factory.mktemp("bpf") / "mini.bpf.o")


@pytest.fixture(scope="session")
def pin_base() -> Iterator[Path]:
    """<bpffs>/pyloxi-test-<pid>; removed (and a private bpffs unmounted) at session end."""
    private = None
    if is_bpffs("/sys/fs/bpf"):
        bpffs = Path("/sys/fs/bpf")
    else:
        private = Path(tempfile.mkdtemp(prefix="pyloxi-bpffs-"))
        mount_bpffs(str(private))
        bpffs = private
    base = bpffs / f"pyloxi-test-{os.getpid()}"
    base.mkdir()
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if private is not None:
            subprocess.run(["umount", str(private)], check=False)
            private.rmdir()


_seq = itertools.count()


@pytest.fixture
def pin_root(pin_base: Path) -> Path:
    return pin_base / f"t{next(_seq)}"


@pytest.fixture
def obj(mini_o: Path, pin_root: Path) -> Iterator[BpfObject]:
    with BpfObject.open(str(mini_o), pin_root=str(pin_root)) as o:
        o.load()
        yield o


@pytest.fixture
def dummy() -> Iterator[int]:
    """A link of our own: dummy if the kernel has it, else a veth pair (deleted with its end)."""
    name = f"pl-t{os.getpid()}"
    add = subprocess.run(["ip", "link", "add", name, "type", "dummy"], capture_output=True)
    if add.returncode != 0:  # no dummy driver in this kernel
        peer = f"pl-u{os.getpid()}"
        cmd = ["ip", "link", "add", name, "type", "veth", "peer", "name", peer]
        subprocess.run(cmd, check=True)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield socket.if_nametoindex(name)
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


def key(i: int) -> bytes:
    return KEY.pack(0x0A000000 + i, i & 0xFFFF, 6)


def val(i: int) -> bytes:
    return VAL.pack(i, i * 100, i & 0xFF, b"\x02\x00\x00\x00\x00\x01", 7, bytes(16))


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


def u64(i: int) -> bytes:
    return struct.pack("<Q", i)


# --- object, programs, maps ---


def test_possible_cpus_matches_sysfs() -> None:
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    assert possible_cpus() == n


def test_open_load_exposes_programs_and_maps(obj: BpfObject, pin_root: Path) -> None:
    assert obj.program_names() == ["mini_tc", "mini_tc_drop"]
    assert set(obj.map_names()) >= {"mini_counters", "mini_flows", "mini_lru", "mini_pcpu"}
    assert obj.program_fd("mini_tc") > 0
    flows = obj.map("mini_flows")
    assert (flows.name, flows.map_type, flows.key_size, flows.value_size, flows.max_entries) == (
        "mini_flows",
        MapType.HASH,
        KEY.size,
        VAL.size,
        16384,
    )
    assert obj.map("mini_lru").map_type == MapType.LRU_HASH
    counters = obj.map("mini_counters")
    assert counters.map_type == MapType.PERCPU_ARRAY and counters.percpu
    assert counters.value_blob_size == 8 * possible_cpus()
    # only the LIBBPF_PIN_BY_NAME map is pinned, under pin_root
    assert os.listdir(pin_root) == ["mini_flows"]
    assert obj.pin_path("mini_flows") == str(pin_root / "mini_flows")
    assert obj.pin_path("mini_lru") is None


def test_prog_test_run_rewrites_and_counts(obj: BpfObject) -> None:
    fd = obj.program_fd("mini_tc")
    pkt = bytes(range(64))
    res = prog_test_run(fd, pkt, repeat=5)
    assert res.retval == TC_ACT_OK
    assert res.data == bytes([MARK]) + pkt[1:]
    assert res.duration_ns >= 0
    counters = obj.map("mini_counters")
    per_cpu = counters.lookup_percpu(u32(0))
    assert per_cpu is not None and len(per_cpu) == possible_cpus()
    assert sum(struct.unpack("<Q", v)[0] for v in per_cpu) == 5
    by_cpu = counters.lookup_percpu(u32(1))
    assert by_cpu is not None
    assert sum(struct.unpack("<Q", v)[0] for v in by_cpu) == 5 * 64
    assert obj.map("mini_lru").lookup(u32(64)) == u64(1)


def test_prog_test_run_other_program_and_ctx(obj: BpfObject) -> None:
    res = prog_test_run(obj.program_fd("mini_tc_drop"), bytes(60))
    assert res.retval == TC_ACT_SHOT
    # a struct __sk_buff ctx goes in and comes back (mark is one of the writable fields)
    ctx = bytearray(192)  # sizeof(struct __sk_buff) on 6.x
    struct.pack_into("<I", ctx, 8, 0x1234)  # __sk_buff.mark
    res = prog_test_run(obj.program_fd("mini_tc"), bytes(60), ctx=bytes(ctx))
    assert res.retval == TC_ACT_OK
    assert res.ctx is not None and struct.unpack_from("<I", res.ctx, 8)[0] == 0x1234


def test_prog_test_run_too_short_packet_raises(obj: BpfObject) -> None:
    with pytest.raises(BpfError) as ei:
        prog_test_run(obj.program_fd("mini_tc"), b"\x00" * 4)
    assert ei.value.errno == errno.EINVAL
    assert "bpf_prog_test_run_opts" in str(ei.value)


# --- single-element map ops ---


def test_single_element_ops(obj: BpfObject) -> None:
    flows = obj.map("mini_flows")
    assert flows.lookup(key(1)) is None
    flows.update(key(1), val(1))
    assert flows.lookup(key(1)) == val(1)
    with pytest.raises(BpfError) as ei:
        flows.update(key(1), val(2), BPF_NOEXIST)
    assert ei.value.errno == errno.EEXIST
    with pytest.raises(BpfError) as ei:
        flows.update(key(2), val(2), BPF_EXIST)
    assert ei.value.errno == errno.ENOENT
    flows.update(key(1), val(3), BPF_EXIST)
    assert flows.lookup(key(1)) == val(3)
    assert list(flows.keys()) == [key(1)]
    assert flows.delete(key(1)) is True
    assert flows.delete(key(1)) is False
    with pytest.raises(BpfError, match="expected 8 bytes"):
        flows.lookup(b"\x00" * 3)


def test_percpu_update_and_padding(obj: BpfObject) -> None:
    pcpu = obj.map("mini_pcpu")  # __u32 values: 8-byte slots per CPU
    n = possible_cpus()
    assert pcpu.value_size == 4 and pcpu.value_blob_size == 8 * n
    pcpu.update_percpu(u32(7), [u32(10 + c) for c in range(n)])
    assert pcpu.lookup_percpu(u32(7)) == [u32(10 + c) for c in range(n)]
    with pytest.raises(BpfError):
        obj.map("mini_flows").lookup_percpu(key(0))


# --- batch ops ---


def test_batch_ops_on_10000_hash_entries(obj: BpfObject) -> None:
    flows = obj.map("mini_flows")
    n = 10_000
    keys = [key(i) for i in range(n)]
    expected = {k: val(i) for i, k in enumerate(keys)}
    flows.update_batch(keys, [expected[k] for k in keys])

    got = dict(flows.lookup_batch())
    assert got == expected
    # a batch smaller than a hash bucket: ENOSPC must grow the batch, not lose entries
    assert dict(flows.lookup_batch(batch=1)) == expected
    assert sorted(flows.keys()) == sorted(keys)

    gone = keys[::2]
    absent = [key(n + i) for i in range(10)]
    assert flows.delete_batch(absent[:5] + gone + absent[5:]) == len(gone)
    left = dict(flows.lookup_batch(batch=512))
    assert left == {k: expected[k] for k in keys[1::2]}
    assert flows.delete_batch(list(left)) == n // 2
    assert list(flows.lookup_batch()) == []


def test_update_batch_flags(obj: BpfObject) -> None:
    flows = obj.map("mini_flows")
    flows.update_batch([key(1), key(2)], [val(1), val(2)])
    # the kernel's batch update only takes BPF_ANY/BPF_F_LOCK: NOEXIST/EXIST go per key
    with pytest.raises(BpfError) as ei:
        flows.update_batch([key(3), key(1)], [val(3), val(9)], BPF_NOEXIST)
    assert ei.value.errno == errno.EEXIST
    assert flows.lookup(key(3)) == val(3) and flows.lookup(key(1)) == val(1)
    flows.update_batch([key(1), key(2)], [val(5), val(6)], BPF_EXIST)
    assert flows.lookup(key(2)) == val(6)
    with pytest.raises(BpfError) as ei:
        flows.update_batch([key(4)], [val(4)], BPF_EXIST)
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(BpfError):
        flows.update_batch([key(1)], [val(1), val(2)])


def test_batch_ops_lru_and_percpu_hash(obj: BpfObject) -> None:
    lru = obj.map("mini_lru")
    lru.update_batch([u32(i) for i in range(1000)], [u64(i * 3) for i in range(1000)])
    assert dict(lru.lookup_batch(batch=100)) == {u32(i): u64(i * 3) for i in range(1000)}
    assert lru.delete_batch([u32(i) for i in range(500)]) == 500

    pcpu = obj.map("mini_pcpu")
    n = possible_cpus()
    blobs = [b"".join(u64(i * 10 + c) for c in range(n)) for i in range(2000)]
    pcpu.update_batch([u32(i) for i in range(2000)], blobs)
    got = dict(pcpu.lookup_batch(batch=64))
    assert len(got) == 2000
    assert pcpu.split_percpu(got[u32(5)]) == [u32(50 + c) for c in range(n)]
    assert pcpu.delete_batch([u32(i) for i in range(2000)]) == 2000


def test_batch_ops_on_arrays(obj: BpfObject) -> None:
    arr = obj.map("mini_array")
    arr.update_batch([u32(i) for i in range(64)], [u64(i + 1) for i in range(64)])
    assert dict(arr.lookup_batch(batch=10)) == {u32(i): u64(i + 1) for i in range(64)}
    # arrays have no delete at all: the per-key fallback surfaces the kernel's EINVAL
    with pytest.raises(BpfError) as ei:
        arr.delete_batch([u32(0)])
    assert ei.value.errno == errno.EINVAL

    prog_test_run(obj.program_fd("mini_tc"), bytes(60), repeat=3)
    counters = obj.map("mini_counters")
    items = dict(counters.lookup_batch())
    assert len(items) == counters.max_entries
    assert sum(struct.unpack("<Q", v)[0] for v in counters.split_percpu(items[u32(0)])) == 3


# --- pinning ---


def test_reopen_reuses_pinned_map(mini_o: Path, pin_root: Path) -> None:
    with BpfObject.open(str(mini_o), pin_root=str(pin_root)) as first:
        first.load()
        first.map("mini_flows").update(key(42), val(42))
        first.map("mini_lru").update(u32(1), u64(1))  # not pinned: dies with the object
        first_id = first.map("mini_flows").id
    assert (pin_root / "mini_flows").exists()

    with BpfObject.open(str(mini_o), pin_root=str(pin_root)) as second:
        second.load()
        flows = second.map("mini_flows")
        assert flows.id == first_id
        assert flows.lookup(key(42)) == val(42)
        assert second.map("mini_lru").lookup(u32(1)) is None
        with Map.from_pin(str(pin_root / "mini_flows")) as pinned:
            assert (pinned.id, pinned.name, pinned.key_size) == (first_id, "mini_flows", KEY.size)
            pinned.update(key(43), val(43))
        assert flows.lookup(key(43)) == val(43)


def test_incompatible_pinned_map_fails_load(mini_o: Path, pin_root: Path) -> None:
    with BpfObject.open(str(mini_o), pin_root=str(pin_root)) as first:
        first.load()
    with BpfObject.open(str(mini_o), pin_root=str(pin_root)) as second:
        second.set_max_entries("mini_flows", 1024)
        with pytest.raises(BpfError) as ei:
            second.load()
    assert "mini_flows" in str(ei.value) and "reuse" in str(ei.value)


def test_from_pin_missing_path_raises(pin_root: Path) -> None:
    with pytest.raises(BpfError) as ei:
        Map.from_pin(str(pin_root / "nope"))
    assert ei.value.errno == errno.ENOENT and "bpf_obj_get" in str(ei.value)


# --- tc ---


def test_tc_attach_replace_query_detach(obj: BpfObject, dummy: int) -> None:
    fd, drop_fd = obj.program_fd("mini_tc"), obj.program_fd("mini_tc_drop")
    assert tc_attached_prog_id(dummy) is None  # no clsact yet
    assert tc_attach(dummy, fd) == prog_id(fd)
    assert tc_attached_prog_id(dummy) == prog_id(fd)
    show = subprocess.run(
        ["tc", "filter", "show", "dev", f"pl-t{os.getpid()}", "ingress"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "mini_tc" in show and "direct-action" in show
    # same handle/priority: replaced in place
    tc_attach(dummy, drop_fd)
    assert tc_attached_prog_id(dummy) == prog_id(drop_fd)
    tc_attach(dummy, fd)  # re-attaching the same program is fine too
    assert tc_attached_prog_id(dummy) == prog_id(fd)
    # egress is a separate hook
    assert tc_attached_prog_id(dummy, ingress=False) is None
    tc_attach(dummy, drop_fd, ingress=False, priority=5)
    assert tc_attached_prog_id(dummy, ingress=False, priority=5) == prog_id(drop_fd)

    tc_detach(dummy)
    assert tc_attached_prog_id(dummy) is None
    with pytest.raises(BpfError) as ei:
        tc_detach(dummy)
    assert ei.value.errno == errno.ENOENT and "bpf_tc_detach" in str(ei.value)
    tc_hook_destroy(dummy)
    assert tc_attached_prog_id(dummy, ingress=False, priority=5) is None
    tc_hook_destroy(dummy)  # idempotent


def test_tc_attach_bad_fd_raises(dummy: int) -> None:
    with pytest.raises(BpfError) as ei:
        tc_attach(dummy, 9999)
    assert "bpf_tc_attach" in str(ei.value)


# --- BTF ---


def test_btf_struct_layout(mini_o: Path) -> None:
    size, members = btf_struct_layout(str(mini_o), "mini_val")
    assert size == VAL.size == 48
    assert members == {
        "packets": (0, 8),
        "bytes": (8, 8),
        "flags": (16, 4),
        "mac": (20, 6),
        "tail": (26, 2),
        "v4": (28, 4),  # anonymous union flattened
        "v6": (28, 16),
    }
    assert btf_struct_layout(str(mini_o), "mini_key") == (
        8,
        {"addr": (0, 4), "port": (4, 2), "proto": (6, 1), "pad": (7, 1)},
    )
    with pytest.raises(BpfError) as ei:
        btf_struct_layout(str(mini_o), "no_such_struct")
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(BpfError):
        btf_struct_layout("/etc/hostname", "mini_val")


# --- errors ---


def test_errors_are_bpferrors_with_context(obj: BpfObject, tmp_path: Path) -> None:
    with pytest.raises(BpfError) as ei:
        obj.program_fd("nope")
    assert ei.value.errno == errno.ENOENT
    assert "nope" in str(ei.value) and "mini_tc" in str(ei.value)  # lists what exists
    with pytest.raises(BpfError, match="mini_flows"):
        obj.map("nope")
    with pytest.raises(BpfError) as ei:
        BpfObject.open(str(tmp_path / "missing.o"))
    assert ei.value.errno == errno.ENOENT
    garbage = tmp_path / "garbage.o"
    garbage.write_bytes(b"not an elf")
    with pytest.raises(BpfError, match="not a proper ELF"):
        BpfObject.open(str(garbage))
    assert isinstance(ei.value, OSError)


def test_closed_object_maps_raise(mini_o: Path, pin_root: Path) -> None:
    o = BpfObject.open(str(mini_o), pin_root=str(pin_root))
    with pytest.raises(BpfError, match="not loaded"):
        o.program_fd("mini_tc")
    o.load()
    m = o.map("mini_lru")
    o.close()
    with pytest.raises(BpfError) as ei:
        m.lookup(u32(0))
    assert ei.value.errno == errno.EBADF
    o.close()  # idempotent


def test_verifier_rejection_reports_log(tmp_path: Path, pin_root: Path) -> None:
    bad = _clang(tmp_path / "bad.o", "-DMINI_BAD")
    with BpfObject.open(str(bad), pin_root=str(pin_root)) as o, pytest.raises(BpfError) as ei:
        o.load()
    msg = str(ei.value)
    assert "bpf_object__load" in msg and "mini_bad" in msg
    assert "invalid access to packet" in msg or "R1" in msg  # verifier's own words


def test_libbpf_messages_go_to_logging(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    garbage = tmp_path / "garbage.o"
    garbage.write_bytes(b"\x7fELF but not really")
    with (
        caplog.at_level(logging.DEBUG, logger="pyloxi.datapath.ebpf.libbpf"),
        pytest.raises(BpfError),
    ):
        BpfObject.open(str(garbage))
    assert any("libbpf:" in r.getMessage() for r in caplog.records)


def test_package_reexports_public_api() -> None:
    """The public names stay importable from the package itself, not only its modules."""
    from pyloxi.datapath.ebpf.libbpf import maps, objects

    assert {n for n in lb.__all__ if getattr(lb, n, None) is None} == set()
    assert lb.Map is maps.Map and lb.BpfObject is objects.BpfObject
