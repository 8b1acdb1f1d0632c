"""Conntrack at full size (issue 14): the established table holds 2M entries (1M flows); full,
it refuses new flows cleanly (counted, the packet left to the kernel) while its flows go on; an
aging sweep over it frees the idle ones and new flows fit again. And the sweep's pairing of
entries stays exact when its hash crowds."""

from __future__ import annotations

import dataclasses
import errno
import time

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pyloxi.datapath.ebpf import conntrack as C
from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.libbpf.errors import BpfError
from pyloxi.testing.ctfill import synthetic_flows, write_entries
from pyloxi.testing.lab.dpns import LB_MAC

from .conftest import (
    CLIENT,
    CLIENT_MAC,
    EPS,
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    VIP,
    Harness,
    ep_answer,
    handshake,
    syn,
)

SEC = 10**9


def client_pkt(flags: str, sport: int, payload: bytes = b"") -> Ether:
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, ttl=64) / TCP(
        sport=sport, dport=80, flags=flags, seq=1001, ack=5001, window=65535) / payload


def entries(m) -> int:  # type: ignore[no-untyped-def]
    return m.lookup_batch_all(65536)[2]


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def forwards(h: Harness, sport: int) -> bool:
    out = h.run(client_pkt("PA", sport, b"GET"))
    return out.retval == TC_ACT_REDIRECT and out.pkt[IP].dst == EPS[0]


def test_two_million_entries_full_table_refuses_then_aging_makes_room(h: Harness) -> None:
    ct = h.dp.maps["ct_map"]
    assert ct.max_entries == L.CT_ENTRIES == 2 * 1024 * 1024
    h.service(eps=EPS[:1])  # VIP:80, idle timeout 240 s: the live flows
    # the synthetic flows belong to a service of their own with a 60 s idle timeout
    bulk = h.service(eps=EPS[:1], port=81)
    h.dp.install_service(dataclasses.replace(bulk, idle_timeout=60))
    bulk_dp = h.dp._dp_of[bulk.svc_id]
    handshake(h, sport=40000)
    # as the daemon does at start: the sweep's buffers allocated for the whole room, faulted
    # in (resident) for the flows the table holds (one established: 2 entries + a batch)
    rss0 = rss_bytes()
    h.dp.prepare_aging()
    bufs = h.dp.ct._sweep_buffers
    assert bufs is not None
    room = ct.max_entries + h.dp.maps["ct_half"].max_entries
    assert len(bufs[0]) >= 40 * room and len(bufs[1]) >= 128 * room
    grown = rss_bytes() - rss0
    assert 0.9 * (2 + 65536) * (40 + 128) <= grown < 0.2 * (len(bufs[0]) + len(bufs[1]))
    # fill every other entry: 1,048,575 more flows, a tenth of them idle for 100 s at the
    # sweep's clock (a virtual one 100 s ahead: the live flow is 100 s old then, well
    # inside its 240 s, and a machine booted a minute ago has no "100 s ago")
    now = time.monotonic_ns() + 100 * SEC
    flows = (ct.max_entries - 2) // 2
    keys, vals = synthetic_flows(bulk_dp, VIP, EPS[0], flows, now, idle_s=100)
    write_entries(ct, keys, vals)
    assert entries(ct) == ct.max_entries
    k1, v1 = synthetic_flows(bulk_dp, VIP, EPS[0], 1, now, first=flows)
    with pytest.raises(BpfError) as full:  # not one entry more, from user space either
        ct.update(k1[:1].tobytes(), v1[:1].tobytes())
    assert full.value.errno == errno.E2BIG
    # a new flow: its SYN still gets through (half-open table), its handshake's end is refused
    # visibly: counted, the ACK left to the kernel untouched (which resets the connection)
    out = h.run(syn(sport=40001))
    assert out.retval == TC_ACT_REDIRECT
    assert h.run(ep_answer(out.pkt, "SA")).retval == TC_ACT_REDIRECT
    refused = h.run(client_pkt("A", 40001))
    assert refused.retval == TC_ACT_OK and refused.pkt[IP].dst == VIP
    assert h.dp.datapath_stats()["ct_full"] == 1
    assert forwards(h, 40000)  # the flows the table holds go on
    # the sweep over the full table: the idle tenth goes, and the refused half-open flow
    idle = (flows + 9) // 10
    assert h.dp.age_flows(now) == idle + 1
    assert h.dp.ct._sweep_buffers is bufs  # read into those, no new ones
    assert entries(ct) == ct.max_entries - 2 * idle
    assert forwards(h, 40000)
    handshake(h, sport=40002)  # room again: a new flow is established
    assert forwards(h, 40002)
    assert h.dp.datapath_stats()["ct_full"] == 1
    # the flows that stayed are the ones that were not idle
    left = np.frombuffer(ct.lookup_batch_all(65536)[1], dtype=L.CT_VAL_DTYPE,
                         count=entries(ct))
    bulk_left = left[left["svc_id"] == bulk_dp]
    assert len(bulk_left) == 2 * (flows - idle)
    assert int(bulk_left["last_ns"].min()) == now - SEC


def test_sweep_pairs_every_entry_even_when_its_hash_crowds(h: Harness,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep pairs a flow's two entries by one sort of a hash of both keys; entries whose
    hash three or more share are matched another way. A hash that crowds everything (7
    values) must give the same pairs, orphans included, as the real one."""
    ct = h.dp.maps["ct_map"]
    h.service(eps=EPS[:1])
    now = time.monotonic_ns()
    keys, vals = synthetic_flows(h.dp._dp_of[1], VIP, EPS[0], 3000, now)
    write_entries(ct, keys, vals)
    orphans = [keys[2 * i + 1:2 * i + 2].view("V40")[0].tobytes() for i in range(0, 3000, 300)]
    assert ct.delete_batch(orphans) == 10  # reply entries: their originals are orphans now

    def pairs() -> dict[bytes, bytes | None]:
        snap = C.Snapshot(ct, h.dp.maps["ct_half"])
        raw = snap.raw_keys
        return {bytes(raw[i]): (bytes(raw[j]) if j >= 0 else None)
                for i, j in enumerate(snap.partner)}

    real = pairs()
    assert len(real) == 5990 and sum(v is None for v in real.values()) == 10
    assert all(real[v] == k for k, v in real.items() if v is not None)
    monkeypatch.setattr(C, "_pair_hash", lambda a, b: np.minimum(a, b) % np.uint64(7))
    assert pairs() == real


def test_restart_keeps_the_pinned_table_size_and_its_flows(netns: str) -> None:
    """An upgrade that changed the compiled table size (524,288 -> 2,097,152 entries) finds
    the old table pinned: with no size asked for, the daemon starts with the pinned table and
    its flows instead of refusing to start; asking for another size is still refused."""
    import os

    from pyloxi.datapath.ebpf.adopt import PinnedLayoutMismatch
    from pyloxi.datapath.ebpf.backend import EbpfDatapath

    from .conftest import OBJ

    pin = f"/sys/fs/bpf/pl{os.getpid()}-ctsize"
    old = EbpfDatapath(pin, obj_path=OBJ, ct_entries=4096)  # "the old version's" size
    new = None
    try:
        h = Harness(old)
        h.service(eps=EPS[:1])
        handshake(h, sport=40000)
        old.close()  # the daemon stops; pins and flows stay
        new = EbpfDatapath(pin, obj_path=OBJ)
        assert new.conntrack_capacity == 4096
        h = Harness(new)
        h.service(eps=EPS[:1])  # the restarted daemon reinstalls its rule
        assert forwards(h, 40000)  # the flow made before the restart goes on
        with pytest.raises(PinnedLayoutMismatch, match="ct_map: 4096 entries"):
            EbpfDatapath(pin, obj_path=OBJ, ct_entries=8192)
    finally:
        (new or old).destroy()
