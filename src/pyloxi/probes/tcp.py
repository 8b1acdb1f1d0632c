"""TCP probe: connect (optionally send a request and expect a response), then reset.

The connection is closed with SO_LINGER 0 (an RST): no TIME_WAIT is left behind on the prober,
which matters when thousands of endpoints are probed every few seconds.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from pyloxi.probes.types import ProbeResult

LINGER0 = struct.pack("ii", 1, 0)


def family_of(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


async def probe_tcp(
    ip: str, port: int, timeout: float, req: str = "", resp: str = ""
) -> ProbeResult:
    loop = asyncio.get_running_loop()
    sock = socket.socket(family_of(ip), socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (ip, port))
                if not (req and resp):
                    return ProbeResult(True, "tcp connect ok")
                await loop.sock_sendall(sock, req.encode())
                want = resp.encode()
                got = b""
                while len(got) < len(want):
                    chunk = await loop.sock_recv(sock, len(want) - len(got))
                    if not chunk:
                        break
                    got += chunk
        except TimeoutError:
            return ProbeResult(False, f"tcp timeout after {timeout:g}s")
        except ConnectionRefusedError:
            return ProbeResult(False, "tcp connection refused")
        except OSError as exc:
            return ProbeResult(False, f"tcp error: {exc.strerror or exc}")
        if got == want:
            return ProbeResult(True, "tcp response matched")
        return ProbeResult(False, f"tcp response mismatch: got {got[:64]!r}")
    finally:
        sock.close()
