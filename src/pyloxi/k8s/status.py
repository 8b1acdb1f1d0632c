"""What the agent writes to Kubernetes: status.loadBalancer.ingress and Events.

Service status is also the agent's durable store: after a restart the addresses are read back
from it (`status_ips`), in either form the agent (or kube-loxilb) writes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import uuid

import httpx

from pyloxi.k8s.informer import Obj, obj_key
from pyloxi.k8s.kube import KubeClient, KubeError

log = logging.getLogger("pyloxi.k8s")
COMPONENT = "pyloxi-kube-agent"
STATUS_ATTEMPTS = 5


def ingress(ips: list[str], zone: str, zone_name_status: bool) -> list[dict[str, str]]:
    """status.loadBalancer.ingress for these addresses (kube-loxilb's `<zone>-<ip>` if asked)."""
    if zone_name_status:
        return [{"hostname": f"{zone}-{ip.replace(':', '-')}"} for ip in ips]
    return [{"ip": ip} for ip in ips]


def ip_from_hostname(hostname: str) -> str | None:
    """kube-loxilb writes `<zone>-<ip>` (IPv6 ':' as '-'); read it back."""
    if "-" not in hostname:
        return None
    rest = hostname.split("-", 1)[1]
    for cand in (rest, rest.replace("-", ":")):
        try:
            return str(ipaddress.ip_address(cand))
        except ValueError:
            continue
    return None


def status_ips(svc: Obj) -> list[str]:
    out = []
    for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        ip = ing.get("ip") or ip_from_hostname(ing.get("hostname") or "")
        if ip:
            out.append(str(ip))
    return out


async def write_status(kube: KubeClient, svc: Obj, want: list[dict[str, str]]) -> Obj | None:
    """Make the Service's ingress `want`; the updated Service, or None if nothing was written.

    A 409 (someone wrote the Service since we read it) re-reads it and tries again.
    """
    meta = svc["metadata"]
    path = f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}/status"
    obj = svc
    for _ in range(STATUS_ATTEMPTS):
        have = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if [{k: v for k, v in i.items() if k in ("ip", "hostname")} for i in have] == want:
            return None
        body = dict(obj)
        body["status"] = dict(obj.get("status") or {})
        body["status"]["loadBalancer"] = {"ingress": want} if want else {}
        try:
            updated: Obj = await kube.request("PUT", path, body=body)
            return updated
        except KubeError as exc:
            if exc.status == 409:
                obj = await kube.request("GET", path.rsplit("/", 1)[0])
                continue
            if exc.status == 404:
                return None
            raise
    log.warning("%s/%s: status update kept conflicting", meta["namespace"], meta["name"])
    return None


async def record_event(kube: KubeClient, svc: Obj, reason: str, message: str,
                       type_: str = "Warning") -> None:
    """An Event on the Service; failing to record one is logged, never raised."""
    meta = svc["metadata"]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ev = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                     "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": "v1", "kind": "Service",
                           "namespace": meta["namespace"], "name": meta["name"],
                           "uid": meta.get("uid", ""),
                           "resourceVersion": meta.get("resourceVersion", "")},
        "reason": reason, "message": message[:1024], "type": type_,
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }
    try:
        await kube.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=ev)
    except (KubeError, httpx.HTTPError) as exc:
        log.warning("could not record event %s on %s: %s", reason, obj_key(svc), exc)
