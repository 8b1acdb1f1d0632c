"""`pyloxi kube-agent`: Services of type LoadBalancer served by pyloxi instances.

Watches Services, EndpointSlices and Nodes (list+watch informers); every change that can touch a
Service queues that Service; one worker syncs queued Services one at a time:

    annotations → VIP (pool / staticIP, recovered from status after a restart) → endpoints →
    rules on every pyloxi instance → status.loadBalancer.ingress (through /status)

A periodic resync re-queues every Service and removes managed rules that belong to no Service,
so rules lost by a restarted pyloxi come back and rules of Services deleted while the agent was
down go away.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import signal
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from pyloxi.k8s import annotations, backends, reconcile
from pyloxi.k8s.client import LoxiClient, LoxiError
from pyloxi.k8s.config import AgentConfig, ConfigError, parse_args, parse_pools
from pyloxi.k8s.ipam import AddressInUse, Allocation, Ipam, PoolExhausted
from pyloxi.k8s.watch import Informer, KubeClient, KubeError, cancel_all, obj_key

log = logging.getLogger("pyloxi.k8s")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
COMPONENT = "pyloxi-kube-agent"


@dataclass
class SvcState:
    alloc: Allocation | None = None
    pending: bool = False  # waiting for an address
    last_warning: str = ""
    programmed: bool = False


@dataclass
class Stats:
    syncs: int = 0
    resyncs: int = 0
    errors: list[str] = field(default_factory=list)


class Agent:
    def __init__(self, cfg: AgentConfig, kube: KubeClient) -> None:
        self.cfg = cfg
        self.kube = kube
        self.ipam = Ipam(parse_pools(cfg.cidr_pools, 4), parse_pools(cfg.cidr6_pools, 6),
                         shared=not cfg.unique_ip)
        self.state: dict[str, SvcState] = {}
        self.stats = Stats()
        self._queue: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._retries: dict[str, int] = {}
        self._http: aiohttp.ClientSession | None = None
        self.loxi: list[LoxiClient] = []
        self._healthy: dict[str, bool] = {}
        self.ready = asyncio.Event()
        wt = cfg.watch_timeout
        self.services = Informer(kube, "Service", "/api/v1/services", self._on_event,
                                 watch_timeout=wt)
        self.slices = Informer(kube, "EndpointSlice",
                               "/apis/discovery.k8s.io/v1/endpointslices", self._on_event,
                               label_selector=SERVICE_NAME_LABEL, watch_timeout=wt)
        self.nodes = Informer(kube, "Node", "/api/v1/nodes", self._on_event, watch_timeout=wt)

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        self.loxi = [LoxiClient(u, self._http, self.cfg.loxi_timeout) for u in self.cfg.loxi_urls]
        for inf in (self.services, self.slices, self.nodes):
            self._tasks.append(asyncio.create_task(inf.run(), name=f"watch-{inf.kind}"))
        await asyncio.gather(self.services.synced.wait(), self.slices.synced.wait(),
                             self.nodes.synced.wait())
        self.recover()
        for key in list(self.services.store):
            self.enqueue(key)
        self._tasks.append(asyncio.create_task(self._worker(), name="worker"))
        self._tasks.append(asyncio.create_task(self._resync_loop(), name="resync"))
        self._tasks.append(asyncio.create_task(self._health_loop(), name="health"))
        self.ready.set()
        log.info("kube-agent started: %d Services, %d pyloxi instance(s)",
                 len(self.services.store), len(self.loxi))

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        self._tasks.clear()
        if self._http is not None:
            await self._http.close()
        await self.kube.close()

    async def idle(self, timeout: float = 10) -> None:
        """Wait until the queue is drained (tests)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._queue or self._busy:
            if loop.time() > end:
                raise TimeoutError(f"agent still busy: {list(self._queue)}")
            await asyncio.sleep(0.02)

    _busy = False

    # ---- events → queue --------------------------------------------------------------------
    def enqueue(self, key: str) -> None:
        self._queue[key] = None
        self._wake.set()

    def _on_event(self, kind: str, old: dict | None, new: dict | None) -> None:
        obj = new or old or {}
        if kind == "Service":
            self.enqueue(obj_key(obj))
        elif kind == "EndpointSlice":
            meta = obj.get("metadata") or {}
            svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if svc:
                self.enqueue(f"{meta.get('namespace')}/{svc}")
        elif kind == "Node":
            if old is not None and new is not None and _node_view(old) == _node_view(new):
                return  # heartbeats: nothing a rule depends on changed
            for key, svc in self.services.store.items():
                if self.is_ours(svc):
                    self.enqueue(key)

    def is_ours(self, svc: dict[str, Any]) -> bool:
        spec = svc.get("spec") or {}
        if spec.get("type") != "LoadBalancer":
            return False
        cls = spec.get("loadBalancerClass")
        if cls is None:
            if not self.cfg.accept_no_class:
                return False
        elif cls != self.cfg.lb_class:
            return False
        zone = ((svc.get("metadata") or {}).get("annotations") or {}).get(annotations.ZONESELECT)
        return not (zone and zone.strip() != self.cfg.zone)

    # ---- recovery --------------------------------------------------------------------------
    def status_ips(self, svc: dict[str, Any]) -> list[str]:
        out = []
        for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            ip = ing.get("ip") or _ip_from_hostname(ing.get("hostname") or "")
            if ip:
                out.append(ip)
        return out

    def recover(self) -> None:
        """Re-reserve the addresses our Services already hold (status is the durable store)."""
        n = 0
        for key, svc in sorted(self.services.store.items(),
                               key=lambda kv: kv[1]["metadata"].get("creationTimestamp", "")):
            if not self.is_ours(svc):
                continue
            try:
                opts = self._parse(svc)
            except annotations.AnnotationError:
                opts = None
            ports = backends.port_set(svc)
            for ip in self.status_ips(svc):
                if opts is not None and ipaddress.ip_address(ip).version != opts.vip_family:
                    continue
                static = opts is not None and opts.static_ip == ip
                if not static and self.ipam.pool_of(ip) is None:
                    continue
                try:
                    alloc = self.ipam.reserve(key, ip, ports)
                except AddressInUse as exc:
                    log.warning("%s: cannot recover %s: %s", key, ip, exc)
                    continue
                self.state.setdefault(key, SvcState()).alloc = alloc
                n += 1
                break
        log.info("recovered %d address(es) from Service status", n)

    # ---- worker ----------------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._busy = True
            try:
                cache: dict[str, list[dict[str, Any]] | None] = {}
                while self._queue:
                    key = next(iter(self._queue))
                    del self._queue[key]
                    try:
                        ok = await self.sync(key, cache)
                    except Exception as exc:  # never let one Service stop the agent
                        log.exception("sync %s failed", key)
                        self.stats.errors.append(f"{key}: {exc}")
                        ok = False
                    if ok:
                        self._retries.pop(key, None)
                    else:
                        self._retry_later(key)
            finally:
                self._busy = False

    def _retry_later(self, key: str) -> None:
        n = self._retries.get(key, 0) + 1
        self._retries[key] = n
        delay = min(0.5 * 2 ** (n - 1), 60.0)
        asyncio.get_running_loop().call_later(delay, self.enqueue, key)

    async def _rules(self, client: LoxiClient,
                     cache: dict[str, list[dict[str, Any]] | None]) -> list[dict] | None:
        if client.url not in cache:
            try:
                cache[client.url] = await client.list_rules()
            except LoxiError as exc:
                log.warning("pyloxi %s unreachable: %s", client.url, exc)
                cache[client.url] = None
        return cache[client.url]

    def _parse(self, svc: dict[str, Any]) -> annotations.ServiceOptions:
        return annotations.parse(svc, self.cfg, self.ipam.pool_names(4), self.ipam.pool_names(6))

    async def sync(self, key: str, cache: dict[str, list[dict[str, Any]] | None]) -> bool:
        """Bring one Service's rules, address and status in line. False: retry later."""
        self.stats.syncs += 1
        svc = self.services.store.get(key)
        if svc is None or not self.is_ours(svc):
            return await self._relinquish(key, svc, cache)
        st = self.state.setdefault(key, SvcState())
        try:
            opts = self._parse(svc)
        except annotations.AnnotationError as exc:
            await self._warn(svc, st, "InvalidAnnotation", f"not applied: {exc}")
            return True  # nothing changes until the Service is fixed
        ports = backends.port_set(svc)
        try:
            alloc = self._allocate(key, opts, ports)
        except (PoolExhausted, AddressInUse) as exc:
            had = st.alloc is not None
            st.alloc, st.pending = None, True
            self.ipam.release(key)
            await self._warn(svc, st, "AllocationFailed", f"no load-balancer address: {exc}")
            if had:
                await self._delete_rules(key, cache)
            await self._write_status(svc, [])
            return True  # retried when an address is freed, and at every resync
        st.alloc, st.pending = alloc, False
        spec = svc.get("spec") or {}
        vips = [alloc.ip]
        for ext in spec.get("externalIPs") or []:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(ext).version == opts.vip_family and ext not in vips:
                    vips.append(str(ipaddress.ip_address(ext)))
        eps = backends.endpoints(svc, opts, list(self.nodes.store.values()),
                                 self._slices_of(key))
        sources = [str(s) for s in spec.get("loadBalancerSourceRanges") or []]
        ns, name = key.split("/", 1)
        rname = reconcile.rule_name(ns, name)
        errors: list[str] = []
        reached = 0
        for client in self.loxi:
            current = await self._rules(client, cache)
            if current is None:
                errors.append(f"{client.url} unreachable")
                continue
            reached += 1
            desired = reconcile.build_rules(ns, name, opts, vips, eps, sources, client.host)
            res = await reconcile.apply_service(client, rname, desired, current)
            errors.extend(res.errors)
            if res.created or res.deleted:
                log.info("%s: %d rule(s) written, %d removed on %s", key, res.created,
                         res.deleted, client.url)
        if errors:
            await self._warn(svc, st, "SyncFailed", "; ".join(errors))
        else:
            st.last_warning = ""
        st.programmed = reached > 0
        await self._write_status(svc, [alloc.ip])
        return reached > 0 and not errors

    def _allocate(self, key: str, opts: annotations.ServiceOptions,
                  ports: frozenset[tuple[int, str]]) -> Allocation:
        cur = self.ipam.get(key)
        if opts.static_ip:
            if cur and cur.ip == opts.static_ip and cur.ports == ports:
                return cur
            return self.ipam.reserve(key, opts.static_ip, ports)
        if cur and cur.pool is None:
            self.ipam.release(key)  # staticIP was removed: back to the pool
        return self.ipam.allocate(key, opts.vip_family, opts.pool, ports)

    def _slices_of(self, key: str) -> list[dict[str, Any]]:
        ns, name = key.split("/", 1)
        return [s for s in self.slices.store.values()
                if s["metadata"].get("namespace") == ns
                and (s["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) == name]

    async def _delete_rules(self, key: str, cache: dict[str, list[dict] | None]) -> bool:
        ns, name = key.split("/", 1)
        ok = True
        for client in self.loxi:
            current = await self._rules(client, cache)
            if current is None:
                ok = False
                continue
            res = await reconcile.apply_service(client, reconcile.rule_name(ns, name), {},
                                                current)
            ok = ok and not res.errors
        return ok

    async def _relinquish(self, key: str, svc: dict[str, Any] | None,
                          cache: dict[str, list[dict] | None]) -> bool:
        st = self.state.pop(key, None)
        freed = self.ipam.release(key)
        ok = True
        if st is not None or freed is not None:
            ok = await self._delete_rules(key, cache)
            log.info("%s: no longer served; address %s freed", key,
                     freed.ip if freed else "-")
            if svc is not None and self.status_ips(svc):
                await self._write_status(svc, [])
        if freed is not None:
            for k, s in self.state.items():  # an address came free: retry the waiting ones
                if s.pending:
                    self.enqueue(k)
        if not ok:
            # rules of a gone Service: the orphan sweep of the resync removes them later
            log.warning("%s: could not remove every rule yet", key)
        return True

    # ---- Kubernetes writes -----------------------------------------------------------------
    def _ingress(self, ips: list[str]) -> list[dict[str, str]]:
        if self.cfg.zone_name_status:
            return [{"hostname": f"{self.cfg.zone}-{ip.replace(':', '-')}"} for ip in ips]
        return [{"ip": ip} for ip in ips]

    async def _write_status(self, svc: dict[str, Any], ips: list[str]) -> None:
        want = self._ingress(ips)
        meta = svc["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}/status"
        obj = svc
        for _ in range(5):
            have = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if [{k: v for k, v in i.items() if k in ("ip", "hostname")} for i in have] == want:
                return
            body = dict(obj)
            body["status"] = dict(obj.get("status") or {})
            body["status"]["loadBalancer"] = {"ingress": want} if want else {}
            try:
                updated = await self.kube.request("PUT", path, body=body)
                # keep the cache current so the next sync does not write again
                self.services.store[obj_key(updated)] = updated
                return
            except KubeError as exc:
                if exc.status == 409:
                    obj = await self.kube.request("GET", path.rsplit("/", 1)[0])
                    continue
                if exc.status == 404:
                    return
                raise
        log.warning("%s/%s: status update kept conflicting", meta["namespace"], meta["name"])

    async def _warn(self, svc: dict[str, Any], st: SvcState, reason: str, message: str) -> None:
        if st.last_warning == f"{reason}:{message}":
            return  # already said; kube-loxilb-style event storms help nobody
        st.last_warning = f"{reason}:{message}"
        log.warning("%s: %s: %s", obj_key(svc), reason, message)
        await self.event(svc, reason, message)

    async def event(self, svc: dict[str, Any], reason: str, message: str,
                    type_: str = "Warning") -> None:
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
            await self.kube.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events",
                                    body=ev)
        except (KubeError, aiohttp.ClientError) as exc:
            log.warning("could not record event %s on %s: %s", reason, obj_key(svc), exc)

    # ---- periodic work ---------------------------------------------------------------------
    async def full_reconcile(self) -> None:
        """Re-queue every Service and sweep rules that belong to no served Service."""
        self.stats.resyncs += 1
        owned = set()
        for key, svc in self.services.store.items():
            if self.is_ours(svc):
                ns, name = key.split("/", 1)
                owned.add(reconcile.rule_name(ns, name))
        for client in self.loxi:
            try:
                current = await client.list_rules()
            except LoxiError as exc:
                log.warning("resync: %s unreachable: %s", client.url, exc)
                continue
            await reconcile.remove_orphans(client, owned, current)
        for key in list(self.services.store):
            self.enqueue(key)
        for key in list(self.state):
            if key not in self.services.store:
                self.enqueue(key)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.resync_period)
            try:
                await self.full_reconcile()
            except Exception:
                log.exception("resync failed")

    async def _health_loop(self) -> None:
        """A pyloxi instance that comes (back) alive gets every rule re-pushed at once."""
        while True:
            for client in self.loxi:
                alive = await client.healthy()
                if alive and self._healthy.get(client.url) is False:
                    log.info("pyloxi %s is back: resyncing", client.url)
                    await self.full_reconcile()
                self._healthy[client.url] = alive
            await asyncio.sleep(min(2.0, self.cfg.resync_period))


def _node_view(node: dict[str, Any]) -> tuple:
    return (backends.node_ready(node), repr((node.get("status") or {}).get("addresses")),
            repr((node.get("metadata") or {}).get("labels")))


def _ip_from_hostname(hostname: str) -> str | None:
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


async def run(cfg: AgentConfig, stop: asyncio.Event | None = None) -> None:
    kube = await KubeClient.from_kubeconfig(cfg.kubeconfig)
    agent = Agent(cfg, kube)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await agent.start()
        await stop.wait()
    finally:
        await agent.stop()


def main(argv: list[str]) -> int:
    try:
        cfg = parse_args(argv)
    except ConfigError as exc:
        print(f"pyloxi kube-agent: {exc}")
        return 2
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(cfg))
    return 0
