"""Raw sockets shared by the ping and SCTP probers: one per address family and event loop,
read by a loop reader that resolves the futures of the probes waiting for an answer."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from pyloxi.probes.types import ProbeResult


class RawProber:
    """Base of a prober owning raw sockets of protocol PROTO_V4 / PROTO_V6."""

    NAME = ""  # the probe type, in failure reasons
    PROTO_V4 = 0
    PROTO_V6 = 0

    def __init__(self) -> None:
        self._socks: dict[bool, socket.socket] = {}
        self._waiting: dict[Any, asyncio.Future[Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _sock(self, v6: bool) -> socket.socket:
        sock = self._socks.get(v6)
        if sock is None:
            fam = socket.AF_INET6 if v6 else socket.AF_INET
            sock = socket.socket(fam, socket.SOCK_RAW, self.PROTO_V6 if v6 else self.PROTO_V4)
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(sock.fileno(), self._on_readable, sock, v6)
            self._socks[v6] = sock
        return sock

    def _open(self, ip: str) -> tuple[str, bool, socket.socket] | ProbeResult:
        """(peer address, whether IPv6, the raw socket of its family), or the failed probe."""
        addr = ipaddress.ip_address(ip)
        v6 = addr.version == 6
        try:
            return addr.compressed, v6, self._sock(v6)
        except OSError as exc:
            return ProbeResult(False, f"{self.NAME}: cannot open raw socket: {exc.strerror or exc}")

    def _on_readable(self, sock: socket.socket, v6: bool) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for sock in self._socks.values():
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()
        for fut in self._waiting.values():
            fut.cancel()
        self._waiting.clear()
