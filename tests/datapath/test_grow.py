"""Room to grow (issue 14): 1,024 endpoints per service (endpoint indexes past 255 carry real
packets), service id 65,535, and pools (ep_pool, slot_pool, counter ids) that refuse a service
they cannot hold without changing anything."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import replace

import pytest
from scapy.layers.inet import IP, TCP

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.backend import EbpfDatapath
from pyloxi.datapath.ebpf.libbpf.errors import BpfError
from pyloxi.engine.maglev import maglev_size
from pyloxi.engine.program import MAX_ENDPOINTS, EndpointSlot, ServiceProgram
from pyloxi.engine.selection import build_slots
from pyloxi.model.lb import NatMode, Selection

from .conftest import EPS, OBJ, TC_ACT_REDIRECT, VIP, Harness, ep_answer, syn

BASE_PORT = 10000  # endpoint i listens on BASE_PORT + i (three addresses, 1,024 ip:ports)


def big_service(sel: Selection, n: int = MAX_ENDPOINTS, svc_id: int = 1,
                port: int = 80) -> ServiceProgram:
    eps = tuple(EndpointSlot(EPS[i % 3], BASE_PORT + i, 1, True) for i in range(n))
    slots = build_slots(sel, [(i, f"{e.ip}:{e.port}", 1) for i, e in enumerate(eps)])
    return ServiceProgram(svc_id=svc_id, name=f"big{svc_id}", vip=VIP, proto=6, port_min=port,
                          port_max=port, mode=NatMode.DEFAULT, sel=sel, endpoints=eps,
                          slots=slots, idle_timeout=240)


def ct_entry(h: Harness, sport: int) -> L.CtVal:
    """The original-direction conntrack entry of the client flow from port `sport`."""
    for table in ("ct_half", "ct_map"):
        for k, v in h.dp.maps[table].items():
            key = L.CtKey.from_buffer_copy(k)
            if L.n_port(key.sport) == sport and L.n_port(key.dport) == 80:
                return L.CtVal.from_buffer_copy(v)
    raise AssertionError(f"no conntrack entry for client port {sport}")


def test_rr_over_1024_endpoints_reaches_every_index(h: Harness) -> None:
    """rr rotates over all 1,024 endpoints: flow k goes to endpoint k, past index 255."""
    prog = big_service(Selection.RR)
    h.dp.install_service(prog)
    dp = h.dp._dp_of[prog.svc_id]
    for k in range(300):
        out = h.run(syn(sport=20000 + k))
        assert out.retval == TC_ACT_REDIRECT
        assert (out.pkt[IP].dst, out.pkt[TCP].dport) == (EPS[k % 3], BASE_PORT + k)
    v = ct_entry(h, 20299)
    assert (v.ep_idx, v.ep_gid) == (299, h.dp.endpoint_gid(dp, 299))
    eps = h.dp.service_counters(prog).endpoints
    assert len(eps) == MAX_ENDPOINTS
    assert [e.packets for e in eps[:300]] == [1] * 300 and eps[300].packets == 0


def test_hash_over_1024_endpoints(h: Harness) -> None:
    """A Maglev table sized for 1,024 endpoints (102,407 slots, in slot_pool): flows reach
    endpoints past index 255, replies are translated back, counters land on the endpoint."""
    prog = big_service(Selection.HASH)
    assert len(prog.slots) == maglev_size([1] * MAX_ENDPOINTS) == 102407
    h.dp.install_service(prog)
    dp = h.dp._dp_of[prog.svc_id]
    cfg = L.SvcVer.from_buffer_copy(h.dp.maps["ver_map"].lookup(
        (dp * 2).to_bytes(4, "little")) or b"").cfg
    assert (cfg.n_slots, cfg.n_eps) == (102407, MAX_ENDPOINTS)
    high = None
    for sport in range(30000, 30040):
        out = h.run(syn(sport=sport))
        assert out.retval == TC_ACT_REDIRECT
        idx = out.pkt[TCP].dport - BASE_PORT
        assert out.pkt[IP].dst == EPS[idx % 3]
        if idx > 255:
            high = (sport, idx, out.pkt)
            break
    assert high is not None, "40 flows, none past endpoint 255 (3/4 of the table is)"
    sport, idx, to_ep = high
    back = h.run(ep_answer(to_ep, "SA"))
    assert back.retval == TC_ACT_REDIRECT
    assert (back.pkt[IP].src, back.pkt[TCP].sport, back.pkt[TCP].dport) == (VIP, 80, sport)
    assert ct_entry(h, sport).ep_idx == idx
    assert h.dp.service_counters(prog).endpoints[idx].packets == 2
    # the same tuple, its flow gone, finds the same endpoint through the table
    h.dp.ct.flush_service(dp)
    assert h.run(syn(sport=sport)).pkt[TCP].dport == BASE_PORT + idx


def test_lc_over_1024_endpoints(h: Harness) -> None:
    """Least connections scans 1,024 slots (bpf_loop): an endpoint with open flows is not
    picked while 1,023 others have none."""
    prog = big_service(Selection.LC)
    h.dp.install_service(prog)
    dp = h.dp._dp_of[prog.svc_id]
    busy = 700
    raw = bytearray(h.dp.maps["conn_map"].lookup(h.dp.endpoint_gid(dp, busy).to_bytes(4, "little"))
                    or bytes(16))
    raw[:8] = (5).to_bytes(8, "little")  # 5 opened, 0 closed
    gid = h.dp.endpoint_gid(dp, busy).to_bytes(4, "little")
    h.dp.maps["conn_map"].update(gid, bytes(raw))
    got = set()
    for sport in range(31000, 31030):
        out = h.run(syn(sport=sport))
        assert out.retval == TC_ACT_REDIRECT
        got.add(out.pkt[TCP].dport - BASE_PORT)
    assert busy not in got and len(got) > 1


def test_service_id_65535(h: Harness) -> None:
    """The last service id carries traffic and counts it (egress flows keep 65,536)."""
    assert L.SVC_EGRESS == L.MAX_SERVICES == 65536
    h.dp._next_free = L.MAX_SERVICES - 1
    prog = h.service(eps=EPS)
    dp = h.dp._dp_of[prog.svc_id]
    assert dp == 65535
    out = h.run(syn(sport=32000))
    assert out.retval == TC_ACT_REDIRECT and out.pkt[IP].dst == EPS[0]
    assert ct_entry(h, 32000).svc_id == 65535
    c = h.dp.service_counters(prog)
    assert (c.new_flows, c.endpoints[0].packets) == (1, 1)
    h.dp.remove_service(prog)
    assert h.run(syn(sport=32001)).pkt[IP].dst == VIP  # gone: to the kernel


# --- full pools ---

POOLS = {"ep_pool": 16, "slot_pool": 8}  # 16 endpoints, 256 slots


@pytest.fixture
def small(netns: str) -> Iterator[Harness]:
    pin = f"/sys/fs/bpf/pl{os.getpid()}-grow"
    dp = EbpfDatapath(pin, obj_path=OBJ, map_sizes=POOLS)
    try:
        yield Harness(dp)
    finally:
        dp.destroy()


def snapshot(dp: EbpfDatapath) -> dict[str, object]:
    m = dp.maps
    out: dict[str, object] = {name: sorted(m[name].items()) for name in
                              ("svc_map", "allow_map", "pol_ep", "ep_addr_map")}
    for name in ("gen_map", "ver_map", "ep_pool", "slot_pool", "conn_map"):
        out[name] = m[name].lookup_array_range(0, m[name].max_entries)
    return out


def rr_service(h: Harness, n: int, svc_id: int, port: int = 80) -> ServiceProgram:
    eps = tuple(EndpointSlot(EPS[i % 3], BASE_PORT + i, 1, True) for i in range(n))
    return ServiceProgram(svc_id=svc_id, name=f"s{svc_id}", vip=VIP, proto=6, port_min=port,
                          port_max=port, mode=NatMode.DEFAULT, sel=Selection.RR, endpoints=eps,
                          slots=tuple(range(n)), idle_timeout=240)


def test_full_pool_is_a_clear_error_that_changes_nothing(small: Harness) -> None:
    h = small
    live = rr_service(h, 3, svc_id=1)
    h.dp.install_service(live)
    before = snapshot(h.dp)
    # a new service with more endpoints than are left
    with pytest.raises(BpfError) as err:
        h.dp.install_service(rr_service(h, 14, svc_id=2, port=81))
    assert err.value.errno == errno.ENOSPC and "endpoint pool full" in str(err.value)
    assert snapshot(h.dp) == before
    # an update of the live service that needs a bigger version than fits beside the live one
    with pytest.raises(BpfError) as err:
        h.dp.install_service(rr_service(h, 14, svc_id=1))
    assert err.value.errno == errno.ENOSPC
    assert snapshot(h.dp) == before
    # a slot table longer than the slot pool
    hashed = replace(big_service(Selection.HASH, n=3, svc_id=3, port=82),
                     slots=tuple(i % 3 for i in range(300)))
    with pytest.raises(BpfError) as err:
        h.dp.install_service(hashed)
    assert err.value.errno == errno.ENOSPC and "slot table pool full" in str(err.value)
    assert snapshot(h.dp) == before
    # the live service still serves, and nothing leaked: what fits still installs
    out = h.run(syn(sport=33000))
    assert out.retval == TC_ACT_REDIRECT and out.pkt[TCP].dport == BASE_PORT
    h.dp.install_service(rr_service(h, 13, svc_id=2, port=81))
    out = h.run(syn(sport=33001, dport=81))
    assert out.retval == TC_ACT_REDIRECT and out.pkt[TCP].dport == BASE_PORT


def test_pool_extents_come_back(small: Harness) -> None:
    """Updates and removals give their extents back: 50 rounds through a 16-endpoint pool
    (an update holds three versions' extents at once: the live one, the one it rewrites
    and the new one)."""
    h = small
    for r in range(50):
        prog = rr_service(h, 2 + r % 3, svc_id=1)
        h.dp.install_service(prog)
        out = h.run(syn(sport=34000 + r))
        assert out.retval == TC_ACT_REDIRECT
        if r % 10 == 9:
            h.dp.remove_service(prog)
    assert h.dp._ep_ext.free + sum(e[1] for e in h.dp._ext.values()) == POOLS["ep_pool"]


def test_restarted_daemon_keeps_pool_extents_and_counter_ids(small: Harness) -> None:
    """A new daemon on the same pins takes the live services' extents and counter ids as in
    use: re-installing keeps the counters, and new services do not overwrite the old ones."""
    h = small
    a = rr_service(h, 4, svc_id=1)
    h.dp.install_service(a)
    assert h.run(syn(sport=35000)).retval == TC_ACT_REDIRECT
    dp_a = h.dp._dp_of[1]
    gids = [h.dp.endpoint_gid(dp_a, i) for i in range(4)]
    pin = h.dp.pin_dir
    h.dp.close()
    h.dp = EbpfDatapath(pin, obj_path=OBJ, map_sizes=POOLS)
    assert h.dp._gids[dp_a] == gids
    assert h.dp._ep_ext.free == POOLS["ep_pool"] - 4
    # another service takes what is free, never the adopted extents
    h.dp.install_service(rr_service(h, 8, svc_id=2, port=81))
    h.dp.install_service(a)  # adopted: same dp id, same counter ids
    assert h.dp._dp_of[1] == dp_a and h.dp.endpoint_gid(dp_a, 3) == gids[3]
    out = h.run(syn(sport=35001))
    assert out.retval == TC_ACT_REDIRECT and out.pkt[TCP].dport in range(BASE_PORT, BASE_PORT + 4)
    assert sum(e.packets for e in h.dp.service_counters(a).endpoints) == 2


def test_sync_events_of_another_layout_are_refused(h: Harness) -> None:
    """ct_val changed at the same size (ep_gid): a peer's event names its layout, and one of
    another layout is refused, never inserted with fields at the wrong offsets."""
    prog = h.service(eps=EPS)
    key = L.ct_key("10.0.1.2", VIP, 36000, 80, 6)
    val = L.ct_val("10.0.1.2", EPS[0], 36000, 8080, svc_id=1, dir=L.DIR_ORIG)
    rk = L.ct_key(EPS[0], "10.0.1.2", 8080, 36000, 6)
    rval = L.ct_val(VIP, "10.0.1.2", 80, 36000, svc_id=1, dir=L.DIR_REPLY)
    for layout, want in ((L.SYNC_LAYOUT - 1, "layout_mismatch"), (L.SYNC_LAYOUT, "inserted")):
        ev = L.CtSyncEv(type=L.SYNC_EST, layout=layout, okey=key, rkey=rk, oval=val, rval=rval)
        done = h.dp.flow_sync().apply([bytes(ev)], 0)
        assert done[want] == 1, done
    assert h.dp.service_counters(prog).endpoints[0].active_flows == 1  # its counter id


def test_full_pool_through_the_engine_is_403(small: Harness) -> None:
    from pyloxi.engine import Engine
    from pyloxi.model.errors import PyloxiError
    from pyloxi.model.lb import LoadBalancerEntry

    def entry(port: int, n: int) -> LoadBalancerEntry:
        return LoadBalancerEntry.model_validate({
            "serviceArguments": {"externalIP": VIP, "port": port, "protocol": "tcp"},
            "endpoints": [{"endpointIP": EPS[i % 3], "targetPort": BASE_PORT + i, "weight": 1}
                          for i in range(n)]})

    eng = Engine(small.dp)
    eng.add_rule(entry(80, 10))
    before = (eng.desired_rules(), snapshot(small.dp))
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(entry(81, 7))
    assert err.value.code == 403 and "endpoint pool full" in err.value.message
    assert (eng.desired_rules(), snapshot(small.dp)) == before
