"""SCTP through the compiled program: port translation with the CRC32c kept right (nat.h,
crc32c.h), and clients with the same fixed source port through fullnat and onearm."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP, SCTPChunkData, SCTPChunkInit, SCTPChunkInitAck, crc32c

from pyloxi.datapath.ebpf import layout as L
from pyloxi.model.lb import NatMode

from .conftest import (
    CLIENT,
    CLIENT2,
    CLIENT_MAC,
    EP_MAC,
    EPS,
    LB_MAC,
    TC_ACT_REDIRECT,
    VIP,
    Harness,
    ct_count,
)

PROTO_SCTP = 132
S1AP = 36412


def sctp_bytes(pkt: Ether) -> bytes:
    """The SCTP packet (common header and chunks) inside the IPv4 packet, without padding."""
    ip = Ether(bytes(pkt))[IP]
    return bytes(ip)[ip.ihl * 4: ip.len]


def crc_ok(pkt: Ether) -> bool:
    """True when the CRC32c field holds scapy's CRC32c of the packet (its field zeroed)."""
    raw = sctp_bytes(pkt)
    zeroed = raw[:8] + b"\0\0\0\0" + raw[12:]
    return SCTP(raw).chksum == crc32c(zeroed) and SCTP(raw).chksum != 0


def init(src: str = CLIENT, sport: int = S1AP, dport: int = S1AP) -> Ether:
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=src, dst=VIP, ttl=64) / SCTP(
        sport=sport, dport=dport, tag=0) / SCTPChunkInit(init_tag=0x1234, a_rwnd=65535,
                                                         n_out_streams=2, n_in_streams=2,
                                                         init_tsn=1)


def data(src: str = CLIENT, sport: int = S1AP, dport: int = S1AP, size: int = 1000) -> Ether:
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=src, dst=VIP, ttl=64) / SCTP(
        sport=sport, dport=dport, tag=0x4321) / SCTPChunkData(
        tsn=1, stream_id=0, stream_seq=0, proto_id=18, data=bytes(range(256)) * (size // 256)
        + b"x" * (size % 256))


def ep_answer(to_ep: Ether, *, size: int | None = None) -> Ether:
    """The endpoint's answer to a packet the LB sent it: an INIT-ACK, or DATA of `size` bytes."""
    ip, sh = to_ep[IP], to_ep[SCTP]
    chunk = (SCTPChunkInitAck(init_tag=0x4321, a_rwnd=65535, n_out_streams=2, n_in_streams=2,
                              init_tsn=7)
             if size is None else SCTPChunkData(tsn=7, data=b"r" * size))
    return Ether(src=EP_MAC, dst=LB_MAC) / IP(src=ip.dst, dst=ip.src, ttl=64) / SCTP(
        sport=sh.dport, dport=sh.sport, tag=0x1234) / chunk


def run_ok(h: Harness, pkt: Ether) -> Ether:
    assert crc_ok(pkt)  # the test's own packet
    out = h.run(pkt)
    assert out.retval == TC_ACT_REDIRECT, out.retval
    assert crc_ok(out.pkt), "CRC32c not valid after the rewrite"
    return out.pkt


@pytest.mark.parametrize("size", [0, 1, 3, 255, 1000, 1400])
def test_dnat_target_port_keeps_crc_both_directions(h: Harness, size: int) -> None:
    h.service(proto=PROTO_SCTP, port=S1AP, target=38412)
    out = run_ok(h, init())
    assert (out[IP].dst, out[SCTP].sport, out[SCTP].dport) == (EPS[0], S1AP, 38412)
    back = run_ok(h, ep_answer(out))
    assert (back[IP].src, back[IP].dst, back[SCTP].sport, back[SCTP].dport) == (
        VIP, CLIENT, S1AP, S1AP)
    # DATA of several lengths (the CRC update depends on the packet length), both ways
    sent = data(size=size)
    out = run_ok(h, sent)
    assert out[SCTP].dport == 38412 and sctp_bytes(out)[12:] == sctp_bytes(sent)[12:]
    back = run_ok(h, ep_answer(out, size=size))
    assert (back[SCTP].sport, back[SCTP].dport) == (S1AP, S1AP)


@pytest.mark.parametrize("mode", [NatMode.FULLNAT, NatMode.ONEARM])
def test_same_fixed_source_port_from_two_clients(h: Harness, mode: NatMode) -> None:
    h.service(proto=PROTO_SCTP, port=S1AP, target=S1AP, mode=mode,
              snat=VIP if mode == NatMode.FULLNAT else "10.0.11.1")
    a = run_ok(h, init(src=CLIENT))
    b = run_ok(h, init(src=CLIENT2))
    assert a[IP].src == b[IP].src and a[IP].dst == b[IP].dst == EPS[0]
    assert a[SCTP].dport == b[SCTP].dport == S1AP
    # same client port, same endpoint: distinct reply tuples
    assert a[SCTP].sport != b[SCTP].sport
    if mode == NatMode.FULLNAT:
        assert a[SCTP].sport == S1AP  # the client's own port is kept when free
    else:
        assert a[SCTP].sport >= L.NAT_PORT_MIN and b[SCTP].sport >= L.NAT_PORT_MIN
    assert ct_count(h) == 4
    # each flow's replies go back to its own client, on the client's own port
    for to_ep, client in ((a, CLIENT), (b, CLIENT2)):
        back = run_ok(h, ep_answer(to_ep))
        assert (back[IP].src, back[IP].dst, back[SCTP].sport, back[SCTP].dport) == (
            VIP, client, S1AP, S1AP)
    # and their DATA, 1000 bytes both ways, keeps its translated port
    for to_ep, client in ((a, CLIENT), (b, CLIENT2)):
        out = run_ok(h, data(src=client))
        assert (out[IP].src, out[SCTP].sport) == (to_ep[IP].src, to_ep[SCTP].sport)
        back = run_ok(h, ep_answer(out, size=1000))
        assert (back[IP].dst, back[SCTP].dport) == (client, S1AP)


@pytest.mark.parametrize("sport", [S1AP, 3868])
def test_several_clients_same_port_fullnat(h: Harness, sport: int) -> None:
    h.service(proto=PROTO_SCTP, port=3868, target=3868, mode=NatMode.FULLNAT)
    clients = [CLIENT, CLIENT2]
    outs = [run_ok(h, init(src=c, sport=sport, dport=3868)) for c in clients]
    assert len({o[SCTP].sport for o in outs}) == len(clients)
    for o, c in zip(outs, clients, strict=True):
        assert run_ok(h, ep_answer(o))[IP].dst == c


def test_zero_crc_left_for_the_offload(h: Harness) -> None:
    """A zero CRC field is a packet whose CRC is still to be computed (CHECKSUM_PARTIAL)."""
    h.service(proto=PROTO_SCTP, port=S1AP, target=38412)
    raw = bytearray(bytes(init()))
    raw[14 + 20 + 8: 14 + 20 + 12] = b"\0\0\0\0"
    out = h.run(Ether(bytes(raw)))
    assert out.retval == TC_ACT_REDIRECT
    assert out.pkt[SCTP].dport == 38412 and out.pkt[SCTP].chksum == 0
