"""Programming a service is a transaction: a failed install leaves the maps byte for byte as
they were, and a packet never sees half a service (endpoints, slot table and config of one
version, or of the other)."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from scapy.layers.inet import IP

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.backend import EbpfDatapath
from pyloxi.datapath.ebpf.libbpf.errors import BpfError
from pyloxi.datapath.ebpf.libbpf.maps import Map
from pyloxi.engine import Engine
from pyloxi.engine.policer import PolicerProgram
from pyloxi.engine.program import EndpointSlot, ServiceProgram
from pyloxi.model.errors import CapacityExceeded
from pyloxi.model.lb import LoadBalancerEntry, NatMode, Selection

from .conftest import CLIENT, EPS, OBJ, TC_ACT_OK, TC_ACT_REDIRECT, VIP, Harness, handshake, syn

# Small tables, so a port range can fill the service-key table part-way.
SMALL = {"svc_map": 64, "gen_map": 32, "ver_map": 64}
STATE_MAPS = ("svc_map", "gen_map", "ver_map", "allow_map", "aff_map", "pol_ep")


@pytest.fixture
def small(netns: str) -> Iterator[Harness]:
    dp = EbpfDatapath(f"/sys/fs/bpf/pl{os.getpid()}-txn", obj_path=OBJ, map_sizes=SMALL)
    try:
        yield Harness(dp)
    finally:
        dp.destroy()


def state(dp: EbpfDatapath) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every service-programming map, raw (allow_map is an LPM trie: walked by key)."""
    out = {}
    for name in STATE_MAPS:
        m = dp.maps[name]
        if name == "allow_map":
            out[name] = sorted((k, b"") for k in m)
        else:
            out[name] = sorted(m.lookup_batch(65536))
    return out


def prog(svc_id: int, *, eps: list[str], port: int = 80, port_max: int | None = None,
         sel: Selection = Selection.RR, active: list[bool] | None = None,
         allowed: tuple[str, ...] = ()) -> ServiceProgram:
    active = active or [True] * len(eps)
    return ServiceProgram(
        svc_id=svc_id, name=f"s{svc_id}", vip=VIP, proto=6, port_min=port,
        port_max=port if port_max is None else port_max, mode=NatMode.DEFAULT, sel=sel,
        endpoints=tuple(EndpointSlot(ip, 8080, 1, a) for ip, a in zip(eps, active, strict=True)),
        slots=tuple(i for i, a in enumerate(active) if a), idle_timeout=240,
        allowed_sources=allowed)


def balanced(h: Harness, dport: int, sport: int = 41000) -> str | None:
    """The endpoint a new flow to dport goes to, or None if the program let it pass."""
    r = h.run(syn(sport=sport, dport=dport))
    if r.retval == TC_ACT_OK and r.pkt[IP].dst == VIP:
        return None
    assert r.retval == TC_ACT_REDIRECT
    return str(r.pkt[IP].dst)


# --- a failed install leaves nothing behind ---


def test_range_that_does_not_fit_leaves_nothing(small: Harness) -> None:
    small.dp.install_service(prog(1, eps=EPS[:1], port=80))
    before = state(small.dp)
    with pytest.raises(OSError) as exc:  # 100 ports, room for 63 more keys
        small.dp.install_service(prog(2, eps=EPS[1:2], port=1000, port_max=1099))
    assert exc.value.errno in (errno.E2BIG, errno.ENOSPC)
    assert state(small.dp) == before
    for port in (1000, 1050, 1099):  # no ghost service on any of its ports
        assert balanced(small, port) is None
    assert balanced(small, 80) == EPS[0]
    # the table is usable afterwards: a rule that fits goes in
    small.dp.install_service(prog(3, eps=EPS[1:2], port=2000, port_max=2009))
    assert balanced(small, 2005) == EPS[1]


def test_update_that_does_not_fit_restores_the_old_service(small: Harness) -> None:
    old = prog(1, eps=EPS[:2], port=100, port_max=139, allowed=("10.0.1.0/24",))
    small.dp.install_service(old)
    before = state(small.dp)
    bigger = prog(1, eps=EPS[1:3], port=100, port_max=199, allowed=("10.0.0.0/8",))
    with pytest.raises(OSError):
        small.dp.install_service(bigger)
    assert state(small.dp) == before
    assert {balanced(small, 120, sport=41000 + i) for i in range(4)} == set(EPS[:2])
    assert balanced(small, 150) is None
    small.dp.install_service(old)  # what the engine's undo does: a no-op now
    assert state(small.dp) == before


def test_rejected_rule_through_the_engine_is_no_ghost(small: Harness) -> None:
    """The reported symptom: a rule answered 403 still balanced the ports that fitted."""
    engine = Engine(small.dp)
    entry = LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": VIP, "port": 3000, "portMax": 3099,
                             "protocol": "tcp"},
        "endpoints": [{"endpointIP": EPS[0], "targetPort": 8080, "weight": 1}]})
    before = state(small.dp)
    with pytest.raises(CapacityExceeded):
        engine.add_rule(entry)
    assert state(small.dp) == before
    assert balanced(small, 3000) is None and balanced(small, 3050) is None


class _Flaky:
    """A map whose every write counts down a shared budget; the write that exhausts it fails
    (once), as a datapath error part-way through an install would."""

    WRITES = ("update", "update_batch", "delete", "delete_batch")

    def __init__(self, m: Map, budget: list[int]) -> None:
        self._m, self._budget = m, budget

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._m, name)
        if name not in self.WRITES:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            self._budget[0] -= 1
            if self._budget[0] == 0:
                raise BpfError(errno.EIO, f"injected failure in {self._m.name}.{name}")
            return attr(*args, **kwargs)
        return write


def _fail_at_every_write(h: Harness, change: Callable[[], None]) -> int:
    """Run `change` with a failure injected at its 1st, 2nd, ... write until it succeeds;
    after every failure the maps must be exactly as before. Returns the number of writes."""
    real = dict(h.dp.maps)
    k = 1
    while True:
        before = state(h.dp)
        budget = [k]
        h.dp.maps.update({n: _Flaky(m, budget) for n, m in real.items()})  # type: ignore[misc]
        try:
            change()
            failed = None
        except BpfError as exc:
            failed = exc
        finally:
            h.dp.maps.update(real)
        if failed is None:
            return k - 1
        assert "injected" in str(failed)
        assert state(h.dp) == before, f"failure at write {k} left changes behind"
        k += 1


def test_any_failed_write_rolls_back(small: Harness) -> None:
    h = small
    h.dp.install_service(prog(1, eps=EPS[:2], port=80, port_max=81))
    h.dp.install_service(prog(1, eps=EPS[:2], port=80, port_max=81, active=[True, False],
                              allowed=("10.0.1.0/24",)))
    # an update that changes everything: endpoints (an index reused by another endpoint),
    # ports (one gained, one lost), allowed sources
    update = prog(1, eps=[EPS[0], EPS[2]], port=81, port_max=82, allowed=("10.0.0.0/8",))
    writes = _fail_at_every_write(h, lambda: h.dp.install_service(update))
    assert writes >= 6
    assert balanced(h, 82, sport=42000) in (EPS[0], EPS[2])
    assert balanced(h, 80) is None
    # a fresh service, failing at every step too
    fresh = prog(2, eps=EPS[1:2], port=90, port_max=95, allowed=("10.0.1.2/32",))
    assert _fail_at_every_write(h, lambda: h.dp.install_service(fresh)) >= 3
    assert balanced(h, 93) == EPS[1]


def test_failed_install_leaves_endpoint_policers_as_they_were(small: Harness) -> None:
    """pol_ep (an endpoint policer's entries, by service and endpoint index) is written in the
    install transaction: a failed update leaves it as it was, a done one moves it."""
    h = small
    h.dp.set_policer(PolicerProgram(id=1, srtcm=False, cir=10**6, pir=10**6, cbs=1518,
                                    ebs=3036, port="", rule="", ep_ip=EPS[1], ep_port=8080))
    h.dp.install_service(prog(1, eps=EPS[:2]))

    def pol_ep() -> dict[int, int]:
        return {int.from_bytes(k, "little"): int.from_bytes(v, "little")
                for k, v in h.dp.maps["pol_ep"].lookup_batch(65536)}
    dp = h.dp._dp_of[1]
    assert pol_ep() == {h.dp.endpoint_gid(dp, 1): 1}
    update = prog(1, eps=[EPS[1], EPS[2]])  # the policed endpoint now at index 0
    assert _fail_at_every_write(h, lambda: h.dp.install_service(update)) >= 3
    assert pol_ep() == {h.dp.endpoint_gid(dp, 0): 1}
    h.dp.remove_service(update)
    assert pol_ep() == {}


# --- a packet never sees half a service ---


def test_packets_during_reprogramming_always_find_an_endpoint(h: Harness) -> None:
    """One thread flips a service between one and two endpoints (and creates and removes
    others) while packets are balanced: each must go to an endpoint of a whole version."""
    one = h.service(eps=EPS[:1])
    two = replace(one, endpoints=(*one.endpoints, EndpointSlot(EPS[1], 8080, 1, True)),
                  slots=(0, 1))
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            n = 0
            while not stop.is_set():
                h.dp.install_service(two if n % 2 == 0 else one)
                other = prog(100 + n, eps=EPS[2:3], port=1000 + n % 50)
                h.dp.install_service(other)
                h.dp.remove_service(other)
                n += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=churn)
    t.start()
    bad = []
    try:
        for i in range(4000):
            r = h.run(syn(sport=10000 + i))
            if r.retval != TC_ACT_REDIRECT or r.pkt[IP].dst not in EPS[:2]:
                bad.append((r.retval, r.pkt[IP].dst))
    finally:
        stop.set()
        t.join()
    assert not errors
    assert bad == []
    assert h.dp.datapath_stats()["no_endpoint"] == 0


# --- removed services and reused endpoint indexes start clean ---


def _aff(dp: EbpfDatapath) -> list[tuple[int, int]]:
    """(dp svc id, endpoint index) of every affinity."""
    out = []
    for k, v in dp.maps["aff_map"].lookup_batch():
        out.append((L.AffKey.from_buffer_copy(k).svc_id, L.AffVal.from_buffer_copy(v).ep_idx))
    return out


def _counters(dp: EbpfDatapath, dp_id: int, idx: int) -> tuple[int, int, int]:
    """(packets, opened, closed) of one endpoint index."""
    gid = dp.endpoint_gid(dp_id, idx).to_bytes(4, "little")
    pkts = sum(L.Counters.from_buffer_copy(c).packets
               for c in dp.maps["ep_stats"].lookup_percpu(gid) or [])
    conn = L.EpConn.from_buffer_copy(dp.maps["conn_map"].lookup(gid) or bytes(16))
    return pkts, conn.opened, conn.closed


def test_removed_service_leaves_no_affinity(h: Harness) -> None:
    p = h.service(eps=EPS, sel=Selection.PERSIST, slots=tuple(i % 3 for i in range(1021)))
    keep = h.service(eps=EPS, sel=Selection.PERSIST, slots=tuple(i % 3 for i in range(1021)),
                     port=81)
    for i, src in enumerate(("10.0.1.2", "10.0.1.3")):
        assert h.run(syn(src=src, sport=30000 + i)).retval == TC_ACT_REDIRECT
        assert h.run(syn(src=src, sport=31000 + i, dport=81)).retval == TC_ACT_REDIRECT
    ids = {s for s, _ in _aff(h.dp)}
    assert len(ids) == 2
    h.dp.remove_service(p)
    left = {s for s, _ in _aff(h.dp)}
    assert len(left) == 1 and left < ids  # the other service keeps its own
    h.dp.remove_service(keep)
    assert _aff(h.dp) == []


def test_reused_endpoint_index_starts_clean(h: Harness) -> None:
    slots = tuple(i % 2 for i in range(1021))
    p = h.service(eps=EPS[:2], sel=Selection.PERSIST, slots=slots)
    dp_id = h.dp._dp_of[p.svc_id]
    # clients land on both endpoints and stay: flows, counters and affinities on index 1
    for i in range(8):  # established flows: least-connection counts only those
        handshake(h, src=f"10.0.1.{2 + i}", sport=32000 + i)
    assert _counters(h.dp, dp_id, 1)[1] > 0 and (dp_id, 1) in _aff(h.dp)
    flows_on_1 = sum(1 for f in h.dp.flows() if f.ep_ip == EPS[1])
    assert flows_on_1 > 0
    # endpoint 1 removed: a hole that keeps its flows and counters (they may finish) ...
    hole = replace(p, endpoints=(p.endpoints[0], replace(p.endpoints[1], active=False)),
                   slots=(0,) * 1021)
    h.dp.install_service(hole)
    assert sum(1 for f in h.dp.flows() if f.ep_ip == EPS[1]) == flows_on_1
    # ... and revived as the same endpoint, it keeps them too
    h.dp.install_service(p)
    assert sum(1 for f in h.dp.flows() if f.ep_ip == EPS[1]) == flows_on_1
    assert _counters(h.dp, dp_id, 1)[1] > 0
    # now index 1 goes to another endpoint: it starts with nothing of the old one
    h.dp.install_service(hole)
    other = replace(p, endpoints=(p.endpoints[0], EndpointSlot(EPS[2], 8080, 1, True)))
    h.dp.install_service(other)
    assert _counters(h.dp, dp_id, 1) == (0, 0, 0)
    assert (dp_id, 1) not in _aff(h.dp)
    assert all(f.ep_ip != EPS[1] for f in h.dp.flows())
    # and counts only its own flows from here
    got = [handshake(h, src=f"10.0.1.{20 + i}", sport=33000 + i)[0][IP].dst for i in range(8)]
    assert EPS[1] not in got
    pkts, opened, closed = _counters(h.dp, dp_id, 1)
    assert opened == got.count(EPS[2]) and pkts == 3 * opened and closed == 0


def test_new_service_on_a_recycled_id_starts_clean(h: Harness) -> None:
    p = h.service(eps=EPS[:1])
    dp_id = h.dp._dp_of[p.svc_id]
    for i in range(3):
        handshake(h, src=CLIENT, sport=34000 + i)
    assert _counters(h.dp, dp_id, 0)[1] == 3
    h.dp.remove_service(p)
    assert _counters(h.dp, dp_id, 0) == (0, 0, 0)
    # the id is handed out again only after a grace period (as when the allocator wraps)
    h.dp._next_free = dp_id
    assert h.dp._dp_of[h.service(eps=EPS[2:3], port=82).svc_id] != dp_id
    h.dp._grace()
    h.dp._next_free = dp_id
    q = h.service(eps=EPS[1:2], port=81)
    assert h.dp._dp_of[q.svc_id] == dp_id
    assert _counters(h.dp, dp_id, 0) == (0, 0, 0)
    assert handshake(h, sport=35000, dport=81)[0][IP].dst == EPS[1]
    assert _counters(h.dp, dp_id, 0)[1] == 1
