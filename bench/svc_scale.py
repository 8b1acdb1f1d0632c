"""Service scale (issue 14): 64K services and one of 1,024 endpoints through the engine and the
real eBPF backend, with the kernel memory of the maps. As root, after `make build`:

    python -m bench.svc_scale --services 65534 --json bench/out/svc_scale.json
    python -m bench.svc_scale --mem-only --json OUT     # an object's maps, nothing installed

Runs in a network namespace of its own (nothing is attached; services are written to maps
pinned under a bpffs directory of its own, removed at the end). Reports:
- creates/s of `--services` one-endpoint rules (rr) through Engine.add_rule, in chunks;
- the time to create one hash rule with 1,024 endpoints (a 102,407-slot Maglev table);
- bytes_memlock of every pinned map (bpftool), their total, and the service maps' share
  per 1K services (the maps are preallocated: what the object costs at load);
- how much of the pools (ep_pool, slot_pool, counter ids) 1K one-endpoint services use;
- the 1,024-endpoint rule's Maglev table as installed: its size, and how many more slots
  than its share its busiest endpoint has (`maglev_busiest_over_share`, 0.01 = 1 %);
- conntrack's preallocated bytes per entry (ct_map; a flow is two entries).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from collections import Counter
from typing import Any

from pyloxi.datapath.ebpf.backend import EbpfDatapath
from pyloxi.testing.lab.dpns import datapath_netns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJ = os.path.join(ROOT, "build", "lb.bpf.o")
# the maps whose size follows the service and endpoint limits
SERVICE_MAPS = ("svc_map", "gen_map", "ver_map", "ep_pool", "slot_pool", "ep_stats", "conn_map",
                "svc_new", "rr_map", "pol_svc", "pol_ep", "mirr_svc", "ep_addr_map")


def memlock(pin_dir: str) -> dict[str, int]:
    """bytes_memlock of each map pinned under pin_dir."""
    out = {}
    for name in sorted(os.listdir(pin_dir)):
        r = subprocess.run(["bpftool", "-j", "map", "show", "pinned", os.path.join(pin_dir, name)],
                           capture_output=True, text=True, check=False)
        if r.returncode == 0:
            out[name] = int(json.loads(r.stdout).get("bytes_memlock", 0))
    return out


def entry(vip: str, port: int, eps: list[tuple[str, int]], sel: int = 0) -> Any:
    from pyloxi.model.lb import LoadBalancerEntry
    return LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": vip, "port": port, "protocol": "tcp", "sel": sel},
        "endpoints": [{"endpointIP": ip, "targetPort": p, "weight": 1} for ip, p in eps]})


def run(services: int, mem_only: bool, obj: str) -> dict[str, Any]:
    pin = f"/sys/fs/bpf/pl{os.getpid()}-scale"
    dp = EbpfDatapath(pin, obj_path=obj)
    res: dict[str, Any] = {}
    try:
        mem = memlock(pin)
        res["memlock"] = mem
        res["memlock_total"] = sum(mem.values())
        svc = sum(v for k, v in mem.items() if k in SERVICE_MAPS)
        res["memlock_service_maps"] = svc
        res["max_services"] = dp.maps["gen_map"].max_entries - 1
        res["ct_max_entries"] = dp.maps["ct_map"].max_entries
        res["ct_bytes_per_entry"] = mem.get("ct_map", 0) / res["ct_max_entries"]
        res["service_maps_per_1k_services"] = svc * 1000 // res["max_services"]
        if mem_only:
            return res
        from pyloxi.engine import Engine
        eng = Engine(dp)
        chunks = []
        t0 = last = time.perf_counter()
        for i in range(services):
            vip = f"20.{1 + i // 65025}.{i // 255 % 255}.{i % 255 + 1}"
            eng.add_rule(entry(vip, 80, [(f"10.{i // 65025}.{i // 255 % 255}.{i % 255 + 1}",
                                          8080)]))
            if (i + 1) % 8192 == 0:  # the rate as the tables fill
                now = time.perf_counter()
                chunks.append(round(8192 / (now - last), 1))
                last = now
        total = time.perf_counter() - t0
        res["services"] = services
        res["creates_per_s"] = round(services / total, 1)
        res["creates_per_s_by_8192"] = chunks
        used_ep = dp._ep_ext.size - dp._ep_ext.free
        used_chunks = dp._slot_ext.size - dp._slot_ext.free
        used_gids = dp._gid_ids.size - 1 - dp._gid_ids.free
        ncpu = dp.maps["ep_stats"].value_blob_size // 16
        res["pools_after_services"] = {"ep_pool": used_ep, "slot_pool": used_chunks,
                                       "counter_ids": used_gids}
        # bytes of pool per 1K services: ep_val 48, slot chunk 64, counters 16 per CPU + 16
        res["pool_bytes_per_1k_services"] = round(
            (used_ep * 48 + used_chunks * 64 + used_gids * (16 * ncpu + 16)) * 1000 / services)
        # one service with 1,024 endpoints (hash: Maglev sized to them); needs room beside
        # the others' one-endpoint versions
        eps = [(f"10.200.{i // 250}.{i % 250 + 1}", 8080) for i in range(1024)]
        t0 = time.perf_counter()
        try:
            eng.add_rule(entry("30.0.0.1", 80, eps, sel=1))
            res["big_service_s"] = round(time.perf_counter() - t0, 3)
            slots = next(p.slots for p in eng.programs() if p.vip == "30.0.0.1")
            counts = Counter(slots)
            res["maglev_slots"] = len(slots)
            res["maglev_endpoints_served"] = len(counts)
            res["maglev_busiest_over_share"] = max(counts.values()) * len(eps) / len(slots) - 1
        except Exception as exc:  # a full table is a result here, not a crash
            res["big_service_error"] = str(exc)
        res["slot_pool_used_after_big"] = dp._slot_ext.size - dp._slot_ext.free
        return res
    finally:
        dp.destroy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=65534)
    ap.add_argument("--mem-only", action="store_true")
    ap.add_argument("--obj", default=OBJ)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    with datapath_netns(f"pl{os.getpid()}-scale", ()):
        res = run(args.services, args.mem_only, args.obj)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps({k: v for k, v in res.items() if k != "memlock"}, indent=2))


if __name__ == "__main__":
    main()
