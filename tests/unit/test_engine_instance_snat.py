"""fullnat and onearm in a cluster: flows are source-NATed to the instance IP of the rule's HA
instance (cistate vip), so an endpoint's replies find a node that has the flow; privateIP still
wins in fullnat, the VIP (fullnat) or the LB's own address (onearm) is the fallback; a changed
instance IP re-plans the rules (new flows only)."""

from __future__ import annotations

from tests.unit.test_engine import ListStore, rule, snat_source

from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine
from pyloxi.model.lb import NatMode


def _snat(dp: MemoryDatapath) -> dict[int, set[str | None]]:
    return {p.port_min: {e.snat_ip for e in p.endpoints} for p in dp.services.values()}


def test_fullnat_snats_to_the_instance_ip_of_its_family() -> None:
    dp, store = MemoryDatapath(), ListStore()
    inst = {("llb-inst0", 4): "10.90.0.1", ("inst1", 6): "fd00:90::1"}
    eng = Engine(dp, store=store, snat_source=snat_source,
                 instance_ip=lambda name, fam: inst.get((name, fam)))
    eng.add_rule(rule(port=1, mode=NatMode.FULLNAT))                         # llb-inst0
    eng.add_rule(rule(port=2, mode=NatMode.FULLNAT, privateIP="10.0.0.5"))   # privateIP wins
    eng.add_rule(rule(port=3, mode=NatMode.FULLNAT, name="web:inst1"))      # no v4 ip: VIP
    eng.add_rule(rule(port=4, mode=NatMode.ONEARM))                          # instance IP too
    eng.add_rule(rule(port=5, mode=NatMode.DEFAULT))
    eng.add_rule(rule(vip="fd00::1", port=6, mode=NatMode.FULLNAT, name="v6:inst1",
                      eps=[("fd00:31::1", 80, 1)]))
    assert _snat(dp) == {1: {"10.90.0.1"}, 2: {"10.0.0.5"}, 3: {"20.20.20.1"},
                         4: {"10.90.0.1"}, 5: {None}, 6: {"fd00:90::1"}}
    saved = len(store.saved)

    # the instance IP moves: fullnat rules follow, nothing is persisted
    inst[("llb-inst0", 4)] = "10.90.0.7"
    inst[("inst1", 4)] = "10.90.1.1"
    assert eng.replan_snat() == 3
    assert _snat(dp) == {1: {"10.90.0.7"}, 2: {"10.0.0.5"}, 3: {"10.90.1.1"},
                         4: {"10.90.0.7"}, 5: {None}, 6: {"fd00:90::1"}}
    assert len(store.saved) == saved
    assert eng.replan_snat() == 0  # nothing changed: nothing reinstalled
    # gone (vip 0.0.0.0): back to the VIP
    inst.clear()
    assert eng.replan_snat() == 4
    assert _snat(dp)[1] == {"20.20.20.1"} and _snat(dp)[6] == {"fd00::1"}
    assert _snat(dp)[4] == {"192.168.0.254"}  # onearm: the LB's own address again
