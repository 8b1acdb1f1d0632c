"""Endpoint selection in the kernel: rr, priority, hash, persist, lc."""

from __future__ import annotations

import time
from collections import Counter

from scapy.layers.inet import IP, TCP

from pyloxi.model.lb import Selection

from .conftest import CLIENT, CLIENT2, EPS, Harness, handshake, syn


def dests(h: Harness, n: int, src: str = CLIENT, base: int = 20000) -> list[str]:
    return [h.run(syn(src=src, sport=base + i)).pkt[IP].dst for i in range(n)]


def test_rr_strict_rotation(h: Harness) -> None:
    h.service(eps=EPS)
    got = dests(h, 9)
    assert got == EPS * 3


def test_rr_skips_inactive(h: Harness) -> None:
    h.service(eps=EPS, active=[True, False, True])
    assert set(dests(h, 6)) == {EPS[0], EPS[2]}


def test_priority_follows_slot_weights(h: Harness) -> None:
    # the engine expands weights 3:1 into slots; the datapath rotates over them
    h.service(eps=EPS[:2], sel=Selection.PRIORITY, slots=(0, 0, 1, 0), weights=[3, 1])
    c = Counter(dests(h, 40))
    assert c[EPS[0]] == 30 and c[EPS[1]] == 10


def test_hash_is_stable_per_tuple(h: Harness) -> None:
    slots = tuple(i % 3 for i in range(1021))
    h.service(eps=EPS, sel=Selection.HASH, slots=slots)
    first = dests(h, 30)
    assert len(set(first)) == 3
    h.dp.ct.flush_service(1)
    assert dests(h, 30) == first  # same tuples, same endpoints, even as new flows


def test_persist_keeps_client_on_its_endpoint(h: Harness) -> None:
    slots = tuple(i % 3 for i in range(1021))
    h.service(eps=EPS, sel=Selection.PERSIST, slots=slots)
    assert len(set(dests(h, 10, src=CLIENT))) == 1
    assert len(set(dests(h, 10, src=CLIENT2, base=30000))) == 1


def test_lc_prefers_least_loaded(h: Harness) -> None:
    h.service(eps=EPS, sel=Selection.LC)
    # lc counts established flows: each connection completes its handshake
    got = [handshake(h, sport=20000 + i)[0][IP].dst for i in range(6)]
    # every new flow stays open, so lc spreads them evenly
    assert Counter(got) == Counter({EPS[0]: 2, EPS[1]: 2, EPS[2]: 2})
    # close the flows of endpoint 0 (RST from the client): it becomes the least loaded
    for i, d in enumerate(got):
        if d == EPS[0]:
            h.run(syn(sport=20000 + i, flags="R"))
    h.dp.ct.age({}, time.monotonic_ns() + 10**13)  # age everything out
    assert h.run(syn(sport=29999)).pkt[TCP].dport == 8080
