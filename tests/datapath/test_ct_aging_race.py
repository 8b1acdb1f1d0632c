"""Aging and flushes decide on a snapshot and delete later (up to a second on a big table): a
client reusing its port in between starts a new flow on the same key, which the delete must
leave alone (pl_ct_delete deletes an entry only if the key still holds the snapshot's entry).

The race is made deterministic by handing the aging a snapshot taken before the port reuse."""

from __future__ import annotations

import time

import pytest
from scapy.layers.inet import IP

from pyloxi.datapath.ebpf import layout as L
from pyloxi.model.lb import Selection

from ..waiting import wait_until
from .conftest import EPS, TC_ACT_REDIRECT, Harness, ct_count, ep_answer, handshake, syn
from .test_ct_hardening import client_pkt, stats, works_both_ways

SEC = 1_000_000_000
SPORT = 47000


def _conn(h: Harness, idx: int) -> tuple[int, int]:
    raw = h.dp.maps["conn_map"].lookup(h.dp.endpoint_gid(1, idx).to_bytes(4, "little"))
    assert raw is not None
    c = L.EpConn.from_buffer_copy(raw)
    return c.opened, c.closed


def _next_tick() -> None:
    """Let the datapath's coarse clock move on, so the new flow's created_ns differs from the
    old one's (as it must in real life: an expired flow is seconds older than any new one)."""
    # bpf_ktime_get_coarse_ns reads CLOCK_MONOTONIC_COARSE (6: Python's time does not name it)
    then = time.clock_gettime_ns(6)
    wait_until(lambda: time.clock_gettime_ns(6) > then, 5, interval=0.001, what="a clock tick")


def _old_flow_then_snapshot(h: Harness) -> str:
    """An established flow, reset by its client (state closed: 5 s timeout); the aging's
    snapshot is taken now and handed to every later sweep. Returns the endpoint."""
    to_ep, _ = handshake(h, sport=SPORT)
    assert h.run(client_pkt("R", sport=SPORT, ack=0)).retval == TC_ACT_REDIRECT
    (flow,) = h.dp.flows()
    assert flow.state == "closed"
    snap = h.dp.ct.snapshot()
    h.dp.ct.snapshot = lambda: snap  # type: ignore[method-assign]
    _next_tick()
    return str(to_ep[IP].dst)


@pytest.mark.parametrize("n_eps", [1, 2])
def test_aging_spares_a_new_flow_on_the_tuple_of_an_expired_one(h: Harness, n_eps: int) -> None:
    """1 endpoint: the new flow differs from the old only by its creation time; 2 (rr): it
    went to the other endpoint."""
    h.service(eps=EPS[:n_eps])
    old_ep = _old_flow_then_snapshot(h)
    # the client reuses its port: the SYN ends the old flow in the datapath (counted closed
    # there) and a new one is established on the same key
    to_ep, _ = handshake(h, sport=SPORT)
    new_ep = str(to_ep[IP].dst)
    assert stats(h)["syn_reuse"] == 1
    assert (new_ep == old_ep) == (n_eps == 1)
    # the sweep, acting on the snapshot: the old flow (expired) is gone already, and the new
    # one on its key is not the entry the snapshot saw
    assert h.dp.ct.age({1: 240}, time.monotonic_ns() + 60 * SEC) == 0
    del h.dp.ct.snapshot  # fresh snapshots again
    assert ct_count(h) == 2
    assert works_both_ways(h, SPORT, new_ep)
    (flow,) = h.dp.flows()
    assert flow.state == "est" and flow.ep_ip == new_ep
    if n_eps == 1:
        assert _conn(h, 0) == (2, 1)  # the old flow closed once, the new one open
    else:
        assert _conn(h, EPS.index(old_ep)) == (1, 1)
        assert _conn(h, EPS.index(new_ep)) == (1, 0)


def test_aging_spares_a_new_half_open_flow_on_the_tuple_of_an_expired_one(h: Harness) -> None:
    """The old flow never got established (refused by the endpoint: in ct_half, closed); the
    client's next SYN on the same port must still be answered after the sweep."""
    h.service(eps=EPS[:1])
    first = h.run(syn(sport=SPORT))
    assert h.run(ep_answer(first.pkt, "RA", seq=0)).retval == TC_ACT_REDIRECT
    (flow,) = h.dp.flows()
    assert flow.state == "closed"
    snap = h.dp.ct.snapshot()
    h.dp.ct.snapshot = lambda: snap  # type: ignore[method-assign]
    _next_tick()
    second = h.run(syn(sport=SPORT))
    assert second.retval == TC_ACT_REDIRECT and stats(h)["syn_reuse"] == 1
    assert h.dp.ct.age({1: 240}, time.monotonic_ns() + 60 * SEC) == 0
    assert ct_count(h) == 2
    # the handshake of the new flow completes through the LB, both ways
    back = h.run(ep_answer(second.pkt, "SA"))
    assert back.retval == TC_ACT_REDIRECT and back.pkt[IP].dst == "10.0.1.2"
    assert h.run(client_pkt("A", sport=SPORT)).retval == TC_ACT_REDIRECT
    assert works_both_ways(h, SPORT, EPS[0])
    assert _conn(h, 0) == (1, 0)


def test_endpoint_reset_spares_a_new_flow_to_another_endpoint(h: Harness) -> None:
    """Cutting an endpoint's flows from a snapshot must not cut a flow that has since taken
    over one of their keys on another endpoint."""
    h.service(eps=EPS[:2])
    old_ep = _old_flow_then_snapshot(h)
    to_ep, _ = handshake(h, sport=SPORT)
    new_ep = str(to_ep[IP].dst)
    assert new_ep != old_ep
    assert h.dp.reset_endpoint_flows(old_ep, 8080) == 0
    assert works_both_ways(h, SPORT, new_ep)
    assert _conn(h, EPS.index(new_ep)) == (1, 0)


def test_sweep_of_many_batches_deletes_and_counts_each_flow_once(h: Harness) -> None:
    """More entries than one run of the delete program takes: every flow goes, each close is
    counted once, whatever the batch boundaries."""
    prog = h.service(eps=EPS, sel=Selection.LC)
    n = 150  # 300 entries: two runs
    for i in range(n):
        handshake(h, sport=30000 + i)
    assert ct_count(h) == 2 * n
    assert h.dp.ct.age({1: prog.idle_timeout}, time.monotonic_ns() + 10**13) == n
    assert ct_count(h) == 0
    conns = [_conn(h, i) for i in range(len(EPS))]
    assert sum(o for o, _ in conns) == n
    assert all(o == c for o, c in conns)
    # a second sweep of the same (now stale) snapshot deletes and counts nothing
    snap = h.dp.ct.snapshot()
    assert len(snap) == 0
