"""Control-plane load: create N LB rules of 4 endpoints through the REST API, one keep-alive
client (httpx, or with --raw the minimal RawClient below), sequential requests; run inside the
daemon's namespace (the API is on its lo).

    python -m bench.cp_client --n 10000 --budget 240 --json OUT [--raw]
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from typing import Any

import httpx
import numpy as np

API = "http://127.0.0.1:11111/netlox/v1"
HOST, PORT, BASE = "127.0.0.1", 11111, "/netlox/v1"


class RawClient:
    """A minimal HTTP/1.1 keep-alive client over one socket (pre-built requests, status and
    Content-Length parsed, nothing else): ~20 us of CPU a request where httpx takes ~270 us,
    so on a 2-core machine the client's own CPU does not decide the measured rate (httpx
    against a server that answers at once tops out near 2,000 requests/s here)."""

    def __init__(self, host: str = HOST, port: int = PORT, timeout: float = 60) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.head = f"Host: {host}\r\nContent-Type: application/json\r\n"

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.sock.sendall(f"POST {BASE}{path} HTTP/1.1\r\n{self.head}Content-Length: "
                          f"{len(body)}\r\n\r\n".encode() + body)
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(v) for k, _, v in (line.partition(b":") for line in lines[1:])
                      if k.strip().lower() == b"content-length")
        while len(self.buf) < length:
            self._more()
        answer, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), answer

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def rule(i: int) -> dict[str, object]:
    vip = f"30.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
    return {
        "serviceArguments": {"externalIP": vip, "port": 80, "protocol": "tcp", "sel": 0,
                             "mode": 0, "name": f"bench{i}"},
        "endpoints": [{"endpointIP": f"10.100.{j}.{i % 250 + 1}", "targetPort": 8080,
                       "weight": 1} for j in range(4)],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--budget", type=float, default=240.0, help="stop after this many seconds")
    ap.add_argument("--offset", type=int, default=0, help="first rule index (distinct VIPs)")
    ap.add_argument("--no-list", action="store_true", help="skip the GET of every rule at the end")
    ap.add_argument("--raw", action="store_true", help="RawClient instead of httpx")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    bodies = [json.dumps(rule(i)).encode() for i in range(args.offset, args.offset + args.n)]
    lat = []
    with httpx.Client(base_url=API, timeout=300,
                      headers={"content-type": "application/json"}) as c:
        raw = RawClient() if args.raw else None
        t0 = time.perf_counter()
        for body in bodies:
            s = time.perf_counter()
            if raw is not None:
                status, text = raw.post("/config/loadbalancer", body)
            else:
                r = c.post("/config/loadbalancer", content=body)
                status, text = r.status_code, r.content
            lat.append(time.perf_counter() - s)
            if status != 200:
                raise SystemExit(f"rule {len(lat)}: {status} {text!r}")
            if time.perf_counter() - t0 > args.budget:
                break
        wall = time.perf_counter() - t0
        if raw is not None:
            raw.close()
        n_listed = -1 if args.no_list else len(
            c.get("/config/loadbalancer/all").json().get("lbAttr", []))
    a = np.array(lat)
    # latency of one create as the table grows: per 10% of the run
    deciles = [float(np.percentile(part, 99)) * 1e3 for part in np.array_split(a, 10) if len(part)]
    out = {
        "requested": args.n, "created": len(lat), "listed": n_listed, "wall_s": wall,
        "rules_per_s": len(lat) / wall, "p50_ms": float(np.percentile(a, 50)) * 1e3,
        "p99_ms": float(np.percentile(a, 99)) * 1e3, "max_ms": float(a.max()) * 1e3,
        "p99_ms_by_tenth": deciles,
        "first_1000_per_s": min(1000, len(a)) / float(a[:1000].sum()),
        "last_1000_per_s": min(1000, len(a)) / float(a[-1000:].sum()),
        "per_1000_per_s": [len(part) / float(part.sum()) for part in
                           np.array_split(a, max(1, len(a) // 1000))],
        # perf_counter (CLOCK_MONOTONIC) at the start of the run: lines up with the daemon's
        # CPU samples taken by bench.cp_rate
        "t0": t0,
        "budget_hit": len(lat) < args.n,
    }
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
