"""Host plumbing through netlink (pyroute2): what the datapath relies on the kernel for."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

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


def source_address(dst: str) -> str | None:
    """The address this host would use to reach dst (onearm SNAT), or None if unroutable."""

    def get(ipr: IPRoute) -> str | None:
        try:
            routes = ipr.route("get", dst=dst)
        except NetlinkError:
            return None
        for r in routes:
            src = r.get_attr("RTA_PREFSRC")
            if src:
                return str(src)
        return None

    return _NL.call(get)


def _sysctl(key: str, value: str) -> None:
    proc = subprocess.run(["sysctl", "-qw", f"{key}={value}"], capture_output=True, text=True)
    if proc.returncode != 0:
        log.warning("sysctl %s=%s failed: %s", key, value, proc.stderr.strip())


def prepare_host(interfaces: list[str]) -> None:
    """Sysctls a routing load balancer needs (logged, so nothing changes silently)."""
    settings = [("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.ip_local_port_range", HOST_EPHEMERAL_PORTS)]
    settings += [(f"net.ipv4.conf.{i}.rp_filter", "0") for i in interfaces]
    for key, value in settings:
        _sysctl(key, value)
    log.info("host prepared: %s", ", ".join(f"{k}={v}" for k, v in settings))


class VipPlumber:
    """Makes the VIPs of the current rules local addresses of this host: /32 `local` routes on
    `lo` in the local table (rather than addresses, whose kernel list is linear: 10,000 of them
    cost seconds each way). The kernel then answers ARP for on-link VIPs and refuses (RST /
    port unreachable) when a rule has no live endpoint. Routes carry protocol ROUTE_PROTO, so a
    restarted daemon knows which are its own; only the difference to the last call is sent."""

    ROUTE_PROTO = 250  # rtnetlink protocol id marking pyloxi's VIP routes
    LOCAL_TABLE = 255

    def __init__(self) -> None:
        routes = _NL.call(lambda ipr: [
            (r.get_attr("RTA_DST"), r["proto"]) for r in ipr.get_routes(
                table=self.LOCAL_TABLE, family=2) if r["dst_len"] == 32 and r["type"] == 2])
        self._present: set[str] = {dst for dst, _ in routes}
        self.owned: set[str] = {dst for dst, proto in routes if proto == self.ROUTE_PROTO}

    def sync(self, vips: set[str]) -> None:
        """Make exactly `vips` (and no other VIP of ours) local."""
        vips = {v for v in vips if ":" not in v and v != "0.0.0.0"}  # IPv4 VIPs only
        self.change(vips - self.owned, self.owned - vips)

    def change(self, add: set[str], remove: set[str]) -> None:
        """Make `add` local and stop `remove` being local."""
        add = {v for v in add if ":" not in v and v != "0.0.0.0"}
        todo_add = sorted(add - self._present)
        todo_remove = sorted(remove & self.owned & self._present)
        if todo_add or todo_remove:
            self._apply(todo_add, todo_remove)
        self.owned = (self.owned | add) - remove

    def _apply(self, add: list[str], remove: list[str]) -> None:
        # One `ip -batch` for the lot: pyroute2 encodes each message in Python, and a bulk
        # create of 10,000 rules with their own VIPs would spend most of its time there.
        route = f"local {{}}/32 dev lo table local proto {self.ROUTE_PROTO} scope host"
        lines = [f"route replace {route.format(v)}" for v in add]
        lines += [f"route del {route.format(v)}" for v in remove]
        proc = subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n",
                              capture_output=True, text=True)
        if proc.returncode != 0:
            log.warning("VIP routes: %s", proc.stderr.strip())
        self._present |= set(add)
        self._present -= set(remove)
        log.info("VIPs made local: %s%s", ", ".join(add[:5]) or "-",
                 f" (+{len(add) - 5})" if len(add) > 5 else "")
        if remove:
            log.info("VIPs no longer local: %s", ", ".join(remove[:5]))
