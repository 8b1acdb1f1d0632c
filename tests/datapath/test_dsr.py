"""DSR through the compiled program (bpf/include/pyloxi/dsr.h): L2 DSR keeps the VIP and ports
and changes only the MACs (and the TTL), L3 DSR encapsulates in IPIP; one forward-only conntrack
entry per flow in ct_half, picked up again by hash when it is gone, aged on the idle timeout."""

from __future__ import annotations

import os
import time

import numpy as np
from scapy.layers.inet import ICMP, IP, TCP, UDP
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
    GW_MAC,
    LB4_EP_SIDE,
    OBJ,
    ROUTED_EPS,
    TC_ACT_REDIRECT,
    VIP,
    Harness,
    csum_ok,
    syn,
)

TC_ACT_SHOT = 2
def dsr(h: Harness, eps: list[str], proto: int = 6, port: int = 80) -> None:
    h.service(mode=NatMode.DSR, sel=Selection.HASH, eps=eps, target=port, proto=proto, port=port)


def entries(h: Harness) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    snap = h.dp.ct.snapshot()
    return snap.keys, snap.vals, snap.table


def only_entry(h: Harness) -> np.void:
    """The one conntrack entry there must be: forward-only, in ct_half."""
    keys, vals, table = entries(h)
    assert len(vals) == 1, f"{len(vals)} entries"
    assert table[0] == L.CT_DEL_HALF and vals[0]["dir"] == L.DIR_ORIG
    assert vals[0]["mode"] == L.MODE_DSR
    assert L.addr_text(keys[0]["saddr"]) == CLIENT and L.addr_text(keys[0]["daddr"]) == VIP
    return vals[0]


def ack(sport: int = 40000, seq: int = 1001, payload: bytes = b"") -> Ether:
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, ttl=64) / TCP(
        sport=sport, dport=80, flags="A", seq=seq, ack=5001, window=65535) / payload


def test_l2_dsr_keeps_vip_and_ports_changes_macs(hd: Harness) -> None:
    dsr(hd, EPS[:1])
    out = hd.run(syn())
    assert out.retval == TC_ACT_REDIRECT
    ip, tcp = out.pkt[IP], out.pkt[TCP]
    assert (ip.src, ip.dst, tcp.sport, tcp.dport) == (CLIENT, VIP, 40000, 80)
    assert ip.ttl == 63 and csum_ok(out.pkt)
    assert out.pkt.dst == EP_MAC and out.pkt.src != CLIENT_MAC
    assert IP not in ip.payload  # no encapsulation on-link
    v = only_entry(hd)
    assert L.addr_text(v["nat_daddr"]) == EPS[0] and v["flags"] == 0
    # the rest of the connection: the same entry, nothing else created, no reply entry
    for seq in (1001, 1101):
        out = hd.run(ack(seq=seq, payload=b"x" * 100))
        assert out.retval == TC_ACT_REDIRECT and out.pkt[IP].dst == VIP
        assert bytes(out.pkt[TCP].payload) == b"x" * 100 and csum_ok(out.pkt)
    v = only_entry(hd)
    assert v["packets"] == 3 and v["seen"] & L.CT_ACK
    assert sum(1 for _ in hd.dp.maps["ct_map"]) == 0  # never promoted


def test_udp_dsr_unchanged_but_ttl(hd: Harness) -> None:
    dsr(hd, EPS[:1], proto=17, port=53)
    pkt = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, ttl=9) / UDP(
        sport=5555, dport=53) / b"query"
    out = hd.run(pkt)
    assert out.retval == TC_ACT_REDIRECT
    ip, udp = out.pkt[IP], out.pkt[UDP]
    assert (ip.src, ip.dst, udp.sport, udp.dport, ip.ttl) == (CLIENT, VIP, 5555, 53, 8)
    assert bytes(udp.payload) == b"query" and csum_ok(out.pkt) and out.pkt.dst == EP_MAC
    only_entry(hd)


def test_mid_stream_ack_is_picked_up_to_the_same_endpoint(hd: Harness) -> None:
    dsr(hd, EPS)
    chosen = {}
    for sport in range(41000, 41012):
        assert hd.run(syn(sport=sport)).retval == TC_ACT_REDIRECT
    keys, vals, _ = entries(hd)
    for k, v in zip(keys, vals, strict=True):
        chosen[L.n_port(int(k["sport"]))] = L.addr_text(v["nat_daddr"])
    assert len(set(chosen.values())) > 1  # hash spreads them
    before = hd.dp.datapath_stats()["pickup"]
    assert hd.dp.ct.flush_service(1) == 12  # flows lost (an LB restarted, evicted, aged)
    for sport, ep in chosen.items():
        out = hd.run(ack(sport=sport))
        assert out.retval == TC_ACT_REDIRECT and out.pkt[IP].dst == VIP
        keys, vals, _ = entries(hd)
        got = {L.n_port(int(k["sport"])): L.addr_text(v["nat_daddr"])
               for k, v in zip(keys, vals, strict=True)}
        assert got[sport] == ep
    assert hd.dp.datapath_stats()["pickup"] - before == 12


def test_forward_only_entry_ages_on_the_idle_timeout_and_is_listed(hd: Harness) -> None:
    dsr(hd, EPS[:1])
    hd.run(syn())
    hd.run(ack())
    now = time.monotonic_ns()
    # an orphan or a half-open flow would be gone after 10 s; a DSR flow is neither
    assert hd.dp.age_flows(now + 60 * 10**9) == 0
    (flow,) = hd.dp.flows()
    assert (flow.state, flow.ep_ip, flow.ep_port, flow.snat_ip) == ("est", EPS[0], 80, None)
    assert (flow.src, flow.dst, flow.sport, flow.dport) == (CLIENT, VIP, 40000, 80)
    assert hd.dp.age_flows(now + 241 * 10**9) == 1  # idle_timeout 240
    assert hd.dp.flows() == []


def test_closed_dsr_flow_restarts_on_a_new_syn(hd: Harness) -> None:
    dsr(hd, EPS[:1])
    hd.run(syn())
    fin = ack()
    fin[TCP].flags = "FA"
    assert hd.run(fin).retval == TC_ACT_REDIRECT
    assert hd.dp.flows()[0].state == "fini"
    created = only_entry(hd)["created_ns"]
    reuse = hd.dp.datapath_stats()["syn_reuse"]
    time.sleep(0.01)
    assert hd.run(syn()).retval == TC_ACT_REDIRECT
    assert hd.dp.datapath_stats()["syn_reuse"] == reuse + 1
    v = only_entry(hd)
    assert not v["seen"] & L.CT_FIN and v["created_ns"] >= created


def test_l3_dsr_encapsulates_in_ipip(hd: Harness) -> None:
    dsr(hd, ROUTED_EPS[:1])
    pkt = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP, ttl=64, flags="DF") / TCP(
        sport=40000, dport=80, flags="S", seq=1000)
    out = hd.run(pkt)
    assert out.retval == TC_ACT_REDIRECT
    assert out.pkt.dst == GW_MAC  # the route's gateway, not the endpoint
    outer = out.pkt[IP]
    assert (outer.src, outer.dst, outer.proto, outer.ttl) == (LB4_EP_SIDE, ROUTED_EPS[0], 4, 64)
    assert outer.flags == "DF" and outer.id == 0 and outer.len == len(bytes(pkt[IP])) + 20
    fresh = IP(bytes(outer))
    del fresh.chksum
    assert IP(bytes(fresh)).chksum == outer.chksum  # outer header checksum valid
    inner = outer.payload
    assert isinstance(inner, IP)
    assert (inner.src, inner.dst, inner.ttl, inner[TCP].sport, inner[TCP].dport) == (
        CLIENT, VIP, 63, 40000, 80)
    assert csum_ok(Ether() / inner)  # inner IP and TCP checksums valid
    v = only_entry(hd)
    assert v["flags"] == L.CT_F_IPIP and L.addr_text(v["nat_saddr"]) == LB4_EP_SIDE
    (flow,) = hd.dp.flows()
    assert flow.snat_ip is None and flow.ep_ip == ROUTED_EPS[0]
    # the next packet of the flow (cached next hop) is encapsulated the same way
    out = hd.run(ack(payload=b"y" * 200))
    assert out.retval == TC_ACT_REDIRECT and out.pkt[IP].proto == 4
    assert bytes(out.pkt[IP].payload[TCP].payload) == b"y" * 200


def test_l3_dsr_too_big_answers_fragmentation_needed(hd: Harness) -> None:
    dsr(hd, ROUTED_EPS[:1])
    hd.run(syn())  # flow exists, next hop cached
    payload = b"z" * (1490 - 40)  # 1490 bytes of IP: fits the 1500 MTU, not with 20 more
    fits = hd.run(ack(payload=b"z" * (1480 - 40)))
    assert fits.retval == TC_ACT_REDIRECT and fits.pkt[IP].len == 1500
    big = ack(payload=payload)
    big[IP].flags = "DF"
    out = hd.run(big)
    assert out.retval == TC_ACT_REDIRECT
    ip, icmp = out.pkt[IP], out.pkt[ICMP]
    assert (ip.src, ip.dst, icmp.type, icmp.code, icmp.nexthopmtu) == (VIP, CLIENT, 3, 4, 1480)
    assert out.pkt.dst == CLIENT_MAC
    quoted = IP(bytes(icmp.payload))  # quotes the client's packet as it sent it
    assert (quoted.src, quoted.dst, quoted.ttl) == (CLIENT, VIP, 64)
    # no DF: cannot be fragmented by us, dropped and counted
    before = hd.dp.datapath_stats()["dsr_too_big"]
    nodf = ack(payload=payload)
    assert hd.run(nodf).retval == TC_ACT_SHOT
    assert hd.dp.datapath_stats()["dsr_too_big"] == before + 1


def test_l2_and_l3_endpoints_in_one_service(hd: Harness) -> None:
    dsr(hd, [EPS[0], ROUTED_EPS[0]])
    seen = set()
    for sport in range(42000, 42016):
        out = hd.run(syn(sport=sport))
        assert out.retval == TC_ACT_REDIRECT
        ip = out.pkt[IP]
        if ip.proto == 4:
            assert (ip.dst, out.pkt.dst, ip.payload.dst) == (ROUTED_EPS[0], GW_MAC, VIP)
            seen.add("ipip")
        else:
            assert (ip.dst, out.pkt.dst) == (VIP, EP_MAC)
            seen.add("l2")
    assert seen == {"ipip", "l2"}


def test_two_lbs_pick_the_same_endpoints(hd: Harness) -> None:
    """Two LB nodes with the same rule (no shared state) send every flow to the same endpoint:
    a flow that moves between them (ECMP change, failover) keeps its endpoint."""
    other = EbpfDatapath(f"/sys/fs/bpf/pl{os.getpid()}-dsr2", obj_path=OBJ)
    try:
        prog = hd.service(mode=NatMode.DSR, sel=Selection.HASH, eps=EPS, target=80,
                          slots=(0, 1, 2, 1, 0, 2, 2, 1, 0, 0, 2, 1, 1, 2, 0, 1, 0))
        other.install_service(prog)
        second = Harness(other)
        picks: dict[str, list[str]] = {"a": [], "b": []}
        for name, h in (("a", hd), ("b", second)):
            for sport in range(43000, 43024):
                assert h.run(syn(sport=sport)).retval == TC_ACT_REDIRECT
            snap = h.dp.ct.snapshot()
            order = np.argsort(snap.keys["sport"])
            picks[name] = [L.addr_text(snap.vals["nat_daddr"][i]) for i in order]
        assert picks["a"] == picks["b"] and len(set(picks["a"])) == 3
    finally:
        other.destroy()


def test_l2_dsr_over_ipv6_keeps_vip_and_ports(hd: Harness) -> None:
    from scapy.layers.inet6 import IPv6

    from .conftest import CLIENT6, EPS6, VIP6

    hd.service(mode=NatMode.DSR, sel=Selection.HASH, eps=EPS6[:2], target=80, vip=VIP6)
    pkt = Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=CLIENT6, dst=VIP6, hlim=64) / TCP(
        sport=41000, dport=80, flags="S", seq=1)
    out = hd.run(pkt)
    assert out.retval == TC_ACT_REDIRECT
    ip6, tcp = out.pkt[IPv6], out.pkt[TCP]
    assert (ip6.src, ip6.dst, tcp.sport, tcp.dport, ip6.hlim) == (CLIENT6, VIP6, 41000, 80, 63)
    assert out.pkt.dst == EP_MAC and bytes(out.pkt[IPv6])[8:] == bytes(pkt[IPv6])[8:]
    keys, vals, table = entries(hd)
    assert len(vals) == 1 and table[0] == L.CT_DEL_HALF and vals[0]["mode"] == L.MODE_DSR
    assert L.addr_text(vals[0]["nat_daddr"]) in EPS6[:2]


def test_rule_policer_polices_dsr_flows(hd: Harness) -> None:
    """A QoS policer on a dsr rule (policer.h, called from dsr_forward): its forward-only
    flows drain the bucket (2 frames) and are dropped when red, as NAT flows are."""
    from pyloxi.engine.policer import PolicerProgram

    dsr(hd, EPS[:1])
    hd.dp.set_policer(PolicerProgram(id=1, srtcm=False, cir=1_000_000, pir=1_000_000, cbs=1518,
                                     ebs=3036, port="", rule="t1"))
    assert hd.run(syn()).retval == TC_ACT_REDIRECT
    verdicts = [hd.run(ack(seq=1001 + 1400 * i, payload=bytes(1400))).retval
                for i in range(40)]
    assert TC_ACT_SHOT in verdicts
    okp, _, drp, _ = hd.dp.policer_counters()[1]
    assert (okp, drp) == (1 + verdicts.count(TC_ACT_REDIRECT), verdicts.count(TC_ACT_SHOT))
