"""kube-loxilb's cluster roles, done by the agent: one MASTER of the HA instance among the pyloxi
instances (`setRoles`), and every instance's BGP config (`setBGP`, `extBGPPeers`).

`RolePolicy` decides and does no I/O: health-check results in, who should be MASTER and which
node must be told its state out. `ClusterRoles` is the I/O around it: one round (`tick`) checks
every instance (GET /config/cistate/all, which also says the state each one holds), re-elects
when the MASTER is down, posts cistate to each node whose state differs from the wanted one, and
gives each node its BGP global config and neighbours. The agent runs a round every `period`.

Why the policy looks the way it does:
- The MASTER stays while it answers: a switch-over moves the VIPs (and BGP preference), so a
  node coming back never takes over from a working MASTER (keepalived's `nopreempt`).
- One failed check is not a failure: a node is down after `down_after` failed checks in a row,
  so one slow answer on a busy node does not flip the VIPs.
- With no MASTER chosen yet (agent start), a node that already reports MASTER is kept: a
  restarted agent does not move the VIPs. Otherwise the first healthy loxiURL wins.
- The wanted state is compared with what each node reports every round, so a node that
  restarted (or was told otherwise by someone else) is told again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from pyloxi.client import ApiError, AsyncClient

log = logging.getLogger("pyloxi.k8s")

INSTANCE = "llb-inst0"  # loxilb's default HA instance: rules without ":inst" in their name
MASTER, BACKUP = "MASTER", "BACKUP"
DOWN_AFTER = 2  # failed checks in a row before a node counts as down
PERIOD = 1.0  # seconds between rounds


class RolePolicy:
    """Who is MASTER of one HA instance, from health-check results. No I/O, no clock."""

    def __init__(self, urls: Iterable[str], down_after: int = DOWN_AFTER) -> None:
        self.urls = list(urls)
        self.down_after = down_after
        # a node not checked yet counts as down: nobody is elected before it answered
        self._fails = dict.fromkeys(self.urls, down_after)
        self.master: str | None = None

    def observe(self, url: str, ok: bool) -> None:
        self._fails[url] = 0 if ok else self._fails[url] + 1

    def healthy(self, url: str) -> bool:
        return self._fails[url] < self.down_after

    def elect(self, reported: Mapping[str, str]) -> str | None:
        """The MASTER after this round; `reported` is the state each answering node holds."""
        if self.master is not None and self.healthy(self.master):
            return self.master
        up = [u for u in self.urls if self.healthy(u)]
        already = [u for u in up if reported.get(u) == MASTER]
        candidates = already or up
        self.master = candidates[0] if candidates else None
        return self.master

    def wanted(self) -> dict[str, str]:
        """The state each healthy node should hold (down nodes are left alone)."""
        return {u: MASTER if u == self.master else BACKUP for u in self.urls if self.healthy(u)}

    def to_post(self, reported: Mapping[str, str]) -> dict[str, str]:
        """The nodes that hold another state than the wanted one, and what to tell them."""
        return {u: s for u, s in self.wanted().items() if reported.get(u) != s}


def instance_state(rows: list[dict[str, Any]], instance: str = INSTANCE) -> str:
    """The state a node holds in `instance` ("" when it has none: loxilb's NOT_DEFINED)."""
    for row in rows:
        if str(row.get("instance", "")) == instance:
            return str(row.get("state", ""))
    return ""


def _norm_ip(ip: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(ip)))
    except ValueError:
        return str(ip)


class ClusterRoles:
    """One round of role election and BGP config over every pyloxi instance."""

    def __init__(self, loxi: list[AsyncClient], *, vip: str = "", local_as: int = 0,
                 peers: list[tuple[str, int]] | None = None, bgp_period: float = 60.0,
                 down_after: int = DOWN_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.loxi = loxi
        self.roles = bool(vip)  # setRoles given
        self.vip = vip or "0.0.0.0"
        self.local_as = local_as
        self.peers = [(_norm_ip(ip), asn) for ip, asn in peers or []]
        self.bgp_period = bgp_period
        self.clock = clock
        self.policy = RolePolicy([api.base_url for api in loxi], down_after)
        self.reported: dict[str, str] = {}
        self._bgp_at: dict[str, float] = {}  # when each node last took the global config
        self._router_ids: dict[str, str] = {}
        self._said: dict[str, str] = {}  # last warning per node (said once, not every round)

    async def _check(self, api: AsyncClient) -> str | None:
        try:
            state = instance_state(await api.list_cistates())
        except ApiError as exc:
            self._warn(f"check {api.base_url}", f"{api.base_url} not answering: {exc}")
            return None
        self._said.pop(f"check {api.base_url}", None)
        return state

    def _warn(self, key: str, message: str) -> None:
        """Log a problem once (every round would say it again), until it goes away."""
        if self._said.get(key) != message:
            self._said[key] = message
            log.warning("roles: %s", message)

    async def tick(self) -> None:
        was_up = {u: self.policy.healthy(u) for u in self.policy.urls}
        states = await asyncio.gather(*(self._check(api) for api in self.loxi))
        for api, state in zip(self.loxi, states, strict=True):
            self.policy.observe(api.base_url, state is not None)
            if state is not None:
                self.reported[api.base_url] = state
            else:
                self.reported.pop(api.base_url, None)
        if self.roles:
            await self._roles(was_up)
        if self.local_as:
            for api in self.loxi:
                url = api.base_url
                if self.policy.healthy(url) and url in self.reported:
                    await self._bgp(api, came_back=not was_up[url])

    # ---- roles -------------------------------------------------------------------------------
    async def _roles(self, was_up: Mapping[str, bool]) -> None:
        before = self.policy.master
        master = self.policy.elect(self.reported)
        if master != before:
            why = ("" if before is None else
                   f" ({before} is down)" if not self.policy.healthy(before) else "")
            log.info("roles: %s elected MASTER of %s%s; was %s", master or "nobody", INSTANCE,
                     why, before or "nobody")
        for url in self.policy.urls:
            if not self.policy.healthy(url) and was_up[url]:
                log.warning("roles: %s is down (%s)", url,
                            "was MASTER" if url == before else "was BACKUP")
        by_url = {api.base_url: api for api in self.loxi}
        for url, state in self.policy.to_post(self.reported).items():
            if url not in self.reported:
                continue  # healthy by count, but this round's check failed: next round
            try:
                await by_url[url].set_cistate(INSTANCE, state, self.vip)
            except ApiError as exc:
                self._warn(f"roles {url}", f"cannot set {url} {state}: {exc}")
                continue
            log.info("roles: %s is now %s of %s (was %s)", url, state, INSTANCE,
                     self.reported[url] or "NOT_DEFINED")
            self.reported[url] = state
            self._said.pop(f"roles {url}", None)

    # ---- BGP ---------------------------------------------------------------------------------
    async def router_id(self, url: str) -> str:
        """The node's own address: the host of its loxiURL (a name is resolved, IPv4 first:
        a router id is 32 bits)."""
        if url not in self._router_ids:
            host = urlsplit(url).hostname or ""
            try:
                rid = str(ipaddress.ip_address(host))
            except ValueError:
                infos = await asyncio.get_running_loop().getaddrinfo(host, None,
                                                                     family=socket.AF_INET)
                rid = str(infos[0][4][0])
            self._router_ids[url] = rid
        return self._router_ids[url]

    async def _bgp(self, api: AsyncClient, *, came_back: bool) -> None:
        """Give one node its BGP global config and the neighbours it lacks.

        Neighbours are read back first and only the missing ones posted: a neighbour posted
        again is replaced (its session reset) by pyloxi, as by loxilb. The global config is
        posted when the node (re)appears, when it lacks neighbours (it restarted) and every
        `bgp_period`; the same config again changes nothing."""
        url = api.base_url
        now = self.clock()
        due = came_back or url not in self._bgp_at or now - self._bgp_at[url] >= self.bgp_period
        try:
            missing: list[tuple[str, int]] = []
            if self.peers:
                have = {(_norm_ip(n.get("ipAddress", "")), int(n.get("remoteAs") or 0))
                        for n in await api.list_bgp_neighbors()}
                missing = [p for p in self.peers if p not in have]
            if due or missing:
                rid = await self.router_id(url)
                await api.set_bgp_global(rid, self.local_as)
                if url not in self._bgp_at or came_back:
                    log.info("bgp: %s has global config AS %d router-id %s", url,
                             self.local_as, rid)
                self._bgp_at[url] = now
            for ip, asn in missing:
                await api.create_bgp_neighbor(ip, asn, exist_ok=True)
                log.info("bgp: %s has neighbour %s AS %d", url, ip, asn)
            self._said.pop(f"bgp {url}", None)
        except (ApiError, OSError) as exc:  # OSError: the host name does not resolve
            self._bgp_at.pop(url, None)  # try again next round
            self._warn(f"bgp {url}", f"bgp config of {url} not applied: {exc}")
