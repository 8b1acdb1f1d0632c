"""Firewall in the kernel (bpf/include/pyloxi/firewall.h): rules judged in order on a
conntrack miss, before the service lookup; drop, allow, mark, trap, redirect; per-rule
counters."""

from __future__ import annotations

import socket
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
from pyloxi.engine.firewall import FwRuleProgram
from pyloxi.testing.lab.dpns import LB_MAC

from .conftest import (
    CLIENT,
    CLIENT2,
    CLIENT6,
    CLIENT_MAC,
    EPS,
    EPS6,
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    TC_ACT_SHOT,
    VIP,
    VIP6,
    Harness,
    ep_answer,
    syn,
)

ANY = (0, 65535)


def rule(rid: int, *, src: str = "", dst: str = "", sport: tuple[int, int] = ANY,
         dport: tuple[int, int] = ANY, proto: int = 0, ifname: str = "", allow: bool = False,
         mark: int = 0) -> FwRuleProgram:
    return FwRuleProgram(id=rid, src=src, dst=dst, sport=sport, dport=dport, proto=proto,
                         ifname=ifname, allow=allow, mark=mark)


def fw_drops(h: Harness) -> int:
    return h.dp.datapath_stats()["fw_drop"]


def test_drop_rule_drops_a_new_flow_and_counts(h: Harness) -> None:
    h.service()
    assert h.run(syn(sport=1000)).retval == TC_ACT_REDIRECT  # no rules: load balanced
    h.dp.set_firewall([rule(3, src=f"{CLIENT}/32")])
    pkt = syn(sport=1001)
    assert h.run(pkt).retval == TC_ACT_SHOT
    assert h.run(syn(src=CLIENT2, sport=1001)).retval == TC_ACT_REDIRECT  # other source
    assert h.dp.firewall_counters() == {3: (1, len(pkt))}
    assert fw_drops(h) == 1
    h.dp.set_firewall([])  # deleted: the client gets through again
    assert h.run(syn(sport=1002)).retval == TC_ACT_REDIRECT


def test_allow_with_higher_preference_wins_over_drop(h: Harness) -> None:
    h.service()
    # judged in list order: the engine puts the highest preference first
    h.dp.set_firewall([rule(1, src=f"{CLIENT}/32", allow=True), rule(2, src="10.0.1.0/24")])
    assert h.run(syn(sport=1000)).retval == TC_ACT_REDIRECT
    assert h.run(syn(src=CLIENT2, sport=1000)).retval == TC_ACT_SHOT
    h.dp.set_firewall([rule(2, src="10.0.1.0/24"), rule(1, src=f"{CLIENT}/32", allow=True)])
    assert h.run(syn(sport=1001)).retval == TC_ACT_SHOT
    c = h.dp.firewall_counters()
    assert c[1][0] == 1 and c[2][0] == 2


def test_ports_proto_and_prefix_match(h: Harness) -> None:
    h.service()
    h.service(port=53, proto=17)
    h.dp.set_firewall([rule(0, dst=f"{VIP}/32", dport=(80, 80), sport=(1000, 1999), proto=6)])
    assert h.run(syn(sport=1500)).retval == TC_ACT_SHOT
    assert h.run(syn(sport=2000)).retval == TC_ACT_REDIRECT  # source port outside the range

    def udp(sport: int) -> Ether:  # each a new flow (a known one passes on its conntrack)
        return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / UDP(sport=sport,
                                                                                 dport=53)

    assert h.run(udp(1500)).retval == TC_ACT_REDIRECT  # another protocol
    h.dp.set_firewall([rule(0, dst="20.0.0.0/8", proto=17)])
    assert h.run(udp(1501)).retval == TC_ACT_SHOT
    h.dp.set_firewall([rule(0, dst="20.1.0.0/16", proto=17)])
    assert h.run(udp(1502)).retval == TC_ACT_REDIRECT


def test_input_interface(h: Harness) -> None:
    h.service()
    h.dp.set_firewall([rule(0, ifname="dp1")])
    assert h.run(syn(sport=1000), iface="dp0").retval == TC_ACT_REDIRECT
    assert h.run(syn(sport=1001), iface="dp1").retval == TC_ACT_SHOT


def test_reply_of_an_allowed_flow_passes(h: Harness) -> None:
    """Stateful: a flow opened before a drop rule (or allowed) keeps working both ways."""
    h.service()
    out = h.run(syn(sport=1000))
    assert out.retval == TC_ACT_REDIRECT
    # drop everything from the endpoints' side and from the client
    h.dp.set_firewall([rule(0, src="10.0.0.0/8")])
    assert h.run(ep_answer(out.pkt, "SA")).retval == TC_ACT_REDIRECT  # the reply: conntrack
    ack = Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / TCP(
        sport=1000, dport=80, flags="A", seq=1001, ack=5001, window=65535)
    assert h.run(ack).retval == TC_ACT_REDIRECT
    assert h.run(syn(sport=1001)).retval == TC_ACT_SHOT  # a new flow is judged
    assert h.dp.firewall_counters()[0][0] == 1


def test_allow_sets_the_mark(h: Harness) -> None:
    h.service()
    h.dp.set_firewall([rule(0, src=f"{CLIENT}/32", allow=True, mark=0x2a)])
    ifindex = socket.if_nametoindex("dp0")
    ctx = struct.pack("<36xII", ifindex, ifindex).ljust(192, b"\0")
    out = prog_test_run(h.dp.prog_fd, bytes(syn(sport=1000)), ctx=ctx, data_size_out=4096)
    assert out.retval == TC_ACT_REDIRECT
    assert out.ctx is not None and struct.unpack_from("<I", out.ctx, 8)[0] == 0x2a


def test_the_mark_steers_to_the_rule_of_that_block(h: Harness) -> None:
    """loxilb's fwMark + LB block: marked clients reach the rule of their block, the others
    (and marks without a rule of their own) the rule without one."""
    plain = h.service(eps=[EPS[0]])
    blocked = h.service(eps=[EPS[1]], block=7)
    h.dp.set_firewall([rule(0, src=f"{CLIENT}/32", allow=True, mark=7)])
    assert h.run(syn(sport=1000)).pkt[IP].dst == EPS[1]
    assert h.run(syn(src=CLIENT2, sport=1000)).pkt[IP].dst == EPS[0]
    h.dp.set_firewall([rule(0, src=f"{CLIENT}/32", allow=True, mark=9)])
    assert h.run(syn(sport=1001)).pkt[IP].dst == EPS[0]
    # the two rules share VIP, port and protocol: removing one leaves the other's key alone
    h.dp.set_firewall([rule(0, src=f"{CLIENT}/32", allow=True, mark=7)])
    h.dp.remove_service(plain)
    assert h.run(syn(sport=1002)).pkt[IP].dst == EPS[1]
    assert h.run(syn(src=CLIENT2, sport=1002)).retval == TC_ACT_OK  # no rule of its own
    h.dp.remove_service(blocked)
    h.service(eps=[EPS[2]])
    assert h.run(syn(sport=1003)).pkt[IP].dst == EPS[2]  # marked, no block 7 rule: fallback


def test_not_a_service_is_judged_too(h: Harness) -> None:
    h.dp.set_firewall([rule(0, dst=f"{VIP}/32", dport=(22, 22), proto=6)])
    assert h.run(syn(dport=22)).retval == TC_ACT_SHOT
    assert h.run(syn(dport=23)).retval == TC_ACT_OK  # no rule, no service: the kernel's


def test_reused_rule_id_starts_from_zero(h: Harness) -> None:
    h.dp.set_firewall([rule(5, dst=f"{VIP}/32")])
    h.run(syn(sport=1000))
    assert h.dp.firewall_counters()[5][0] == 1
    h.dp.set_firewall([])
    h.dp.set_firewall([rule(5, src="192.0.2.0/24")])
    assert h.dp.firewall_counters() == {5: (0, 0)}


def test_ipv6_prefixes(h: Harness) -> None:
    h.service(vip=VIP6, eps=EPS6[:1])

    def syn6(sport: int) -> Ether:
        return Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=CLIENT6, dst=VIP6) / TCP(
            sport=sport, dport=80, flags="S", seq=1000)

    # an IPv4 "everything" does not catch IPv6
    h.dp.set_firewall([rule(0, src="0.0.0.0/0")])
    assert h.run(syn6(1000)).retval == TC_ACT_REDIRECT
    h.dp.set_firewall([rule(1, src="2001:db8:1::/64", dst=f"{VIP6}/128")])
    assert h.run(syn6(1001)).retval == TC_ACT_SHOT
    h.dp.set_firewall([rule(1, src="2001:db8:2::/64")])
    assert h.run(syn6(1002)).retval == TC_ACT_REDIRECT


def _live_rules(h: Harness) -> list[L.FwRule]:
    m = h.dp.maps
    live = int.from_bytes(m["fw_gen"].lookup(struct.pack("<I", 0)) or bytes(4), "little") & 1
    raw = m["fw_map"].lookup(struct.pack("<I", live))
    assert raw is not None
    table = L.FwTable.from_buffer_copy(raw)
    return list(table.rule[:table.n])


def test_redirect_sends_the_packet_out_of_the_named_interface_unchanged(h: Harness) -> None:
    h.service()  # a VIP packet too: the redirect wins over load balancing
    h.dp.set_firewall([FwRuleProgram(id=4, src=f"{CLIENT}/32", dst="", sport=ANY, dport=ANY,
                                     proto=0, ifname="", allow=False, mark=0, redirect="dp1")])
    # BPF_PROG_TEST_RUN does not report bpf_redirect's target: the rule the program reads
    # holds the named interface's index
    assert [(r.action, r.out_ifindex) for r in _live_rules(h)] == [
        (L.FW_REDIRECT, socket.if_nametoindex("dp1"))]
    pkt = syn(sport=1000)
    out = prog_test_run(h.dp.prog_fd, bytes(pkt), data_size_out=4096,
                        ctx=struct.pack("<36xII", *[socket.if_nametoindex("dp0")] * 2)
                        .ljust(192, b"\0"))
    assert out.retval == TC_ACT_REDIRECT
    assert out.data == bytes(pkt)  # no NAT, no MAC rewrite
    assert h.run(syn(src=CLIENT2, sport=1000)).pkt[IP].dst == EPS[0]  # not matched: LB
    assert h.dp.firewall_counters() == {4: (1, len(pkt))}
    assert fw_drops(h) == 0


def test_redirect_to_an_unknown_interface_is_refused(h: Harness) -> None:
    h.dp.set_firewall([rule(1, src=f"{CLIENT}/32")])
    with pytest.raises(ValueError, match="nope0"):
        h.dp.set_firewall([FwRuleProgram(id=2, src="", dst="", sport=ANY, dport=ANY, proto=0,
                                         ifname="", allow=False, mark=0, redirect="nope0")])
    assert h.run(syn(sport=1000)).retval == TC_ACT_SHOT  # the old set is still live


def test_trap_passes_a_vip_packet_to_the_host_untouched(h: Harness) -> None:
    h.service()
    h.dp.set_firewall([FwRuleProgram(id=6, src=f"{CLIENT}/32", dst=f"{VIP}/32", sport=ANY,
                                     dport=(80, 80), proto=6, ifname="", allow=False, mark=0,
                                     trap=True)])
    assert [r.action for r in _live_rules(h)] == [L.FW_TRAP]
    pkt = syn(sport=1000)
    for n in (1, 2):  # no conntrack entry: the next packet is judged (and trapped) again
        out = h.run(pkt)
        assert out.retval == TC_ACT_OK
        assert bytes(out.pkt) == bytes(pkt)  # not NATed to the endpoint
        assert h.dp.firewall_counters() == {6: (n, n * len(pkt))}
    assert h.run(syn(src=CLIENT2, sport=1000)).pkt[IP].dst == EPS[0]  # not matched: LB
    assert fw_drops(h) == 0
