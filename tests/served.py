"""An ASGI app served by uvicorn on 127.0.0.1 in a thread, for tests that drive the CLI over
real HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from tests.waiting import wait_until


@contextmanager
def serve(app: Any) -> Iterator[dict[str, str]]:
    """Serve `app` until the block ends; yields the environment that points the CLI at it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                           access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, interval=0.01, what="uvicorn started")
    try:
        yield {"PYLOXI_API": f"127.0.0.1:{sock.getsockname()[1]}"}
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()
