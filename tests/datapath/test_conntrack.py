"""Conntrack in the compiled program: states, SYN reuse of a finished tuple, aging."""

from __future__ import annotations

import time

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pyloxi.model.lb import NatMode

from .conftest import CLIENT, CLIENT_MAC, EP_MAC, LB_MAC, VIP, Harness, ct_count, syn


def ep_pkt(to_lb: Ether, flags: str) -> Ether:
    """The endpoint's answer; it acknowledges the client's SYN (seq 1000), as a real stack's
    RST or SYN-ACK does (a RST acknowledging nothing is a blind reset and is dropped)."""
    ip, tcp = to_lb[IP], to_lb[TCP]
    if "S" in flags or "R" in flags:
        flags = flags if "A" in flags else flags + "A"
    return Ether(src=EP_MAC, dst=LB_MAC) / IP(src=ip.dst, dst=ip.src) / TCP(
        sport=tcp.dport, dport=tcp.sport, flags=flags, seq=5000, ack=1001)


def state(h: Harness) -> str:
    (flow,) = h.dp.flows()
    return flow.state


def test_tcp_state_machine_and_counters(h: Harness) -> None:
    h.service()
    out = h.run(syn())
    assert state(h) == "sync-sent"
    h.run(ep_pkt(out.pkt, "SA"))
    assert state(h) == "sync-ack"
    h.run(syn(flags="A") / b"")  # seq 1000: scapy's default ack 0, still an ACK
    assert state(h) == "est"
    h.run(syn(flags="FA"))
    assert state(h) == "fini"
    h.run(ep_pkt(out.pkt, "FA"))
    assert state(h) == "closed-wait"
    (flow,) = h.dp.flows()
    assert flow.packets == 5 and flow.ep_port == 8080 and flow.dport == 80


def test_rst_closes(h: Harness) -> None:
    h.service()
    out = h.run(syn())
    h.run(ep_pkt(out.pkt, "R"))
    assert state(h) == "closed"


def test_syn_on_finished_tuple_starts_new_flow(h: Harness) -> None:
    prog = h.service(eps=["10.0.11.2", "10.0.11.3"])
    first = h.run(syn())
    h.run(ep_pkt(first.pkt, "R"))
    second = h.run(syn())  # same 5-tuple, seconds later
    assert h.dp.datapath_stats()["syn_reuse"] == 1
    # rr moved on: the new connection went to the other endpoint
    assert first.pkt[IP].dst != second.pkt[IP].dst
    assert state(h) == "sync-sent"
    assert h.dp.service_counters(prog).new_flows == 2


def test_syn_retransmit_keeps_flow(h: Harness) -> None:
    h.service(eps=["10.0.11.2", "10.0.11.3"])
    a = h.run(syn())
    b = h.run(syn())
    assert a.pkt[IP].dst == b.pkt[IP].dst
    assert h.dp.datapath_stats()["syn_reuse"] == 0


def test_fullnat_reclaims_reply_tuple_of_closed_flow(h: Harness) -> None:
    h.service(mode=NatMode.FULLNAT)
    first = h.run(syn(sport=50001))
    h.run(ep_pkt(first.pkt, "R"))
    # a different client flow hashing to the same NAT port can take it over once closed
    assert h.dp.datapath_stats()["nat_exhausted"] == 0


def test_udp_states_and_aging(h: Harness) -> None:
    prog = h.service(proto=17, port=53, target=53)
    q = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / UDP(sport=4000, dport=53)
    out = h.run(q)
    assert state(h) == "udp-uni"
    h.run(Ether(src=EP_MAC, dst=LB_MAC) / IP(src=out.pkt[IP].dst, dst=CLIENT) / UDP(
        sport=53, dport=4000))
    assert state(h) == "udp-est"
    assert h.dp.service_counters(prog).endpoints[0].active_flows == 1
    assert h.dp.age_flows() == 0  # fresh
    # pretend 300 s passed: both entries go, the endpoint's active count drops to 0
    removed = h.dp.ct.age({1: prog.idle_timeout}, time.monotonic_ns() + 300 * 10**9)
    assert removed == 1
    assert not list(h.dp.maps["ct_map"].keys())
    assert h.dp.service_counters(prog).endpoints[0].active_flows == 0


def test_remove_service_flushes_its_flows(h: Harness) -> None:
    prog = h.service()
    h.run(syn())
    assert ct_count(h) == 2
    h.dp.remove_service(prog)
    assert ct_count(h) == 0
    assert not list(h.dp.maps["svc_map"].keys())


def test_syn_after_one_sided_fin_starts_new_flow(h: Harness) -> None:
    h.service(eps=["10.0.11.2", "10.0.11.3"])
    first = h.run(syn())
    h.run(ep_pkt(first.pkt, "SA"))
    h.run(syn(flags="A"))
    h.run(ep_pkt(first.pkt, "FA"))  # the server closed; the client reuses its port at once
    second = h.run(syn())
    assert h.dp.datapath_stats()["syn_reuse"] == 1
    assert second.pkt[IP].dst != first.pkt[IP].dst
