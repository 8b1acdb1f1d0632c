"""The load balancer as a graph, in Grafana's node-graph schema (loxilb handler/nodegraph.go):

- GET /nodegraph/all        every rule
- GET /nodegraph/{service}  the rules of one service: a rule's name, or for an unnamed rule its
                            key `<externalIP>:<port>:<protocol>`; no such service: an empty graph

    {"schemaVersion": 37, "meta": {"preferredVisualisationType": "nodeGraph"},
     "nodes": [{id, title, subtitle, mainstat, secondarystat, color, icon, nodeRadius}],
     "edges": [{id, source, target, mainstat, secondarystat, thickness, color}]}

Nodes: each service (blue; mainstat its bytes, secondarystat its packets), each endpoint
(`ep:<ip>:<port>`, green when active, red when its liveness probe says it is down), and each
client seen in conntrack talking to a service (`client:<ip>`, yellow). Edges: client -> service
(the flows' bytes, packets) and service -> endpoint (the endpoint's counters). loxilb draws only
what its Prometheus collector saw (client -> service -> endpoint by traffic); here the rules are
drawn even before any traffic, with the endpoints' health.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pyloxi.api.deps import EngineDep
from pyloxi.api.errors import LoxiRoute
from pyloxi.model.conntrack import ConntrackEntry
from pyloxi.model.lb import LoadBalancerEntry

SCHEMA_VERSION = 37  # loxilb's
MAX_CLIENTS = 256  # busiest clients drawn; a graph of 100k nodes helps nobody


def service_key(entry: LoadBalancerEntry) -> str:
    svc = entry.service_arguments
    return f"{svc.external_ip}:{svc.port}:{svc.protocol}"


def _counter(text: str) -> tuple[int, int]:
    packets, _, octets = text.partition(":")
    try:
        return int(packets or 0), int(octets or 0)
    except ValueError:
        return 0, 0


def _node(node_id: str, title: str, subtitle: str, mainstat: float, secondarystat: float,
          color: str, icon: str = "", radius: int = 40) -> dict[str, Any]:
    return {"id": node_id, "title": title, "subtitle": subtitle, "mainstat": mainstat,
            "secondarystat": secondarystat, "color": color, "icon": icon, "nodeRadius": radius}


def _edge(source: str, target: str, mainstat: float, secondarystat: float,
          color: str) -> dict[str, Any]:
    return {"id": f"{source}->{target}", "source": source, "target": target,
            "mainstat": mainstat, "secondarystat": secondarystat, "thickness": 4,
            "color": color}


def graph(rules: list[LoadBalancerEntry], flows: list[ConntrackEntry],
          service: str | None = None) -> dict[str, Any]:
    nodes: dict[str, dict[str, Any]] = {}
    edges: dict[str, dict[str, Any]] = {}
    by_vip: dict[tuple[str, int, str], str] = {}
    for entry in rules:
        svc = entry.service_arguments
        key = service_key(entry)
        if service is not None and service not in (svc.name, key):
            continue
        svc_id = f"svc:{key}"
        by_vip[(svc.external_ip, svc.port, str(svc.protocol).lower())] = svc_id
        total_p = total_b = 0
        for ep in entry.endpoints:
            port = ep.target_port or svc.port
            ep_id = f"ep:{ep.endpoint_ip}:{port}"
            packets, octets = _counter(ep.counter)
            total_p += packets
            total_b += octets
            down = ep.state == "inactive"
            node = nodes.get(ep_id)
            if node is None:
                node = nodes[ep_id] = _node(ep_id, f"{ep.endpoint_ip}:{port}",
                                            "down" if down else "active", 0, 0,
                                            "red" if down else "green")
            node["mainstat"] += octets
            node["secondarystat"] += packets
            edges[f"{svc_id}->{ep_id}"] = _edge(svc_id, ep_id, octets, packets,
                                                "red" if down else "orange")
        nodes[svc_id] = _node(svc_id, svc.name or key, key if svc.name else svc.mode.name.lower(),
                              total_b, total_p, "blue", radius=50)
    clients: dict[tuple[str, str], list[int]] = {}
    for flow in flows:
        target = by_vip.get((flow.destination_ip, flow.destination_port,
                             flow.protocol.lower()))
        if target is not None:
            counts = clients.setdefault((flow.source_ip, target), [0, 0])
            counts[0] += flow.bytes
            counts[1] += flow.packets
    busiest = sorted(clients.items(), key=lambda item: -item[1][0])[:MAX_CLIENTS]
    for (ip, target), (octets, packets) in busiest:
        client_id = f"client:{ip}"
        node = nodes.setdefault(client_id, _node(client_id, ip, "client", 0, 0, "yellow"))
        node["mainstat"] += octets
        node["secondarystat"] += packets
        edges[f"{client_id}->{target}"] = _edge(client_id, target, octets, packets, "cyan")
    return {"schemaVersion": SCHEMA_VERSION,
            "meta": {"preferredVisualisationType": "nodeGraph"},
            "nodes": list(nodes.values()), "edges": list(edges.values())}


def nodegraph_router() -> APIRouter:
    router = APIRouter(prefix="/nodegraph", tags=["nodegraph"], route_class=LoxiRoute)

    @router.get("/all", summary="Services, endpoints and clients as a Grafana node graph")
    def get_all(engine: EngineDep) -> dict[str, Any]:
        return graph(engine.list_rules(), engine.conntrack())

    @router.get("/{service}", summary="One service (name or externalIP:port:protocol) as a "
                "Grafana node graph")
    def get_service(service: str, engine: EngineDep) -> dict[str, Any]:
        return graph(engine.list_rules(), engine.conntrack(), service)

    return router
