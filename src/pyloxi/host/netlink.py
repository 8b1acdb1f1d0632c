"""Host plumbing through netlink (pyroute2): what the datapath relies on the kernel for."""

from __future__ import annotations

import ipaddress
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
    """Keeps the VIPs of the current rules as /32 addresses on `lo`, so the kernel answers ARP
    for on-link VIPs and refuses (RST / port unreachable) when no endpoint is up. Only the
    difference to the last call touches netlink, so 10,000 rules cost 10,000 adds, not n²."""

    def __init__(self) -> None:
        self.owned: set[str] = set()
        self._lo = _NL.call(lambda ipr: ipr.link_lookup(ifname="lo")[0])
        self._present: set[str] = set(_NL.call(
            lambda ipr: [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=self._lo, family=2)]
        ))

    def sync(self, vips: set[str]) -> None:
        vips = {v for v in vips if ipaddress.ip_address(v).version == 4 and v != "0.0.0.0"}
        add = sorted(vips - self._present)
        remove = sorted((self.owned - vips) & self._present)
        if add or remove:
            _NL.call(lambda ipr: self._apply(ipr, add, remove))
        self.owned = vips

    def _apply(self, ipr: IPRoute, add: list[str], remove: list[str]) -> None:
        for vip in add:
            try:
                ipr.addr("add", index=self._lo, address=vip, prefixlen=32)
                self._present.add(vip)
                log.info("VIP %s added on lo", vip)
            except NetlinkError as exc:
                log.warning("VIP %s: cannot add on lo: %s", vip, exc)
        for vip in remove:
            try:
                ipr.addr("del", index=self._lo, address=vip, prefixlen=32)
                self._present.discard(vip)
                log.info("VIP %s removed from lo", vip)
            except NetlinkError as exc:
                log.warning("VIP %s: cannot remove from lo: %s", vip, exc)
