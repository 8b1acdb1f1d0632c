"""Conntrack under attack and under pressure (issue 8): floods cannot evict established flows,
replies of lost flows never leak un-NATed, mid-stream pickup, blind resets, NAT port exhaustion,
orphan reclaim, least-connection counts that return to zero."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.backend import EbpfDatapath
from pyloxi.model.lb import NatMode, Selection
from pyloxi.testing.lab.dpns import LB_MAC

from .conftest import (
    CLIENT,
    CLIENT_MAC,
    EP_MAC,
    EPS,
    OBJ,
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    TC_ACT_SHOT,
    VIP,
    Harness,
    ct_count,
    ep_answer,
    handshake,
    syn,
)

EST_ENTRIES, HALF_ENTRIES = 64, 128  # 32 established flows, 64 half-open flows


@pytest.fixture
def small(netns: str) -> Iterator[Harness]:
    """A datapath with tiny conntrack tables, to flood them."""
    pin = f"/sys/fs/bpf/pl{os.getpid()}-dpsmall"
    dp = EbpfDatapath(pin, obj_path=OBJ, ct_entries=EST_ENTRIES, ct_half_entries=HALF_ENTRIES)
    try:
        yield Harness(dp)
    finally:
        dp.destroy()


def client_pkt(flags: str, sport: int = 40000, seq: int = 1001, ack: int = 5001,
               payload: bytes = b"") -> Ether:
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, ttl=64) / TCP(
        sport=sport, dport=80, flags=flags, seq=seq, ack=ack, window=65535) / payload


def spoofed_syns(n: int, seed: int = 8) -> Iterator[Ether]:
    rnd = random.Random(seed)
    for _ in range(n):
        src = f"10.{rnd.randrange(100, 250)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        yield Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=src, dst=VIP, ttl=64) / TCP(
            sport=rnd.randrange(1024, 65535), dport=80, flags="S", seq=rnd.randrange(2**32))


def works_both_ways(h: Harness, sport: int, ep: str) -> bool:
    """A data segment of an established flow reaches its own endpoint, and the endpoint's
    answer reaches the client from the VIP."""
    out = h.run(client_pkt("PA", sport=sport, payload=b"GET"))
    if out.retval != TC_ACT_REDIRECT or (out.pkt[IP].dst, out.pkt[TCP].dport) != (ep, 8080):
        return False
    back = h.run(ep_answer(out.pkt, "A", seq=5001, ack=1004))
    return back.retval == TC_ACT_REDIRECT and (
        back.pkt[IP].src, back.pkt[TCP].sport, back.pkt[IP].dst, back.pkt[TCP].dport
    ) == (VIP, 80, CLIENT, sport)


def stats(h: Harness) -> dict[str, int]:
    return h.dp.datapath_stats()


def test_syn_flood_breaks_no_established_flow_and_full_table_refuses(small: Harness) -> None:
    h = small
    prog = h.service(eps=EPS)
    flows = {}
    for i in range(20):  # 40 of the 64 established entries
        to_ep, _ = handshake(h, sport=41000 + i)
        flows[41000 + i] = to_ep[IP].dst
    for pkt in spoofed_syns(3000):  # 47x the half-open table
        assert h.run(pkt).retval == TC_ACT_REDIRECT
    broken = [s for s, ep in flows.items() if not works_both_ways(h, s, ep)]
    assert broken == []
    # the established table fills up: further flows are refused at their handshake's end,
    # visibly (counted; the ACK goes to the kernel, which resets the connection to its VIP)
    refused = 0
    for i in range(20):
        sport = 42000 + i
        out = h.run(syn(sport=sport))
        assert out.retval == TC_ACT_REDIRECT
        to_ep = out.pkt
        h.run(ep_answer(to_ep, "SA"))
        r = h.run(client_pkt("A", sport=sport))
        if r.retval == TC_ACT_OK:
            refused += 1
            assert r.pkt[IP].dst == VIP  # untouched, for the kernel
        else:
            assert r.retval == TC_ACT_REDIRECT
            flows[sport] = r.pkt[IP].dst
    assert refused == 8  # 64 entries = 32 flows; 20 + 12 fit
    assert stats(h)["ct_full"] == refused
    assert [s for s, ep in flows.items() if not works_both_ways(h, s, ep)] == []
    c = h.dp.service_counters(prog)
    assert sum(e.active_flows for e in c.endpoints) == 32


def test_reply_from_endpoint_without_conntrack_is_dropped(h: Harness) -> None:
    h.service(eps=EPS[:1])
    lost = Ether(src=EP_MAC, dst=LB_MAC) / IP(src=EPS[0], dst=CLIENT) / TCP(
        sport=8080, dport=40000, flags="A", seq=5001, ack=1001)
    assert h.run(lost).retval == TC_ACT_SHOT
    assert stats(h)["reply_miss"] == 1
    # the same endpoint from another port is not a reply of ours: the kernel routes it
    other = lost.copy()
    other[TCP].sport = 8081
    assert h.run(Ether(bytes(other))).retval == TC_ACT_OK
    # a flow lost after it was established: its replies are dropped, not leaked
    to_ep, _ = handshake(h, sport=40001)
    h.dp.ct.flush_service(1)
    r = h.run(ep_answer(to_ep, "A", seq=5001, ack=1001))
    assert r.retval == TC_ACT_SHOT and stats(h)["reply_miss"] == 2


def test_reply_to_local_address_goes_to_kernel(h: Harness) -> None:
    """fullnat: a reply without conntrack is addressed to the VIP (local), so the kernel only
    answers it; and a health probe's answer to this host must get through."""
    h.service(eps=EPS[:1], mode=NatMode.FULLNAT)
    pkt = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=EPS[0], dst=VIP) / TCP(
        sport=8080, dport=50000, flags="SA")
    assert h.run(pkt, iface="dp1").retval == TC_ACT_OK
    probe = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=EPS[0], dst="10.0.11.1") / TCP(
        sport=8080, dport=50000, flags="SA")
    assert h.run(probe, iface="dp1").retval == TC_ACT_OK
    assert stats(h)["reply_miss"] == 0


def test_midstream_pickup_by_hash_lands_on_same_endpoint(h: Harness) -> None:
    slots = tuple(i % 3 for i in range(1021))
    prog = h.service(eps=EPS, sel=Selection.HASH, slots=slots)
    eps = {}
    for sport in range(43000, 43010):
        to_ep, _ = handshake(h, sport=sport)
        eps[sport] = to_ep[IP].dst
    assert len(set(eps.values())) > 1
    # every flow lost (aged out while idle, or a restart that lost the tables)
    h.dp.ct.age({1: prog.idle_timeout}, time.monotonic_ns() + 10**13)
    assert ct_count(h) == 0
    for sport, ep in eps.items():
        assert works_both_ways(h, sport, ep)
    assert stats(h)["pickup"] == 10
    assert sum(e.active_flows for e in h.dp.service_counters(prog).endpoints) == 10


def test_midstream_without_hash_goes_to_kernel(h: Harness) -> None:
    h.service(eps=EPS)  # rr: another endpoint would get a connection it never saw
    r = h.run(client_pkt("PA", payload=b"GET"))
    assert r.retval == TC_ACT_OK and r.pkt[IP].dst == VIP
    assert stats(h)["pickup_refused"] == 1 and stats(h)["new_flow"] == 0
    assert ct_count(h) == 0


def test_blind_reset_is_dropped_and_flow_stays(h: Harness) -> None:
    h.service(eps=EPS)
    to_ep, _ = handshake(h)
    ep = to_ep[IP].dst
    # a spoofed RST far outside the window, from either side: dropped, the flow untouched
    r = h.run(client_pkt("R", seq=1001 + 10**9, ack=0))
    assert r.retval == TC_ACT_SHOT
    r = h.run(ep_answer(to_ep, "R", seq=5001 + 2**31))
    assert r.retval == TC_ACT_SHOT
    r = h.run(client_pkt("FA", seq=1001 + 3 * 10**9))
    assert r.retval == TC_ACT_SHOT
    assert stats(h)["out_of_window"] == 3
    (flow,) = h.dp.flows()
    assert flow.state == "est"
    # a SYN after it is a retransmission on the same flow, not a move to another endpoint
    again = h.run(syn())
    assert again.retval == TC_ACT_REDIRECT and again.pkt[IP].dst == ep
    assert stats(h)["syn_reuse"] == 0
    assert works_both_ways(h, 40000, ep)
    # an in-window RST (the client's next sequence number) closes the flow
    r = h.run(client_pkt("R", seq=1004, ack=0))
    assert r.retval == TC_ACT_REDIRECT
    (flow,) = h.dp.flows()
    assert flow.state == "closed"
    new = h.run(syn())
    assert stats(h)["syn_reuse"] == 1 and new.pkt[IP].dst != ep  # rr moved on


def test_rst_in_window_with_window_scaling(h: Harness) -> None:
    """Windows are scaled by the factors of both SYNs: a RST far ahead of the sequence but
    inside the scaled window is accepted, as the receiving stack would accept it."""
    h.service(eps=EPS[:1])
    s = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, ttl=64) / TCP(
        sport=40000, dport=80, flags="S", seq=1000, window=65535, options=[("WScale", 7)])
    to_ep = h.run(s).pkt
    sa = ep_answer(to_ep, "SA")
    sa[TCP].options = [("WScale", 7)]
    h.run(Ether(bytes(sa)))
    h.run(client_pkt("A"))  # window 65535 << 7: 8 MB
    r = h.run(ep_answer(to_ep, "R", seq=5001 + 4 * 10**6, ack=1001))
    assert r.retval == TC_ACT_REDIRECT
    assert stats(h)["out_of_window"] == 0


def _pair(snat: str, nat_port: int, client: str, cport: int, now: int) -> tuple[bytes, ...]:
    """Both entries of an established onearm flow client:cport -> VIP:80 -> EPS[0]:8080 that
    uses NAT port nat_port."""
    ok = L.ct_key(client, VIP, cport, 80, 6)
    ov = L.ct_val(snat, EPS[0], nat_port, 8080, svc_id=1, dir=L.DIR_ORIG, mode=1,
                 seen=L.CT_SYN | L.CT_ACK, created_ns=now, last_ns=now)
    rk = L.ct_key(EPS[0], snat, 8080, nat_port, 6)
    rv = L.ct_val(VIP, client, 80, cport, svc_id=1, dir=L.DIR_REPLY, mode=1,
                 seen=L.CT_SYNACK | L.CT_ACK, created_ns=now, last_ns=now)
    return bytes(ok), bytes(ov), bytes(rk), bytes(rv)


def test_nat_port_exhaustion_is_answered_and_counted(h: Harness) -> None:
    h.service(eps=EPS[:1], mode=NatMode.ONEARM, snat="10.0.11.1")
    now = time.monotonic_ns()
    keys, vals = [], []
    for i in range(16384):  # every NAT port of the endpoint held by a live flow
        ok, ov, rk, rv = _pair("10.0.11.1", 49152 + i, f"10.1.{i // 250}.{i % 250 + 1}", 30000, now)
        keys += [ok, rk]
        vals += [ov, rv]
    h.dp.maps["ct_map"].update_batch(keys, vals)
    r = h.run(syn())
    # refused visibly: the SYN goes to the kernel (the VIP is local: it answers with a RST)
    assert r.retval == TC_ACT_OK and r.pkt[IP].dst == VIP
    assert stats(h)["nat_exhausted"] == 1
    assert ct_count(h) == 2 * 16384


def _orphan_reply(now: int) -> tuple[L.CtKey, L.CtVal]:
    rk = L.ct_key(EPS[0], CLIENT, 8080, 40000, 6)
    rv = L.ct_val(VIP, CLIENT, 80, 40000, svc_id=1, dir=L.DIR_REPLY, seen=L.CT_SYNACK,
                 created_ns=now, last_ns=now)
    return rk, rv


def test_reclaim_spares_a_young_half_open_orphan(h: Harness) -> None:
    """A half-open entry without its partner may be a flow another CPU is creating (new flows
    insert their reply entry first): it is taken over only once it is older than the bound."""
    h.service(eps=EPS[:1])
    now = time.monotonic_ns()
    rk, rv = _orphan_reply(now)
    ct = h.dp.maps["ct_half"]
    ct.update(bytes(rk), bytes(rv))
    r = h.run(syn())  # needs exactly that reply tuple (no SNAT: one candidate)
    assert r.retval == TC_ACT_OK and ct.lookup(bytes(rk)) == bytes(rv)
    assert stats(h)["reclaim"] == 0 and stats(h)["nat_exhausted"] == 1
    rv.created_ns = rv.last_ns = max(0, now - 10 * 10**9)  # no underflow on a fresh boot
    ct.update(bytes(rk), bytes(rv))
    r = h.run(syn())
    assert r.retval == TC_ACT_REDIRECT and stats(h)["reclaim"] == 1


def test_reclaim_takes_over_an_established_orphan_at_once(h: Harness) -> None:
    """An established entry without its partner lost it for good (promotion writes the
    original direction first): a client reusing its port is not refused, however young."""
    h.service(eps=EPS[:1])
    rk, rv = _orphan_reply(time.monotonic_ns())
    h.dp.maps["ct_map"].update(bytes(rk), bytes(rv))
    r = h.run(syn())
    assert r.retval == TC_ACT_REDIRECT
    assert stats(h)["reclaim"] == 1 and stats(h)["nat_exhausted"] == 0


def test_lc_counts_return_to_zero_after_flood_and_aging(small: Harness) -> None:
    h = small
    prog = h.service(eps=EPS, sel=Selection.LC)
    for i in range(12):
        handshake(h, sport=44000 + i)
    for pkt in spoofed_syns(2000, seed=3):  # half-open, evicted by each other
        h.run(pkt)
    closed_here = 0
    for i in range(4):  # some end in the datapath: in-window RST, then the port is reused
        assert h.run(client_pkt("R", sport=44000 + i, ack=0)).retval == TC_ACT_REDIRECT
        h.run(syn(sport=44000 + i))
        closed_here += 1
    active = [e.active_flows for e in h.dp.service_counters(prog).endpoints]
    assert sum(active) == 12 - closed_here
    h.dp.ct.age({1: prog.idle_timeout}, time.monotonic_ns() + 10**13)
    assert ct_count(h) == 0
    conns = [_conn(h, i) for i in range(3)]
    assert [c.opened - c.closed for c in conns] == [0, 0, 0]
    assert sum(c.opened for c in conns) == 12
    assert np.all([e.active_flows == 0 for e in h.dp.service_counters(prog).endpoints])


def test_blind_ack_does_not_establish(h: Harness) -> None:
    """Only an ACK of the endpoint's SYN-ACK moves a flow into the established table: spoofed
    SYN + guessed ACK pairs cannot fill it."""
    prog = h.service(eps=EPS[:1])
    to_ep = h.run(syn()).pkt
    h.run(ep_answer(to_ep, "SA"))  # endpoint ISN 5000: the right ACK acknowledges 5001
    assert h.run(client_pkt("A", ack=777)).retval == TC_ACT_REDIRECT  # forwarded; the
    assert stats(h)["promote"] == 0  # endpoint will reset it, it establishes nothing
    assert not list(h.dp.maps["ct_map"])
    h.run(client_pkt("A", ack=5001))
    assert stats(h)["promote"] == 1 and len(list(h.dp.maps["ct_map"])) == 2
    assert h.dp.service_counters(prog).endpoints[0].active_flows == 1


def test_udp_flood_breaks_no_answered_flow(small: Harness) -> None:
    h = small
    h.service(proto=17, port=53, target=5353, eps=EPS)
    rnd = random.Random(5)

    def query(src: str, sport: int) -> Ether:
        return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=src, dst=VIP, ttl=64) / UDP(
            sport=sport, dport=53) / b"q"

    flows = {}
    for sport in range(5000, 5020):  # answered: established
        out = h.run(query(CLIENT, sport))
        back = h.run(Ether(src=EP_MAC, dst=LB_MAC) / IP(src=out.pkt[IP].dst, dst=CLIENT) / UDP(
            sport=5353, dport=sport) / b"a")
        assert back.retval == TC_ACT_REDIRECT and back.pkt[IP].src == VIP
        flows[sport] = out.pkt[IP].dst
    for _ in range(2000):  # spoofed one-way datagrams: each a new flow, never answered
        h.run(query(f"10.{rnd.randrange(100, 250)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
                    rnd.randrange(1024, 65535)))
    for sport, ep in flows.items():
        out = h.run(query(CLIENT, sport))
        assert out.retval == TC_ACT_REDIRECT and out.pkt[IP].dst == ep
        back = h.run(Ether(src=EP_MAC, dst=LB_MAC) / IP(src=ep, dst=CLIENT) / UDP(
            sport=5353, dport=sport) / b"a")
        assert back.retval == TC_ACT_REDIRECT and (back.pkt[IP].src, back.pkt[UDP].sport) == (
            VIP, 53)


def test_spoofed_ack_flood_cannot_fill_established_table(small: Harness) -> None:
    """hash picks up mid-stream packets, but only the endpoint's answer establishes them."""
    h = small
    slots = tuple(i % 3 for i in range(1021))
    h.service(eps=EPS, sel=Selection.HASH, slots=slots)
    rnd = random.Random(9)
    for _ in range(500):
        src = f"10.{rnd.randrange(100, 250)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        pkt = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=src, dst=VIP, ttl=64) / TCP(
            sport=rnd.randrange(1024, 65535), dport=80, flags="A", seq=rnd.randrange(2**32))
        assert h.run(pkt).retval == TC_ACT_REDIRECT
    assert not list(h.dp.maps["ct_map"])
    to_ep, _ = handshake(h, sport=45000)
    assert works_both_ways(h, 45000, to_ep[IP].dst)
    assert len(list(h.dp.maps["ct_map"])) == 2


def _conn(h: Harness, idx: int) -> L.EpConn:
    raw = h.dp.maps["conn_map"].lookup(h.dp.endpoint_gid(1, idx).to_bytes(4, "little"))
    assert raw is not None
    return L.EpConn.from_buffer_copy(raw)


def test_aging_counts_only_the_flows_it_deleted(h: Harness) -> None:
    """A flow whose original entry someone else deleted in the meantime (the datapath, counting
    it itself) is not counted closed a second time by the aging."""
    h.service(eps=EPS[:1])
    for sport in (46000, 46001, 46002):
        handshake(h, sport=sport)
    assert _conn(h, 0).opened == 3
    snap = h.dp.ct.snapshot()
    gone = L.ct_key(CLIENT, VIP, 46000, 80, 6)
    # the snapshot still has the entry; it vanishes before the aging deletes it
    assert any(bytes(k) == bytes(gone) for k in snap.raw_keys)
    h.dp.ct.snapshot = lambda: snap  # type: ignore[method-assign]
    assert h.dp.maps["ct_map"].delete(bytes(gone))
    h.dp.ct.age({1: 240}, time.monotonic_ns() + 10**13)
    assert _conn(h, 0).closed == 2


def test_aging_on_a_machine_booted_a_moment_ago(h: Harness) -> None:
    """Monotonic time near zero: nothing underflows into 'expired long ago'."""
    h.service(eps=EPS[:1])
    handshake(h)
    assert h.dp.ct.age({1: 240}, 1) == 0  # entries stamped later than `now`: fresh
    assert ct_count(h) == 2


def test_rst_answering_a_challenge_ack_passes(h: Harness) -> None:
    """A client reusing its port while the server still holds the old connection in TIME_WAIT:
    the server answers the new SYN with an ACK of the old connection, the client answers that
    with a RST whose seq is the ACK's ack number (RFC 793), which frees the server for the
    retransmitted SYN. That RST lies outside any window of the new flow, yet it must pass."""
    h.service(eps=EPS[:1])
    out, _ = handshake(h)
    # the server closes first (Connection: close), the client follows: the flow is finished
    assert h.run(ep_answer(out, "FA", seq=5001, ack=1001)).retval == TC_ACT_REDIRECT
    assert h.run(client_pkt("FA", seq=1001, ack=5002)).retval == TC_ACT_REDIRECT
    assert h.run(ep_answer(out, "A", seq=5002, ack=1002)).retval == TC_ACT_REDIRECT
    # the same port again, a new ISN far from the old one
    new_syn = client_pkt("S", seq=2_000_000, ack=0)
    fwd = h.run(new_syn)
    assert fwd.retval == TC_ACT_REDIRECT and fwd.pkt[IP].dst == EPS[0]
    # TIME_WAIT's challenge ACK: the old connection's numbers
    assert h.run(ep_answer(fwd.pkt, "A", seq=5002, ack=1002)).retval == TC_ACT_REDIRECT
    rst = h.run(client_pkt("R", seq=1002, ack=0))
    assert rst.retval == TC_ACT_REDIRECT and rst.pkt[IP].dst == EPS[0]
    assert stats(h)["out_of_window"] == 0
    # a blind RST with any other sequence number is still refused
    blind = h.run(client_pkt("R", seq=1002 + 70_000, ack=0))
    assert blind.retval == TC_ACT_SHOT and stats(h)["out_of_window"] == 1


OTHER_MAC = "02:00:00:00:09:09"  # another host's: a switch flooded it here


def test_frames_for_another_hosts_mac_are_left_to_the_kernel(h: Harness) -> None:
    """An HA BACKUP holds the MASTER's synced flows; a switch flooding frames addressed to
    the MASTER must not make it forward duplicates (established flows) or serve a VIP that
    is not local (new flows). The kernel drops such frames; nothing is rewritten here."""
    h.service()
    handshake(h)
    flows = ct_count(h)
    data = client_pkt("PA", payload=b"x" * 10)
    flooded = h.run(Ether(src=CLIENT_MAC, dst=OTHER_MAC) / data[IP])
    assert flooded.retval == TC_ACT_OK
    assert flooded.pkt[IP].dst == VIP               # not NATed: untouched
    new = Ether(src=CLIENT_MAC, dst=OTHER_MAC) / syn(sport=40001)[IP]
    assert h.run(new).retval == TC_ACT_OK
    assert ct_count(h) == flows                      # no flow opened for it
    assert h.run(data).retval == TC_ACT_REDIRECT    # the same packet to this host's MAC


def test_fullnat_to_an_instance_ip_and_its_lost_replies_are_dropped(h: Harness) -> None:
    """Active-active fullnat: flows are source-NATed to the node's instance IP (not local: BGP
    routes it to the node). An endpoint's reply that misses conntrack here (its flow lived on
    another node and was not synced) is addressed to that non-local IP: the kernel would route
    it on, so the datapath drops it (`reply_miss`), never forwards it un-NATed."""
    instance_ip = "10.0.1.90"  # routed (connected subnet), not an address of this host
    h.service(eps=EPS[:1], mode=NatMode.FULLNAT, snat=instance_ip)
    to_ep, back = handshake(h, sport=40010)
    assert to_ep[IP].src == instance_ip
    assert (back[IP].src, back[IP].dst) == (VIP, CLIENT)
    # the same flow's reply once conntrack lost it, and one for a port it never gave out
    h.dp.ct.flush_service(1)
    lost = ep_answer(to_ep, "A", seq=5001, ack=1001)
    r = h.run(lost)
    assert r.retval == TC_ACT_SHOT and stats(h)["reply_miss"] == 1
    other = lost.copy()
    other[TCP].dport = to_ep[TCP].sport ^ 1
    assert h.run(Ether(bytes(other))).retval == TC_ACT_SHOT
    assert stats(h)["reply_miss"] == 2


def test_active_active_node_does_not_judge_windows(h: Harness) -> None:
    """In a cluster (NAT port share of several parts) a node may see only the endpoint's side
    of its own flow once the router re-hashed the client's packets to a peer: the client's
    window it knows is stale, and the endpoint's FIN (on its last data segment, far beyond
    that window) must get through, not be dropped as out of window."""
    h.service(eps=EPS[:1], mode=NatMode.FULLNAT)
    to_ep, _ = handshake(h, sport=40020)
    late_fin = ep_answer(to_ep, "FA", seq=5001 + 3 * 10**9, ack=1001)
    assert h.run(late_fin).retval == TC_ACT_SHOT  # standalone: out of window
    assert stats(h)["out_of_window"] == 1
    h.dp.set_nat_share(0, 3)
    try:
        r = h.run(late_fin)
        assert r.retval == TC_ACT_REDIRECT and r.pkt[IP].dst == CLIENT
        assert stats(h)["out_of_window"] == 1
    finally:
        h.dp.set_nat_share(0, 1)
