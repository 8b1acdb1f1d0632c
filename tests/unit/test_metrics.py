"""Metrics (pyloxi.metrics + the api's metric routes) against the real Engine, the in-memory
datapath and fakes of the probe and cluster state: what a scrape says, in loxilb's and
pyloxi's names, and loxilb's /config/metrics and /metrics/* routes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pyloxi.api import create_app
from pyloxi.api.metrics import metrics_router
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.engine import Engine
from pyloxi.engine.firewall import Firewall
from pyloxi.engine.mirror import Mirrors
from pyloxi.engine.program import EndpointCounters, Flow, ServiceCounters
from pyloxi.metrics import CATALOG, VIEWS, MetricsExporter, Sources, series_names
from pyloxi.metrics.text import exposition
from pyloxi.model.firewall import FirewallEntry
from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.model.mirror import MirrorEntry

B = "/netlox/v1"
JSON = {"content-type": "application/json"}  # every POST declares it (api.guard: CSRF)


def entry(vip: str, port: int, name: str = "", eps: tuple[str, ...] = ("31.31.31.1", "32.32.32.1"),
          proto: str = "tcp") -> LoadBalancerEntry:
    return LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": vip, "port": port, "protocol": proto, "name": name},
        "endpoints": [{"endpointIP": ip, "targetPort": 8080, "weight": 1} for ip in eps]})


@dataclass(frozen=True)
class Target:
    ip: str
    ptype: str
    port: int


@dataclass(frozen=True)
class Probe:
    key: str
    target: Target
    up: bool
    state: str
    failures: int = 0
    probes: int = 10
    rtt_avg: float | None = None


@dataclass(frozen=True)
class Instance:
    name: str
    state: str

    @property
    def serving(self) -> bool:
        return self.state in ("MASTER", "NOT_DEFINED")


@dataclass
class World:
    dp: MemoryDatapath = field(default_factory=MemoryDatapath)
    probes: list[Probe] = field(default_factory=list)
    ha: list[Instance] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = Engine(self.dp)
        self.firewall = Firewall(self.dp)
        self.exporter = MetricsExporter(Sources(
            rules=self.engine.rule_table, counters=self.dp.services_counters,
            datapath_stats=self.dp.datapath_stats, conntrack=self.dp.conntrack_summary,
            conntrack_capacity=lambda: self.dp.conntrack_capacity,
            probes=lambda: self.probes, firewall=self.firewall.list, ha=lambda: self.ha),
            enabled=True, flows=self.dp.flows)

    def svc_id(self, vip: str) -> int:
        return next(p.svc_id for p in self.dp.services.values() if p.vip == vip)

    def scrape(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """name -> [(labels, value)] as prometheus_client's parser reads the exposition."""
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for fam in text_string_to_metric_families(self.exporter.render().decode()):
            for s in fam.samples:
                out.setdefault(s.name, []).append((s.labels, s.value))
        return out


def value(scrape: dict[str, list[tuple[dict[str, str], float]]], metric: str, /,
          **labels: str) -> float:
    hits = [v for lab, v in scrape.get(metric, []) if all(lab.get(k) == x
                                                           for k, x in labels.items())]
    assert len(hits) == 1, (metric, labels, scrape.get(metric))
    return hits[0]


def flow(src: str, state: str, proto: int = 6, svc_id: int = 1) -> Flow:
    return Flow(src=src, dst="20.0.0.1", sport=40000, dport=80, proto=proto, state=state,
                svc_id=svc_id, ep_ip="31.31.31.1", ep_port=8080, snat_ip=None, snat_port=0,
                packets=2, bytes=120)


@pytest.fixture
def world() -> World:
    w = World()
    w.engine.add_rule(entry("20.0.0.1", 80, "web"))
    w.engine.add_rule(entry("20.0.0.2", 53, "dns", eps=("41.0.0.1",), proto="udp"))
    w.dp.counters[w.svc_id("20.0.0.1")] = ServiceCounters(
        packets=30, bytes=3000, new_flows=6,
        endpoints=(EndpointCounters(20, 2000, 2), EndpointCounters(10, 1000, 1)))
    w.dp.counters[w.svc_id("20.0.0.2")] = ServiceCounters(
        packets=5, bytes=400, new_flows=5, endpoints=(EndpointCounters(5, 400, 0),))
    w.dp.stats = {"new_flow": 11, "drop_source": 4, "no_endpoint": 2, "ct_full": 1,
                  "promote": 9}
    return w


def test_per_rule_and_per_endpoint_counters(world: World) -> None:
    s = world.scrape()
    rule = "20.0.0.1:80/tcp"
    assert value(s, "pyloxi_rule_packets_total", rule=rule, name="web") == 30
    assert value(s, "pyloxi_rule_bytes_total", rule=rule) == 3000
    assert value(s, "pyloxi_rule_new_flows_total", rule=rule) == 6
    assert value(s, "pyloxi_rule_active_flows", rule=rule) == 3
    assert value(s, "pyloxi_endpoint_packets_total", rule=rule, endpoint="31.31.31.1:8080") == 20
    assert value(s, "pyloxi_endpoint_bytes_total", rule=rule, endpoint="32.32.32.1:8080") == 1000
    assert value(s, "pyloxi_endpoint_active_flows", endpoint="31.31.31.1:8080") == 2
    assert value(s, "pyloxi_endpoint_active", endpoint="41.0.0.1:8080") == 1
    assert value(s, "pyloxi_lb_rules") == 2
    # loxilb's names, legacy and canonical
    for name in ("lb_rule_count", "loxilb_lb_rules"):
        assert value(s, name) == 2
    for name in ("processed_packets", "loxilb_processed_packets_total"):
        assert value(s, name) == 35
    assert value(s, "processed_tcp_bytes") == 3000
    assert value(s, "loxilb_processed_udp_bytes_total") == 400
    assert value(s, "loxilb_processed_udp_packets_total") == 5
    assert value(s, "total_requests_per_service", service="dns") == 5
    assert value(s, "loxilb_service_requests_total", service="web") == 6
    assert value(s, "loxilb_requests_total") == 11
    assert value(s, "lb_rule_interaction_packets", service="web", dip="31.31.31.1") == 20
    assert value(s, "loxilb_lb_rule_interaction_bytes_total", service="web",
                 dip="32.32.32.1") == 1000
    assert value(s, "endpoint_load_dists_per_service", service="web",
                 dip="31.31.31.1") == pytest.approx(20 / 30)
    assert value(s, "total_load_dists_per_service", service="dns") == pytest.approx(5 / 35)
    assert value(s, "loxilb_endpoint_traffic_bytes_total", service="web", dip="31.31.31.1") == 2000


def test_a_probe_verdict_shows_as_an_inactive_endpoint(world: World) -> None:
    world.engine.set_endpoint_state("31.31.31.1", up=False)
    s = world.scrape()
    assert value(s, "pyloxi_endpoint_active", rule="20.0.0.1:80/tcp",
                 endpoint="31.31.31.1:8080") == 0
    assert value(s, "pyloxi_endpoint_active", rule="20.0.0.1:80/tcp",
                 endpoint="32.32.32.1:8080") == 1


def test_a_removed_endpoint_is_not_listed(world: World) -> None:
    world.engine.add_rule(entry("20.0.0.1", 80, "web", eps=("32.32.32.1",)))
    eps = {lab["endpoint"] for lab, _ in world.scrape()["pyloxi_endpoint_packets_total"]
           if lab["rule"] == "20.0.0.1:80/tcp"}
    assert eps == {"32.32.32.1:8080"}


def test_drop_reasons_and_datapath_events(world: World) -> None:
    s = world.scrape()
    assert value(s, "pyloxi_datapath_drops_total", reason="source_not_allowed") == 4
    assert value(s, "pyloxi_datapath_drops_total", reason="no_endpoint") == 2
    assert value(s, "pyloxi_datapath_drops_total", reason="conntrack_full") == 1
    assert {lab["reason"] for lab, _ in s["pyloxi_datapath_drops_total"]} == {
        "source_not_allowed", "no_endpoint", "conntrack_full"}  # only what the datapath counts
    assert value(s, "pyloxi_datapath_events_total", event="promote") == 9
    for name in ("total_errors", "loxilb_errors_total"):
        assert value(s, name) == 7
    assert value(s, "pyloxi_new_flows_total") == 11


def test_firewall_rules_and_drops_per_rule(world: World) -> None:
    for pref, action in ((200, {"drop": True}), (100, {"allow": True})):
        world.firewall.add(FirewallEntry.model_validate({
            "ruleArguments": {"sourceIP": "10.0.0.0/8", "protocol": 6,
                              "minDestinationPort": 80, "maxDestinationPort": 80,
                              "preference": pref}, "opts": action}))
    drop_id = next(r.id for r in world.dp.firewall if not r.allow)
    allow_id = next(r.id for r in world.dp.firewall if r.allow)
    world.dp.fw_counters = {drop_id: (7, 420), allow_id: (3, 180)}
    s = world.scrape()
    assert value(s, "loxilb_firewall_rules") == 2
    label = "10.0.0.0/8->any proto 6 dport 80-80 pref 200"
    for name in ("total_fw_drops_per_rule", "loxilb_fw_rule_drop_packets_total"):
        assert value(s, name, fw_rule=label) == 7  # the allow rule's packets are not drops
        assert len(s[name]) == 1


def test_new_flows_between_collections(world: World) -> None:
    world.scrape()
    world.dp.stats["new_flow"] += 40
    s = world.scrape()
    assert value(s, "new_flow_count") == 40
    assert value(s, "loxilb_new_flows") == 40
    assert value(s, "pyloxi_new_flows_per_second") > 0


def test_conntrack_by_state_and_protocol(world: World) -> None:
    web, dns = world.svc_id("20.0.0.1"), world.svc_id("20.0.0.2")
    world.dp.flow_table = [flow("1.1.1.1", "est", svc_id=web), flow("1.1.1.2", "est", svc_id=web),
                           flow("1.1.1.3", "closed-wait", svc_id=web),
                           flow("1.1.1.1", "udp-est", proto=17, svc_id=dns)]
    s = world.scrape()
    assert value(s, "pyloxi_conntrack_flows", proto="tcp", state="est") == 2
    assert value(s, "pyloxi_conntrack_flows", proto="tcp", state="closed-wait") == 1
    assert value(s, "pyloxi_conntrack_flows", proto="udp", state="udp-est") == 1
    for name in ("active_conntrack_count", "loxilb_active_conntrack_entries"):
        assert value(s, name) == 4
    assert value(s, "active_flow_count_tcp") == 3
    assert value(s, "loxilb_active_flow_count_udp") == 1
    assert value(s, "inactive_flow_count") == 1
    assert value(s, "loxilb_conntrack_max_entries") == 65536


def test_probes_ha_and_aging(world: World) -> None:
    world.probes = [Probe("31.31.31.1_tcp_8080", Target("31.31.31.1", "tcp", 8080), True, "ok",
                          rtt_avg=0.0021),
                    Probe("web2", Target("32.32.32.1", "http", 80), False, "nok", failures=3)]
    world.ha = [Instance("default", "MASTER"), Instance("llb1", "BACKUP")]
    world.exporter.aging.observe(0.25, 7)
    world.exporter.aging.observe(0.5, 1)
    s = world.scrape()
    assert value(s, "pyloxi_probe_up", probe="31.31.31.1_tcp_8080", type="tcp", port="8080") == 1
    assert value(s, "pyloxi_probe_up", probe="web2") == 0
    assert value(s, "pyloxi_probe_rtt_seconds", probe="31.31.31.1_tcp_8080") == 0.0021
    assert [lab for lab, _ in s.get("pyloxi_probe_rtt_seconds", [])
            if lab["probe"] == "web2"] == []  # no successful probe: no RTT
    assert value(s, "pyloxi_probe_consecutive_failures", probe="web2") == 3
    for name in ("healthy_host_count", "loxilb_healthy_endpoints",
                 "unhealthy_host_count", "loxilb_unhealthy_endpoints"):
        assert value(s, name) == 1
    assert value(s, "pyloxi_ha_state", instance="default", state="MASTER") == 1
    assert value(s, "pyloxi_ha_state", instance="llb1", state="BACKUP") == 1
    assert value(s, "pyloxi_ha_serving", instance="llb1") == 0
    assert value(s, "pyloxi_aging_sweeps_total") == 2
    assert value(s, "pyloxi_aging_sweep_seconds_total") == 0.75
    assert value(s, "pyloxi_aging_last_sweep_seconds") == 0.5
    assert value(s, "pyloxi_aged_flows_total") == 8
    assert value(s, "loxilb_closed_connections_processed_total") == 8


def test_every_catalogued_family_is_exposed(world: World) -> None:
    text = world.exporter.render().decode()
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert declared == series_names()
    assert {f.series for f in CATALOG.values()} <= declared


def test_exposition_reads_back_as_prometheus_client_writes_it(world: World) -> None:
    """The fast writer and prometheus_client's own generate_latest give the same samples,
    label escaping included."""
    world.engine.add_rule(entry("20.0.0.9", 90, 'we"ird\\name'))
    reading = world.exporter.collector.read()
    ours = exposition(world.exporter.collector.samples(reading)).decode()
    registry = CollectorRegistry(auto_describe=False)

    class Once:
        def collect(self) -> Any:
            return world.exporter.collector.families(reading)

    registry.register(Once())
    theirs = generate_latest(registry).decode()

    def parsed(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {(s.name, tuple(sorted(s.labels.items())), s.value)
                for fam in text_string_to_metric_families(text) for s in fam.samples
                if s.name != "pyloxi_scrape_duration_seconds"}

    got = parsed(ours)
    assert got == parsed(theirs)
    assert any(dict(lab).get("name") == 'we"ird\\name' for _n, lab, _v in got)


def test_duplicate_service_names_make_one_series(world: World) -> None:
    world.engine.add_rule(entry("20.0.0.3", 80, "web"))  # a second rule of service "web"
    world.dp.counters[world.svc_id("20.0.0.3")] = ServiceCounters(
        packets=1, bytes=100, new_flows=1,
        endpoints=(EndpointCounters(1, 100, 0), EndpointCounters(0, 0, 0)))
    s = world.scrape()
    assert value(s, "loxilb_service_requests_total", service="web") == 7
    assert value(s, "lb_rule_interaction_packets", service="web", dip="31.31.31.1") == 21


# --- the API routes ---

class Api:
    def __init__(self, world: World, enabled: bool) -> None:
        world.exporter._enabled = enabled
        self.world = world
        app = create_app(world.engine, version="t", request_observer=world.exporter.api,
                         extra_routers=[metrics_router(world.exporter, VIEWS)])
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                      base_url="http://pyloxi")


@pytest.fixture
async def api(world: World) -> Any:
    a = Api(world, enabled=False)
    yield a
    await a.http.aclose()


async def test_config_metrics_turns_the_exporter_on_and_off(api: Api) -> None:
    http = api.http
    resp = await http.get(f"{B}/metrics")
    assert resp.status_code == 503
    assert resp.json()["code"] == 503
    assert (await http.get(f"{B}/config/metrics")).json() == {"prometheus": False}
    resp = await http.post(f"{B}/config/metrics", headers=JSON)
    assert resp.status_code == 200 and resp.json() == {"result": "Success"}
    # loxilb (handler/prometheus.go): 200 and a result saying so when already on
    resp = await http.post(f"{B}/config/metrics", headers=JSON)
    assert resp.status_code == 200 and resp.json() == {"result": "Prometheus is already enabled."}
    assert (await http.get(f"{B}/config/metrics")).json() == {"prometheus": True}
    resp = await http.get(f"{B}/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'pyloxi_rule_packets_total{rule="20.0.0.1:80/tcp",name="web",proto="tcp"} 30' \
        in resp.text
    assert (await http.delete(f"{B}/config/metrics")).json() == {"result": "Success"}
    resp = await http.delete(f"{B}/config/metrics")
    assert resp.status_code == 200 and resp.json() == {"result": "Prometheus is already disabled."}
    assert (await http.get(f"{B}/metrics")).status_code == 503


async def test_api_requests_and_errors_are_counted_by_route(api: Api) -> None:
    http = api.http
    await http.post(f"{B}/config/metrics", headers=JSON)
    await http.delete(f"{B}/config/loadbalancer/name/nosuch")
    await http.delete(f"{B}/config/loadbalancer/name/nosuch2")
    await http.get(f"{B}/no/such/path")
    resp = await http.get(f"{B}/metrics")
    s: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(resp.text):
        for smp in fam.samples:
            s.setdefault(smp.name, []).append((smp.labels, smp.value))
    route = f"{B}/config/loadbalancer/name/{{lb_name}}"
    code = next(lab["code"] for lab, _ in s["pyloxi_api_requests_total"] if lab["route"] == route)
    assert int(code) >= 400
    assert value(s, "pyloxi_api_requests_total", method="DELETE", route=route) == 2
    assert value(s, "pyloxi_api_errors_total", method="DELETE", route=route) == 2
    assert value(s, "pyloxi_api_requests_total", method="POST", route=f"{B}/config/metrics",
                 code="200") == 1
    assert value(s, "pyloxi_api_errors_total", method="GET", route="other", code="404") == 1
    assert all(lab["route"] != f"{B}/no/such/path" for lab, _ in s["pyloxi_api_requests_total"])


async def test_json_views_use_loxilbs_field_names(api: Api) -> None:
    world, http = api.world, api.http
    web = world.svc_id("20.0.0.1")
    world.dp.flow_table = [flow("1.1.1.1", "est", svc_id=web), flow("1.1.1.1", "est", svc_id=web),
                           flow("1.1.1.2", "closed", svc_id=web)]

    async def get(view: str) -> Any:
        resp = await http.get(f"{B}/metrics/{view}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    assert await get("flowcount") == {"active_conntrack_count": 3, "active_flow_count_tcp": 3,
                                      "active_flow_count_udp": 0, "active_flow_count_sctp": 0,
                                      "inactive_flow_count": 1}
    assert await get("hostcount") == {"healthy_host_count": 0, "unhealthy_host_count": 0}
    assert await get("lbrulecount") == {"lb_rule_count": 2}
    assert set(await get("newflowcount")) == {"new_flow_count"}
    req = await get("requestcount")
    assert req["total_requests"] == 11
    assert {"name": "web", "value": 6} in req["total_requests_per_service"]
    assert await get("errorcount") == {"total_errors": 7, "total_errors_per_service": []}
    assert await get("processedtraffic") == {
        "processed_bytes": 3400, "processed_tcp_bytes": 3000, "processed_sctp_bytes": 0,
        "processed_udp_bytes": 400, "processed_packets": 35}
    lbt = await get("lbprocessedtraffic")
    assert {"service": "web", "sip": "", "dip": "31.31.31.1", "value": 2000} in \
        lbt["lb_rule_interaction_bytes"]
    assert {"service": "dns", "sip": "", "dip": "41.0.0.1", "value": 5} in \
        lbt["lb_rule_interaction_packets"]
    ep = await get("epdisttraffic")
    assert {"dip": "32.32.32.1", "value": 10, "ratio": pytest.approx(1 / 3)} in ep["web"]
    svc = await get("servicedisttraffic")
    assert svc["dns"] == {"value": 5, "ratio": pytest.approx(5 / 35)}
    assert await get("fwdrops") == {"total_fw_drops": 0, "total_fw_drops_per_rule": []}
    assert await get("reqcountperclient") == {"1.1.1.1": 2, "1.1.1.2": 1}


def test_mirror_counters() -> None:
    dp = MemoryDatapath(interfaces=frozenset({"eth0", "mir0"}))
    mirrors = Mirrors(dp)
    mirrors.add(MirrorEntry.model_validate({
        "mirrorIdent": "tap", "mirrorInfo": {"type": 0, "port": "mir0"},
        "targetObject": {"attachment": 1, "mirrObjName": "eth0"}}))
    dp.mirr_counters[0] = (7, 700)
    engine = Engine(dp)
    exporter = MetricsExporter(Sources(rules=engine.rule_table, counters=dp.services_counters,
                                       mirrors=mirrors.counters), enabled=True, flows=dp.flows)
    samples = {(s.name, s.labels.get("mirror")): s.value
               for fam in text_string_to_metric_families(exporter.render().decode())
               for s in fam.samples}
    assert samples[("pyloxi_mirror_packets_total", "tap")] == 7
    assert samples[("pyloxi_mirror_bytes_total", "tap")] == 700
