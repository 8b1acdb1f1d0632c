"""Which endpoints a Service's rules point to.

Each VIP family gets its own endpoints (a dual-stack Service's v4 VIP v4 endpoints, its v6 VIP v6
ones, or v4 ones under `loxilb.io/ipam: nat64`):

* default: every Ready Node (InternalIP of the VIP's endpoint family) at the port's NodePort;
  Nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers` are left out and
  `loxilb.io/nodelabel=<key>` keeps only Nodes carrying that label key;
* `externalTrafficPolicy: Local`: only Nodes that run a ready endpoint of the Service (the
  EndpointSlices' `nodeName`), still at the NodePort;
* `loxilb.io/usepodnetwork: yes`: the ready addresses of the Service's EndpointSlices at the
  EndpointSlice port that matches the Service port's name.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pyloxi.k8s.annotations import ServiceOptions

EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
Port = tuple[int, str]
Target = tuple[str, int]  # (address, port)


def _family(ip: str) -> int:
    try:
        return ipaddress.ip_address(ip).version
    except ValueError:
        return 0


def node_ready(node: dict[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def node_address(node: dict[str, Any], family: int) -> str | None:
    addrs = (node.get("status") or {}).get("addresses") or []
    for kind in ("InternalIP", "ExternalIP"):
        for a in addrs:
            if a.get("type") == kind and _family(a.get("address", "")) == family:
                return str(a["address"])
    return None


def endpoint_ready(ep: dict[str, Any]) -> bool:
    ready = (ep.get("conditions") or {}).get("ready")
    return ready is None or bool(ready)  # nil means ready (discovery/v1)


def service_ports(service: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in (service.get("spec") or {}).get("ports") or []:
        proto = str(p.get("protocol") or "TCP").lower()
        out.append({"name": p.get("name") or "", "port": int(p["port"]), "protocol": proto,
                    "nodePort": int(p.get("nodePort") or 0),
                    "targetPort": p.get("targetPort")})
    return out


def port_set(service: dict[str, Any]) -> frozenset[Port]:
    return frozenset((p["port"], p["protocol"]) for p in service_ports(service))


def endpoints(service: dict[str, Any], opts: ServiceOptions, nodes: list[dict[str, Any]],
              slices: list[dict[str, Any]], family: int | None = None) -> dict[Port, list[Target]]:
    """Endpoints of `family` (default: those of the primary VIP family) per Service port."""
    family = family or opts.endpoint_family
    addr_type = "IPv4" if family == 4 else "IPv6"
    result: dict[Port, list[Target]] = {}
    spec = service.get("spec") or {}
    ports = service_ports(service)
    if opts.use_pod_network:
        for sp in ports:
            targets: list[Target] = []
            for sl in slices:
                if sl.get("addressType", "IPv4") != addr_type:
                    continue
                sl_port = None
                for p in sl.get("ports") or []:
                    if (p.get("name") or "") == sp["name"] and \
                            str(p.get("protocol") or "TCP").lower() == sp["protocol"]:
                        sl_port = p.get("port")
                if sl_port is None and isinstance(sp["targetPort"], int):
                    sl_port = sp["targetPort"]
                if sl_port is None:
                    continue
                for ep in sl.get("endpoints") or []:
                    if not endpoint_ready(ep):
                        continue
                    for a in ep.get("addresses") or []:
                        t = (a, int(sl_port))
                        if _family(a) == family and t not in targets:
                            targets.append(t)
            result[(sp["port"], sp["protocol"])] = sorted(targets, key=_sort_key)
        return result

    local_nodes: set[str] | None = None
    if spec.get("externalTrafficPolicy") == "Local":
        local_nodes = set()
        for sl in slices:
            for ep in sl.get("endpoints") or []:
                if endpoint_ready(ep) and ep.get("nodeName"):
                    local_nodes.add(ep["nodeName"])
    addrs: list[str] = []
    for node in nodes:
        meta = node.get("metadata") or {}
        labels = meta.get("labels") or {}
        if not node_ready(node) or EXCLUDE_LABEL in labels:
            continue
        if opts.node_label and opts.node_label not in labels:
            continue
        if local_nodes is not None and meta.get("name") not in local_nodes:
            continue
        ip = node_address(node, family)
        if ip and ip not in addrs:
            addrs.append(ip)
    for sp in ports:
        if not sp["nodePort"]:
            result[(sp["port"], sp["protocol"])] = []
            continue
        result[(sp["port"], sp["protocol"])] = sorted(
            ((a, sp["nodePort"]) for a in addrs), key=_sort_key)
    return result


def _sort_key(t: Target) -> tuple[int, int, int]:
    ip = ipaddress.ip_address(t[0])
    return ip.version, int(ip), t[1]
