"""Control-plane create rate with durable answers: N keep-alive clients POST distinct rules at
once (each answer is on disk before it is sent), httpx or (--raw) bench.cp_client.RawClient.
Run inside the daemon's namespace:

    python -m bench.cp_concurrency --clients 16 --n 4000 --json OUT [--raw]
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import httpx
import numpy as np

from bench.cp_client import API, RawClient, rule


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--offset", type=int, default=0, help="first rule index (distinct VIPs)")
    ap.add_argument("--raw", action="store_true", help="bench.cp_client.RawClient, not httpx")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    lat: list[list[float]] = [[] for _ in range(args.clients)]
    bad: list[str] = []

    def worker(k: int) -> None:
        if args.raw:
            with RawClient() as raw:
                for i in range(args.offset + k, args.offset + args.n, args.clients):
                    body = json.dumps(rule(i)).encode()
                    s = time.perf_counter()
                    status, text = raw.post("/config/loadbalancer", body)
                    lat[k].append(time.perf_counter() - s)
                    if status != 200:
                        bad.append(text.decode(errors="replace"))
            return
        with httpx.Client(base_url=API, timeout=60,
                          headers={"content-type": "application/json"}) as c:
            for i in range(args.offset + k, args.offset + args.n, args.clients):
                body = json.dumps(rule(i)).encode()
                s = time.perf_counter()
                r = c.post("/config/loadbalancer", content=body)
                lat[k].append(time.perf_counter() - s)
                if r.status_code != 200:
                    bad.append(r.text)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    a = np.array([x for part in lat for x in part])
    out = {"clients": args.clients, "created": len(a) - len(bad), "errors": len(bad),
           "wall_s": wall, "rules_per_s": len(a) / wall,
           "p50_ms": float(np.percentile(a, 50)) * 1e3,
           "p99_ms": float(np.percentile(a, 99)) * 1e3, "max_ms": float(a.max()) * 1e3}
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
