"""Engine: re-POST updates in place, attach/detach, holes, and liveness verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine
from pyloxi.engine.maglev import maglev_size
from pyloxi.engine.program import ServiceProgram
from pyloxi.model.errors import PyloxiError
from pyloxi.model.lb import LoadBalancerEntry, Oper, Selection


def rule(ips: list[str], port: int = 80, weights: list[int] | None = None, **args: Any):
    weights = weights or [1] * len(ips)
    extra = {k: args.pop(k) for k in ("secondaryIPs",) if k in args}
    return LoadBalancerEntry.model_validate(
        {
            "serviceArguments": {
                "externalIP": "20.20.20.1",
                "port": port,
                "protocol": "tcp",
                **args,
            },
            "endpoints": [
                {"endpointIP": ip, "targetPort": 8080, "weight": w}
                for ip, w in zip(ips, weights, strict=True)
            ],
            **extra,
        }
    )


@pytest.fixture
def dp() -> MemoryDatapath:
    return MemoryDatapath()


@pytest.fixture
def eng(dp: MemoryDatapath) -> Engine:
    return Engine(dp)


def prog(dp: MemoryDatapath) -> ServiceProgram:
    (p,) = dp.services.values()
    return p


def layout(dp: MemoryDatapath) -> list[tuple[str, bool]]:
    return [(e.ip, e.active) for e in prog(dp).endpoints]


A, B, C, D, E = (f"31.31.31.{i}" for i in range(1, 6))


def test_update_keeps_indexes_and_leaves_holes(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule([A, B, C]))
    eng.add_rule(rule([C, A]))  # B removed; order in the body does not move anyone
    assert layout(dp) == [(A, True), (B, False), (C, True)]
    assert prog(dp).slots == (0, 2)
    assert prog(dp).svc_id == 1
    # the hole is hidden from GET; endpoints are shown as posted
    assert [e.endpoint_ip for e in eng.list_rules()[0].endpoints] == [C, A]
    eng.add_rule(rule([C, A, D, E]))  # D takes the hole, E appends
    assert layout(dp) == [(A, True), (D, True), (C, True), (E, True)]


def test_removed_endpoint_coming_back_revives_its_index(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule([A, B, C]))
    eng.add_rule(rule([A, C]))
    eng.add_rule(rule([D, B, A, C]))
    assert layout(dp) == [(A, True), (B, True), (C, True), (D, True)]


def test_weight_change_is_an_update(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule([A, B], sel=Selection.PRIORITY, weights=[1, 1]))
    eng.add_rule(rule([A, B], sel=Selection.PRIORITY, weights=[3, 1]))
    assert prog(dp).slots == (0, 0, 1, 0)
    assert [e.weight for e in prog(dp).endpoints] == [3, 1]


def test_args_change_is_an_update(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule([A, B]))
    eng.add_rule(rule([A, B], sel=Selection.HASH, name="x"))
    assert prog(dp).sel == Selection.HASH and len(prog(dp).slots) == maglev_size([1, 1])
    assert prog(dp).name == "x"


def test_empty_update_deletes(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule([A]))
    eng.add_rule(rule([]))
    assert dp.services == {} and eng.desired_rules() == []


def test_secondary_ips_of_an_existing_rule_cannot_change(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule([A], protocol="sctp", secondaryIPs=[{"secondaryIP": "21.0.0.1"}]))
    [prog] = dp.services.values()
    assert prog.secondary_vips == ("21.0.0.1",)
    before = (dict(dp.services), eng.desired_rules())
    for sec in ([{"secondaryIP": "21.0.0.2"}], None):
        with pytest.raises(PyloxiError) as err:
            eng.add_rule(rule([A, B], protocol="sctp", secondaryIPs=sec))
        assert err.value.code == 400 and "cannot be modified" in err.value.message
        assert (dict(dp.services), eng.desired_rules()) == before
    # endpoints may change when the secondary IPs stay
    eng.add_rule(rule([A, B], protocol="sctp", secondaryIPs=[{"secondaryIP": "21.0.0.1"}]))
    assert [p.secondary_vips for p in dp.services.values()] == [("21.0.0.1",)]


def test_attach_and_detach(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule([A, B], name="svc"))
    eng.add_rule(rule([C], oper=Oper.ATTACH, name="ignored"))
    assert layout(dp) == [(A, True), (B, True), (C, True)]
    assert eng.desired_rules()[0].service_arguments.name == "svc"  # args of the installed rule
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(rule([C], oper=Oper.ATTACH))  # nothing new
    assert err.value.code == 409
    eng.add_rule(rule([A], oper=Oper.DETACH))
    assert layout(dp) == [(A, False), (B, True), (C, True)]
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(rule([A], oper=Oper.DETACH))
    assert err.value.code == 404
    eng.add_rule(rule([B, C], oper=Oper.DETACH))  # last ones gone: rule deleted
    assert dp.services == {}


def test_attach_creates_missing_rule_detach_does_not(eng: Engine, dp: MemoryDatapath):
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(rule([A], oper=Oper.DETACH))
    assert err.value.code == 404
    eng.add_rule(rule([A], oper=Oper.ATTACH))
    assert layout(dp) == [(A, True)]
    assert eng.desired_rules()[0].service_arguments.oper == 0


def test_holes_never_exceed_max_endpoints(eng: Engine, dp: MemoryDatapath):
    first = [f"31.31.1.{i}" for i in range(1, 65)]
    second = [f"31.31.2.{i}" for i in range(1, 65)]
    eng.add_rule(rule(first))
    eng.add_rule(rule(second))
    p = prog(dp)
    assert len(p.endpoints) == 64 and all(e.active for e in p.endpoints)
    assert {e.ip for e in p.endpoints} == set(second)


# ------------------------------------------------------------------ liveness


def test_endpoint_down_and_up(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule([A, B, C], port=80))
    eng.add_rule(rule([A, D], port=81))
    assert eng.set_endpoint_state(A, up=False) == [1, 2]
    by_port = {p.port_min: p for p in dp.services.values()}
    assert by_port[80].slots == (1, 2) and by_port[81].slots == (1,)
    assert [e.active for e in by_port[80].endpoints] == [False, True, True]
    assert eng.set_endpoint_state(A, up=False) == []  # no change, no reprogramming
    assert eng.set_endpoint_state(A, up=True) == [1, 2]
    assert {p.port_min: p.slots for p in dp.services.values()} == {80: (0, 1, 2), 81: (0, 1)}


def test_endpoint_state_filters(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule([A], port=80))
    eng.add_rule(rule([A], port=81, protocol="udp"))
    assert eng.set_endpoint_state(A, port=9999, up=False) == []
    assert eng.set_endpoint_state(A, protocol="udp", up=False) == [2]
    assert eng.set_endpoint_state(A, port=8080, protocol="tcp", up=False) == [1]


def test_all_down_gives_empty_slots(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule([A], sel=Selection.HASH))
    eng.set_endpoint_state(A, up=False)
    assert prog(dp).slots == ()
    assert eng.list_rules()[0].endpoints[0].state == "inactive"


def test_down_flag_survives_update(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule([A, B]))
    eng.set_endpoint_state(B, up=False)
    eng.add_rule(rule([A, B, C]))
    assert layout(dp) == [(A, True), (B, False), (C, True)]


def test_endpoint_state_failure_keeps_old_program(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule([A, B]))
    before = dict(dp.services)
    dp.fail_next = RuntimeError("boom")
    with pytest.raises(PyloxiError) as err:
        eng.set_endpoint_state(A, up=False)
    assert err.value.code == 500 and dp.services == before
    assert eng.list_rules()[0].endpoints[0].state == "active"


def test_bad_ip_for_endpoint_state(eng: Engine):
    with pytest.raises(PyloxiError) as err:
        eng.set_endpoint_state("nope", up=False)
    assert err.value.code == 400


def test_concurrent_adds_are_serialised(dp: MemoryDatapath):
    import threading

    eng = Engine(dp)
    errs: list[Exception] = []

    def add(port: int) -> None:
        try:
            eng.add_rule(rule([A], port=port))
        except Exception as exc:  # pragma: no cover - reported below
            errs.append(exc)

    threads = [threading.Thread(target=add, args=(p,)) for p in range(1, 201)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errs == [] and len(dp.services) == 200
    assert sorted(dp.services) == list(range(1, 201))


def test_secondary_ip_taken_by_another_rule_conflicts(eng: Engine, dp: MemoryDatapath):
    """A secondary IP is a VIP of the rule: it may not overlap another rule's VIP:port."""
    eng.add_rule(rule([A], protocol="sctp", secondaryIPs=[{"secondaryIP": "21.0.0.1"}]))
    other = rule([B], protocol="sctp", externalIP="21.0.0.1")
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(other)
    assert err.value.code == 409
    assert len(dp.services) == 1
