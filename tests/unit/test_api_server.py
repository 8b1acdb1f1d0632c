"""api.server: the daemon's uvicorn protocol sends each turn's writes as one, and still
answers every request, in order, whole (keep-alive, pipelined, large, Connection: close)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from tests.waiting import wait_until

from pyloxi.api import create_app
from pyloxi.api.server import JoinedWritesHttpProtocol, _JoinedWrites
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None


async def test_writes_of_one_turn_go_out_as_one() -> None:
    fake = FakeTransport()
    joined = _JoinedWrites(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
    joined.write(b"body")
    assert fake.writes == []  # not before the turn ends
    await asyncio.sleep(0)
    assert fake.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    joined.write(b"last")
    joined.close()  # what is pending goes first
    assert fake.writes[-1] == b"last" and fake.closed
    await asyncio.sleep(0)
    assert len(fake.writes) == 2
    assert joined.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is delegated


@contextmanager
def served(app: Any) -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                           access_log=False, http=JoinedWritesHttpProtocol))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, interval=0.01, what="uvicorn started")
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


def read_response(f: Any) -> tuple[int, dict[str, str], bytes]:
    status = int(f.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, f.read(int(headers["content-length"]))


def request(method: str, path: str, body: bytes = b"", close: bool = False) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n"
    if body:
        head += "content-type: application/json\r\n"
    if close:
        head += "connection: close\r\n"
    return head.encode() + b"\r\n" + body


def rule(port: int, name: str = "") -> bytes:
    return json.dumps({
        "serviceArguments": {"externalIP": "20.20.20.1", "port": port, "protocol": "tcp",
                             "name": name},
        "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 8080, "weight": 1}]}).encode()


def test_pipelined_keepalive_large_and_close_all_answered_in_order() -> None:
    app = create_app(Engine(MemoryDatapath()), version="9.9.9")
    lb = "/netlox/v1/config/loadbalancer"
    with served(app) as port, socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        # several requests in one segment: each answer whole, in order
        s.sendall(request("POST", lb, rule(1)) + request("POST", lb, rule(1)) +
                  request("GET", "/netlox/v1/version"))
        assert read_response(f)[0] == 200
        status, _, body = read_response(f)
        assert status == 409 and b"lbrule-exists" in body
        status, _, body = read_response(f)
        assert status == 200 and json.loads(body)["version"] == "9.9.9"
        # a large answer (the rule list) arrives whole
        for p in range(2, 202):
            s.sendall(request("POST", lb, rule(p, "n" * 200)))
            assert read_response(f)[0] == 200
        s.sendall(request("GET", lb + "/all"))
        status, _, body = read_response(f)
        assert status == 200 and len(body) > 100_000
        assert [r["serviceArguments"]["port"] for r in json.loads(body)["lbAttr"]] == \
            list(range(1, 202))
        # Connection: close: answered, then closed by the server
        s.sendall(request("GET", "/netlox/v1/version", close=True))
        status, headers, _ = read_response(f)
        assert status == 200 and headers.get("connection") == "close"
        assert f.read() == b""
