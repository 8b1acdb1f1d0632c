"""The next-hop memo (fwd.h, fib_memo_map): a new flow may take the hop another flow resolved
for the same lookup inputs, never one resolved for other inputs."""

from __future__ import annotations

import socket
import struct
import subprocess
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP

from .conftest import CLIENT, CLIENT2, EP_MAC, EPS, TC_ACT_REDIRECT, Harness, syn

OTHER_MAC = "02:00:00:00:11:03"
SLOTS = 1024   # PL_FIB_MEMO_SLOTS


def memo_slot(src: str, dst: str, in_ifindex: int) -> int:
    """fib_memo_slot (fwd.h) for IPv4 addresses (stored IPv4-mapped, words little-endian)."""
    def fold(a: str) -> int:
        return 0xFFFF0000 ^ struct.unpack("<I", socket.inet_aton(a))[0]
    dx = fold(dst)
    h = fold(src) ^ (((dx << 16) | (dx >> 16)) & 0xFFFFFFFF) ^ in_ifindex
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h & (SLOTS - 1)


@pytest.fixture
def two_macs(netns: str) -> Iterator[None]:
    """EPS[1] behind another MAC than EPS[0] (restored afterwards)."""
    subprocess.run(["ip", "neigh", "replace", EPS[1], "lladdr", OTHER_MAC, "dev", "dp1",
                    "nud", "permanent"], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "neigh", "replace", EPS[1], "lladdr", EP_MAC, "dev", "dp1",
                        "nud", "permanent"], check=True)


def test_new_flows_take_their_own_destinations_hop(h: Harness, two_macs: None) -> None:
    h.service(port=80, eps=[EPS[0]])
    h.service(port=81, eps=[EPS[1]])
    # interleaved, so every flow after the first two could reuse a memoized hop: each must
    # leave toward its own endpoint's MAC, from either client
    for i in range(8):
        client = CLIENT if i % 4 < 2 else CLIENT2
        for dport, ep, mac in ((80, EPS[0], EP_MAC), (81, EPS[1], OTHER_MAC)):
            out = h.run(syn(src=client, sport=41000 + i, dport=dport))
            assert out.retval == TC_ACT_REDIRECT
            assert (out.pkt[IP].src, out.pkt[IP].dst, out.pkt[TCP].dport) == (client, ep, 8080)
            assert out.pkt.dst == mac, (i, dport, out.pkt.dst)


def test_a_shared_memo_slot_never_lends_another_destinations_hop(h: Harness,
                                                                 two_macs: None) -> None:
    """A client whose flows to EPS[0] and EPS[1] share a memo slot: the second flow must not
    take the first one's hop (the slot holds the lookup's inputs, compared in full)."""
    dp0 = socket.if_nametoindex("dp0")
    client = next(c for c in (f"10.2.{i >> 8}.{i & 255}" for i in range(1, 1 << 16))
                  if memo_slot(c, EPS[0], dp0) == memo_slot(c, EPS[1], dp0))
    h.service(port=80, eps=[EPS[0]])
    h.service(port=81, eps=[EPS[1]])
    for i, (dport, mac) in enumerate(((80, EP_MAC), (81, OTHER_MAC), (80, EP_MAC),
                                      (81, OTHER_MAC))):
        out = h.run(syn(src=client, sport=42000 + i, dport=dport), iface="dp0")
        assert out.retval == TC_ACT_REDIRECT
        assert out.pkt.dst == mac, (i, dport, out.pkt.dst)
