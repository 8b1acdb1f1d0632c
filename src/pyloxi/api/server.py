"""How the daemon serves the app: uvicorn's httptools protocol, with each connection's writes
of one event-loop turn sent as one.

uvicorn writes a response's status line and headers, then its body, as two socket writes. On
loopback (the Kubernetes agent, loxicmd, the benchmarks) the first write wakes the client,
which reads the headers and sleeps again until the second arrives: two wake-ups and two
syscalls per response where one does. The writes of one turn are joined and sent when the
turn ends (`loop.call_soon`), in order; closing the connection sends what is pending first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _JoinedWrites:
    """A transport whose writes during one event-loop turn go out as one write."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JoinedWritesHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over `_JoinedWrites` (pass as uvicorn.Config(http=...))."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        joined: Any = _JoinedWrites(transport, asyncio.get_running_loop())
        super().connection_made(joined)
