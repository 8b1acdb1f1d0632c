"""UDP probe, as loxilb does it, hardened against ICMP rate limits.

- request and response configured: send the request; up iff the exact response comes back in time.
- otherwise send "probe": any reply means up, ICMP port-unreachable (seen as ECONNREFUSED on the
  connected socket) means down, and silence means up, except shortly after a port-unreachable.

Why the exception: the kernel rate-limits ICMP errors (net.ipv4.icmp_ratelimit: one per second
per destination after a burst of 6; net.ipv4.icmp_msgs_per_sec overall), so a closed port
answers some probes with port-unreachable and others with silence. If silence counted as a
success it would reset the failure count, and a closed port would never reach the down verdict
its `retries` ask for (or would flap). Silence within UNREACH_HOLD_S of a port-unreachable from
the same ip:port is therefore a failure; a port that turned silent (opened by a service that
never answers) is up again once UNREACH_HOLD_S pass without a port-unreachable.
"""

from __future__ import annotations

import asyncio
import socket
import time

from pyloxi.probes.tcp import family_of
from pyloxi.probes.types import UDP_DEFAULT_REQUEST, ProbeResult

UNREACH_HOLD_S = 10.0  # well past the kernel's per-destination ICMP refill (1 s)
_last_unreach: dict[tuple[str, int], float] = {}  # (ip, port) -> monotonic time


def _silence(ip: str, port: int) -> ProbeResult:
    seen = _last_unreach.get((ip, port))
    if seen is not None:
        ago = time.monotonic() - seen
        if ago < UNREACH_HOLD_S:
            return ProbeResult(False, f"udp no reply, port unreachable {ago:.1f}s ago "
                                      f"(ICMP rate-limited)")
        del _last_unreach[(ip, port)]
    return ProbeResult(True, "udp no reply and no port-unreachable")


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
            return _silence(ip, port)
        except ConnectionRefusedError:
            _last_unreach[(ip, port)] = time.monotonic()
            return ProbeResult(False, "udp icmp port unreachable")
        except OSError as exc:
            return ProbeResult(False, f"udp error: {exc.strerror or exc}")
        _last_unreach.pop((ip, port), None)  # an answer: the port is open now
        if not strict:
            return ProbeResult(True, "udp reply received")
        if data == resp.encode() or data.strip() == resp.encode().strip():
            return ProbeResult(True, "udp response matched")
        return ProbeResult(False, f"udp response mismatch: got {data[:64]!r}")
    finally:
        sock.close()
