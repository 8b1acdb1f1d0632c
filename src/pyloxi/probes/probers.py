"""One probe of a target, whatever its type: the probers of one event loop behind one call."""

from __future__ import annotations

import asyncio
from typing import Protocol

from pyloxi.probes.http import DEFAULT_CERT_DIR, HttpProber
from pyloxi.probes.icmp import Pinger
from pyloxi.probes.sctp import SctpProber
from pyloxi.probes.tcp import TcpProber
from pyloxi.probes.types import ProbeResult, ProbeTarget
from pyloxi.probes.udp import probe_udp


class Dispatch(Protocol):
    async def probe(self, t: ProbeTarget) -> ProbeResult: ...
    async def aclose(self) -> None: ...


class Probers:
    """Owns the ping and SCTP raw sockets and the HTTP clients; `tcp` is shared with the
    scheduler, which drives plain connect probes itself (see pyloxi.probes.tcp)."""

    def __init__(self, tcp: TcpProber, cert_dir: str | None = DEFAULT_CERT_DIR) -> None:
        self.tcp = tcp
        self._pinger = Pinger()
        self._sctp = SctpProber()
        self._http = HttpProber(cert_dir)

    async def probe(self, t: ProbeTarget) -> ProbeResult:
        timeout = t.eff_timeout
        p = t.ptype
        if p == "tcp":
            return await self.tcp.probe(t.ip, t.port, timeout, t.req, t.resp)
        if p == "udp":
            return await probe_udp(t.ip, t.port, timeout, t.req, t.resp)
        if p == "ping":
            return await self._pinger.ping(t.ip, timeout)
        if p == "sctp":
            return await self._sctp.probe(t.ip, t.port, timeout)
        if p in ("http", "https"):
            try:
                async with asyncio.timeout(timeout + 0.25):
                    return await self._http.probe(t, timeout)
            except TimeoutError:
                return ProbeResult(False, f"{p} timeout after {timeout:g}s")
        if p == "none":
            return ProbeResult(True, "probe type none")
        return ProbeResult(False, f"unknown probe type {p!r}")

    async def aclose(self) -> None:
        self._pinger.close()
        self._sctp.close()
        await self._http.aclose()
