"""IP fragments through the compiled program: later fragments follow their first fragment to the
same flow and rewrite, both ways, in every mode; out-of-order fragments go to the kernel."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.l2 import Ether

from pyloxi.model.lb import NatMode

from .conftest import (
    CLIENT,
    CLIENT_MAC,
    EP_MAC,
    EPS,
    LB_MAC,
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    VIP,
    Harness,
)

MODES = [NatMode.DEFAULT, NatMode.ONEARM, NatMode.FULLNAT]
LB_EP_SIDE = "10.0.11.1"


def frags(src: str, dst: str, sport: int, dport: int, size: int, ip_id: int,
          mac: str) -> list[Ether]:
    dgram = IP(src=src, dst=dst, id=ip_id) / UDP(sport=sport, dport=dport) / (b"d" * size)
    return [Ether(src=mac, dst=LB_MAC) / f for f in fragment(dgram, fragsize=1480)]


def reassemble(pieces: list[Ether]) -> IP:
    """Join fragments (by offset) and return the datagram, checksums as they came."""
    ips = sorted((IP(bytes(p[IP])) for p in pieces), key=lambda i: i.frag)
    first = ips[0]
    assert {(i.src, i.dst, i.id) for i in ips} == {(first.src, first.dst, first.id)}
    body = b"".join(bytes(i.payload) for i in ips)
    return IP(src=first.src, dst=first.dst, id=first.id, proto=first.proto) / UDP(body)


def udp_checksum_ok(dgram: IP) -> bool:
    got = dgram[UDP].chksum
    fresh = IP(bytes(dgram))
    del fresh[UDP].chksum
    return IP(bytes(fresh))[UDP].chksum == got


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_datagram_of_3000_bytes_both_ways(h: Harness, mode: NatMode) -> None:
    h.service(proto=17, port=53, target=5353, mode=mode,
              snat=LB_EP_SIDE if mode == NatMode.ONEARM else None)
    out = [h.run(f) for f in frags(CLIENT, VIP, 33333, 53, 3000, 4242, CLIENT_MAC)]
    assert len(out) == 3 and all(o.retval == TC_ACT_REDIRECT for o in out)
    assert all(o.pkt.dst == EP_MAC for o in out)
    sent = reassemble([o.pkt for o in out])
    assert sent.dst == EPS[0] and sent[UDP].dport == 5353 and udp_checksum_ok(sent)
    assert len(sent[UDP].payload) == 3000

    # the endpoint echoes it in fragments of its own
    back = [h.run(f) for f in frags(EPS[0], sent.src, 5353, sent[UDP].sport, 3004, 777, EP_MAC)]
    assert all(o.retval == TC_ACT_REDIRECT for o in back)
    assert all(o.pkt.dst == CLIENT_MAC for o in back)
    got = reassemble([o.pkt for o in back])
    assert (got.src, got.dst, got[UDP].sport, got[UDP].dport) == (VIP, CLIENT, 53, 33333)
    assert udp_checksum_ok(got)
    assert len(list(h.dp.maps["ct_map"].keys())) == 2  # one flow


def test_later_fragment_before_first_goes_to_kernel(h: Harness) -> None:
    h.service(proto=17, port=53, target=5353)
    first, second, third = frags(CLIENT, VIP, 40000, 53, 3000, 99, CLIENT_MAC)
    early = h.run(third)
    assert early.retval == TC_ACT_OK and early.pkt[IP].dst == VIP  # untouched, counted
    assert h.dp.datapath_stats()["fragment"] == 1
    assert not list(h.dp.maps["ct_map"].keys())  # a later fragment opens no flow
    assert h.run(first).retval == TC_ACT_REDIRECT
    for f in (second, third):
        out = h.run(f)
        assert out.retval == TC_ACT_REDIRECT and out.pkt[IP].dst == EPS[0]


def test_fragments_of_different_datagrams_do_not_mix(h: Harness) -> None:
    """Same addresses, another IP id: the other datagram's first fragment decides its flow."""
    h.service(proto=17, port=53, target=5353, eps=EPS[:2])
    a = frags(CLIENT, VIP, 1111, 53, 2000, 1, CLIENT_MAC)
    b = frags(CLIENT, VIP, 2222, 53, 2000, 2, CLIENT_MAC)
    ra, rb = h.run(a[0]), h.run(b[0])
    assert ra.pkt[IP].dst != rb.pkt[IP].dst  # round robin: two endpoints
    assert h.run(b[1]).pkt[IP].dst == rb.pkt[IP].dst
    assert h.run(a[1]).pkt[IP].dst == ra.pkt[IP].dst


def test_fragment_not_for_a_flow_passes_untouched(h: Harness) -> None:
    h.service(proto=17, port=53, target=5353)
    stray = frags(CLIENT, "10.0.11.9", 5, 6, 3000, 5, CLIENT_MAC)
    for f in stray:
        raw = bytes(f)
        out = h.run(f)
        assert out.retval == TC_ACT_OK and bytes(out.pkt)[: len(raw)] == raw
