"""Engine: validation (400 and nothing changes), create/delete, capacity, overlap, rollback."""

from __future__ import annotations

import errno
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine, Put, StoreFailure, StoreOp
from pyloxi.engine.program import MAX_ENDPOINTS, Flow
from pyloxi.model.errors import PyloxiError
from pyloxi.model.lb import LoadBalancerEntry, NatMode, Selection


class Done:
    """A store commit that is already resolved."""

    def __init__(self, seq: int, error: StoreFailure | None = None) -> None:
        self.seq = seq
        self.error = error

    def wait(self) -> None:
        if self.error is not None:
            raise self.error


class ListStore:
    """In-memory RuleStore: `rows` is what is persisted; `saved` records the rule list after
    each submission; `fail_next` fails the next submission (and halts until resume)."""

    def __init__(self) -> None:
        self.rows: dict[str, LoadBalancerEntry] = {}
        self.saved: list[list[LoadBalancerEntry]] = []
        self.fail_next: Exception | None = None
        self.seq = 0
        self.halted: StoreFailure | None = None

    def submit(self, ops: Sequence[StoreOp]) -> Done:
        self.seq += 1
        if self.halted is None and self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            self.halted = StoreFailure(self.seq, f"cannot persist: {exc}")
        if self.halted is not None:
            return Done(self.seq, self.halted)
        for op in ops:
            if isinstance(op, Put):
                self.rows[op.key] = op.entry
            else:
                self.rows.pop(op.key, None)
        self.saved.append(list(self.rows.values()))
        return Done(self.seq)

    def resume(self, from_seq: int) -> None:
        if self.halted is not None and self.halted.from_seq == from_seq:
            self.halted = None


def rule(
    vip: str = "20.20.20.1",
    port: int = 2020,
    eps: list[tuple[str, int, int]] | None = None,
    **args: Any,
) -> LoadBalancerEntry:
    eps = [("31.31.31.1", 8080, 1), ("31.31.31.2", 8080, 1)] if eps is None else eps
    extra = {k: args.pop(k) for k in ("secondaryIPs", "allowedSources") if k in args}
    return LoadBalancerEntry.model_validate(
        {
            "serviceArguments": {"externalIP": vip, "port": port, "protocol": "tcp", **args},
            "endpoints": [{"endpointIP": i, "targetPort": p, "weight": w} for i, p, w in eps],
            **extra,
        }
    )


def snat_source(ip: str) -> str | None:
    """The LB's address toward `ip`, of its family (99.x and 2001:db8:99:: unroutable)."""
    if ip.startswith(("99.", "2001:db8:99:")):
        return None
    return "fd00::fe" if ":" in ip else "192.168.0.254"


@pytest.fixture
def dp() -> MemoryDatapath:
    return MemoryDatapath()


@pytest.fixture
def store() -> ListStore:
    return ListStore()


@pytest.fixture
def eng(dp: MemoryDatapath, store: ListStore) -> Engine:
    return Engine(dp, store=store, snat_source=snat_source)


def only_program(dp: MemoryDatapath):
    (prog,) = dp.services.values()
    return prog


# ------------------------------------------------------------------ create


def test_create_installs_program_and_saves(eng: Engine, dp: MemoryDatapath, store: ListStore):
    eng.add_rule(rule(name="web"))
    prog = only_program(dp)
    assert prog.svc_id == 1
    assert prog.vip == "20.20.20.1" and prog.proto == 6
    assert (prog.port_min, prog.port_max) == (2020, 2020)
    assert [(e.ip, e.port, e.active, e.snat_ip) for e in prog.endpoints] == [
        ("31.31.31.1", 8080, True, None),
        ("31.31.31.2", 8080, True, None),
    ]
    assert prog.slots == (0, 1)
    assert prog.idle_timeout == 240
    assert len(store.saved) == 1 and store.saved[0][0].service_arguments.name == "web"


@pytest.mark.parametrize(("proto", "idle"), [("tcp", 240), ("sctp", 240), ("udp", 20)])
def test_default_idle_timeout(eng: Engine, dp: MemoryDatapath, proto: str, idle: int):
    eng.add_rule(rule(protocol=proto))
    assert only_program(dp).idle_timeout == idle


def test_icmp_rule(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(port=0, protocol="icmp", eps=[("31.31.31.1", 0, 1)]))
    prog = only_program(dp)
    assert (prog.proto, prog.port_min, prog.idle_timeout) == (1, 0, 20)


def test_explicit_idle_timeout(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(inactiveTimeOut=30))
    assert only_program(dp).idle_timeout == 30


def test_modes_set_snat(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(port=1, mode=NatMode.FULLNAT))
    eng.add_rule(rule(port=2, mode=NatMode.FULLNAT, privateIP="10.0.0.5"))
    eng.add_rule(rule(port=3, mode=NatMode.ONEARM))
    snat = {p.port_min: {e.snat_ip for e in p.endpoints} for p in dp.services.values()}
    assert snat == {1: {"20.20.20.1"}, 2: {"10.0.0.5"}, 3: {"192.168.0.254"}}
    assert {p.port_min: p.vip for p in dp.services.values()}[2] == "10.0.0.5"


def test_target_port_zero_means_service_port(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(eps=[("31.31.31.1", 0, 1)]))
    assert only_program(dp).endpoints[0].port == 2020
    assert eng.desired_rules()[0].endpoints[0].target_port == 2020


def test_port_range_endpoint_ports(eng: Engine, dp: MemoryDatapath):
    eps = [("31.31.31.1", 0, 1), ("31.31.31.2", 3000, 1), ("31.31.31.3", 5000, 1)]
    eng.add_rule(rule(port=3000, portMax=3099, eps=eps))
    prog = only_program(dp)
    assert (prog.port_min, prog.port_max) == (3000, 3099)
    # 0 and == port keep the client's port; 5000 shifts the range to 5000..5099
    assert [e.port for e in prog.endpoints] == [0, 0, 5000]


def test_port_max_equal_to_port_is_no_range(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(portMax=2020))
    assert eng.desired_rules()[0].service_arguments.port_max == 0
    eng.delete_rule("20.20.20.1", 2020, "tcp", port_max=2020)
    assert dp.services == {}


def test_probe_type_forces_monitor(eng: Engine):
    eng.add_rule(rule(probetype="tcp", probeport=8080))
    assert eng.desired_rules()[0].service_arguments.monitor is True


# ------------------------------------------------------------------ validation


def body(
    vip: str = "20.20.20.1",
    port: int = 2020,
    eps: list[tuple[str, int, int]] | None = None,
    **args: Any,
) -> dict[str, Any]:
    """The wire JSON `rule()` would validate."""
    eps = [("31.31.31.1", 8080, 1), ("31.31.31.2", 8080, 1)] if eps is None else eps
    extra = {k: args.pop(k) for k in ("secondaryIPs", "allowedSources") if k in args}
    return {
        "serviceArguments": {"externalIP": vip, "port": port, "protocol": "tcp", **args},
        "endpoints": [{"endpointIP": i, "targetPort": p, "weight": w} for i, p, w in eps],
        **extra,
    }


# Refused by the wire model itself (one field on its own): no door lets them in.
MODEL_BAD: list[tuple[str, dict[str, Any], str]] = [
    ("malformed vip", body(vip="20.20.20"), "externalIP: '20.20.20' is not an IP address"),
    ("malformed endpoint", body(eps=[("31.31.31.300", 80, 1)]), "endpoints[0].endpointIP"),
    ("bad privateIP", body(privateIP="x"), "privateIP: 'x' is not an IP address"),
    ("unknown protocol", body(protocol="gre"), "unknown protocol 'gre': expected one of tcp"),
    ("port too big", body(port=65536), "port: Input should be less than or equal to 65535"),
    ("port < 0", body(port=-1), "greater than or equal to 0, got -1"),
    ("target port too big", body(eps=[("31.31.31.1", 70000, 1)]), "targetPort"),
    ("sel 9", body(sel=9), "sel: 9 is not a valid sel (0 rr, 1 hash"),
    ("mode 7", body(mode=7), "mode: 7 is not a valid mode"),
    ("oper 3", body(oper=3), "oper: 3 is not a valid oper (0 create, 1 attach, 2 detach)"),
    (
        "too many endpoints",
        body(eps=[(f"31.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}", 80, 1)
                  for i in range(MAX_ENDPOINTS + 1)]),
        f"endpoints: List should have at most {MAX_ENDPOINTS} items",
    ),
    ("weight < 0", body(eps=[("31.31.31.1", 80, -1)]), "endpoints[0].weight"),
    ("weight > 255", body(eps=[("31.31.31.1", 80, 256)]), "less than or equal to 255, got 256"),
    ("idle < 0", body(inactiveTimeOut=-1), "inactiveTimeOut"),
    ("idle > 86400", body(inactiveTimeOut=86401), "inactiveTimeOut: Input should be less"),
    ("bad cidr", body(allowedSources=[{"prefix": "10.0.0.0/33"}]), "'10.0.0.0/33' is not an IP"),
    ("bad probetype", body(probetype="icmp"), "unknown probe type 'icmp': expected one of tcp"),
    ("probeport too big", body(probetype="tcp", probeport=70000), "probeport"),
    ("probe retries", body(probeRetries=101), "probeRetries"),
    ("probe timeout", body(probeTimeout=86401), "probeTimeout"),
    ("block too big", body(block=2**32), "block"),
    ("sctp secondary ips > 3", body(protocol="sctp", secondaryIPs=[
        {"secondaryIP": f"21.21.21.{i}"} for i in range(1, 5)]), "at most 3"),
]


@pytest.mark.parametrize(("why", "data", "words"), MODEL_BAD, ids=[b[0] for b in MODEL_BAD])
def test_model_refuses_bad_fields(why: str, data: dict[str, Any], words: str) -> None:
    from pydantic import ValidationError

    from pyloxi.api.errors import validation_reason

    with pytest.raises(ValidationError) as err:
        LoadBalancerEntry.model_validate(data)
    reason = validation_reason(err.value.errors())
    assert words in reason, reason


# Refused by the engine: what depends on several fields, or on what it supports.
BAD: list[tuple[str, LoadBalancerEntry]] = [
    ("unspecified vip", rule(vip="0.0.0.0")),
    ("multicast vip", rule(vip="224.0.0.1")),
    ("nat46: ipv6 endpoint behind ipv4 vip", rule(eps=[("2001:db8::2", 80, 1)])),
    ("unspecified v6 vip", rule(vip="::", eps=[("2001:db8::2", 80, 1)])),
    ("multicast v6 vip", rule(vip="ff02::1", eps=[("2001:db8::2", 80, 1)])),
    ("link-local vip", rule(vip="fe80::1", eps=[("2001:db8::2", 80, 1)])),
    ("v4-mapped vip", rule(vip="::ffff:20.20.20.9")),
    ("v4-mapped endpoint", rule(vip="2001:db8::1", eps=[("::ffff:31.31.31.1", 80, 1)])),
    ("mixed endpoint families", rule(vip="2001:db8::1",
                                     eps=[("2001:db8::2", 80, 1), ("31.31.31.1", 80, 1)])),
    ("privateIP of the other family", rule(privateIP="2001:db8::5")),
    ("nat64 without an ipv4 source", rule(vip="2001:db8::1", eps=[("99.0.0.1", 80, 1)])),
    ("port 0", rule(port=0)),
    ("icmp port", rule(port=5, protocol="icmp", eps=[("31.31.31.1", 0, 1)])),
    ("icmp target port", rule(port=0, protocol="icmp", eps=[("31.31.31.1", 80, 1)])),
    ("portMax < port", rule(port=100, portMax=99)),
    ("range too wide", rule(port=1, portMax=5000)),
    ("range shifted past 65535", rule(port=100, portMax=200, eps=[("31.31.31.1", 65500, 1)])),
    ("sel n2", rule(sel=Selection.N2)),
    ("sel n3", rule(sel=Selection.N3)),
    ("mode dsr unsupported", rule(mode=NatMode.DSR, sel=1)),
    ("mode fullproxy", rule(mode=NatMode.FULLPROXY)),
    ("mode hostonearm", rule(mode=NatMode.HOSTONEARM)),
    ("no endpoints", rule(eps=[])),
    ("duplicate endpoint", rule(eps=[("31.31.31.1", 80, 1), ("31.31.31.1", 80, 2)])),
    ("v6 cidr on a v4 vip", rule(allowedSources=[{"prefix": "2001:db8::/64"}])),
    ("v4 cidr on a v6 vip", rule(vip="2001:db8::1", eps=[("2001:db8::2", 80, 1)],
                                 allowedSources=[{"prefix": "10.0.0.0/8"}])),
    ("secondary ips on tcp", rule(secondaryIPs=[{"secondaryIP": "21.21.21.1"}])),
    ("secondary ip = vip", rule(protocol="sctp", secondaryIPs=[{"secondaryIP": "20.20.20.1"}])),
    ("secondary ip v6", rule(protocol="sctp", secondaryIPs=[{"secondaryIP": "2001:db8::1"}])),
    ("secondary ips, v6 vip", rule(vip="2001:db8::100", protocol="sctp",
                                   secondaryIPs=[{"secondaryIP": "21.0.0.1"}])),
    ("probeport with ping", rule(probetype="ping", probeport=80)),
    ("security", rule(security=1)),
    ("egress", rule(egress=True)),
    ("proxyprotocolv2", rule(proxyprotocolv2=True)),
    ("onearm no route", rule(mode=NatMode.ONEARM, eps=[("99.0.0.1", 80, 1)])),
]


@pytest.mark.parametrize(("why", "entry"), BAD, ids=[b[0] for b in BAD])
def test_invalid_input_changes_nothing(
    eng: Engine, dp: MemoryDatapath, store: ListStore, why: str, entry: LoadBalancerEntry
):
    eng.add_rule(rule(vip="50.0.0.1"))  # something already there, must stay untouched
    before = (dict(dp.services), list(dp.calls), len(store.saved), eng.desired_rules())
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(entry)
    assert err.value.code == 400, err.value.message
    assert "\n" not in err.value.message and err.value.message
    assert (dict(dp.services), list(dp.calls), len(store.saved), eng.desired_rules()) == before


def test_nat46_message(eng: Engine):
    with pytest.raises(PyloxiError, match="nat46 error"):
        eng.add_rule(rule(eps=[("2001:db8::2", 80, 1)]))


def test_onearm_without_snat_source():
    eng = Engine(MemoryDatapath())
    with pytest.raises(PyloxiError, match="no local address toward 31.31.31.1"):
        eng.add_rule(rule(mode=NatMode.ONEARM))


def test_protocol_not_in_supported_set():
    eng = Engine(MemoryDatapath(), supported_protocols=frozenset({"tcp"}))
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(rule(protocol="udp"))
    assert err.value.code == 400


def test_dsr_when_supported_needs_hash_and_same_port():
    modes = frozenset({NatMode.DEFAULT, NatMode.DSR})
    eng = Engine(MemoryDatapath(), supported_modes=modes)
    with pytest.raises(PyloxiError, match="hash"):
        eng.add_rule(rule(mode=NatMode.DSR, sel=0, eps=[("31.31.31.1", 2020, 1)]))
    with pytest.raises(PyloxiError, match="dsr-port"):
        eng.add_rule(rule(mode=NatMode.DSR, sel=1, eps=[("31.31.31.1", 8080, 1)]))
    eng.add_rule(rule(mode=NatMode.DSR, sel=1, eps=[("31.31.31.1", 2020, 1)]))


def test_max_endpoints_accepted(eng: Engine, dp: MemoryDatapath):
    eps = [(f"31.31.{i // 250}.{i % 250 + 1}", 80, 1) for i in range(MAX_ENDPOINTS)]
    eng.add_rule(rule(eps=eps))
    assert len(only_program(dp).endpoints) == MAX_ENDPOINTS


def test_bgp_flag_is_accepted_and_kept(eng: Engine):
    """bgp was refused as "not supported yet"; the VIP is now announced (pyloxi.bgp), and the
    engine keeps the flag for the daemon's speaker to read."""
    eng.add_rule(rule(bgp=True))
    [entry] = eng.desired_rules()
    assert entry.service_arguments.bgp is True
    # an empty list asks for nothing
    eng.add_rule(rule(protocol="sctp", secondaryIPs=[]))


def test_attach_beyond_max_endpoints_is_400(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(eps=[(f"31.31.{i // 250}.{i % 250 + 1}", 80, 1)
                           for i in range(MAX_ENDPOINTS)]))
    before = (dict(dp.services), eng.desired_rules())
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(rule(eps=[("31.31.9.1", 80, 1)], oper=1))
    assert err.value.code == 400 and f"at most {MAX_ENDPOINTS}" in err.value.message
    assert (dict(dp.services), eng.desired_rules()) == before


def test_allowed_sources_normalised(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(allowedSources=[{"prefix": "10.10.10.7/24"}, {"prefix": "10.1.1.1"}]))
    assert only_program(dp).allowed_sources == ("10.10.10.0/24", "10.1.1.1/32")


# ------------------------------------------------------------------ conflicts and capacity


def test_identical_repost_is_409(eng: Engine, dp: MemoryDatapath, store: ListStore):
    eng.add_rule(rule())
    calls = list(dp.calls)
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(rule())
    assert err.value.code == 409 and err.value.message.startswith("lbrule-exists error")
    assert dp.calls == calls and len(store.saved) == 1


def test_repost_of_get_output_is_identical(eng: Engine):
    eng.add_rule(rule(eps=[("31.31.31.1", 0, 1)], probetype="tcp"))
    shown = eng.list_rules()[0]
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(shown)
    assert err.value.code == 409


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"port": 3000, "portMax": 3100}, {"port": 3100}),
        ({"port": 3000, "portMax": 3100}, {"port": 2000, "portMax": 3000}),
        ({"port": 3050}, {"port": 3000, "portMax": 3100}),
        ({"port": 3000, "portMax": 3100}, {"port": 3010, "portMax": 3020}),
        ({"port": 3000}, {"port": 3000, "host": "a.example"}),
        (
            {"port": 3000, "privateIP": "10.0.0.1"},
            {"vip": "20.20.20.9", "port": 3000, "privateIP": "10.0.0.1"},
        ),
    ],
)
def test_overlap_is_409(eng: Engine, dp: MemoryDatapath, first: dict, second: dict):
    eng.add_rule(rule(**first))
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(rule(**second))
    assert err.value.code == 409
    assert len(dp.services) == 1


@pytest.mark.parametrize(
    "second",
    [
        {"port": 3101},
        {"port": 3000, "protocol": "udp"},
        {"port": 3000, "block": 7},
        {"vip": "20.20.20.2", "port": 3000},
    ],
)
def test_no_overlap(eng: Engine, dp: MemoryDatapath, second: dict):
    eng.add_rule(rule(port=3000, portMax=3100))
    eng.add_rule(rule(**second))
    assert len(dp.services) == 2


def test_capacity_403(dp: MemoryDatapath, store: ListStore):
    eng = Engine(dp, store=store, max_rules=2)
    eng.add_rule(rule(port=1))
    eng.add_rule(rule(port=2))
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(rule(port=3))
    assert err.value.code == 403 and len(dp.services) == 2 and len(store.saved) == 2
    eng.add_rule(rule(port=2, eps=[("31.31.31.9", 80, 1)]))  # update still fine at the limit
    eng.delete_rule("20.20.20.1", 1, "tcp")
    eng.add_rule(rule(port=3))


# ------------------------------------------------------------------ svc ids and deletes


def test_svc_ids_stable_and_not_reused_at_once(eng: Engine, dp: MemoryDatapath):
    for p in (1, 2, 3):
        eng.add_rule(rule(port=p))
    assert sorted(dp.services) == [1, 2, 3]
    eng.delete_rule("20.20.20.1", 2, "tcp")
    eng.add_rule(rule(port=1, eps=[("31.31.31.7", 80, 1)]))  # update keeps id 1
    eng.add_rule(rule(port=4))
    assert {p.port_min: p.svc_id for p in dp.services.values()} == {1: 1, 3: 3, 4: 4}


def test_delete_not_found(eng: Engine):
    with pytest.raises(PyloxiError) as err:
        eng.delete_rule("20.20.20.1", 2020, "tcp")
    assert err.value.code == 404


def test_delete_key_includes_block_and_range(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(port=3000, portMax=3010, block=5))
    with pytest.raises(PyloxiError):
        eng.delete_rule("20.20.20.1", 3000, "tcp", port_max=3010)
    eng.delete_rule("20.20.20.1", 3000, "TCP", port_max=3010, block=5)
    assert dp.services == {}


def test_delete_by_name_and_all(eng: Engine, dp: MemoryDatapath, store: ListStore):
    eng.add_rule(rule(port=1, name="a"))
    eng.add_rule(rule(port=2, name="a"))
    eng.add_rule(rule(port=3, name="b"))
    saves = len(store.saved)
    assert eng.delete_by_name("a") == 2
    assert len(store.saved) == saves + 1  # one save for the batch
    with pytest.raises(PyloxiError) as err:
        eng.delete_by_name("a")
    assert err.value.code == 404
    assert eng.delete_all() == 1
    assert dp.services == {} and store.saved[-1] == []
    assert eng.delete_all() == 0


# ------------------------------------------------------------------ rollback


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (RuntimeError("map update failed"), 500),
        (OSError(errno.E2BIG, "Argument list too long"), 403),
        (PyloxiError(403, "nat map full"), 403),
    ],
)
def test_datapath_failure_on_create_rolls_back(
    eng: Engine, dp: MemoryDatapath, store: ListStore, exc: Exception, code: int
):
    eng.add_rule(rule(port=1))
    before = dict(dp.services)
    dp.fail_next = exc
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(rule(port=2))
    assert err.value.code == code
    assert dp.services == before and len(store.saved) == 1
    assert [r.service_arguments.port for r in eng.desired_rules()] == [1]
    eng.add_rule(rule(port=2))  # the freed id and the key are usable again
    assert sorted(p.port_min for p in dp.services.values()) == [1, 2]


def test_datapath_failure_on_update_rolls_back(eng: Engine, dp: MemoryDatapath, store: ListStore):
    eng.add_rule(rule())
    before = (dict(dp.services), eng.desired_rules())
    dp.fail_next = RuntimeError("boom")
    with pytest.raises(PyloxiError, match="boom") as err:
        eng.add_rule(rule(eps=[("31.31.31.3", 80, 1)]))
    assert err.value.code == 500
    assert (dict(dp.services), eng.desired_rules()) == before and len(store.saved) == 1


def test_datapath_failure_on_delete_rolls_back(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(port=1))
    eng.add_rule(rule(port=2))
    dp.fail_next = RuntimeError("boom")
    with pytest.raises(PyloxiError):
        eng.delete_rule("20.20.20.1", 1, "tcp")
    assert [r.service_arguments.port for r in eng.desired_rules()] == [1, 2]  # order kept
    assert len(dp.services) == 2


def test_store_failure_rolls_back_datapath(eng: Engine, dp: MemoryDatapath, store: ListStore):
    eng.add_rule(rule(port=1))
    before = dict(dp.services)
    store.fail_next = OSError("disk full")
    with pytest.raises(PyloxiError, match="disk full") as err:
        eng.add_rule(rule(port=2))
    assert err.value.code == 500
    assert dp.services == before and len(eng.desired_rules()) == 1


# ------------------------------------------------------------------ reads


def test_list_rules_counters_and_state(eng: Engine, dp: MemoryDatapath):
    from pyloxi.engine.program import EndpointCounters, ServiceCounters

    eng.add_rule(rule())
    dp.counters[1] = ServiceCounters(
        endpoints=(EndpointCounters(packets=10, bytes=1500), EndpointCounters(3, 180))
    )
    eng.set_endpoint_state("31.31.31.2", up=False)
    eps = eng.list_rules()[0].endpoints
    assert [(e.endpoint_ip, e.state, e.counter) for e in eps] == [
        ("31.31.31.1", "active", "10:1500"),
        ("31.31.31.2", "inactive", "3:180"),
    ]
    assert all(e.state == "" and e.counter == "" for e in eng.desired_rules()[0].endpoints)


def test_conntrack_strings(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(port=80, name="web", eps=[("31.31.31.1", 8080, 3)]))
    eng.add_rule(rule(port=81, mode=NatMode.FULLNAT, eps=[("31.31.31.2", 8080, 1)]))
    dp.flow_table = [
        Flow("10.0.0.1", "20.20.20.1", 40000, 80, 6, "est", 1, "31.31.31.1", 8080, None, 0, 5, 300),
        Flow(
            "10.0.0.1",
            "20.20.20.1",
            40001,
            81,
            6,
            "sync-sent",
            2,
            "31.31.31.2",
            8080,
            "20.20.20.1",
            33000,
            1,
            60,
        ),
        Flow("10.0.0.2", "20.20.20.1", 5, 6, 99, "closed", 77, "31.31.31.3", 1, None, 0, 0, 0),
    ]
    ct = [c.wire() for c in eng.conntrack()]
    assert ct[0] == {
        "destinationIP": "20.20.20.1",
        "sourceIP": "10.0.0.1",
        "destinationPort": 80,
        "sourcePort": 40000,
        "protocol": "tcp",
        "conntrackState": "est",
        "ident": "",
        "conntrackAct": "dnat-31.31.31.1:8080:w3",
        "packets": 5,
        "bytes": 300,
        "servName": "web",
    }
    assert ct[1]["conntrackAct"] == "fdnat-20.20.20.1,31.31.31.2:8080:w1"
    assert ct[1]["servName"] == "-"
    assert (ct[2]["protocol"], ct[2]["servName"]) == ("99", "-")


def test_age_delegates(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule())
    dp.flow_table = [
        Flow("10.0.0.1", "20.20.20.1", 1, 2020, 6, "closed", 1, "31.31.31.1", 8080, None, 0, 1, 1),
        Flow("10.0.0.1", "20.20.20.1", 2, 2020, 6, "est", 1, "31.31.31.1", 8080, None, 0, 1, 1),
    ]
    assert eng.age() == 1 and len(dp.flows()) == 1


def test_restore_collects_errors_and_does_not_save(dp: MemoryDatapath, store: ListStore):
    eng = Engine(dp, store=store, snat_source=snat_source)
    errors = eng.restore([rule(port=1), rule(port=0), rule(port=1), rule(port=2, name="x")])
    assert len(errors) == 2
    assert "20.20.20.1:0/tcp" in errors[0] and "lbrule-exists" in errors[1]
    assert len(dp.services) == 2 and store.saved == []


# ------------------------------------------------------------------ persisted rules at boot


def test_rule_failing_at_boot_is_kept_retried_and_deletable(dp: MemoryDatapath, store: ListStore):
    """An onearm rule whose endpoint has no local address yet fails at boot: it stays in the
    store (no write erases it), applies on a later retry, and can be deleted while parked."""
    have_address = False

    def source(ip: str) -> str | None:
        return "192.168.0.254" if have_address else None

    onearm = rule(port=1, mode=NatMode.ONEARM.value)
    store.rows = {"20.20.20.1|tcp|1|0|0|": onearm, "20.20.20.1|tcp|2|0|0|": rule(port=2)}
    eng = Engine(dp, store=store, snat_source=source)
    errors = eng.restore(list(store.rows.values()), list(store.rows))
    assert len(errors) == 1 and "no local address" in errors[0]
    assert eng.parked() == [onearm]
    eng.add_rule(rule(port=3))  # other changes are written: the parked rule stays persisted
    assert [e.service_arguments.port for e in store.rows.values()] == [1, 2, 3]
    assert eng.retry_parked() != [] and eng.parked() == [onearm]
    have_address = True
    assert eng.retry_parked() == [] and eng.parked() == []
    assert sorted(p.port_min for p in dp.services.values()) == [1, 2, 3]
    assert [e.service_arguments.port for e in store.rows.values()] == [1, 2, 3]


def test_parked_rule_is_deleted_by_key_and_replaced_by_post(dp: MemoryDatapath, store: ListStore):
    store.rows = {"20.20.20.1|tcp|1|0|0|": rule(port=1, mode=NatMode.ONEARM.value),
                  "20.20.20.1|tcp|2|0|0|": rule(port=2, mode=NatMode.ONEARM.value)}
    eng = Engine(dp, store=store, snat_source=lambda ip: None)
    assert len(eng.restore(list(store.rows.values()), list(store.rows))) == 2
    eng.delete_rule("20.20.20.1", 1, "tcp")
    assert list(store.rows) == ["20.20.20.1|tcp|2|0|0|"]
    eng.add_rule(rule(port=2))  # a POST of the same key replaces the parked rule
    (stored,) = store.rows.values()
    assert eng.parked() == [] and stored.service_arguments.mode == NatMode.DEFAULT.value
    eng.restore([rule(port=5, mode=NatMode.ONEARM.value)], ["20.20.20.1|tcp|5|0|0|"])
    store.rows["20.20.20.1|tcp|5|0|0|"] = rule(port=5, mode=NatMode.ONEARM.value)
    assert eng.delete_all() == 1 and eng.parked() == [] and store.rows == {}


# ------------------------------------------------------------------ bulk delete


class GatedStore(ListStore):
    """The `gate_at`-th submission is durable only once `release` is set (at most 10 s)."""

    def __init__(self, gate_at: int) -> None:
        super().__init__()
        self.gate_at = gate_at
        self.submissions = 0
        self.reached = threading.Event()
        self.release = threading.Event()

    def submit(self, ops: Sequence[StoreOp]) -> Done:
        self.submissions += 1
        done = super().submit(ops)
        if self.submissions != self.gate_at:
            return done
        store = self

        class Gated(Done):
            def wait(self) -> None:
                store.reached.set()
                store.release.wait(10)
                super().wait()

        return Gated(done.seq, done.error)


def test_bulk_delete_lets_other_requests_through():
    """While DELETE /all waits for its first chunk to be durable, a create and a read are
    served: the lock is released between chunks (one lock hold for the whole bulk delete, as
    before, made them wait for all of it)."""
    store = GatedStore(gate_at=101)  # 100 creates, then the bulk delete's first chunk
    dp = MemoryDatapath()
    eng = Engine(dp, store=store, delete_chunk=16)
    for p in range(1, 101):
        eng.add_rule(rule(port=p))
    result: list[int] = []
    bulk = threading.Thread(target=lambda: result.append(eng.delete_all()))
    bulk.start()
    assert store.reached.wait(10)
    created = threading.Event()

    def create() -> None:
        eng.add_rule(rule(port=1000))
        assert len(eng.list_rules()) == 100 - 16 + 1
        created.set()

    creator = threading.Thread(target=create)
    creator.start()
    served = created.wait(10)
    store.release.set()
    bulk.join(10)
    creator.join(10)
    assert served
    assert result == [100] and [e.service_arguments.port for e in eng.desired_rules()] == [1000]
    assert len(store.saved) == 100 + 1 + 100 // 16 + 1  # one store write per chunk


def test_bulk_delete_stops_at_a_datapath_failure_keeping_what_was_done(store: ListStore):
    dp = MemoryDatapath()
    eng = Engine(dp, store=store, delete_chunk=4)
    for p in range(1, 11):
        eng.add_rule(rule(port=p))

    real = dp.remove_service
    count = 0

    def remove(prog: Any) -> None:
        nonlocal count
        count += 1
        if count == 6:
            raise RuntimeError("map delete failed")
        real(prog)

    dp.remove_service = remove  # type: ignore[method-assign]
    with pytest.raises(PyloxiError, match="deleted 5 rules, then: .*map delete failed"):
        eng.delete_all()
    assert [e.service_arguments.port for e in eng.desired_rules()] == [6, 7, 8, 9, 10]
    assert [e.service_arguments.port for e in store.rows.values()] == [6, 7, 8, 9, 10]
    assert sorted(p.port_min for p in dp.services.values()) == [6, 7, 8, 9, 10]


def test_bulk_delete_store_failure_undoes_the_chunk(store: ListStore):
    dp = MemoryDatapath()
    eng = Engine(dp, store=store, delete_chunk=4)
    for p in range(1, 11):
        eng.add_rule(rule(port=p))
    real = store.submit
    calls = 0

    def submit(ops):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            store.fail_next = OSError("disk full")
        return real(ops)

    store.submit = submit  # type: ignore[method-assign]
    with pytest.raises(PyloxiError, match="deleted 4 rules, then: .*disk full"):
        eng.delete_all()
    ports = [5, 6, 7, 8, 9, 10]
    assert [e.service_arguments.port for e in eng.desired_rules()] == ports  # order kept
    assert [e.service_arguments.port for e in store.rows.values()] == ports
    assert sorted(p.port_min for p in dp.services.values()) == ports
