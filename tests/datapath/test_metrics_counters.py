"""The metrics' reads of the datapath: the batch read of every service's counters gives what the
per-service read gives, and the conntrack summary names the flows the aging sweep left."""

from __future__ import annotations

import time

from pyloxi.engine.program import ServiceCounters

from .conftest import EPS, TC_ACT_REDIRECT, Harness, syn


def test_batch_counters_equal_per_service_reads(h: Harness) -> None:
    a = h.service(port=80, eps=EPS[:3])
    b = h.service(port=81, eps=EPS[:2])
    idle = h.service(port=82, eps=EPS[:1])
    for i in range(7):  # rr over a's three endpoints: 3, 2, 2 new flows
        assert h.run(syn(sport=41000 + i, dport=80)).retval == TC_ACT_REDIRECT
    for i in range(3):
        assert h.run(syn(sport=42000 + i, dport=81)).retval == TC_ACT_REDIRECT
    batch = h.dp.services_counters([a, b, idle])
    for prog in (a, b, idle):
        assert batch[prog.svc_id] == h.dp.service_counters(prog)
    assert batch[a.svc_id].new_flows == 7 and batch[a.svc_id].packets == 7
    assert sorted(e.packets for e in batch[a.svc_id].endpoints) == [2, 2, 3]
    assert batch[b.svc_id].new_flows == 3
    assert batch[idle.svc_id] == ServiceCounters(endpoints=batch[idle.svc_id].endpoints)
    assert [e.packets for e in batch[idle.svc_id].endpoints] == [0]


def test_batch_counters_skip_services_not_installed(h: Harness) -> None:
    a = h.service(port=80)
    h.dp.remove_service(a)
    assert h.dp.services_counters([a]) == {}


def test_conntrack_summary_follows_aging(h: Harness) -> None:
    h.service(port=80, eps=EPS[:1])
    for i in range(4):
        assert h.run(syn(sport=43000 + i)).retval == TC_ACT_REDIRECT
    assert h.dp.conntrack_summary() == {(6, "sync-sent"): 4}  # no sweep yet: read now
    h.dp.age_flows()  # nothing expired: the sweep's count is the same
    assert h.dp.conntrack_summary() == {(6, "sync-sent"): 4}
    h.dp.age_flows(now_ns=time.monotonic_ns() + 3600 * 10**9)  # all expired and deleted
    assert h.dp.conntrack_summary() == {}


def test_array_range_read(h: Harness) -> None:
    m = h.dp.maps["conn_map"]  # an array of (opened, closed) u64 pairs
    m.update((7).to_bytes(4, "little"), (5).to_bytes(8, "little") + (2).to_bytes(8, "little"))
    try:
        raw = m.lookup_array_range(6, 3)
        assert len(raw) == 3 * 16
        assert raw[16:32] == (5).to_bytes(8, "little") + (2).to_bytes(8, "little")
        assert len(m.lookup_array_range(0, 2)) == 2 * 16  # from the first index
        n = m.max_entries
        assert len(m.lookup_array_range(n - 2, 5)) == 2 * 16  # stops at the end
        assert m.lookup_array_range(5, 0) == b""
    finally:
        m.update((7).to_bytes(4, "little"), bytes(16))
