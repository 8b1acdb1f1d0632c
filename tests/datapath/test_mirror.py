"""Mirror in the kernel (bpf/include/pyloxi/mirror.h): copies of an interface's or of a rule's
packets sent out of a mirror port with bpf_clone_redirect (RSPAN: with an 802.1Q tag). What
the mirror port sends is read on its veth peer with an AF_PACKET socket; the original packet's
verdict and rewrite must be what they are without the mirror."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import struct
import subprocess
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pyloxi.engine.mirror import MirrorProgram
from pyloxi.model.lb import NatMode
from pyloxi.testing.lab.dpns import LB_MAC

from .conftest import (
    CLIENT,
    CLIENT6,
    CLIENT_MAC,
    EPS,
    EPS6,
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    VIP,
    VIP6,
    Harness,
    csum6_ok,
    csum_ok,
    ep_answer,
    syn,
)

SOL_PACKET, PACKET_AUXDATA = 263, 8
TP_STATUS_VLAN_VALID = 0x10
ETH_P_ALL = 0x0003


class Capture:
    """Frames arriving on an interface (the mirror port's peer), with their VLAN tag."""

    def __init__(self, ifname: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        self.sock.bind((ifname, 0))
        self.sock.setblocking(False)

    def frames(self) -> list[tuple[bytes, int | None]]:
        """What arrived since the last call (the clone is sent before the test run returns:
        bpf_clone_redirect transmits synchronously), as (frame, VLAN id or None); IPv4 only
        (no router solicitation or other noise of a fresh interface)."""
        out = []
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(32))
            except BlockingIOError:
                return out
            vlan = None
            for level, kind, blob in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA:
                    status, _l, _s, _m, _n, tci, _tpid = struct.unpack_from("<IIIHHHH", blob)
                    if status & TP_STATUS_VLAN_VALID:
                        vlan = tci & 0xFFF
            if Ether(data).type == 0x0800:
                out.append((data, vlan))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def cap(h: Harness) -> Iterator[Capture]:
    """A mirror port mr0 whose peer mr1 is captured (in the test's namespace)."""
    for cmd in ("ip link add mr0 type veth peer name mr1",
                "ip link set mr0 addrgenmode none", "ip link set mr1 addrgenmode none",
                "ip link set mr0 up", "ip link set mr1 up"):
        subprocess.run(cmd.split(), check=True)
    c = Capture("mr1")
    try:
        yield c
    finally:
        c.close()
        with contextlib.suppress(Exception):
            h.dp.set_mirrors([])
        subprocess.run(["ip", "link", "del", "mr0"], check=False)


def port_mirror(slot: int = 0, target: str = "dp0", vlan: int = 0) -> MirrorProgram:
    return MirrorProgram(slot=slot, port="mr0", vlan=vlan, on_rule=False, target=target)


def rule_mirror(name: str, slot: int = 1, vlan: int = 0) -> MirrorProgram:
    return MirrorProgram(slot=slot, port="mr0", vlan=vlan, on_rule=True, target=name)


def test_port_mirror_copies_every_frame_entering_the_interface(h: Harness, cap: Capture) -> None:
    h.service()
    h.dp.set_mirrors([port_mirror(3)])
    pkt = syn(sport=1000)
    out = h.run(pkt)
    # the original: load balanced as without the mirror (DNAT to the endpoint, valid sums)
    assert out.retval == TC_ACT_REDIRECT
    assert (out.pkt[IP].dst, out.pkt[TCP].dport) == (EPS[0], 8080) and csum_ok(out.pkt)
    other = syn(dport=22, sport=1001)  # not a service: passed to the kernel, still copied
    assert h.run(other).retval == TC_ACT_OK
    back = ep_answer(out.pkt, "SA")  # enters dp1: not mirrored
    assert h.run(back).retval == TC_ACT_REDIRECT
    got = cap.frames()
    assert [f for f, _v in got] == [bytes(pkt), bytes(other)]  # as received, untagged
    assert all(v is None for _f, v in got)
    assert h.dp.mirror_counters() == {3: (2, len(pkt) + len(other))}


def test_rule_mirror_copies_both_directions_before_nat(h: Harness, cap: Capture) -> None:
    a = h.service(port=80)
    h.service(port=81)  # rule B: not mirrored
    h.dp.set_mirrors([rule_mirror(a.name)])
    s = syn(sport=2000)
    out = h.run(s)
    assert out.retval == TC_ACT_REDIRECT
    assert (out.pkt[IP].dst, out.pkt[TCP].dport) == (EPS[0], 8080) and csum_ok(out.pkt)
    reply = ep_answer(out.pkt, "SA")
    back = h.run(reply)
    assert back.retval == TC_ACT_REDIRECT  # the reply, NATed back to the VIP as usual
    assert (back.pkt[IP].src, back.pkt[TCP].sport, back.pkt[IP].dst) == (VIP, 80, CLIENT)
    assert csum_ok(back.pkt)
    ack = syn(sport=2000, flags="A")
    assert h.run(ack).retval == TC_ACT_REDIRECT
    b = syn(sport=2001, dport=81)
    assert h.run(b).retval == TC_ACT_REDIRECT
    assert h.run(syn(dport=22)).retval == TC_ACT_OK  # no rule at all
    frames = [f for f, _v in cap.frames()]
    assert frames == [bytes(s), bytes(reply), bytes(ack)]  # A's packets as received, not B's
    assert h.dp.mirror_counters() == {1: (3, len(s) + len(reply) + len(ack))}


def test_a_rule_created_or_removed_later_follows_its_name(h: Harness, cap: Capture) -> None:
    h.dp.set_mirrors([rule_mirror("t1")])  # the harness names its first service t1
    prog = h.service()
    pkt = syn(sport=3000)
    assert h.run(pkt).retval == TC_ACT_REDIRECT
    assert [f for f, _v in cap.frames()] == [bytes(pkt)]
    renamed = dataclasses.replace(prog, name="other")
    h.dp.install_service(renamed)  # renamed: no longer the mirrored rule
    pkt2 = syn(sport=3001)
    assert h.run(pkt2).retval == TC_ACT_REDIRECT
    assert cap.frames() == []
    h.dp.install_service(prog)  # back
    pkt3 = syn(sport=3002)
    assert h.run(pkt3).retval == TC_ACT_REDIRECT
    assert [f for f, _v in cap.frames()] == [bytes(pkt3)]
    h.dp.remove_service(prog)
    assert list(h.dp.maps["mirr_svc"]) == []
    assert h.dp.maps["mirr_gate"].lookup(bytes(4)) == bytes(8)  # no mirrored service left


def test_rspan_tags_the_copy_only(h: Harness, cap: Capture) -> None:
    h.service()
    h.dp.set_mirrors([port_mirror(0, vlan=100)])
    pkt = syn(sport=4000)
    out = h.run(pkt)
    assert out.retval == TC_ACT_REDIRECT and out.pkt[IP].dst == EPS[0] and csum_ok(out.pkt)
    assert out.pkt.type == 0x0800  # the original leaves untagged
    assert cap.frames() == [(bytes(pkt), 100)]


def test_deleted_mirror_copies_nothing_and_a_reused_slot_counts_from_zero(
        h: Harness, cap: Capture) -> None:
    h.service()
    h.dp.set_mirrors([port_mirror(2)])
    assert h.run(syn(sport=5000)).retval == TC_ACT_REDIRECT
    assert len(cap.frames()) == 1
    h.dp.set_mirrors([])
    assert h.run(syn(sport=5001)).retval == TC_ACT_REDIRECT
    assert cap.frames() == [] and h.dp.mirror_counters() == {}
    h.dp.set_mirrors([port_mirror(2)])
    assert h.dp.mirror_counters() == {2: (0, 0)}


def test_unknown_interface_changes_nothing(h: Harness, cap: Capture) -> None:
    h.dp.set_mirrors([port_mirror(0)])
    with pytest.raises(ValueError, match="nosuch"):
        h.dp.set_mirrors([port_mirror(0), MirrorProgram(1, "nosuch", 0, False, "dp1")])
    with pytest.raises(ValueError, match="nosuch"):
        h.dp.set_mirrors([MirrorProgram(1, "mr0", 0, False, "nosuch")])
    assert h.dp.mirror_counters() == {0: (0, 0)}
    pkt = syn(dport=22)
    h.run(pkt)
    assert [f for f, _v in cap.frames()] == [bytes(pkt)]


def test_rule_mirror_with_fullnat_and_ipv6_keeps_the_rewrites(h: Harness, cap: Capture) -> None:
    full = h.service(mode=NatMode.FULLNAT)
    v6 = h.service(vip=VIP6, eps=EPS6[:1])
    h.dp.set_mirrors([rule_mirror(full.name, slot=0), rule_mirror(v6.name, slot=1)])
    s = syn(sport=6000)
    out = h.run(s)
    assert out.retval == TC_ACT_REDIRECT and csum_ok(out.pkt)
    assert (out.pkt[IP].src, out.pkt[IP].dst) == (VIP, EPS[0])  # both addresses rewritten
    reply = ep_answer(out.pkt, "SA")
    back = h.run(reply)
    assert back.retval == TC_ACT_REDIRECT and csum_ok(back.pkt)
    assert (back.pkt[IP].src, back.pkt[IP].dst, back.pkt[TCP].dport) == (VIP, CLIENT, 6000)
    s6 = Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=CLIENT6, dst=VIP6) / TCP(
        sport=6001, dport=80, flags="S", seq=1000)
    out6 = h.run(s6)
    assert out6.retval == TC_ACT_REDIRECT and out6.pkt[IPv6].dst == EPS6[0]
    assert csum6_ok(out6.pkt)
    # IPv4 copies only in Capture.frames: the IPv6 one is seen in the counter
    assert [f for f, _v in cap.frames()] == [bytes(s), bytes(reply)]
    assert h.dp.mirror_counters() == {0: (2, len(s) + len(reply)), 1: (1, len(s6))}
