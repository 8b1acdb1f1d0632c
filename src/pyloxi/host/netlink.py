"""Host plumbing through netlink (pyroute2): what the datapath relies on the kernel for."""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pyloxi.host import arp, ndp

log = logging.getLogger(__name__)
T = TypeVar("T")

# The datapath takes NAT source ports from 49152-65535; the host's own connections (probes,
# API clients) then use the range below, so a translated flow never shadows one of them.
HOST_EPHEMERAL_PORTS = "32768 49151"


class _Netlink:
    """One IPRoute socket owned by one worker thread: pyroute2's sync API runs an asyncio loop
    of its own and may not be called from a thread whose loop is running (the daemon's)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")
        self._ipr: IPRoute | None = None

    def call(self, fn: Callable[[IPRoute], T]) -> T:
        def run() -> T:
            if self._ipr is None:
                self._ipr = IPRoute()
            return fn(self._ipr)

        return self._pool.submit(run).result()


_NL = _Netlink()


def default_interfaces() -> list[str]:
    """Every interface of this network namespace except loopback."""
    links = _NL.call(lambda ipr: [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()])
    return sorted(name for name in links if name != "lo")


def _route_source(dst: str, *, routed_only: bool) -> str | None:
    """The preferred source of the route to dst (`routed_only`: only when that route has a
    gateway), or None."""

    def get(ipr: IPRoute) -> str | None:
        try:
            routes = ipr.route("get", dst=dst)
        except NetlinkError:
            return None
        for r in routes:
            src = r.get_attr("RTA_PREFSRC")
            if src and (r.get_attr("RTA_GATEWAY") or not routed_only):
                return str(src)
        return None

    return _NL.call(get)


def source_address(dst: str) -> str | None:
    """The address this host would use to reach dst (onearm SNAT), or None if unroutable."""
    return _route_source(dst, routed_only=False)


def tunnel_source(dst: str) -> str | None:
    """The address this host would send from to reach dst when dst is NOT on-link (its route
    has a gateway: L3 DSR reaches it over IPIP from that address); None when it is on-link or
    unroutable."""
    return _route_source(dst, routed_only=True)


def _sysctl(key: str, value: str) -> None:
    proc = subprocess.run(["sysctl", "-qw", f"{key}={value}"], capture_output=True, text=True)
    if proc.returncode != 0:
        log.warning("sysctl %s=%s failed: %s", key, value, proc.stderr.strip())


def prepare_host(interfaces: list[str], *, ipv6: bool = False) -> None:
    """Sysctls a routing load balancer needs (logged, so nothing changes silently). With
    `ipv6`, also what v6 VIPs need on the interfaces (ndp.prepare_ipv6); VipPlumber does that
    itself at the first v6 VIP, so a host without v6 VIPs keeps its IPv6 settings."""
    settings = [("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.ip_local_port_range", HOST_EPHEMERAL_PORTS)]
    settings += [(f"net.ipv4.conf.{i}.rp_filter", "0") for i in interfaces]
    for key, value in settings:
        _sysctl(key, value)
    log.info("host prepared: %s", ", ".join(f"{k}={v}" for k, v in settings))
    if ipv6:
        ndp.prepare_ipv6(interfaces)


class VipPlumber:
    """Makes the VIPs of the current rules local addresses of this host: /32 (/128) `local`
    routes on `lo` in the local table (rather than addresses, whose kernel list is linear:
    10,000 of them cost seconds each way). The kernel then answers ARP for on-link v4 VIPs and
    refuses (RST / port unreachable) when a rule has no live endpoint. IPv6 has no ARP-like
    answer for local routes: each v6 VIP also gets a proxy NDP entry on every facing interface,
    and is announced with an unsolicited NA when it appears (host.ndp explains the choice); a v4
    VIP that appears is announced with a gratuitous ARP (host.arp).
    Routes and proxy entries carry protocol ROUTE_PROTO, so a restarted daemon knows which are
    its own; only the difference to the last call is sent, in one `ip -batch`.

    `interfaces` are the facing interfaces (default: all but lo, looked up at the first v6
    VIP); they are prepared for proxy NDP (ndp.prepare_ipv6) only once a v6 VIP appears."""

    ROUTE_PROTO = 250  # rtnetlink protocol id marking pyloxi's VIP routes and proxy entries
    LOCAL_TABLE = 255

    def __init__(self, interfaces: list[str] | None = None) -> None:
        self._interfaces = list(interfaces) if interfaces is not None else None
        self._v6_ready = False
        def local_routes(ipr: IPRoute) -> list[tuple[str, int]]:
            found = []
            for family, plen in ((2, 32), (10, 128)):
                try:
                    rows = ipr.get_routes(table=self.LOCAL_TABLE, family=family)
                except NetlinkError:  # IPv6 disabled in this kernel (ipv6.disable=1)
                    continue
                found += [(r.get_attr("RTA_DST"), r["proto"]) for r in rows
                          if r["dst_len"] == plen and r["type"] == 2]
            return found

        routes = _NL.call(local_routes)
        self._present: set[str] = {_norm(dst) for dst, _ in routes}
        self.owned: set[str] = {_norm(dst) for dst, proto in routes
                                if proto == self.ROUTE_PROTO}
        # proxy entries of ours whose VIP is no longer ours (a crash between the two): dropped
        stale = {(vip, dev) for vip, dev in _proxy_entries(self.ROUTE_PROTO)
                 if vip not in self.owned}
        if stale:
            _batch([f"neigh del proxy {vip} dev {dev}" for vip, dev in sorted(stale)],
                   "stale proxy NDP entries")
        if any(ndp.is_v6(v) for v in self.owned):
            self._ensure_v6()  # a restart: the interfaces may have been reset meanwhile

    @property
    def interfaces(self) -> list[str]:
        if self._interfaces is None:
            self._interfaces = default_interfaces()
        return self._interfaces

    def sync(self, vips: set[str]) -> None:
        """Make exactly `vips` (and no other VIP of ours) local."""
        vips = {_norm(v) for v in vips if _is_vip(v)}
        self.change(vips - self.owned, self.owned - vips)

    def change(self, add: set[str], remove: set[str]) -> None:
        """Make `add` local and stop `remove` being local."""
        add = {_norm(v) for v in add if _is_vip(v)}
        remove = {_norm(v) for v in remove if _is_vip(v)}
        todo_add = sorted(add - self._present)
        todo_remove = sorted(remove & self.owned & self._present)
        if any(ndp.is_v6(v) for v in todo_add):
            self._ensure_v6()
        if todo_add or todo_remove:
            self._apply(todo_add, todo_remove)
        self.owned = (self.owned | add) - remove
        announced = [v for v in todo_add if ndp.is_v6(v)]
        if announced:
            ndp.announce(announced, self.interfaces)
        garp = [v for v in todo_add if not ndp.is_v6(v)]
        if garp:  # a VIP taken over (HA MASTER) moves in neighbours' caches at once
            arp.announce(garp, self.interfaces)

    def _ensure_v6(self) -> None:
        """Once per plumber, at the first v6 VIP (or at start when it owns some already):
        prepare the interfaces, and restore the proxy entries of owned VIPs that are missing
        (the interface was recreated while the daemon was down; `replace` is idempotent)."""
        if self._v6_ready:
            return
        ndp.prepare_ipv6(self.interfaces)
        self._v6_ready = True
        have = set(_proxy_entries(self.ROUTE_PROTO))
        missing = [f"neigh replace proxy {v} dev {dev} protocol {self.ROUTE_PROTO}"
                   for v in sorted(self.owned) if ndp.is_v6(v)
                   for dev in self.interfaces if (v, dev) not in have]
        if missing:
            _batch(missing, "proxy NDP entries")

    def _apply(self, add: list[str], remove: list[str]) -> None:
        # One `ip -batch` for the lot: pyroute2 encodes each message in Python, and a bulk
        # create of 10,000 rules with their own VIPs would spend most of its time there.
        def route(v: str) -> str:
            plen = 128 if ndp.is_v6(v) else 32
            return f"local {v}/{plen} dev lo table local proto {self.ROUTE_PROTO} scope host"

        lines = [f"route replace {route(v)}" for v in add]
        lines += [f"route del {route(v)}" for v in remove]
        ifs = self.interfaces if any(ndp.is_v6(v) for v in add + remove) else []
        lines += [f"neigh replace proxy {v} dev {dev} protocol {self.ROUTE_PROTO}"
                  for v in add if ndp.is_v6(v) for dev in ifs]
        lines += [f"neigh del proxy {v} dev {dev}" for v in remove if ndp.is_v6(v) for dev in ifs]
        _batch(lines, "VIP routes")
        self._present |= set(add)
        self._present -= set(remove)
        log.info("VIPs made local: %s%s", ", ".join(add[:5]) or "-",
                 f" (+{len(add) - 5})" if len(add) > 5 else "")
        if remove:
            log.info("VIPs no longer local: %s", ", ".join(remove[:5]))


def _is_vip(v: str) -> bool:
    """v4: anything but 0.0.0.0 (as before); v6: a unicast address a neighbour can reach."""
    if not ndp.is_v6(v):
        return v != "0.0.0.0"
    try:
        a = ipaddress.IPv6Address(v)
    except ValueError:
        return False
    return not (a.is_unspecified or a.is_loopback or a.is_link_local or a.is_multicast)


def _norm(v: str) -> str:
    """One spelling per address (v6 VIPs may come in any of several)."""
    return str(ipaddress.ip_address(v)) if ndp.is_v6(v) else v


def _batch(lines: list[str], what: str) -> None:
    proc = subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True)
    if proc.returncode != 0:
        errors = proc.stderr.strip().splitlines()
        log.warning("%s: %s%s", what, " / ".join(errors[:6]),
                    f" (+{len(errors) - 6} lines)" if len(errors) > 6 else "")


def _proxy_entries(proto: int) -> list[tuple[str, str]]:
    """(VIP, interface) of the IPv6 proxy NDP entries carrying protocol `proto`."""
    proc = subprocess.run(["ip", "-j", "-6", "neigh", "show", "proxy"], capture_output=True,
                          text=True)
    if proc.returncode != 0:  # no IPv6 here: nothing of ours either
        log.debug("proxy NDP entries: %s", proc.stderr.strip())
        return []
    return [(_norm(e["dst"]), e["dev"]) for e in json.loads(proc.stdout or "[]")
            if str(e.get("protocol")) == str(proto)]
