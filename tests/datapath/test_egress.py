"""Egress SNAT in the kernel (bpf/include/pyloxi/egress.h): a firewall SNAT rule (loxilb
doSnat) opens, for a packet to no service, a flow whose source becomes toIP and a port
allocated as fullnat allocates (or exactly toPort); its replies are translated back."""

from __future__ import annotations

import os
import time

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.backend import EbpfDatapath
from pyloxi.engine.conntrack import to_entry
from pyloxi.engine.firewall import FwRuleProgram
from pyloxi.testing.lab.dpns import LB_MAC

from .conftest import (
    CLIENT,
    CLIENT2,
    CLIENT6,
    CLIENT_MAC,
    EP_MAC,
    EPS,
    EPS6,
    OBJ,
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    TC_ACT_SHOT,
    VIP,
    Harness,
    csum6_ok,
    csum_ok,
    syn,
)
from .test_icmp import all_csums_ok, icmp_about, inner, tuple_of

ANY = (0, 65535)
TO_IP = "10.0.11.100"   # the SNAT address: on the outside (endpoint) subnet's side
SERVER = EPS[0]         # an outside server, reached through dp1


def snat_rule(rid: int = 1, *, src: str = "10.0.1.0/24", dst: str = "", port: int = 0,
              to_ip: str = TO_IP) -> FwRuleProgram:
    return FwRuleProgram(id=rid, src=src, dst=dst, sport=ANY, dport=ANY, proto=0, ifname="",
                         allow=False, mark=0, snat_ip=to_ip, snat_port=port)


def out_syn(src: str = CLIENT, sport: int = 40000, dport: int = 80, dst: str = SERVER,
            flags: str = "S") -> Ether:
    return syn(src=src, sport=sport, dport=dport, dst=dst, flags=flags)


def server_reply(sent: Ether, flags: str = "SA") -> Ether:
    """The outside server's answer to what the LB sent it."""
    ip, tcp = sent[IP], sent[TCP]
    return Ether(src=EP_MAC, dst=LB_MAC) / IP(src=ip.dst, dst=ip.src, ttl=64) / TCP(
        sport=tcp.dport, dport=tcp.sport, flags=flags, seq=5000, ack=tcp.seq + 1,
        window=65535)


def stat(h: Harness, name: str) -> int:
    return h.dp.datapath_stats()[name]


def test_tcp_source_becomes_to_ip_and_the_reply_is_translated_back(h: Harness) -> None:
    h.dp.set_firewall([snat_rule()])
    out = h.run(out_syn())
    assert out.retval == TC_ACT_REDIRECT
    ip, tcp = out.pkt[IP], out.pkt[TCP]
    assert (ip.src, ip.dst, tcp.dport) == (TO_IP, SERVER, 80)
    assert tcp.sport == 40000   # the client's port, free and in the fullnat range: kept
    assert out.pkt[Ether].dst == EP_MAC and csum_ok(out.pkt)
    back = h.run(server_reply(out.pkt))
    assert back.retval == TC_ACT_REDIRECT
    bip, btcp = back.pkt[IP], back.pkt[TCP]
    assert (bip.src, bip.dst, btcp.sport, btcp.dport) == (SERVER, CLIENT, 80, 40000)
    assert back.pkt[Ether].dst == CLIENT_MAC and csum_ok(back.pkt)
    # the rule counted the packet that opened the flow; the flow lists as the hidden rule
    assert h.dp.firewall_counters()[1][0] == 1
    [flow] = [f for f in h.dp.flows() if f.src == CLIENT]
    assert flow.egress and (flow.snat_ip, flow.snat_port) == (TO_IP, 40000)
    entry = to_entry(None, flow)
    assert entry.serv_name == f"snat:{TO_IP}:0"
    assert entry.conntrack_act == f"snat-{TO_IP}:40000"


def test_two_clients_on_one_port_get_two_source_ports(h: Harness) -> None:
    h.dp.set_firewall([snat_rule()])
    a = h.run(out_syn(src=CLIENT, sport=40000))
    b = h.run(out_syn(src=CLIENT2, sport=40000))
    assert a.retval == b.retval == TC_ACT_REDIRECT
    assert a.pkt[IP].src == b.pkt[IP].src == TO_IP
    pa, pb = a.pkt[TCP].sport, b.pkt[TCP].sport
    assert pa != pb and 1024 <= pb <= 65535
    # each reply goes back to its own client
    assert h.run(server_reply(b.pkt)).pkt[IP].dst == CLIENT2
    assert h.run(server_reply(a.pkt)).pkt[IP].dst == CLIENT


def test_to_port_is_exact_and_a_taken_tuple_is_a_counted_drop(h: Harness) -> None:
    h.dp.set_firewall([snat_rule(port=3030)])
    a = h.run(out_syn(src=CLIENT, sport=40000))
    assert a.retval == TC_ACT_REDIRECT and a.pkt[TCP].sport == 3030
    before = stat(h, "nat_exhausted")
    # a second flow to the same server ip:port would need the same reply tuple: dropped,
    # never forwarded with the client's own source
    assert h.run(out_syn(src=CLIENT2, sport=40001)).retval == TC_ACT_SHOT
    assert stat(h, "nat_exhausted") == before + 1
    # another server port: the same toIP:toPort is free there
    c = h.run(out_syn(src=CLIENT2, sport=40001, dport=81))
    assert c.retval == TC_ACT_REDIRECT and (c.pkt[IP].src, c.pkt[TCP].sport) == (TO_IP, 3030)
    [flow] = [f for f in h.dp.flows() if f.src == CLIENT]
    assert to_entry(None, flow).serv_name == f"snat:{TO_IP}:3030"


def test_udp_and_icmp_echo(h: Harness) -> None:
    h.dp.set_firewall([snat_rule()])
    u = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=SERVER, ttl=64) / UDP(
        sport=5353, dport=53) / b"query"
    out = h.run(u)
    assert out.retval == TC_ACT_REDIRECT and out.pkt[IP].src == TO_IP and csum_ok(out.pkt)
    sport = out.pkt[UDP].sport
    r = Ether(src=EP_MAC, dst=LB_MAC) / IP(src=SERVER, dst=TO_IP, ttl=64) / UDP(
        sport=53, dport=sport) / b"answer"
    back = h.run(r)
    assert back.retval == TC_ACT_REDIRECT
    assert (back.pkt[IP].dst, back.pkt[UDP].dport) == (CLIENT, 5353) and csum_ok(back.pkt)

    e = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=SERVER, ttl=64) / ICMP(
        type=8, id=77, seq=1) / b"ping"
    out = h.run(e)
    assert out.retval == TC_ACT_REDIRECT and out.pkt[IP].src == TO_IP and csum_ok(out.pkt)
    ident = out.pkt[ICMP].id
    r = Ether(src=EP_MAC, dst=LB_MAC) / IP(src=SERVER, dst=TO_IP, ttl=64) / ICMP(
        type=0, id=ident, seq=1) / b"ping"
    back = h.run(r)
    assert back.retval == TC_ACT_REDIRECT
    assert (back.pkt[IP].dst, back.pkt[ICMP].id) == (CLIENT, 77) and csum_ok(back.pkt)


def test_a_service_wins_over_the_snat_rule(h: Harness) -> None:
    h.service()
    h.dp.set_firewall([snat_rule()])
    out = h.run(syn(dst=VIP))
    assert out.retval == TC_ACT_REDIRECT
    assert out.pkt[IP].src == CLIENT and out.pkt[IP].dst in EPS   # load balanced, no SNAT


def test_mid_stream_tcp_is_dropped_not_leaked(h: Harness) -> None:
    h.dp.set_firewall([snat_rule()])
    before = stat(h, "egress_refused")
    assert h.run(out_syn(flags="A")).retval == TC_ACT_SHOT
    assert stat(h, "egress_refused") == before + 1


def test_traffic_to_the_host_itself_and_other_sources_are_left_alone(h: Harness) -> None:
    h.dp.set_firewall([snat_rule()])
    local = h.run(out_syn(dst="10.0.1.1"))   # the LB's own address
    assert local.retval == TC_ACT_OK and local.pkt[IP].src == CLIENT
    # a source the rule does not match: not ours, the kernel's (unchanged)
    other = h.run(out_syn(src="10.0.11.3"), iface="dp0")
    assert other.retval == TC_ACT_OK and other.pkt[IP].src == "10.0.11.3"


def test_rule_of_one_family_leaves_the_other_alone(h: Harness) -> None:
    h.dp.set_firewall([snat_rule(src="")])   # any source, IPv4 toIP
    p6 = Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=CLIENT6, dst=EPS6[0], hlim=64) / TCP(
        sport=40000, dport=80, flags="S")
    assert h.run(p6).retval == TC_ACT_OK
    assert h.dp.firewall_counters()[1] == (0, 0)


def test_rule_removed_new_flows_are_not_translated_established_ones_go_on(h: Harness) -> None:
    h.dp.set_firewall([snat_rule()])
    out = h.run(out_syn(sport=40000))
    h.dp.set_firewall([])
    # the established flow keeps its translation (conntrack), a new one is the kernel's
    assert h.run(server_reply(out.pkt)).pkt[IP].dst == CLIENT
    assert h.run(out_syn(sport=40002)).retval == TC_ACT_OK


def test_synced_egress_flow_continues_on_a_peer_without_active_rules(netns: str) -> None:
    """Conntrack sync: node A's egress flow (established) goes to node B, a BACKUP whose
    onDefault rules are not in its datapath; B then translates both directions as A did."""
    a = Harness(EbpfDatapath(f"/sys/fs/bpf/pl{os.getpid()}-ea", obj_path=OBJ))
    b = Harness(EbpfDatapath(f"/sys/fs/bpf/pl{os.getpid()}-eb", obj_path=OBJ))
    try:
        a.dp.set_firewall([snat_rule()])
        out = a.run(out_syn(sport=40000))
        a.run(server_reply(out.pkt))
        ack = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=SERVER, ttl=64) / TCP(
            sport=40000, dport=80, flags="A", seq=1001, ack=5001, window=65535)
        assert a.run(ack).retval == TC_ACT_REDIRECT
        evs = a.dp.flow_sync().events()
        assert L.SYNC_EST in [L.CtSyncEv.from_buffer_copy(e).type for e in evs]
        done = b.dp.flow_sync().apply(evs, time.monotonic_ns())
        assert done["inserted"] == 1 and not done["unknown_service"]
        data = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=SERVER, ttl=64) / TCP(
            sport=40000, dport=80, flags="PA", seq=1001, ack=5001, window=65535) / b"x"
        on_b = b.run(data)
        assert on_b.retval == TC_ACT_REDIRECT
        assert (on_b.pkt[IP].src, on_b.pkt[TCP].sport) == (TO_IP, out.pkt[TCP].sport)
        back = b.run(server_reply(on_b.pkt, flags="A"))
        assert back.retval == TC_ACT_REDIRECT
        assert (back.pkt[IP].dst, back.pkt[TCP].dport) == (CLIENT, 40000)
        assert [f.egress for f in b.dp.flows()] == [True]
    finally:
        a.dp.destroy()
        b.dp.destroy()


def test_icmp_error_about_an_egress_flow_reaches_the_pod(h: Harness) -> None:
    """The server's port unreachable, sent to toIP about what the LB emitted: the pod gets it
    about the packet it sent (its own address and port quoted)."""
    h.dp.set_firewall([snat_rule()])
    req = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=SERVER, ttl=64) / UDP(
        sport=33333, dport=53) / b"question"
    sent = h.run(req).pkt
    assert sent[IP].src == TO_IP
    out = h.run(icmp_about(sent, src=SERVER, mac=EP_MAC, code=3))
    assert out.retval == TC_ACT_REDIRECT
    assert (out.pkt[IP].src, out.pkt[IP].dst) == (SERVER, CLIENT)
    assert tuple_of(inner(out.pkt)) == (CLIENT, SERVER, 33333, 53)
    assert all_csums_ok(out.pkt)


def test_ipv6_egress(h: Harness) -> None:
    to6 = "2001:db8:11::100"
    h.dp.set_firewall([snat_rule(src="2001:db8:1::/64", to_ip=to6)])
    p6 = Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=CLIENT6, dst=EPS6[0], hlim=64) / TCP(
        sport=40000, dport=80, flags="S", seq=1000)
    out = h.run(p6)
    assert out.retval == TC_ACT_REDIRECT
    assert (out.pkt[IPv6].src, out.pkt[IPv6].dst) == (to6, EPS6[0])
    r = Ether(src=EP_MAC, dst=LB_MAC) / IPv6(src=EPS6[0], dst=to6, hlim=64) / TCP(
        sport=80, dport=out.pkt[TCP].sport, flags="SA", seq=5000, ack=1001)
    back = h.run(r)
    assert back.retval == TC_ACT_REDIRECT
    assert (back.pkt[IPv6].dst, back.pkt[TCP].dport) == (CLIENT6, 40000)
    assert csum6_ok(out.pkt) and csum6_ok(back.pkt)


def test_egress_flows_age_out(h: Harness) -> None:
    h.dp.set_firewall([snat_rule()])
    u = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=SERVER, ttl=64) / UDP(
        sport=5353, dport=53)
    assert h.run(u).retval == TC_ACT_REDIRECT
    assert len(h.dp.flows()) == 1
    assert h.dp.age_flows(time.monotonic_ns() + 3600 * 10**9) == 1
    assert h.dp.flows() == []
