"""The kube agent's real code over real HTTP: fake apiserver (k8sfake) ↔ agent ↔ pyloxi API.

The pyloxi side is the real REST app (Engine + MemoryDatapath under uvicorn), IPv6, dual-stack
and NAT64 Services included.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from k8sfake import (
    FakeKube,
    RealLoxi,
    endpoint_slice,
    free_port,
    node,
    service,
)

from pyloxi.client import AsyncClient
from pyloxi.k8s.agent import Agent
from pyloxi.k8s.config import AgentConfig
from pyloxi.k8s.kube import KubeClient

pytestmark = pytest.mark.timeout(60)

POOLS = "defaultPool=20.0.0.0/29,pool2=30.0.0.5-30.0.0.6,tiny=40.0.0.1/32"


async def until(cond: Callable[[], Any], timeout: float = 8.0, what: str = "") -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        res = cond()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return res
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.05)


class Loxi:
    """Reads the pyloxi side through its REST API, whichever implementation serves it."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.url = server.url
        self.api = AsyncClient(self.url)

    async def rules(self) -> list[dict]:
        return await self.api.list_loadbalancers()

    async def by_name(self, name: str) -> list[dict]:
        return [r for r in await self.rules() if r["serviceArguments"].get("name") == name]

    async def post(self, body: dict) -> None:
        await self.api.create_loadbalancer(body)

    async def wipe(self) -> None:
        await self.api.delete_all_loadbalancers()


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FakeKube, RealLoxi]]:
    k, r = FakeKube(), RealLoxi()
    await asyncio.gather(k.start(), r.start())
    yield k, r
    await asyncio.gather(k.stop(), r.stop())  # each stop waits out uvicorn's shutdown ticks


@pytest.fixture
def kube(servers: tuple[FakeKube, RealLoxi]) -> FakeKube:
    return servers[0]


@pytest.fixture
async def loxi(servers: tuple[FakeKube, RealLoxi]) -> AsyncIterator[Loxi]:
    loxi = Loxi(servers[1])
    yield loxi
    await loxi.api.aclose()


AgentFactory = Callable[..., Awaitable[Agent]]


@pytest.fixture
async def make_agent(kube: FakeKube, loxi: Loxi, tmp_path: Any) -> AsyncIterator[AgentFactory]:
    agents: list[Agent] = []
    kcfg = kube.kubeconfig(str(tmp_path / "kubeconfig"))

    async def make(**over: Any) -> Agent:
        cfg = AgentConfig(loxi_urls=[loxi.url], kubeconfig=kcfg, cidr_pools=POOLS,
                          resync_period=30.0, watch_timeout=5)
        for k, v in over.items():
            setattr(cfg, k, v)
        agent = Agent(cfg, await KubeClient.from_kubeconfig(kcfg))
        await asyncio.wait_for(agent.start(), 10)
        agents.append(agent)
        return agent

    yield make
    for a in agents:
        with contextlib.suppress(Exception):
            await a.stop()


def ingress(kube: FakeKube, name: str, ns: str = "default") -> list[dict]:
    svc = kube.get("Service", name, ns)
    return ((svc or {}).get("status", {}).get("loadBalancer") or {}).get("ingress") or []


def eps(rule: dict) -> list[tuple[str, int]]:
    return sorted((e["endpointIP"], e["targetPort"]) for e in rule["endpoints"])


def nodes3(kube: FakeKube) -> None:
    kube.create(node("n1", "10.1.0.1"))
    kube.create(node("n2", "10.1.0.2"))
    kube.create(node("n3", "10.1.0.3", ready=False))


async def test_service_programmed_with_node_ports_and_status(kube, loxi, make_agent):
    nodes3(kube)
    svc = kube.create(service("web", [(80, "TCP"), (53, "UDP")]))
    kube.create(endpoint_slice("web", ["10.244.0.5"]))
    agent = await make_agent()
    rules = await until(lambda: loxi.by_name("default_web"), what="rules")
    await until(lambda: len(ingress(kube, "web")) == 1, what="status")
    await agent.idle()
    rules = await loxi.by_name("default_web")
    assert len(rules) == 2
    by_port = {r["serviceArguments"]["port"]: r for r in rules}
    np80 = svc["spec"]["ports"][0]["nodePort"]
    np53 = svc["spec"]["ports"][1]["nodePort"]
    r80, r53 = by_port[80], by_port[53]
    assert r80["serviceArguments"]["externalIP"] == "20.0.0.1"
    assert r80["serviceArguments"]["protocol"] == "tcp"
    assert r53["serviceArguments"]["protocol"] == "udp"
    assert r80["serviceArguments"]["managed"] is True
    assert eps(r80) == [("10.1.0.1", np80), ("10.1.0.2", np80)]  # n3 is not Ready
    assert eps(r53) == [("10.1.0.1", np53), ("10.1.0.2", np53)]
    assert ingress(kube, "web") == [{"ip": "20.0.0.1"}]


async def test_pod_network_and_endpoint_changes(kube, loxi, make_agent):
    nodes3(kube)
    kube.create(service("api", annotations={"loxilb.io/usepodnetwork": "yes"}))
    kube.create(endpoint_slice("api", ["10.244.0.5", ("10.244.1.6", False, "n2")]))
    await make_agent()
    rule = (await until(lambda: loxi.by_name("default_api")))[0]
    assert eps(rule) == [("10.244.0.5", 8080)]  # the not-ready pod is left out
    sl = kube.get("EndpointSlice", "api-abc")
    sl["endpoints"][1]["conditions"]["ready"] = True
    sl["endpoints"].append({"addresses": ["10.244.2.7"], "conditions": {"ready": True}})
    kube.update(sl)

    async def three() -> bool:
        r = await loxi.by_name("default_api")
        return bool(r) and len(r[0]["endpoints"]) == 3

    await until(three, what="3 endpoints")
    # a second slice of the same Service adds its endpoints
    kube.create(endpoint_slice("api", ["10.244.3.8"], name="api-def"))

    async def four() -> bool:
        r = await loxi.by_name("default_api")
        return bool(r) and len(r[0]["endpoints"]) == 4

    await until(four, what="4 endpoints")
    # every endpoint gone: the rule goes, the address stays
    kube.delete("EndpointSlice", "api-abc")
    kube.delete("EndpointSlice", "api-def")
    await until(lambda: _empty(loxi.by_name("default_api")), what="rule removed")
    assert ingress(kube, "api") == [{"ip": "20.0.0.1"}]


async def _empty(coro: Awaitable[list]) -> bool:
    return not await coro


async def test_external_traffic_policy_local_and_node_changes(kube, loxi, make_agent):
    nodes3(kube)
    kube.create(service("loc", externalTrafficPolicy="Local"))
    kube.create(endpoint_slice("loc", [("10.244.0.5", True, "n2"), ("10.244.0.6", False, "n1")]))
    await make_agent()
    rule = (await until(lambda: loxi.by_name("default_loc")))[0]
    assert [ip for ip, _ in eps(rule)] == ["10.1.0.2"]
    # n3 becomes Ready and gets a ready pod
    n3 = kube.get("Node", "n3")
    n3["status"]["conditions"][0]["status"] = "True"
    kube.update(n3, subresource="status")  # node status lives in the subresource
    sl = kube.get("EndpointSlice", "loc-abc")
    sl["endpoints"].append({"addresses": ["10.244.0.9"], "conditions": {"ready": True},
                            "nodeName": "n3"})
    kube.update(sl)

    async def two() -> bool:
        r = await loxi.by_name("default_loc")
        return bool(r) and [ip for ip, _ in eps(r[0])] == ["10.1.0.2", "10.1.0.3"]

    await until(two, what="n2+n3")


async def test_nodelabel_and_exclusion(kube, loxi, make_agent):
    kube.create(node("n1", "10.1.0.1", labels={"lb": "yes"}))
    kube.create(node("n2", "10.1.0.2"))
    kube.create(node("n3", "10.1.0.3", labels={
        "lb": "", "node.kubernetes.io/exclude-from-external-load-balancers": ""}))
    kube.create(service("nl", annotations={"loxilb.io/nodelabel": "lb"}))
    await make_agent()
    rule = (await until(lambda: loxi.by_name("default_nl")))[0]
    assert [ip for ip, _ in eps(rule)] == ["10.1.0.1"]


async def test_annotation_change_and_invalid_annotation(kube, loxi, make_agent):
    nodes3(kube)
    kube.create(service("ann"))
    agent = await make_agent()
    rule = (await until(lambda: loxi.by_name("default_ann")))[0]
    assert rule["serviceArguments"]["mode"] == 0
    kube.patch("Service", "ann", metadata={"annotations": {
        "loxilb.io/lbmode": "fullnat", "loxilb.io/epselect": "persist",
        "loxilb.io/timeout": "600", "loxilb.io/liveness": "yes",
        "loxilb.io/probetype": "tcp", "loxilb.io/probeport": "8080",
        "loxilb.io/proberetries": "3", "loxilb.io/probetimeout": "10"}})

    async def fullnat() -> dict | None:
        r = await loxi.by_name("default_ann")
        return r[0] if r and r[0]["serviceArguments"]["mode"] == 2 else None

    rule = await until(fullnat, what="fullnat")
    sa = rule["serviceArguments"]
    assert sa["sel"] == 3
    assert sa["inactiveTimeOut"] == 600
    assert sa["monitor"] is True
    assert sa["probetype"] == "tcp" and sa["probeport"] == 8080
    assert sa["probeRetries"] == 3 and sa["probeTimeout"] == 10
    await agent.idle()
    before = await loxi.rules()
    kube.patch("Service", "ann", metadata={"annotations": {
        "loxilb.io/lbmode": "bogus", "loxilb.io/timeout": "-5"}})
    evs = await until(lambda: [e for e in kube.events_for("ann")
                               if e["reason"] == "InvalidAnnotation"], what="event")
    assert "loxilb.io/lbmode='bogus'" in evs[0]["message"]
    assert "loxilb.io/timeout" in evs[0]["message"]
    assert evs[0]["type"] == "Warning"
    assert evs[0]["involvedObject"]["kind"] == "Service"
    await agent.idle()
    assert await loxi.rules() == before  # nothing changed
    assert ingress(kube, "ann") == [{"ip": "20.0.0.1"}]
    # the same problem is not reported again at every resync
    await agent.full_reconcile()
    await agent.idle()
    assert len([e for e in kube.events_for("ann") if e["reason"] == "InvalidAnnotation"]) == 1


async def test_delete_and_type_change_free_the_address(kube, loxi, make_agent):
    nodes3(kube)
    kube.create(service("a"))
    kube.create(service("b", [(8080, "TCP")]))
    agent = await make_agent(unique_ip=True)
    await until(lambda: ingress(kube, "a") and ingress(kube, "b"))
    ip_a = ingress(kube, "a")[0]["ip"]
    assert {ip_a, ingress(kube, "b")[0]["ip"]} == {"20.0.0.1", "20.0.0.2"}
    kube.delete("Service", "a")
    await until(lambda: _empty(loxi.by_name("default_a")), what="a's rules gone")
    await agent.idle()
    assert agent.ipam.get("default/a") is None
    # the freed address is handed out again
    kube.create(service("c"))
    await until(lambda: ingress(kube, "c") == [{"ip": ip_a}], what="c reuses a's address")
    # LoadBalancer → ClusterIP: rules removed, address freed, status cleared
    kube.patch("Service", "b", spec={"type": "ClusterIP"})
    await until(lambda: _empty(loxi.by_name("default_b")), what="b's rules gone")
    await agent.idle()
    assert agent.ipam.get("default/b") is None
    assert ingress(kube, "b") == []


async def test_shared_and_unique_ipam(kube, loxi, make_agent):
    nodes3(kube)
    kube.create(service("s1", [(80, "TCP")]))
    kube.create(service("s2", [(443, "TCP"), (80, "UDP")]))
    kube.create(service("s3", [(80, "TCP")]))
    kube.create(service("p2", annotations={"loxilb.io/poolSelect": "pool2"}))
    await make_agent()
    await until(lambda: all(ingress(kube, n) for n in ("s1", "s2", "s3", "p2")))
    assert ingress(kube, "s1") == [{"ip": "20.0.0.1"}]
    assert ingress(kube, "s2") == [{"ip": "20.0.0.1"}]  # no clash: shares the address
    assert ingress(kube, "s3") == [{"ip": "20.0.0.2"}]  # 80/tcp is taken on .1
    assert ingress(kube, "p2") == [{"ip": "30.0.0.5"}]
    rules = await loxi.rules()
    keys = sorted((r["serviceArguments"]["externalIP"], r["serviceArguments"]["port"],
                   r["serviceArguments"]["protocol"]) for r in rules)
    assert keys == [("20.0.0.1", 80, "tcp"), ("20.0.0.1", 80, "udp"), ("20.0.0.1", 443, "tcp"),
                    ("20.0.0.2", 80, "tcp"), ("30.0.0.5", 80, "tcp")]


async def test_pool_exhaustion_event_and_pending(kube, loxi, make_agent):
    nodes3(kube)
    kube.create(service("t1", annotations={"loxilb.io/poolSelect": "tiny"}))
    agent = await make_agent(unique_ip=True)
    await until(lambda: ingress(kube, "t1") == [{"ip": "40.0.0.1"}])
    kube.create(service("t2", annotations={"loxilb.io/poolSelect": "tiny"}))
    evs = await until(lambda: [e for e in kube.events_for("t2")
                               if e["reason"] == "AllocationFailed"], what="event")
    assert "tiny" in evs[0]["message"]
    await agent.idle()
    assert ingress(kube, "t2") == []
    assert not await loxi.by_name("default_t2")
    assert agent.state["default/t2"].pending
    # the address comes free: the waiting Service gets it
    kube.delete("Service", "t1")
    await until(lambda: ingress(kube, "t2") == [{"ip": "40.0.0.1"}], what="t2 served")
    assert await loxi.by_name("default_t2")


async def test_static_ip_external_ips_and_source_ranges(kube, loxi, make_agent):
    nodes3(kube)
    kube.create(service("st", annotations={"loxilb.io/staticIP": "192.0.2.10"},
                        externalIPs=["192.0.2.11"],
                        loadBalancerSourceRanges=["10.0.0.0/8", "192.168.1.0/24"]))
    await make_agent()
    await until(lambda: ingress(kube, "st") == [{"ip": "192.0.2.10"}])
    rules = await until(lambda: loxi.by_name("default_st"))
    await until(lambda: _len_is(loxi.by_name("default_st"), 2))
    rules = await loxi.by_name("default_st")
    assert sorted(r["serviceArguments"]["externalIP"] for r in rules) == [
        "192.0.2.10", "192.0.2.11"]
    for r in rules:
        assert sorted(s["prefix"] for s in r["allowedSources"]) == [
            "10.0.0.0/8", "192.168.1.0/24"]
    # a static address inside a pool is reserved: the pool does not hand it out
    kube.create(service("in-pool", annotations={"loxilb.io/staticIP": "20.0.0.1"}))
    kube.create(service("other", [(81, "TCP")]))
    await until(lambda: ingress(kube, "in-pool") and ingress(kube, "other"))
    assert ingress(kube, "in-pool") == [{"ip": "20.0.0.1"}]


async def _len_is(coro: Awaitable[list], n: int) -> bool:
    return len(await coro) == n


async def test_class_filter(kube, loxi, make_agent):
    nodes3(kube)
    kube.create(service("noclass", lb_class=None))
    kube.create(service("otherclass", lb_class="example.com/other"))
    kube.create(service("mine"))
    kube.create(service("zoned", [(99, "TCP")], annotations={"loxilb.io/zoneselect": "far"}))
    agent = await make_agent()
    await until(lambda: ingress(kube, "mine"))
    await agent.idle()
    assert ingress(kube, "noclass") == [] and ingress(kube, "otherclass") == []
    assert ingress(kube, "zoned") == []
    await agent.stop()
    agent2 = await make_agent(accept_no_class=True)
    await until(lambda: ingress(kube, "noclass"), what="no-class Service served")
    await agent2.idle()
    assert ingress(kube, "otherclass") == []


async def test_restart_recovers_allocations_from_status(kube, loxi, make_agent):
    nodes3(kube)
    kube.create(service("r1"))
    kube.create(service("r2", [(81, "TCP")]))
    agent = await make_agent(unique_ip=True)
    await until(lambda: ingress(kube, "r1") and ingress(kube, "r2"))
    got = {n: ingress(kube, n)[0]["ip"] for n in ("r1", "r2")}
    await agent.idle()
    await agent.stop()
    # while the agent is down: a new Service appears, r1 is deleted
    kube.create(service("r0", [(82, "TCP")]))
    kube.delete("Service", "r1")
    agent2 = await make_agent(unique_ip=True)
    await until(lambda: ingress(kube, "r0"), what="r0 served")
    await agent2.idle()
    assert ingress(kube, "r2") == [{"ip": got["r2"]}]  # kept its address
    assert agent2.ipam.get("default/r2").ip == got["r2"]
    assert ingress(kube, "r0")[0]["ip"] != got["r2"]
    # r1's rules were left behind by the dead agent: the orphan sweep removes them
    await agent2.full_reconcile()
    await until(lambda: _empty(loxi.by_name("default_r1")), what="orphan swept")


async def test_kube_loxilb_hostname_status_is_recovered(kube, loxi, make_agent):
    nodes3(kube)
    svc = kube.create(service("legacy", annotations={"loxilb.io/poolSelect": "pool2"}))
    svc["status"] = {"loadBalancer": {"ingress": [{"hostname": "llb-30.0.0.6"}]}}
    kube.update(svc, subresource="status")
    agent = await make_agent(zone_name_status=True)
    await until(lambda: loxi.by_name("default_legacy"))
    await agent.idle()
    assert agent.ipam.get("default/legacy").ip == "30.0.0.6"
    assert ingress(kube, "legacy") == [{"hostname": "llb-30.0.0.6"}]


async def test_resync_recreates_lost_rules_and_sweeps_orphans(kube, loxi, make_agent):
    nodes3(kube)
    kube.create(service("keep"))
    agent = await make_agent(resync_period=0.5)
    await until(lambda: loxi.by_name("default_keep"))
    await agent.idle()
    await loxi.wipe()  # pyloxi restarted without its rules
    await loxi.post({"serviceArguments": {"externalIP": "20.0.0.7", "port": 9, "protocol": "tcp",
                                          "managed": True, "name": "default_ghost"},
                     "endpoints": [{"endpointIP": "10.9.9.9", "targetPort": 9, "weight": 1}]})
    await loxi.post({"serviceArguments": {"externalIP": "20.0.0.7", "port": 10,
                                          "protocol": "tcp", "name": "by-hand"},
                     "endpoints": [{"endpointIP": "10.9.9.9", "targetPort": 9, "weight": 1}]})
    await until(lambda: loxi.by_name("default_keep"), what="rule re-created")
    await until(lambda: _empty(loxi.by_name("default_ghost")), what="orphan removed")
    assert await loxi.by_name("by-hand")  # not managed: never touched


async def test_watch_gone_relists_and_status_conflicts_retry(kube, loxi, make_agent):
    nodes3(kube)
    kube.create(service("w1"))
    agent = await make_agent()
    await until(lambda: ingress(kube, "w1"))
    await agent.idle()
    relists = agent.services.relists
    # the apiserver compacts its history and drops the streams: the agent must relist
    kube.compact()
    await until(lambda: agent.services.relists > relists, what="relist after 410")
    kube.create(service("w2", [(81, "TCP")]))
    await until(lambda: ingress(kube, "w2"), what="w2 served after the relist")
    await agent.idle()
    kube.fail_status_puts = 2  # two 409s on /status before it goes through
    kube.create(service("w3", [(82, "TCP")]))
    await until(lambda: ingress(kube, "w3"), what="w3 served despite conflicts")
    assert any(m == "GET" and "/services/w3" in p and "status" not in p
               for m, p in kube.requests), "fresh GET after the 409"


async def test_ipv6_service(kube, loxi, make_agent):
    kube.create(node("n1", "fd00::1"))
    kube.create(node("n2", "10.1.0.2"))
    kube.create(service("v6", ipFamilies=["IPv6"]))
    # pyloxi's engine takes IPv6 VIPs: the rule is served, with no SyncFailed
    agent = await make_agent(cidr6_pools="defaultPool=3ffe:cafe::/120")
    await until(lambda: ingress(kube, "v6"))
    assert ingress(kube, "v6") == [{"ip": "3ffe:cafe::1"}]
    rule = (await until(lambda: loxi.by_name("default_v6")))[0]
    assert rule["serviceArguments"]["externalIP"] == "3ffe:cafe::1"
    assert [ip for ip, _ in eps(rule)] == ["fd00::1"]
    await agent.idle()
    assert not [e for e in kube.events_for("v6") if e["reason"] == "SyncFailed"]


async def test_pyloxi_down_then_back(kube, make_agent, loxi):
    nodes3(kube)
    kube.create(service("d1"))
    agent = await make_agent()
    await until(lambda: loxi.by_name("default_d1"))
    await agent.idle()
    # a second, unreachable instance makes syncs report failure but never crash
    agent.loxi.append(AsyncClient(f"http://127.0.0.1:{free_port()}", timeout=1.0))
    kube.create(service("d2", [(81, "TCP")]))
    await until(lambda: [e for e in kube.events_for("d2") if e["reason"] == "SyncFailed"],
                what="SyncFailed event")
    assert await loxi.by_name("default_d2")  # the reachable instance is programmed


# ---- dual-stack ---------------------------------------------------------------------------

V6POOLS = "defaultPool=3ffe:cafe::/120"


def nodes_dual(kube: FakeKube) -> None:
    kube.create(node("n1", "10.1.0.1", ip6="fd00::1"))
    kube.create(node("n2", "10.1.0.2", ip6="fd00::2"))


def dual(name: str, policy: str = "RequireDualStack", families: tuple[str, ...] = ("IPv4", "IPv6"),
         ports: list[tuple[int, str]] | None = None, **kw: Any) -> dict:
    return service(name, ports, ipFamilyPolicy=policy, ipFamilies=list(families), **kw)


def by_vip(rules: list[dict]) -> dict[str, dict]:
    return {r["serviceArguments"]["externalIP"]: r for r in rules}


async def test_dual_stack_service_then_single_stack(kube, loxi, make_agent):
    nodes_dual(kube)
    svc = kube.create(dual("ds"))
    np = svc["spec"]["ports"][0]["nodePort"]
    # pod network: each family's endpoints come from the EndpointSlice of that addressType
    kube.create(dual("pods", ports=[(81, "TCP")],
                     annotations={"loxilb.io/usepodnetwork": "yes"}))
    kube.create(endpoint_slice("pods", ["10.244.0.5"], ports=[("p81", 8080, "TCP")]))
    kube.create(endpoint_slice("pods", ["fd10::5"], ports=[("p81", 8080, "TCP")],
                               name="pods-v6", address_type="IPv6"))
    # nat64: the v6 VIP keeps v4 endpoints
    kube.create(dual("n64", ports=[(82, "TCP")], annotations={"loxilb.io/ipam": "nat64"}))
    agent = await make_agent(cidr6_pools=V6POOLS)
    await until(lambda: len(ingress(kube, "ds")) == 2, what="two addresses")
    await agent.idle()
    assert ingress(kube, "ds") == [{"ip": "20.0.0.1"}, {"ip": "3ffe:cafe::1"}]  # v4 first
    rules = by_vip(await loxi.by_name("default_ds"))
    assert set(rules) == {"20.0.0.1", "3ffe:cafe::1"}
    assert eps(rules["20.0.0.1"]) == [("10.1.0.1", np), ("10.1.0.2", np)]
    assert eps(rules["3ffe:cafe::1"]) == [("fd00::1", np), ("fd00::2", np)]
    pods = by_vip(await loxi.by_name("default_pods"))
    assert {ip: eps(r) for ip, r in pods.items()} == {
        "20.0.0.1": [("10.244.0.5", 8080)], "3ffe:cafe::1": [("fd10::5", 8080)]}
    n64 = by_vip(await loxi.by_name("default_n64"))
    assert [ip for ip, _ in eps(n64["3ffe:cafe::1"])] == ["10.1.0.1", "10.1.0.2"]
    assert agent.ipam.get("default/ds", 6).ip == "3ffe:cafe::1"
    # IPv6 primary: status lists the v6 address first
    kube.create(dual("v6first", "PreferDualStack", ("IPv6", "IPv4"), ports=[(83, "TCP")]))
    await until(lambda: ingress(kube, "v6first") == [{"ip": "3ffe:cafe::1"}, {"ip": "20.0.0.1"}],
                what="v6-first status")
    # dual-stack → single-stack: the v6 address is freed and its rules go
    kube.patch("Service", "ds", spec={"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]})
    await until(lambda: ingress(kube, "ds") == [{"ip": "20.0.0.1"}], what="v4 only")
    await until(lambda: _len_is(loxi.by_name("default_ds"), 1), what="v6 rule gone")
    await agent.idle()
    assert list(by_vip(await loxi.by_name("default_ds"))) == ["20.0.0.1"]
    assert agent.ipam.get("default/ds", 6) is None
    assert agent.ipam.get("default/ds", 4).ip == "20.0.0.1"


async def test_prefer_dual_stack_without_v6_pool(kube, loxi, make_agent):
    nodes_dual(kube)
    kube.create(dual("pref", "PreferDualStack"))
    kube.create(dual("req", ports=[(81, "TCP")]))
    agent = await make_agent(cidr6_pools="")
    await until(lambda: ingress(kube, "pref"), what="pref served")
    evs = await until(lambda: [e for e in kube.events_for("pref")
                               if e["reason"] == "ServedSingleStack"], what="notice")
    assert evs[0]["type"] == "Normal"
    assert "no IPv6 pool 'defaultPool'" in evs[0]["message"]
    assert "serving IPv4 only" in evs[0]["message"]
    evs = await until(lambda: [e for e in kube.events_for("req") if e["reason"] == "SyncFailed"],
                      what="SyncFailed")
    assert "RequireDualStack" in evs[0]["message"]
    assert "no IPv6 pool 'defaultPool' (--cidr6Pools)" in evs[0]["message"]
    await agent.idle()
    assert ingress(kube, "pref") == [{"ip": "20.0.0.1"}]
    assert list(by_vip(await loxi.by_name("default_pref"))) == ["20.0.0.1"]
    # RequireDualStack: nothing allocated, no rule, no status
    assert ingress(kube, "req") == []
    assert agent.ipam.of("default/req") == {}
    assert not await loxi.by_name("default_req")
    # the notice is not repeated at every resync
    await agent.full_reconcile()
    await agent.idle()
    assert len([e for e in kube.events_for("pref") if e["reason"] == "ServedSingleStack"]) == 1
    assert not [e for e in kube.events_for("pref") if e["type"] == "Warning"]


async def test_require_dual_stack_v6_exhausted_keeps_no_v4(kube, loxi, make_agent):
    nodes_dual(kube)
    kube.create(service("only6", ipFamilies=["IPv6"]))
    agent = await make_agent(cidr6_pools="defaultPool=3ffe:cafe::1/128", unique_ip=True,
                             loxi_urls=[loxi.url])
    await until(lambda: ingress(kube, "only6") == [{"ip": "3ffe:cafe::1"}])
    kube.create(dual("req", ports=[(81, "TCP")]))
    evs = await until(lambda: [e for e in kube.events_for("req")
                               if e["reason"] == "AllocationFailed"], what="AllocationFailed")
    assert "IPv6 pool 'defaultPool'" in evs[0]["message"]
    await agent.idle()
    assert agent.ipam.of("default/req") == {}  # the v4 address was not kept
    assert ingress(kube, "req") == [] and not await loxi.by_name("default_req")
    # the v6 address comes free: the waiting Service gets both
    kube.delete("Service", "only6")
    await until(lambda: ingress(kube, "req") == [{"ip": "20.0.0.1"}, {"ip": "3ffe:cafe::1"}],
                what="req served")
    await until(lambda: _len_is(loxi.by_name("default_req"), 2), what="req's rules")
    # PreferDualStack short of a v6 address: served v4, and v6 once one comes free
    kube.create(dual("pref", "PreferDualStack", ports=[(82, "TCP")]))
    evs = await until(lambda: [e for e in kube.events_for("pref")
                               if e["reason"] == "AllocationFailed"], what="pref short of v6")
    assert "IPv6 pool 'defaultPool'" in evs[0]["message"]
    await until(lambda: ingress(kube, "pref") == [{"ip": "20.0.0.2"}], what="pref v4 only")
    assert list(by_vip(await loxi.by_name("default_pref"))) == ["20.0.0.2"]
    kube.delete("Service", "req")
    await until(lambda: ingress(kube, "pref") == [{"ip": "20.0.0.2"}, {"ip": "3ffe:cafe::1"}],
                what="pref gets its v6 address")


async def test_dual_stack_restart_keeps_both_addresses(kube, loxi, make_agent):
    nodes_dual(kube)
    kube.create(dual("d1"))
    kube.create(dual("d2", ports=[(81, "TCP")]))
    agent = await make_agent(cidr6_pools=V6POOLS, unique_ip=True)
    await until(lambda: len(ingress(kube, "d1")) == 2 and len(ingress(kube, "d2")) == 2)
    await agent.idle()
    got = {n: ingress(kube, n) for n in ("d1", "d2")}
    await agent.stop()
    # while the agent is down: d1 goes, a new Service comes
    kube.delete("Service", "d1")
    kube.create(dual("d0", ports=[(82, "TCP")]))
    agent2 = await make_agent(cidr6_pools=V6POOLS, unique_ip=True)
    await until(lambda: len(ingress(kube, "d0")) == 2, what="d0 served")
    await agent2.idle()
    assert ingress(kube, "d2") == got["d2"]
    assert {f: a.ip for f, a in agent2.ipam.of("default/d2").items()} == {
        4: got["d2"][0]["ip"], 6: got["d2"][1]["ip"]}
    assert not {i["ip"] for i in ingress(kube, "d0")} & {i["ip"] for i in got["d2"]}


async def test_dual_stack_against_pyloxi_serves_both(kube, loxi, make_agent):
    """pyloxi's engine takes the v6 part too (it answered 400 before): no SyncFailed. Source
    ranges go to the rule of their family; a family none of them covers admits nobody."""
    nodes_dual(kube)
    kube.create(dual("mix", loadBalancerSourceRanges=["192.168.0.0/16"]))
    kube.create(dual("both", ports=[(81, "TCP")],
                     loadBalancerSourceRanges=["192.168.0.0/16", "2001:db8:c::/48"]))
    agent = await make_agent(cidr6_pools=V6POOLS)
    await until(lambda: _len_is(loxi.by_name("default_mix"), 2), what="both mix rules")
    await until(lambda: _len_is(loxi.by_name("default_both"), 2), what="both 'both' rules")
    await agent.idle()
    assert not [e for n in ("mix", "both") for e in kube.events_for(n)
                if e["reason"] == "SyncFailed"]
    rules = by_vip(await loxi.by_name("default_mix"))
    assert eps(rules["20.0.0.1"])[0][0] == "10.1.0.1"
    assert [ip for ip, _ in eps(rules["3ffe:cafe::1"])] == ["fd00::1", "fd00::2"]

    def sources(rule: dict) -> list[str]:
        return [s["prefix"] for s in rule.get("allowedSources") or []]

    assert sources(rules["20.0.0.1"]) == ["192.168.0.0/16"]
    assert sources(rules["3ffe:cafe::1"]) == ["::/128"]  # no v6 range: nobody
    both = by_vip(await loxi.by_name("default_both"))
    assert {ip: sources(r) for ip, r in both.items()} == {
        "20.0.0.1": ["192.168.0.0/16"], "3ffe:cafe::1": ["2001:db8:c::/48"]}
    assert ingress(kube, "mix") == [{"ip": "20.0.0.1"}, {"ip": "3ffe:cafe::1"}]


async def test_bgp_flag_and_annotation(kube, loxi, make_agent):
    nodes3(kube)
    kube.create(service("on"))
    kube.create(service("off"))
    kube.patch("Service", "off", metadata={"annotations": {"loxilb.io/bgp": "false"}})
    agent = await make_agent(set_bgp=65001)  # no cluster roles: BGP config of the instances
    on = (await until(lambda: loxi.by_name("default_on")))[0]
    off = (await until(lambda: loxi.by_name("default_off")))[0]
    assert on["serviceArguments"]["bgp"] is True
    assert off["serviceArguments"]["bgp"] is False
    # turned on by the annotation: the rule is updated in place
    kube.patch("Service", "off", metadata={"annotations": {"loxilb.io/bgp": "true"}})

    async def bgp_on() -> bool:
        r = await loxi.by_name("default_off")
        return bool(r) and r[0]["serviceArguments"]["bgp"] is True

    await until(bgp_on, what="bgp on by annotation")
    await agent.idle()
    before = await loxi.rules()
    kube.patch("Service", "on", metadata={"annotations": {"loxilb.io/bgp": "sometimes"}})
    evs = await until(lambda: [e for e in kube.events_for("on")
                               if e["reason"] == "InvalidAnnotation"], what="event")
    assert "loxilb.io/bgp='sometimes'" in evs[0]["message"]
    await agent.idle()
    assert await loxi.rules() == before  # the rule is left as it was, not programmed wrongly
