"""ICMP/ICMPv6 echo over raw sockets, one socket per address family shared by all targets.

Replies are matched to waiting probes by (peer address, identifier, sequence). A probe sends an
echo and, if no reply came within a third of its timeout, a second one; any reply means up. The
round-trip times of the replies are returned (loxilb shows them as min/avg/max delay).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct
import time

from pyloxi.probes.rawsock import RawProber
from pyloxi.probes.types import ProbeResult

ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129
PAYLOAD = b"pyloxi-probe".ljust(56, b".")


def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(v6: bool, ident: int, seq: int, payload: bytes = PAYLOAD) -> bytes:
    if v6:  # the kernel fills in the ICMPv6 checksum (it needs the pseudo-header)
        return struct.pack("!BBHHH", ICMP6_ECHO_REQUEST, 0, 0, ident, seq) + payload
    head = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    csum = inet_checksum(head + payload)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, csum, ident, seq) + payload


class Pinger(RawProber):
    """Owns the raw ICMP sockets of one event loop."""

    NAME = "ping"
    PROTO_V4 = socket.IPPROTO_ICMP
    PROTO_V6 = socket.IPPROTO_ICMPV6

    def __init__(self) -> None:
        super().__init__()
        self._ident = (os.getpid() ^ id(self)) & 0xFFFF
        self._seq = 0

    def _on_readable(self, sock: socket.socket, v6: bool) -> None:
        now = time.monotonic()
        for _ in range(64):
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if v6:
                icmp = data
                want_type = ICMP6_ECHO_REPLY
            else:
                icmp = data[(data[0] & 0x0F) * 4:] if data else b""
                want_type = ICMP_ECHO_REPLY
            if len(icmp) < 8 or icmp[0] != want_type:
                continue
            ident, seq = struct.unpack_from("!HH", icmp, 4)
            if ident != self._ident:
                continue
            peer = ipaddress.ip_address(addr[0].split("%", 1)[0]).compressed
            fut = self._waiting.pop((peer, ident, seq), None)
            if fut is not None and not fut.done():
                fut.set_result(now)

    async def ping(self, ip: str, timeout: float) -> ProbeResult:
        loop = asyncio.get_running_loop()
        opened = self._open(ip)
        if isinstance(opened, ProbeResult):
            return opened
        peer, v6, sock = opened
        keys: list[tuple[str, int, int]] = []
        sent: dict[asyncio.Future[float], float] = {}
        first_reply: asyncio.Future[float] = loop.create_future()

        def on_reply(fut: asyncio.Future[float]) -> None:
            if not fut.cancelled() and not first_reply.done():
                first_reply.set_result(fut.result() - sent[fut])

        def send() -> None:
            self._seq = (self._seq + 1) & 0xFFFF
            key = (peer, self._ident, self._seq)
            fut: asyncio.Future[float] = loop.create_future()
            fut.add_done_callback(on_reply)
            self._waiting[key] = fut
            keys.append(key)
            sent[fut] = time.monotonic()
            try:
                sock.sendto(echo_request(v6, self._ident, self._seq), (peer, 0))
            except OSError as exc:
                if not first_reply.done():
                    first_reply.set_exception(exc)

        send()
        handle = loop.call_later(timeout / 3, send)
        try:
            async with asyncio.timeout(timeout):
                rtt = await first_reply
        except TimeoutError:
            return ProbeResult(False, f"ping no reply within {timeout:g}s")
        except OSError as exc:
            return ProbeResult(False, f"ping send failed: {exc.strerror or exc}")
        finally:
            handle.cancel()
            for key in keys:
                fut = self._waiting.pop(key, None)
                if fut is not None:
                    fut.cancel()
        return ProbeResult(True, "ping reply", rtts=[rtt])
