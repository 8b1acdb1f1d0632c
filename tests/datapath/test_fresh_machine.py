"""A machine booted seconds ago: CLOCK_MONOTONIC (the datapath's clock) is smaller than every
timeout, so no "now - timeout" may be computed in unsigned arithmetic, and an entry stamped a
moment after the sweep read its clock must not look ancient."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pyloxi.datapath.ebpf import layout as L
from pyloxi.model.lb import Selection

from .conftest import CLIENT, CLIENT_MAC, EPS, LB_MAC, VIP, Harness, handshake, syn

SEC = 10**9


def restamp(h: Harness, stamp_ns: int) -> int:
    """Set created/last of every conntrack entry to stamp_ns (as if made at that time)."""
    n = 0
    for name, m in h.dp.maps.items():
        if not name.startswith("ct_") or m.value_size != L.CT_VAL_DTYPE.itemsize:
            continue
        items = list(m.lookup_batch())
        if not items:
            continue
        vals = np.frombuffer(b"".join(v for _, v in items), dtype=L.CT_VAL_DTYPE).copy()
        vals["created_ns"] = stamp_ns
        vals["last_ns"] = stamp_ns
        m.update_batch([k for k, _ in items],
                       [vals[i:i + 1].tobytes() for i in range(len(vals))])
        n += len(items)
    return n


def test_aging_with_a_clock_near_zero(h: Harness) -> None:
    tcp = h.service()
    udp = h.service(proto=17, port=53, target=53)
    handshake(h)  # established: the rule's idle timeout (240 s)
    h.run(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / UDP(sport=4000,
                                                                            dport=53))  # 5 s
    assert restamp(h, 2 * SEC) == 4  # two flows, two entries each, made 2 s after boot
    idle = {h.dp._dp_of[tcp.svc_id]: 240, h.dp._dp_of[udp.svc_id]: 240}
    # the sweep read its clock just before the datapath stamped the entries
    assert h.dp.ct.age(idle, 1 * SEC) == 0
    assert h.dp.ct.age(idle, 0) == 0
    assert h.dp.ct.age(idle, 6 * SEC) == 0  # 4 s old: younger than every timeout
    assert h.dp.ct.age(idle, 8 * SEC) == 1  # the one-way UDP flow (5 s) goes
    assert {f.proto for f in h.dp.flows()} == {6}
    assert h.dp.ct.age(idle, 200 * SEC) == 0  # established: 198 s idle of 240
    assert h.dp.ct.age(idle, 243 * SEC) == 1


def test_bench_sweep_on_a_machine_booted_seconds_ago(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/micro.py's conntrack sweep (run by `make test` through the bench smoke test)
    stamps synthetic flows "300 s ago": on a machine up for 5 s that is before boot."""
    from bench import micro

    t0 = time.perf_counter_ns()
    monkeypatch.setattr(time, "monotonic_ns", lambda: 5 * SEC + (time.perf_counter_ns() - t0))
    res = micro.bench_sweep(2000)
    assert res["ct_entries_present"] == 2000
    assert res["sweep_flows_removed"] == 100  # the 10% idle past the timeout, no more
    assert res["ct_entries_after"] == 1800


def test_affinity_stamped_a_moment_ahead_still_holds(h: Harness) -> None:
    """Another CPU refreshed the client's affinity with a clock read a moment after ours: the
    unsigned `now - last_ns` wrapped to ~2^64 and the entry looked expired (client moved)."""
    prog = h.service(eps=EPS, sel=Selection.PERSIST, slots=tuple(i % 3 for i in range(1021)))
    first = EPS.index(h.run(syn(sport=41000)).pkt[IP].dst)
    (key,) = list(h.dp.maps["aff_map"].keys())
    assert key == bytes(L.AffKey(svc_id=h.dp._dp_of[prog.svc_id], saddr=L.pl_addr(CLIENT)))
    other = (first + 1) % len(EPS)
    h.dp.maps["aff_map"].update(key, struct.pack("<QII", time.monotonic_ns() + SEC // 20,
                                                 other, 0))
    assert h.run(syn(sport=41001)).pkt[IP].dst == EPS[other]
