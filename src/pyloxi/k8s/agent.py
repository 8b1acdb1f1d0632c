"""`pyloxi kube-agent`: Services of type LoadBalancer served by pyloxi instances.

The wiring: informers (Services, EndpointSlices, Nodes) turn every change that can touch a
Service into a queued Service key; one worker syncs queued Services one at a time (`sync`), with
backoff for those that fail. A periodic resync re-queues every Service and sweeps managed rules
that belong to no Service, so rules lost by a restarted pyloxi come back and rules of Services
deleted while the agent was down go away; an instance that comes back triggers that at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from pyloxi.client import ApiError, AsyncClient
from pyloxi.k8s import backends
from pyloxi.k8s.config import AgentConfig, ConfigError, loxi_token, parse_args, parse_peers
from pyloxi.k8s.informer import Informer, Obj, cancel_all, obj_key
from pyloxi.k8s.kube import KubeClient
from pyloxi.k8s.roles import PERIOD, ClusterRoles
from pyloxi.k8s.sync import SERVICE_NAME_LABEL, RuleCache, ServiceSync

log = logging.getLogger("pyloxi.k8s")


async def healthy(api: AsyncClient) -> bool:
    for path in ("/version", ""):  # pyloxi serves /version; loxilb answers the base path
        try:
            await api.get(path)
            return True
        except ApiError:
            continue
    return False


def _node_view(node: Obj) -> tuple[bool, str, str]:
    """What of a Node a rule depends on (heartbeats change the rest)."""
    return (backends.node_ready(node), repr((node.get("status") or {}).get("addresses")),
            repr((node.get("metadata") or {}).get("labels")))


def loxi_clients(cfg: AgentConfig) -> list[AsyncClient]:
    """A client of each pyloxi instance, with the token and CA of a secured API."""
    token = loxi_token(cfg)
    return [AsyncClient(u, timeout=cfg.loxi_timeout, token=token,
                        ca_file=cfg.loxi_ca_cert or None) for u in cfg.loxi_urls]


class Agent:
    def __init__(self, cfg: AgentConfig, kube: KubeClient) -> None:
        self.cfg = cfg
        self.kube = kube
        self.loxi: list[AsyncClient] = []
        self._queue: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._busy = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._retries: dict[str, int] = {}
        self._healthy: dict[str, bool] = {}
        self.ready = asyncio.Event()
        wt = cfg.watch_timeout
        self.services = Informer(kube, "Service", "/api/v1/services", self._on_event,
                                 watch_timeout=wt)
        self.slices = Informer(kube, "EndpointSlice",
                               "/apis/discovery.k8s.io/v1/endpointslices", self._on_event,
                               label_selector=SERVICE_NAME_LABEL, watch_timeout=wt)
        self.nodes = Informer(kube, "Node", "/api/v1/nodes", self._on_event, watch_timeout=wt)
        self.syncer = ServiceSync(cfg, kube, self.services, self.slices, self.nodes, self.loxi,
                                self.enqueue)
        self.ipam = self.syncer.ipam
        self.state = self.syncer.state
        self.roles: ClusterRoles | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self.loxi.extend(loxi_clients(self.cfg))
        if self.cfg.set_roles or self.cfg.set_bgp:
            # roles and BGP need nothing from Kubernetes: they start before the informers sync
            self.roles = ClusterRoles(self.loxi, vip=self.cfg.set_roles,
                                      local_as=self.cfg.set_bgp,
                                      peers=parse_peers(self.cfg.ext_bgp_peers),
                                      bgp_period=self.cfg.resync_period)
            self._tasks.append(asyncio.create_task(self._roles_loop(), name="roles"))
        for inf in (self.services, self.slices, self.nodes):
            self._tasks.append(asyncio.create_task(inf.run(), name=f"watch-{inf.kind}"))
        await asyncio.gather(self.services.synced.wait(), self.slices.synced.wait(),
                             self.nodes.synced.wait())
        self.syncer.recover()
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
        for api in self.loxi:
            await api.aclose()
        await self.kube.close()

    async def idle(self, timeout: float = 10) -> None:
        """Wait until the queue is drained (tests)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._queue or self._busy:
            if loop.time() > end:
                raise TimeoutError(f"agent still busy: {list(self._queue)}")
            await asyncio.sleep(0.02)

    # ---- events → queue --------------------------------------------------------------------
    def enqueue(self, key: str) -> None:
        self._queue[key] = None
        self._wake.set()

    def _on_event(self, kind: str, old: Obj | None, new: Obj | None) -> None:
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
                return
            for key, svc in self.services.store.items():
                if self.syncer.is_ours(svc):
                    self.enqueue(key)

    # ---- worker ----------------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._busy = True
            try:
                cache: RuleCache = {}
                while self._queue:
                    key = next(iter(self._queue))
                    del self._queue[key]
                    try:
                        ok = await self.syncer.sync(key, cache)
                    except Exception:  # never let one Service stop the agent
                        log.exception("sync %s failed", key)
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

    # ---- periodic work ---------------------------------------------------------------------
    async def full_reconcile(self) -> None:
        """Re-queue every Service and sweep rules that belong to no served Service."""
        await self.syncer.sweep()
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

    async def _roles_loop(self) -> None:
        """setRoles / setBGP: one round of checks, election and config every PERIOD."""
        assert self.roles is not None
        while True:
            try:
                await self.roles.tick()
            except Exception:  # a bug in one round must not end role keeping
                log.exception("roles round failed")
            await asyncio.sleep(PERIOD)

    async def _health_loop(self) -> None:
        """A pyloxi instance that comes (back) alive gets every rule re-pushed at once."""
        while True:
            for api in list(self.loxi):
                alive = await healthy(api)
                if alive and self._healthy.get(api.base_url) is False:
                    log.info("pyloxi %s is back: resyncing", api.base_url)
                    await self.full_reconcile()
                self._healthy[api.base_url] = alive
            await asyncio.sleep(min(2.0, self.cfg.resync_period))


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
