"""UDP probe, as loxilb does it.

- request and response configured: send the request; up iff the exact response comes back in time.
- otherwise send "probe": any reply means up, ICMP port-unreachable (seen as ECONNREFUSED on the
  connected socket) means down, and silence means up.
"""

from __future__ import annotations

import asyncio
import socket

from pyloxi.probes.tcp import family_of
from pyloxi.probes.types import UDP_DEFAULT_REQUEST, ProbeResult


async def probe_udp(
    ip: str, port: int, timeout: float, req: str = "", resp: str = ""
) -> ProbeResult:
    loop = asyncio.get_running_loop()
    strict = bool(req and resp)
    sock = socket.socket(family_of(ip), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        try:
            sock.connect((ip, port))
            sock.send(req.encode() if req else UDP_DEFAULT_REQUEST)
            async with asyncio.timeout(timeout):
                data = await loop.sock_recv(sock, 65535)
        except TimeoutError:
            if strict:
                return ProbeResult(False, f"udp no response within {timeout:g}s")
            return ProbeResult(True, "udp no reply and no port-unreachable")
        except ConnectionRefusedError:
            return ProbeResult(False, "udp icmp port unreachable")
        except OSError as exc:
            return ProbeResult(False, f"udp error: {exc.strerror or exc}")
        if not strict:
            return ProbeResult(True, "udp reply received")
        if data == resp.encode() or data.strip() == resp.encode().strip():
            return ProbeResult(True, "udp response matched")
        return ProbeResult(False, f"udp response mismatch: got {data[:64]!r}")
    finally:
        sock.close()
