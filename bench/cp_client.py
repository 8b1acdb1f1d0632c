"""Control-plane load: create N LB rules of 4 endpoints through the REST API, one keep-alive
httpx client, sequential requests; run inside the daemon's namespace (the API is on its lo).

    python -m bench.cp_client --n 10000 --budget 240 --json OUT
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
import numpy as np

API = "http://127.0.0.1:11111/netlox/v1"


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
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    bodies = [json.dumps(rule(i)).encode() for i in range(args.offset, args.offset + args.n)]
    lat = []
    with httpx.Client(base_url=API, timeout=60,
                      headers={"content-type": "application/json"}) as c:
        t0 = time.perf_counter()
        for body in bodies:
            s = time.perf_counter()
            r = c.post("/config/loadbalancer", content=body)
            lat.append(time.perf_counter() - s)
            if r.status_code != 200:
                raise SystemExit(f"rule {len(lat)}: {r.status_code} {r.text}")
            if time.perf_counter() - t0 > args.budget:
                break
        wall = time.perf_counter() - t0
        n_listed = -1 if args.no_list else len(
            c.get("/config/loadbalancer/all", timeout=300).json().get("lbAttr", []))
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
