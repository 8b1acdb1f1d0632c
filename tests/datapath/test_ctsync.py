"""Conntrack sync through the compiled datapath: node A's flow events (ring buffer) inserted
into node B (pl_ct_sync) by identity, then B forwards the flow's packets as A did.

Two datapaths (two pin directories) in the test's namespace play the two nodes. B programs
the same service under another dp id and its endpoints in another order, so only a mapping by
identity (VIP/port/proto, endpoint ip:port) gets the flow right."""

from __future__ import annotations

import ctypes
import os
import socket
import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pyloxi.cluster.ctsync import CtSync
from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.backend import EbpfDatapath
from pyloxi.engine.program import ServiceProgram
from pyloxi.model.lb import NatMode, Selection
from pyloxi.testing.lab.dpns import LB_MAC
from tests.datapath.conftest import (
    CLIENT,
    CLIENT_MAC,
    EPS,
    OBJ,
    TC_ACT_REDIRECT,
    VIP,
    Harness,
    ep_answer,
    handshake,
    syn,
)
from tests.waiting import wait_until


@pytest.fixture
def nodes(netns: str) -> Iterator[tuple[Harness, Harness]]:
    a = EbpfDatapath(f"/sys/fs/bpf/pl{os.getpid()}-sa", obj_path=OBJ)
    b = EbpfDatapath(f"/sys/fs/bpf/pl{os.getpid()}-sb", obj_path=OBJ,
                     map_sizes={"ct_events": 4096})
    try:
        yield Harness(a), Harness(b)
    finally:
        a.destroy()
        b.destroy()


def both(a: Harness, b: Harness, mode: NatMode,
         sel: Selection = Selection.RR) -> tuple[ServiceProgram, ServiceProgram]:
    """The same service on both nodes; on B under another dp id, endpoints reversed."""
    pa = a.service(eps=EPS[:2], mode=mode, sel=sel)
    b.service(port=81)  # takes B's first dp id
    pb = b.service(eps=EPS[1::-1], mode=mode, sel=sel)
    return pa, pb


def data(sport: int = 40000, seq: int = 1001) -> Ether:
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, ttl=64) / TCP(
        sport=sport, dport=80, flags="PA", seq=seq, ack=5001, window=65535) / (b"x" * 100)


def types(evs: list[bytes]) -> list[int]:
    return [L.CtSyncEv.from_buffer_copy(e).type for e in evs]


def conns(h: Harness, prog: ServiceProgram, ep_ip: str) -> tuple[int, int]:
    """(opened, closed) of endpoint ep_ip of prog in h's conn_map."""
    dp = h.dp._dp_of[prog.svc_id]
    idx = [e.ip for e in prog.endpoints].index(ep_ip)
    raw = h.dp.maps["conn_map"].lookup(h.dp.endpoint_gid(dp, idx).to_bytes(4, "little"))
    assert raw is not None
    c = L.EpConn.from_buffer_copy(raw)
    return c.opened, c.closed


@pytest.mark.parametrize("mode", [NatMode.DEFAULT, NatMode.FULLNAT])
@pytest.mark.parametrize("sel", [Selection.RR, Selection.HASH])
def test_synced_flow_continues_on_the_peer(nodes: tuple[Harness, Harness], mode: NatMode,
                                           sel: Selection) -> None:
    a, b = nodes
    pa, pb = both(a, b, mode, sel)
    to_ep, _ = handshake(a)
    ep_ip, nat_src = to_ep[IP].dst, (to_ep[IP].src, to_ep[TCP].sport)
    on_a = a.run(data())
    assert on_a.retval == TC_ACT_REDIRECT
    evs = a.dp.flow_sync().events()
    assert types(evs) == [L.SYNC_NEW, L.SYNC_EST]
    done = b.dp.flow_sync().apply(evs, time.monotonic_ns())
    assert (done["half_inserted"], done["inserted"]) == (1, 1)
    assert sum(1 for _ in b.dp.maps["ct_half"]) == 0  # the half-open copy moved to ct_map
    assert conns(b, pb, ep_ip) == (1, 0)  # least-connection sees it, at B's own index

    # the client's next segment reaches the same endpoint, from the same (NAT) source
    out = b.run(data(seq=1101))
    assert out.retval == TC_ACT_REDIRECT
    assert (out.pkt[IP].dst, out.pkt[TCP].dport) == (ep_ip, 8080)
    assert (out.pkt[IP].src, out.pkt[TCP].sport) == nat_src
    # the endpoint's answer goes back to the client from the VIP
    back = b.run(ep_answer(out.pkt, "A", seq=5001, ack=1201))
    assert back.retval == TC_ACT_REDIRECT
    assert (back.pkt[IP].src, back.pkt[TCP].sport) == (VIP, 80)
    assert (back.pkt[IP].dst, back.pkt[TCP].dport) == (CLIENT, 40000)


def test_without_sync_the_peer_breaks_the_flow(nodes: tuple[Harness, Harness]) -> None:
    """The control: the same flow on B unsynced; the endpoint's answer is dropped (it would
    reach the client un-NATed) and the client's segment is not forwarded to the endpoint."""
    a, b = nodes
    both(a, b, NatMode.DEFAULT)
    to_ep, _ = handshake(a)
    out = b.run(data(seq=1101))
    assert out.retval != TC_ACT_REDIRECT
    back = b.run(ep_answer(to_ep, "A", seq=5001, ack=1201))
    assert back.retval != TC_ACT_REDIRECT
    assert b.dp.datapath_stats()["reply_miss"] == 1


def test_live_local_flow_wins_and_resync_refreshes(nodes: tuple[Harness, Harness]) -> None:
    a, b = nodes
    _, pb = both(a, b, NatMode.FULLNAT)
    handshake(a)
    evs = a.dp.flow_sync().events()
    handshake(b)  # B has its own flow on the same client tuple
    b.dp.flow_sync().events()
    done = b.dp.flow_sync().apply(evs, time.monotonic_ns())
    assert done["local_wins"] == 2  # the flow's creation (NEW) and its establishment (EST)
    # a full resync of A's table: the local flow still wins, nothing counted twice
    done = b.dp.flow_sync().apply(a.dp.flow_sync().dump(), time.monotonic_ns())
    assert done["local_wins"] == 1
    assert sum(conns(b, pb, ep)[0] for ep in EPS[:2]) == 1


def test_synced_copy_is_refreshed_and_deleted(nodes: tuple[Harness, Harness]) -> None:
    a, b = nodes
    _, pb = both(a, b, NatMode.DEFAULT)
    to_ep, _ = handshake(a)
    sync_b = b.dp.flow_sync()
    assert sync_b.apply(a.dp.flow_sync().events(), time.monotonic_ns())["inserted"] == 1
    assert sync_b.apply(a.dp.flow_sync().dump(), time.monotonic_ns())["refreshed"] == 1
    entries = [L.CtVal.from_buffer_copy(v) for _, v in b.dp.maps["ct_map"].lookup_batch()]
    assert len(entries) == 2
    assert all(v.flags & L.CT_F_SYNCED and v.fib_ifindex == 0 for v in entries)
    assert all(v.td_flags & L.TD_LIBERAL for v in entries)
    # the endpoint resets the flow on A; A's aging deletes the closed flow and tells B
    assert a.run(ep_answer(to_ep, "R", seq=5001, ack=1001)).retval == TC_ACT_REDIRECT
    assert a.dp.age_flows(time.monotonic_ns() + 3600 * 10**9) == 1
    evs = a.dp.flow_sync().events()
    assert [L.CtSyncEv.from_buffer_copy(e).type for e in evs] == [L.SYNC_DEL]
    assert sync_b.apply(evs, time.monotonic_ns())["deleted"] == 1
    assert sum(1 for _ in b.dp.maps["ct_map"]) == 0
    assert conns(b, pb, to_ep[IP].dst) == (1, 1)


def test_datapath_delete_is_reported(nodes: tuple[Harness, Harness]) -> None:
    """A SYN reusing a reset flow's tuple: the datapath deletes the old flow itself and
    reports it through the ring (once)."""
    a, b = nodes
    both(a, b, NatMode.DEFAULT)
    to_ep, _ = handshake(a)
    a.run(ep_answer(to_ep, "R", seq=5001, ack=1001))
    a.dp.flow_sync().events()
    handshake(a)  # same client port: a new flow
    assert types(a.dp.flow_sync().events()) == [L.SYNC_DEL, L.SYNC_NEW, L.SYNC_EST]


def test_ring_full_is_counted_and_resync_heals(nodes: tuple[Harness, Harness]) -> None:
    """B's ring is 4 KiB (11 records): 20 flows overflow it; the drops are counted and a dump
    carries every flow."""
    a, b = nodes
    b.service(eps=EPS[:2], mode=NatMode.FULLNAT)
    for i in range(20):
        handshake(b, sport=41000 + i)
    got = types(b.dp.flow_sync().events())
    est = got.count(L.SYNC_EST)
    assert 0 < est < 20
    assert b.dp.datapath_stats()["sync_drop"] == 20 - est
    a.service(port=82)
    pa = a.service(eps=EPS[:2], mode=NatMode.FULLNAT)
    assert a.dp.flow_sync().apply(b.dp.flow_sync().dump(), time.monotonic_ns())[
        "inserted"] == 20
    assert sum(conns(a, pa, ep)[0] for ep in EPS[:2]) == 20


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_stream_to_peer_over_tcp(nodes: tuple[Harness, Harness]) -> None:
    """The MASTER streams over TCP: a flow established before the peer connects arrives by
    the full resync, one established after it by the event stream; a BACKUP sends nothing."""
    a, b = nodes
    both(a, b, NatMode.FULLNAT)
    handshake(a, sport=42000)
    peers = [f"127.0.0.1:{_port()}", f"127.0.0.1:{_port()}"]
    sa, sb = CtSync(a.dp.flow_sync()), CtSync(b.dp.flow_sync())
    try:
        sb.start(peers, 1, "BACKUP")
        sa.start(peers, 0, "BACKUP")
        handshake(a, sport=42001)
        time.sleep(0.3)  # a few ticks as BACKUP: nothing may be sent
        assert sa.sent == 0
        sa.set_role("MASTER")
        wait_until(lambda: sb.applied["inserted"] == 2, 30)
        handshake(a, sport=42002)
        wait_until(lambda: sb.applied["inserted"] == 3, 30)
        assert sum(1 for _ in b.dp.maps["ct_map"]) == 6
    finally:
        sa.stop()
        sb.stop()


@pytest.mark.parametrize("mode", [NatMode.FULLNAT, NatMode.ONEARM])
def test_nat_port_shares_do_not_overlap(nodes: tuple[Harness, Harness], mode: NatMode) -> None:
    """Active-active: node 0 of 2 and node 1 of 2 translate to disjoint halves of the range,
    even for a client whose own port lies in the other node's half."""
    lo, span = (1024, 64512) if mode == NatMode.FULLNAT else (49152, 16384)
    half = span // 2
    seen: list[set[int]] = [set(), set()]
    for i, h in enumerate(nodes):
        h.dp.set_nat_share(i, 2)
        h.service(eps=EPS[:1], mode=mode, snat="10.0.11.1" if mode == NatMode.ONEARM else None)
        for n in range(16):
            for sport in (lo + 5 + n, lo + half + 5 + n):  # in node 0's half, in node 1's
                out = h.run(syn(sport=sport))
                assert out.retval == TC_ACT_REDIRECT
                seen[i].add(out.pkt[TCP].sport)
    assert all(lo <= p < lo + half for p in seen[0]), sorted(seen[0])
    assert all(lo + half <= p < lo + span for p in seen[1]), sorted(seen[1])
    with pytest.raises(ValueError):
        nodes[0].dp.set_nat_share(2, 2)


# --- half-open flows (PL_SYNC_NEW) ---

def ack(sport: int = 40000) -> Ether:
    """The client's handshake ACK (acknowledges the endpoint's SYN-ACK, seq 5000)."""
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, ttl=64) / TCP(
        sport=sport, dport=80, flags="A", seq=1001, ack=5001, window=65535)


def half_entries(h: Harness) -> list[L.CtVal]:
    return [L.CtVal.from_buffer_copy(v) for _, v in h.dp.maps["ct_half"].lookup_batch()]


@pytest.mark.parametrize("mode", [NatMode.DEFAULT, NatMode.FULLNAT])
def test_half_open_flow_continues_on_the_peer(nodes: tuple[Harness, Harness],
                                              mode: NatMode) -> None:
    """A sees the SYN and the SYN-ACK, then dies: B, with A's creation event only, forwards
    the client's ACK and data to the same endpoint with the same NAT. Round robin: B cannot
    pick a mid-stream flow up (without the event the ACK goes to the kernel: tested below)."""
    a, b = nodes
    _, pb = both(a, b, mode)
    out = a.run(syn())
    assert out.retval == TC_ACT_REDIRECT
    ep_ip, nat_src = out.pkt[IP].dst, (out.pkt[IP].src, out.pkt[TCP].sport)
    assert a.run(ep_answer(out.pkt, "SA")).retval == TC_ACT_REDIRECT
    evs = a.dp.flow_sync().events()
    assert types(evs) == [L.SYNC_NEW]
    done = b.dp.flow_sync().apply(evs, time.monotonic_ns())
    assert done["half_inserted"] == 1
    assert sum(1 for _ in b.dp.maps["ct_map"]) == 0
    copies = half_entries(b)
    assert len(copies) == 2 and all(v.flags & L.CT_F_SYNCED for v in copies)
    assert conns(b, pb, ep_ip) == (0, 0)  # half-open flows are not connections yet

    for pkt in (ack(), data()):
        fwd = b.run(pkt)
        assert fwd.retval == TC_ACT_REDIRECT
        assert (fwd.pkt[IP].dst, fwd.pkt[TCP].dport) == (ep_ip, 8080)
        assert (fwd.pkt[IP].src, fwd.pkt[TCP].sport) == nat_src
    # the endpoint's answer establishes the flow on B (as for a picked-up flow) and goes back
    # to the client from the VIP; B now reports it as established
    back = b.run(ep_answer(fwd.pkt, "A", seq=5001, ack=1101))
    assert back.retval == TC_ACT_REDIRECT
    assert (back.pkt[IP].src, back.pkt[TCP].sport) == (VIP, 80)
    assert (back.pkt[IP].dst, back.pkt[TCP].dport) == (CLIENT, 40000)
    assert sum(1 for _ in b.dp.maps["ct_map"]) == 2 and half_entries(b) == []
    assert conns(b, pb, ep_ip) == (1, 0)
    assert types(b.dp.flow_sync().events()) == [L.SYNC_EST]


def test_without_the_event_the_peer_refuses_the_ack(nodes: tuple[Harness, Harness]) -> None:
    """The control for the test above: the same handshake on A, nothing synced: B hands the
    client's ACK to the kernel (round robin picks no mid-stream flow up)."""
    a, b = nodes
    both(a, b, NatMode.DEFAULT)
    out = a.run(syn())
    a.run(ep_answer(out.pkt, "SA"))
    assert b.run(ack()).retval != TC_ACT_REDIRECT
    assert b.dp.datapath_stats()["pickup_refused"] == 1


def test_half_open_copy_lifecycle(nodes: tuple[Harness, Harness]) -> None:
    """NEW then EST: the copy moves to ct_map, none lingers in ct_half; a NEW after the EST
    changes nothing; a copy that never establishes ages out with the half-open timeout."""
    a, b = nodes
    both(a, b, NatMode.FULLNAT)
    sync_b = b.dp.flow_sync()
    handshake(a)
    new, est = a.dp.flow_sync().events()
    assert sync_b.apply([new], time.monotonic_ns())["half_inserted"] == 1
    assert sync_b.apply([new], time.monotonic_ns())["half_refreshed"] == 1
    assert sync_b.apply([est], time.monotonic_ns())["inserted"] == 1
    assert half_entries(b) == [] and sum(1 for _ in b.dp.maps["ct_map"]) == 2
    assert sync_b.apply([new], time.monotonic_ns())["exists"] == 1
    assert half_entries(b) == []

    a.run(syn(sport=40001))
    (new2,) = a.dp.flow_sync().events()
    assert sync_b.apply([new2], time.monotonic_ns())["half_inserted"] == 1
    now = time.monotonic_ns()
    assert b.dp.age_flows(now + 5 * 10**9) == 0
    assert b.dp.age_flows(now + 11 * 10**9) == 1  # the half-open flow; the established stays
    assert half_entries(b) == [] and sum(1 for _ in b.dp.maps["ct_map"]) == 2


def test_live_local_half_open_flow_is_not_overwritten(nodes: tuple[Harness, Harness]) -> None:
    """B's own handshake in progress on the client's tuple wins over A's NEW (and EST)."""
    a, b = nodes
    both(a, b, NatMode.FULLNAT)
    mine = b.run(syn())
    assert mine.retval == TC_ACT_REDIRECT
    b.dp.flow_sync().events()
    before = sorted(bytes(v) for _, v in b.dp.maps["ct_half"].lookup_batch())
    handshake(a)
    done = b.dp.flow_sync().apply(a.dp.flow_sync().events(), time.monotonic_ns())
    assert done["local_wins"] == 2
    assert sorted(bytes(v) for _, v in b.dp.maps["ct_half"].lookup_batch()) == before
    assert sum(1 for _ in b.dp.maps["ct_map"]) == 0
    # B's flow goes on to B's endpoint, from B's NAT source
    fwd = b.run(ack())
    assert (fwd.pkt[IP].dst, fwd.pkt[IP].src, fwd.pkt[TCP].sport) == (
        mine.pkt[IP].dst, mine.pkt[IP].src, mine.pkt[TCP].sport)


def test_syn_flood_never_crowds_established_events_out(nodes: tuple[Harness, Harness]) -> None:
    """B's ring is 4 KiB (11 records of 352 bytes). A flood of spoofed SYNs emits creation
    events only while a quarter of the ring is unread (3 records), counts the rest
    sync_new_skip, and the ring keeps room for every established event."""
    _, b = nodes
    b.service(eps=EPS[:2], mode=NatMode.FULLNAT)
    first = b.run(syn(sport=40000))  # a real client's SYN, before the flood
    assert first.retval == TC_ACT_REDIRECT
    assert b.run(ep_answer(first.pkt, "SA")).retval == TC_ACT_REDIRECT
    flood = 50
    for i in range(flood):
        spoofed = syn(src=f"10.0.{2 + i // 200}.{1 + i % 200}", sport=20000 + i)
        assert b.run(spoofed).retval == TC_ACT_REDIRECT
    more = 6  # real clients completing their handshakes under the flood
    for i in range(more):
        handshake(b, sport=41000 + i)
    assert b.run(ack()).retval == TC_ACT_REDIRECT  # the first client's handshake completes
    got = types(b.dp.flow_sync().events())
    slot = ctypes.sizeof(L.CtSyncEv) + 8  # record + ring header
    room = 4096 // L.SYNC_NEW_ROOM
    n_new = -(-room // slot)  # emitted while the unread data was below the quarter
    assert got.count(L.SYNC_NEW) == n_new == 3
    assert got.count(L.SYNC_EST) == 1 + more
    stats = b.dp.datapath_stats()
    assert stats["sync_drop"] == 0
    assert stats["sync_new_skip"] == 1 + flood + more - n_new
