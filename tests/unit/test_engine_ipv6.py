"""Engine and API with IPv6 rules (NAT66, NAT64) and dsr: what is accepted, which source
address each endpoint gets, what is refused (400, nothing changed), and how rules and flows
are listed. The datapath is the in-memory one: these check the engine's decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from pyloxi.api import create_app
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine
from pyloxi.engine.program import Flow, ServiceProgram
from pyloxi.model.errors import PyloxiError
from pyloxi.model.lb import LoadBalancerEntry, NatMode
from pyloxi.probes import targets_for_rule

V6_EPS = [("2001:db8:1::2", 8080, 1), ("2001:db8:1::3", 8080, 1)]
V4_EPS = [("31.31.31.1", 8080, 1), ("31.31.31.2", 8080, 1)]
LOCAL4, LOCAL6 = "192.168.0.254", "fd00::fe"


def rule(vip: str = "2001:db8::10", port: int = 80, eps: list[tuple[str, int, int]] | None = None,
         **args: Any) -> LoadBalancerEntry:
    eps = V6_EPS if eps is None else eps
    extra = {k: args.pop(k) for k in ("allowedSources",) if k in args}
    return LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": vip, "port": port, "protocol": "tcp", **args},
        "endpoints": [{"endpointIP": i, "targetPort": p, "weight": w} for i, p, w in eps],
        **extra,
    })


def snat_source(ip: str) -> str | None:
    """The host's address toward `ip` (as `ip route get` answers): of the endpoint's family;
    99.x and 2001:db8:99:: are unroutable."""
    if ip.startswith(("99.", "2001:db8:99:")):
        return None
    return LOCAL6 if ":" in ip else LOCAL4


@dataclass
class DsrDatapath(MemoryDatapath):
    """A datapath whose object handles dsr (the capability the ebpf backend will announce)."""

    supported_modes: frozenset[NatMode] = field(
        default_factory=lambda: frozenset({NatMode.DEFAULT, NatMode.ONEARM, NatMode.FULLNAT,
                                           NatMode.DSR}))


@pytest.fixture
def dp() -> DsrDatapath:
    return DsrDatapath()


@pytest.fixture
def eng(dp: DsrDatapath) -> Engine:
    return Engine(dp, snat_source=snat_source)


def only(dp: MemoryDatapath) -> ServiceProgram:
    (prog,) = dp.services.values()
    return prog


def plan(prog: ServiceProgram) -> list[tuple[str, str | None]]:
    return [(e.ip, e.snat_ip) for e in prog.endpoints]


# ------------------------------------------------------------------ accepted, and the SNAT plan


@pytest.mark.parametrize(("mode", "snat"), [
    (NatMode.DEFAULT, None),          # NAT66: DNAT only
    (NatMode.ONEARM, LOCAL6),         # the LB's own IPv6 address toward the endpoint
    (NatMode.FULLNAT, "2001:db8::10"),  # the VIP
])
def test_nat66_modes(eng: Engine, dp: MemoryDatapath, mode: NatMode, snat: str | None):
    eng.add_rule(rule(mode=mode))
    prog = only(dp)
    assert prog.vip == "2001:db8::10"
    assert plan(prog) == [("2001:db8:1::2", snat), ("2001:db8:1::3", snat)]


def test_nat66_fullnat_private_ip_is_the_source(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(mode=NatMode.FULLNAT, privateIP="2001:db8:5::1"))
    prog = only(dp)
    assert prog.vip == "2001:db8:5::1"
    assert {s for _, s in plan(prog)} == {"2001:db8:5::1"}


@pytest.mark.parametrize("mode", [NatMode.DEFAULT, NatMode.ONEARM, NatMode.FULLNAT])
def test_nat64_gets_the_local_ipv4_source_in_every_mode(eng: Engine, dp: MemoryDatapath,
                                                       mode: NatMode):
    # An IPv4 packet cannot carry the IPv6 client (or VIP) as its source: loxilb SNATs NAT64
    # flows to the local IPv4 address even in default mode; fullnat cannot use the IPv6 VIP.
    eng.add_rule(rule(eps=V4_EPS, mode=mode))
    prog = only(dp)
    assert prog.vip == "2001:db8::10" and int(prog.mode) == mode
    assert plan(prog) == [("31.31.31.1", LOCAL4), ("31.31.31.2", LOCAL4)]


def test_non_canonical_addresses_are_stored_canonical(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(vip="2001:DB8:0::0:10", eps=[("2001:db8:1:0::2", 80, 1)]))
    (listed,) = eng.list_rules()
    assert listed.service_arguments.external_ip == "2001:db8::10"
    assert listed.endpoints[0].endpoint_ip == "2001:db8:1::2"
    # the same rule written another way is the same key: an identical re-POST is 409
    with pytest.raises(PyloxiError, match="lbrule-exists") as err:
        eng.add_rule(rule(vip="2001:db8::10", eps=[("2001:db8:1::2", 80, 1)]))
    assert err.value.code == 409


def test_ipv6_allowed_sources(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(allowedSources=[{"prefix": "2001:db8:c::1/48"},
                                      {"prefix": "2001:db8:c::/48"}]))
    assert only(dp).allowed_sources == ("2001:db8:c::/48",)


def test_v4_and_v6_rules_on_the_same_port_live_side_by_side(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule())
    eng.add_rule(rule(vip="20.20.20.1", eps=V4_EPS))
    assert sorted(p.vip for p in dp.services.values()) == ["20.20.20.1", "2001:db8::10"]
    eng.delete_rule("2001:db8::10", 80, "tcp")
    assert [p.vip for p in dp.services.values()] == ["20.20.20.1"]


def test_liveness_verdict_on_an_ipv6_endpoint(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule())
    assert eng.set_endpoint_state("2001:DB8:1::2", up=False)  # any spelling of the address
    assert [e.active for e in only(dp).endpoints] == [False, True]
    assert [e.state for e in eng.list_rules()[0].endpoints] == ["inactive", "active"]


# ------------------------------------------------------------------ dsr


def test_dsr_v6_has_no_snat_and_lists_mode_3(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(mode=NatMode.DSR, sel=1, eps=[("2001:db8:1::2", 80, 1)]))
    prog = only(dp)
    assert prog.mode == NatMode.DSR and plan(prog) == [("2001:db8:1::2", None)]
    (listed,) = eng.list_rules()
    assert listed.model_dump(by_alias=True)["serviceArguments"]["mode"] == 3


def test_dsr_v4_has_no_snat(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(vip="20.20.20.1", mode=NatMode.DSR, sel=1, eps=[("31.31.31.1", 80, 1)]))
    assert plan(only(dp)) == [("31.31.31.1", None)]


def test_dsr_follows_the_datapath_capability():
    """Without `supported_modes` (or without dsr in it) a datapath is not asked to do dsr."""
    for dp in (MemoryDatapath(), DsrDatapath(supported_modes=frozenset({NatMode.DEFAULT}))):
        with pytest.raises(PyloxiError, match="mode dsr not supported") as err:
            Engine(dp).add_rule(rule(mode=NatMode.DSR, sel=1, eps=[("2001:db8:1::2", 80, 1)]))
        assert err.value.code == 400 and not dp.services


def test_ebpf_backend_announces_dsr():
    from pyloxi.datapath.ebpf.backend import EbpfDatapath

    modes = {NatMode.DEFAULT, NatMode.ONEARM, NatMode.FULLNAT, NatMode.DSR}
    assert modes == EbpfDatapath.SUPPORTED_MODES


# ------------------------------------------------------------------ refused: 400, nothing changed


REFUSED: list[tuple[str, LoadBalancerEntry, str]] = [
    ("nat46", rule(vip="20.20.20.1"), "malformed-service nat46 error"),
    ("mixed families", rule(eps=[V6_EPS[0], V4_EPS[0]]), "mixed-family error"),
    ("nat64 with dsr", rule(eps=[("31.31.31.1", 80, 1)], mode=NatMode.DSR, sel=1),
     "mode dsr cannot do NAT64"),
    ("nat64 of sctp", rule(eps=[("31.31.31.1", 80, 1)], protocol="sctp"),
     "NAT64 of sctp not supported"),
    ("unspecified", rule(vip="::"), "externalIP ::: unspecified address not allowed"),
    ("multicast", rule(vip="ff05::2"), "externalIP ff05::2: not a unicast address"),
    ("multicast endpoint", rule(eps=[("ff02::1", 80, 1)]), "endpointIP ff02::1: not a unicast"),
    ("link-local vip", rule(vip="fe80::10"), "externalIP fe80::10: link-local address not allowed"),
    ("link-local privateIP", rule(privateIP="fe80::10"), "privateIP fe80::10: link-local"),
    ("scoped endpoint", rule(eps=[("fe80::2%eth0", 80, 1)]), "scoped address not allowed"),
    ("v4-mapped vip", rule(vip="::ffff:20.20.20.1", eps=V4_EPS),
     "externalIP ::ffff:20.20.20.1: IPv4-mapped address, write the IPv4 form 20.20.20.1"),
    ("v4-mapped endpoint", rule(eps=[("::ffff:31.31.31.1", 80, 1)]),
     "write the IPv4 form 31.31.31.1"),
    ("privateIP v4 for a v6 vip", rule(privateIP="20.20.20.2"),
     "privateIP 20.20.20.2: IPv4, externalIP 2001:db8::10 is IPv6"),
    ("privateIP v6 for a v4 vip", rule(vip="20.20.20.1", eps=V4_EPS, privateIP="2001:db8::5"),
     "privateIP 2001:db8::5: IPv6, externalIP 20.20.20.1 is IPv4"),
    ("v4 source on a v6 vip", rule(allowedSources=[{"prefix": "10.0.0.0/8"}]),
     "allowedSources 10.0.0.0/8: not of the externalIP's family (IPv6)"),
    ("v6 source on a v4 vip", rule(vip="20.20.20.1", eps=V4_EPS,
                                   allowedSources=[{"prefix": "::/0"}]),
     "allowedSources ::/0: not of the externalIP's family (IPv4)"),
    ("nat64, no ipv4 route", rule(eps=[("99.0.0.1", 80, 1)]), "no local address toward 99.0.0.1"),
    ("onearm, no ipv6 route", rule(mode=NatMode.ONEARM, eps=[("2001:db8:99::1", 80, 1)]),
     "no local address toward 2001:db8:99::1"),
]


@pytest.mark.parametrize(("why", "entry", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_changes_nothing(eng: Engine, dp: MemoryDatapath, why: str,
                                 entry: LoadBalancerEntry, reason: str):
    eng.add_rule(rule(port=7))  # already there, must stay untouched
    before = (dict(dp.services), list(dp.calls), eng.desired_rules())
    with pytest.raises(PyloxiError) as err:
        eng.add_rule(entry)
    assert err.value.code == 400
    assert reason in err.value.message, err.value.message
    assert (dict(dp.services), list(dp.calls), eng.desired_rules()) == before


def test_nat64_without_any_source_callback():
    dp = MemoryDatapath()
    with pytest.raises(PyloxiError, match="no local address toward 31.31.31.1") as err:
        Engine(dp).add_rule(rule(eps=V4_EPS))
    assert err.value.code == 400 and not dp.services


def test_source_of_the_wrong_family_is_refused():
    dp = MemoryDatapath()
    eng = Engine(dp, snat_source=lambda _ip: LOCAL6)  # a broken callback: v6 toward v4
    with pytest.raises(PyloxiError, match="no local IPv4 address toward 31.31.31.1") as err:
        eng.add_rule(rule(eps=V4_EPS))
    assert err.value.code == 400 and not dp.services


def test_attach_of_the_other_family_is_refused(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule())
    before = (dict(dp.services), list(dp.calls))
    with pytest.raises(PyloxiError, match="mixed-family error") as err:
        eng.add_rule(rule(eps=[("31.31.31.1", 8080, 1)], oper=1))
    assert err.value.code == 400 and (dict(dp.services), list(dp.calls)) == before


def test_update_to_nat64_replans_sources(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule())
    eng.add_rule(rule(eps=V4_EPS))  # same key, other endpoints: update in place
    assert [(e.ip, e.snat_ip, e.active) for e in only(dp).endpoints] == [
        ("31.31.31.1", LOCAL4, True), ("31.31.31.2", LOCAL4, True)]


# ------------------------------------------------------------------ conntrack listing


def flow(src: str, dst: str, ep: str, snat: str | None, svc_id: int,
         ep_port: int = 8080) -> Flow:
    return Flow(src=src, dst=dst, sport=40000, dport=80, proto=6, state="est", svc_id=svc_id,
                ep_ip=ep, ep_port=ep_port, snat_ip=snat, snat_port=40000 if snat else 0,
                packets=3, bytes=180)


def test_conntrack_lists_ipv6_and_nat64_flows(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(name="six"))
    eng.add_rule(rule(port=81, eps=V4_EPS, name="sixfour"))
    ids = {p.name: p.svc_id for p in dp.services.values()}
    dp.flow_table = [
        flow("2001:db8:c::5", "2001:db8::10", "2001:db8:1::2", None, ids["six"]),
        flow("2001:db8:c::5", "2001:db8::10", "31.31.31.2", LOCAL4, ids["sixfour"]),
    ]
    six, sixfour = eng.conntrack()
    assert (six.source_ip, six.destination_ip) == ("2001:db8:c::5", "2001:db8::10")
    assert six.conntrack_act == "dnat-2001:db8:1::2:8080:w1" and six.serv_name == "six"
    # NAT64: the client side is IPv6, the endpoint side (and its source) IPv4
    assert (sixfour.source_ip, sixfour.destination_ip) == ("2001:db8:c::5", "2001:db8::10")
    assert sixfour.conntrack_act == f"fdnat-{LOCAL4},31.31.31.2:8080:w1"


def test_conntrack_dsr_act(eng: Engine, dp: MemoryDatapath):
    eng.add_rule(rule(mode=NatMode.DSR, sel=1, eps=[("2001:db8:1::2", 80, 1)]))
    dp.flow_table = [flow("2001:db8:c::5", "2001:db8::10", "2001:db8:1::2", None,
                          only(dp).svc_id, ep_port=80)]
    (ct,) = eng.conntrack()
    assert ct.conntrack_act == "ddsr-2001:db8:1::2:80:w1"


# ------------------------------------------------------------------ probes


def test_probe_targets_of_ipv6_endpoints():
    ts = targets_for_rule(rule(monitor=True))
    assert [(t.key, t.ip, t.ptype, t.port) for t in ts] == [
        ("2001:db8:1::2_tcp_8080", "2001:db8:1::2", "tcp", 8080),
        ("2001:db8:1::3_tcp_8080", "2001:db8:1::3", "tcp", 8080)]
    # ping6 is probetype ping on an IPv6 endpoint (the prober opens an ICMPv6 socket for it)
    (ping,) = targets_for_rule(rule(probetype="ping", eps=[("2001:db8:1::2", 8080, 1)]))
    assert (ping.ip, ping.ptype, ping.port) == ("2001:db8:1::2", "ping", 0)
    (nat64,) = targets_for_rule(rule(probetype="ping", eps=[("31.31.31.1", 8080, 1)]))
    assert nat64.ip == "31.31.31.1"


# ------------------------------------------------------------------ the REST API

LB = "/netlox/v1/config/loadbalancer"


@pytest.fixture
async def http(eng: Engine):
    app = create_app(eng, version="9.9.9")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://pyloxi") as client:
        yield client


def body(vip: str, eps: list[str], **svc: Any) -> dict[str, Any]:
    return {"serviceArguments": {"externalIP": vip, "port": 80, "protocol": "tcp", **svc},
            "endpoints": [{"endpointIP": ip, "targetPort": 80, "weight": 1} for ip in eps]}


async def test_api_ipv6_nat64_and_dsr_rules(http: httpx.AsyncClient, dp: MemoryDatapath):
    for b in (body("2001:db8::10", ["2001:db8:1::2"]),
              body("2001:db8::11", ["31.31.31.1"], mode=2),
              body("2001:db8::12", ["2001:db8:1::2"], mode=3, sel=1)):
        resp = await http.post(LB, json=b)
        assert resp.status_code == 200, resp.text
    rules = (await http.get(f"{LB}/all")).json()["lbAttr"]
    got = [(r["serviceArguments"]["externalIP"], r["serviceArguments"]["mode"],
            r["endpoints"][0]["endpointIP"]) for r in rules]
    assert got == [("2001:db8::10", 0, "2001:db8:1::2"), ("2001:db8::11", 2, "31.31.31.1"),
                   ("2001:db8::12", 3, "2001:db8:1::2")]
    # delete by the v6 key in the path
    resp = await http.delete(f"{LB}/externalipaddress/2001:db8::11/port/80/protocol/tcp")
    assert resp.status_code == 200, resp.text
    assert sorted(p.vip for p in dp.services.values()) == ["2001:db8::10", "2001:db8::12"]


async def test_api_nat46_is_refused(http: httpx.AsyncClient, dp: MemoryDatapath):
    resp = await http.post(LB, json=body("20.20.20.1", ["2001:db8:1::2"]))
    assert resp.status_code == 400
    assert "nat46 error" in resp.json()["message"]
    assert not dp.services and (await http.get(f"{LB}/all")).json()["lbAttr"] == []


def test_conntrack_names_icmpv6(eng: Engine, dp: MemoryDatapath):
    dp.flow_table = [Flow(src="2001:db8:c::5", dst="2001:db8::10", sport=7, dport=0, proto=58,
                          state="bidir", svc_id=0, ep_ip="2001:db8:1::2", ep_port=0,
                          snat_ip=None, snat_port=0, packets=2, bytes=208)]
    (ct,) = eng.conntrack()
    assert ct.protocol == "icmp6" and ct.serv_name == "-"
