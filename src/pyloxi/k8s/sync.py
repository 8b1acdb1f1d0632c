"""One Service at a time: annotations → addresses → endpoints → rules on every instance → status.

A dual-stack Service (spec.ipFamilyPolicy PreferDualStack/RequireDualStack) gets one VIP per
family of spec.ipFamilies, each with the rules and endpoints of its family; status lists them
primary first.

`ServiceSync.sync(key)` brings one Service in line and says whether to retry; `recover()`
re-reserves after a restart the addresses Service status already holds; `sweep()` removes
managed rules that belong to no served Service. Inputs are the informers' caches; outputs are
REST calls to the pyloxi instances and status/Event writes to Kubernetes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from pyloxi.client import ApiError, AsyncClient
from pyloxi.k8s import annotations as ann
from pyloxi.k8s import backends, reconcile, status
from pyloxi.k8s.config import AgentConfig, parse_pools
from pyloxi.k8s.informer import Informer, Obj, obj_key
from pyloxi.k8s.ipam import AddressInUse, Allocation, Ipam, PoolExhausted
from pyloxi.k8s.kube import KubeClient
from pyloxi.model.lb import LoadBalancerEntry

log = logging.getLogger("pyloxi.k8s")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# Rules listed per instance during one drain of the queue (None: the instance is unreachable).
RuleCache = dict[str, list[dict[str, Any]] | None]


@dataclass
class SvcState:
    allocs: dict[int, Allocation] = field(default_factory=dict)  # family → VIP, primary first
    pending: bool = False  # waiting for an address
    last_warning: str = ""
    last_notice: str = ""
    programmed: bool = False


def instance_host(api: AsyncClient) -> str:
    return urlsplit(api.base_url).hostname or ""


class ServiceSync:
    def __init__(self, cfg: AgentConfig, kube: KubeClient, services: Informer,
                 slices: Informer, nodes: Informer, loxi: list[AsyncClient],
                 enqueue: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.kube = kube
        self.services, self.slices, self.nodes = services, slices, nodes
        self.loxi = loxi
        self.enqueue = enqueue
        self.ipam = Ipam(parse_pools(cfg.cidr_pools, 4), parse_pools(cfg.cidr6_pools, 6),
                         shared=not cfg.unique_ip)
        self.state: dict[str, SvcState] = {}

    def is_ours(self, svc: Obj) -> bool:
        spec = svc.get("spec") or {}
        if spec.get("type") != "LoadBalancer":
            return False
        cls = spec.get("loadBalancerClass")
        if cls is None:
            if not self.cfg.accept_no_class:
                return False
        elif cls != self.cfg.lb_class:
            return False
        zone = ((svc.get("metadata") or {}).get("annotations") or {}).get(ann.ZONESELECT)
        return not (zone and zone.strip() != self.cfg.zone)

    def _parse(self, svc: Obj) -> ann.ServiceOptions:
        return ann.parse(svc, self.cfg, self.ipam.pool_names(4), self.ipam.pool_names(6))

    # ---- recovery --------------------------------------------------------------------------
    def recover(self) -> None:
        """Re-reserve the addresses our Services already hold (status is the durable store)."""
        n = 0
        for key, svc in sorted(self.services.store.items(),
                               key=lambda kv: kv[1]["metadata"].get("creationTimestamp", "")):
            if not self.is_ours(svc):
                continue
            try:
                opts: ann.ServiceOptions | None = self._parse(svc)
            except ann.AnnotationError:
                opts = None
            ports = backends.port_set(svc)
            for ip in status.status_ips(svc):  # one address per family (dual-stack: two)
                fam = ipaddress.ip_address(ip).version
                if opts is not None and fam not in opts.vip_families:
                    continue
                if self.ipam.get(key, fam) is not None:
                    continue
                static = opts is not None and opts.static_ip == ip
                if not static and self.ipam.pool_of(ip) is None:
                    continue
                try:
                    alloc = self.ipam.reserve(key, ip, ports)
                except AddressInUse as exc:
                    log.warning("%s: cannot recover %s: %s", key, ip, exc)
                    continue
                self.state.setdefault(key, SvcState()).allocs[fam] = alloc
                n += 1
        log.info("recovered %d address(es) from Service status", n)

    # ---- one Service -------------------------------------------------------------------------
    async def _rules(self, api: AsyncClient, cache: RuleCache) -> list[dict[str, Any]] | None:
        if api.base_url not in cache:
            try:
                cache[api.base_url] = await api.list_loadbalancers()
            except ApiError as exc:
                log.warning("pyloxi %s unreachable: %s", api.base_url, exc)
                cache[api.base_url] = None
        return cache[api.base_url]

    async def sync(self, key: str, cache: RuleCache) -> bool:
        """Bring one Service's rules, address(es) and status in line. False: retry later."""
        svc = self.services.store.get(key)
        if svc is None or not self.is_ours(svc):
            return await self._relinquish(key, svc, cache)
        st = self.state.setdefault(key, SvcState())
        try:
            opts = self._parse(svc)
        except ann.AnnotationError as exc:
            await self._warn(svc, st, "InvalidAnnotation", f"not applied: {exc}")
            return True  # nothing changes until the Service is fixed
        ports = backends.port_set(svc)
        families = list(opts.vip_families)
        if opts.dual_stack:
            families, missing = self._pooled(opts)
            if missing and (opts.policy == ann.REQUIRE_DUAL_STACK or not families):
                await self._unserve(svc, key, st, cache, "SyncFailed",
                                    f"{opts.policy}: {'; '.join(missing)}; no address "
                                    "allocated", pending=False)
                return True  # the pools are the agent's flags: nothing to wait for
            if missing:
                served = " and ".join(f"IPv{f}" for f in families)
                await self._notice(svc, st, "ServedSingleStack",
                                   f"{opts.policy}: {'; '.join(missing)}; serving {served} only")
            else:
                st.last_notice = ""
        allocs: dict[int, Allocation] = {}
        failed: list[str] = []
        for fam in families:
            try:
                allocs[fam] = self._allocate(key, fam, opts, ports)
            except (PoolExhausted, AddressInUse) as exc:
                failed.append(str(exc))
                self._release(key, fam)
        if failed and (opts.policy == ann.REQUIRE_DUAL_STACK or not allocs):
            # nothing half-applied: an address of the other family is not kept either
            await self._unserve(svc, key, st, cache, "AllocationFailed",
                                f"no load-balancer address: {'; '.join(failed)}", pending=True)
            return True  # retried when an address is freed, and at every resync
        for fam in list(self.ipam.of(key)):
            if fam not in allocs:  # e.g. dual-stack → single-stack: its rules go below
                self._release(key, fam)
        st.allocs, st.pending = allocs, bool(failed)
        errors: list[str] = []
        spec = svc.get("spec") or {}
        vips: dict[int, list[str]] = {}
        eps: dict[int, dict[tuple[int, str], list[tuple[str, int]]]] = {}
        for fam, alloc in allocs.items():
            vips[fam] = [alloc.ip]
            for ext in spec.get("externalIPs") or []:
                with contextlib.suppress(ValueError):
                    ip = str(ipaddress.ip_address(ext))
                    if ipaddress.ip_address(ip).version == fam and ip not in vips[fam]:
                        vips[fam].append(ip)
            eps[fam] = backends.endpoints(svc, opts, list(self.nodes.store.values()),
                                          self._slices_of(key), opts.endpoint_family_for(fam))
        sources = [str(s) for s in spec.get("loadBalancerSourceRanges") or []]
        ns, name = key.split("/", 1)
        rname = reconcile.rule_name(ns, name)
        reached = 0
        for api in self.loxi:
            current = await self._rules(api, cache)
            if current is None:
                errors.append(f"{api.base_url} unreachable")
                continue
            reached += 1
            desired: dict[reconcile.RuleKey, LoadBalancerEntry] = {}
            try:
                for fam in allocs:
                    desired.update(reconcile.build_rules(ns, name, opts, vips[fam], eps[fam],
                                                         sources, instance_host(api)))
            except ValidationError as exc:  # e.g. a source range no rule can carry
                errors.append(f"rules not built: {exc.errors()[0]['msg']}")
                continue  # the rules already there stay as they are
            res = await reconcile.apply_service(api, rname, desired, current)
            errors.extend(res.errors)
            if res.created or res.deleted:
                log.info("%s: %d rule(s) written, %d removed on %s", key, res.created,
                         res.deleted, api.base_url)
        if failed:
            # PreferDualStack with one family short of addresses: the rest is served, and the
            # Service waits (pending) for an address of that family to come free
            short = f"no load-balancer address: {'; '.join(failed)}"
            await self._warn(svc, st, "SyncFailed" if errors else "AllocationFailed",
                             "; ".join([short, *errors]))
        elif errors:
            await self._warn(svc, st, "SyncFailed", "; ".join(errors))
        else:
            st.last_warning = ""
        st.programmed = reached > 0
        await self._write_status(svc, [a.ip for a in allocs.values()])
        return reached > 0 and not errors

    def _pooled(self, opts: ann.ServiceOptions) -> tuple[list[int], list[str]]:
        """A dual-stack Service's families that have a pool (or its staticIP), in order, and
        what the others lack."""
        static = ipaddress.ip_address(opts.static_ip).version if opts.static_ip else 0
        ok: list[int] = []
        missing: list[str] = []
        for fam in opts.vip_families:
            if fam == static or opts.pool in self.ipam.pool_names(fam):
                ok.append(fam)
            else:
                flag = "--cidrPools" if fam == 4 else "--cidr6Pools"
                missing.append(f"no IPv{fam} pool {opts.pool!r} ({flag})")
        return ok, missing

    async def _unserve(self, svc: Obj, key: str, st: SvcState, cache: RuleCache, reason: str,
                       message: str, *, pending: bool) -> None:
        """The Service cannot be served: no address of any family, no rule, empty status."""
        had = bool(st.allocs) or bool(self.ipam.of(key))
        st.allocs, st.pending = {}, pending
        self._release(key)
        await self._warn(svc, st, reason, message)
        if had:
            await self._delete_rules(key, cache)
        await self._write_status(svc, [])

    def _release(self, key: str, family: int | None = None) -> list[Allocation]:
        """Free a Service's address(es); Services waiting for an address are retried."""
        freed = self.ipam.release(key, family)
        if freed:
            for k, s in self.state.items():
                if s.pending and k != key:
                    self.enqueue(k)
        return freed

    def _allocate(self, key: str, family: int, opts: ann.ServiceOptions,
                  ports: frozenset[tuple[int, str]]) -> Allocation:
        cur = self.ipam.get(key, family)
        if opts.static_ip and ipaddress.ip_address(opts.static_ip).version == family:
            if cur and cur.ip == opts.static_ip and cur.ports == ports:
                return cur
            return self.ipam.reserve(key, opts.static_ip, ports)
        if cur and cur.pool is None:
            self.ipam.release(key, family)  # staticIP was removed: back to the pool
        return self.ipam.allocate(key, family, opts.pool, ports)

    def _slices_of(self, key: str) -> list[Obj]:
        ns, name = key.split("/", 1)
        return [s for s in self.slices.store.values()
                if s["metadata"].get("namespace") == ns
                and (s["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) == name]

    async def _delete_rules(self, key: str, cache: RuleCache) -> bool:
        ns, name = key.split("/", 1)
        ok = True
        for api in self.loxi:
            current = await self._rules(api, cache)
            if current is None:
                ok = False
                continue
            res = await reconcile.apply_service(api, reconcile.rule_name(ns, name), {},
                                                current)
            ok = ok and not res.errors
        return ok

    async def _relinquish(self, key: str, svc: Obj | None, cache: RuleCache) -> bool:
        st = self.state.pop(key, None)
        freed = self._release(key)  # an address came free: the waiting ones are retried
        ok = True
        if st is not None or freed:
            ok = await self._delete_rules(key, cache)
            log.info("%s: no longer served; address(es) %s freed", key,
                     ", ".join(a.ip for a in freed) or "-")
            if svc is not None and status.status_ips(svc):
                await self._write_status(svc, [])
        if not ok:
            # rules of a gone Service: the orphan sweep of the resync removes them later
            log.warning("%s: could not remove every rule yet", key)
        return True

    # ---- Kubernetes writes -----------------------------------------------------------------
    async def _write_status(self, svc: Obj, ips: list[str]) -> None:
        want = status.ingress(ips, self.cfg.zone, self.cfg.zone_name_status)
        updated = await status.write_status(self.kube, svc, want)
        if updated is not None:
            # keep the cache current so the next sync does not write again
            self.services.store[obj_key(updated)] = updated

    async def _notice(self, svc: Obj, st: SvcState, reason: str, message: str) -> None:
        """A Normal Event (nothing is wrong), said once per message like the warnings."""
        if st.last_notice == f"{reason}:{message}":
            return
        st.last_notice = f"{reason}:{message}"
        log.info("%s: %s: %s", obj_key(svc), reason, message)
        await status.record_event(self.kube, svc, reason, message, type_="Normal")

    async def _warn(self, svc: Obj, st: SvcState, reason: str, message: str) -> None:
        if st.last_warning == f"{reason}:{message}":
            return  # already said; kube-loxilb-style event storms help nobody
        st.last_warning = f"{reason}:{message}"
        log.warning("%s: %s: %s", obj_key(svc), reason, message)
        await status.record_event(self.kube, svc, reason, message)

    # ---- every Service -----------------------------------------------------------------------
    async def sweep(self) -> None:
        """Remove managed rules that belong to no Service this agent serves."""
        owned = set()
        for key, svc in self.services.store.items():
            if self.is_ours(svc):
                ns, name = key.split("/", 1)
                owned.add(reconcile.rule_name(ns, name))
        for api in self.loxi:
            try:
                current = await api.list_loadbalancers()
            except ApiError as exc:
                log.warning("resync: %s unreachable: %s", api.base_url, exc)
                continue
            await reconcile.remove_orphans(api, owned, current)
