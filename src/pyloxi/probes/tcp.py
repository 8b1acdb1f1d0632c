"""TCP probe: connect (optionally send a request and expect a response), then reset.

The connection is closed with SO_LINGER 0 (an RST): no TIME_WAIT is left behind on the prober,
which matters when thousands of endpoints are probed every few seconds.

A plain connect probe is driven by loop callbacks: no task, no coroutine, one writer registration
per probe and one periodic sweep for the timeouts of all of them (instead of a timer each). This
is what lets one loop probe 10k endpoints. A request/response probe is a short conversation and is
written as one.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from collections.abc import Callable

from pyloxi.probes.clock import Clock, Timer
from pyloxi.probes.types import ProbeResult

LINGER0 = struct.pack("ii", 1, 0)
SWEEP = 0.05  # how often in-flight connects are checked for their deadline

Done = Callable[[ProbeResult], None]


def family_of(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def connect_result(err: int, timeout: float) -> ProbeResult:
    if err == 0:
        return ProbeResult(True, "tcp connect ok")
    if err == errno.ETIMEDOUT:
        return ProbeResult(False, f"tcp timeout after {timeout:g}s")
    if err == errno.ECONNREFUSED:
        return ProbeResult(False, "tcp connection refused")
    return ProbeResult(False, f"tcp error: {os.strerror(err)}")


def _failure(exc: OSError, timeout: float) -> ProbeResult:
    if exc.errno:
        return connect_result(exc.errno, timeout)
    return ProbeResult(False, f"tcp error: {exc}")


def _open(ip: str) -> socket.socket:
    sock = socket.socket(family_of(ip), socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    except OSError:
        sock.close()
        raise
    return sock


class TcpProber:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        # fd -> (socket, deadline, its completion)
        self._inflight: dict[int, tuple[socket.socket, float, Callable[[int | None], None]]] = {}
        self._sweeper: Timer | None = None

    def connect(self, ip: str, port: int, timeout: float, done: Done) -> None:
        """Start a plain connect probe; `done` gets its result (perhaps before this returns)."""
        loop = self._loop = asyncio.get_running_loop()
        try:
            sock = _open(ip)
        except OSError as exc:
            done(_failure(exc, timeout))
            return
        try:
            err = sock.connect_ex((ip, port))
        except OSError as exc:
            err = exc.errno or errno.EINVAL
        if err != errno.EINPROGRESS:
            sock.close()
            done(connect_result(err, timeout))
            return
        fd = sock.fileno()

        def finish(res_err: int | None) -> None:
            if self._inflight.pop(fd, None) is None:
                return
            loop.remove_writer(fd)
            if res_err is None:
                res_err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            sock.close()
            done(connect_result(res_err, timeout))

        self._inflight[fd] = (sock, self._clock.time() + timeout, finish)
        loop.add_writer(fd, finish, None)
        if self._sweeper is None:
            self._sweeper = self._clock.call_at(self._clock.time() + SWEEP, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self._clock.time()
        for _sock, _deadline, finish in [v for v in self._inflight.values() if v[1] <= now]:
            finish(errno.ETIMEDOUT)
        if self._inflight:
            self._sweeper = self._clock.call_at(now + SWEEP, self._sweep)

    async def probe(self, ip: str, port: int, timeout: float, req: str = "",
                    resp: str = "") -> ProbeResult:
        if req and resp:
            return await self._exchange(ip, port, timeout, req, resp)
        result: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()

        def done(res: ProbeResult) -> None:
            if not result.done():  # the awaiting probe may have been cancelled meanwhile
                result.set_result(res)

        self.connect(ip, port, timeout, done)
        return await result

    async def _exchange(self, ip: str, port: int, timeout: float, req: str,
                        resp: str) -> ProbeResult:
        loop = asyncio.get_running_loop()
        try:
            sock = _open(ip)
        except OSError as exc:
            return _failure(exc, timeout)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (ip, port))
                await loop.sock_sendall(sock, req.encode())
                want = resp.encode()
                got = b""
                while len(got) < len(want):
                    chunk = await loop.sock_recv(sock, len(want) - len(got))
                    if not chunk:
                        break
                    got += chunk
        except TimeoutError:
            return connect_result(errno.ETIMEDOUT, timeout)
        except OSError as exc:
            return _failure(exc, timeout)
        finally:
            sock.close()
        if got == want:
            return ProbeResult(True, "tcp response matched")
        return ProbeResult(False, f"tcp response mismatch: got {got[:64]!r}")

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for fd, (sock, _, _) in list(self._inflight.items()):
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_writer(fd)
            sock.close()
        self._inflight.clear()
