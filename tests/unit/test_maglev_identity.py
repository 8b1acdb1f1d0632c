"""Active-active: the Maglev table of a service is a function of its endpoint set and weights only.

Two nodes given the same endpoints in different orders, through different histories (attach,
detach, holes reused, rule updated), must program tables that send every slot to the same
endpoint identity. The programmed slots hold node-local endpoint indexes, which may differ; what
must be identical is slot -> "ip:port", and so the fingerprint that nodes exchange.
"""

from __future__ import annotations

import os
import subprocess
import sys

from pyloxi.cluster.fingerprint import service_id, slot_identities, table_digest
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine
from pyloxi.engine.maglev import maglev_size
from pyloxi.engine.program import ServiceProgram
from pyloxi.model.lb import LoadBalancerEntry, Oper

VIP = "20.20.20.1"
EPS = [("31.31.31.1", 8080, 1), ("31.31.31.2", 8080, 2), ("31.31.31.3", 8080, 1),
       ("31.31.31.4", 9090, 3), ("31.31.31.5", 8080, 1)]


def entry(eps: list[tuple[str, int, int]], oper: Oper = Oper.CREATE, sel: int = 1,
          vip: str = VIP) -> LoadBalancerEntry:
    return LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": vip, "port": 80, "protocol": "tcp", "sel": sel,
                             "oper": int(oper)},
        "endpoints": [{"endpointIP": i, "targetPort": p, "weight": w} for i, p, w in eps],
    })


def engine() -> tuple[Engine, MemoryDatapath]:
    dp = MemoryDatapath()
    return Engine(dp), dp


def program(eng: Engine) -> ServiceProgram:
    (prog,) = eng.programs()
    return prog


def table_bytes(prog: ServiceProgram) -> bytes:
    return "\n".join(slot_identities(prog)).encode()


def test_same_endpoints_in_different_orders_give_identical_tables() -> None:
    a, _ = engine()
    b, _ = engine()
    a.add_rule(entry(EPS))
    b.add_rule(entry(list(reversed(EPS))))
    pa, pb = program(a), program(b)
    assert [e.ip for e in pa.endpoints] != [e.ip for e in pb.endpoints]  # indexes do differ
    assert pa.slots != pb.slots
    assert len(pa.slots) == maglev_size([1] * len(EPS))
    assert table_bytes(pa) == table_bytes(pb)
    assert table_digest(pa) == table_digest(pb)
    assert service_id(pa) == service_id(pb) == f"{VIP}:80/tcp"


def test_different_histories_same_set_give_identical_tables() -> None:
    a, _ = engine()
    b, _ = engine()
    a.add_rule(entry(EPS))
    # b: a stranger first (leaves a hole when detached), endpoints attached one by one backwards
    b.add_rule(entry([("31.31.31.9", 8080, 1), EPS[2]]))
    for ep in reversed(EPS):
        if ep == EPS[2]:
            continue  # already there: attaching it again changes nothing (409)
        b.add_rule(entry([ep], oper=Oper.ATTACH))
    b.add_rule(entry([("31.31.31.9", 8080, 1)], oper=Oper.DETACH))
    pa, pb = program(a), program(b)
    assert pa.slots != pb.slots
    assert table_bytes(pa) == table_bytes(pb)
    assert table_digest(pa) == table_digest(pb)


def test_same_probe_down_endpoint_gives_identical_tables() -> None:
    a, _ = engine()
    b, _ = engine()
    a.add_rule(entry(EPS))
    b.add_rule(entry(list(reversed(EPS))))
    for eng in (a, b):
        eng.set_endpoint_state("31.31.31.2", port=8080, protocol="tcp", up=False)
    assert table_digest(program(a)) == table_digest(program(b))
    assert "31.31.31.2:8080" not in slot_identities(program(a))


def test_digest_tells_different_tables_apart() -> None:
    a, _ = engine()
    b, _ = engine()
    a.add_rule(entry(EPS))
    b.add_rule(entry(EPS))
    same = table_digest(program(a))
    b.add_rule(entry([("31.31.31.1", 8080, 5)], oper=Oper.ATTACH))  # a weight differs
    assert table_digest(program(b)) != same
    b.add_rule(entry([("31.31.31.1", 8080, 1)], oper=Oper.ATTACH))
    assert table_digest(program(b)) == same
    b.set_endpoint_state("31.31.31.3", up=False)  # a local verdict differs
    assert table_digest(program(b)) != same


def test_ipv6_spelling_does_not_change_the_table() -> None:
    a, _ = engine()
    b, _ = engine()
    v6 = [("2001:db8::1", 8080, 1), ("2001:db8::2", 8080, 1), ("2001:db8::a:5", 8080, 2)]
    a.add_rule(entry(v6, vip="2001:db8:1::1"))
    b.add_rule(entry([("2001:DB8:0::000A:5", 8080, 2), ("2001:0db8::2", 8080, 1),
                      ("2001:db8:0:0::1", 8080, 1)], vip="2001:DB8:1:0::1"))
    assert table_digest(program(a)) == table_digest(program(b))


_CHILD = """
from pyloxi.cluster.fingerprint import table_digest
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine
from pyloxi.model.lb import LoadBalancerEntry
e = Engine(MemoryDatapath())
e.add_rule(LoadBalancerEntry.model_validate({
    "serviceArguments": {"externalIP": "20.20.20.1", "port": 80, "protocol": "tcp", "sel": 1},
    "endpoints": [{"endpointIP": f"31.31.31.{i}", "targetPort": 8080} for i in range(1, 9)]}))
print(table_digest(e.programs()[0]))
"""


def test_table_does_not_depend_on_python_hash_seed() -> None:
    outs = set()
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.add(subprocess.run([sys.executable, "-c", _CHILD], env=env, check=True,
                                capture_output=True, text=True).stdout.strip())
    assert len(outs) == 1 and len(outs.pop()) == 16
