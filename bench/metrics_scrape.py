"""Scrape time of GET /netlox/v1/metrics with N rules (default 10,000), two endpoints each.

The engine side is the real one (pyloxi.engine with its rule table). The datapath is the
in-memory one with counters set on every endpoint (collection and exposition only), or with
--ebpf the compiled datapath's real maps (root; pinned under a throwaway bpffs directory,
attached to no interface, removed at the end): then the per-CPU counters are read from the
kernel too, one batch syscall per service and map. Prints times; asserts nothing.

    PYTHONPATH=src .venv/bin/python bench/metrics_scrape.py [rules] [--ebpf]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine
from pyloxi.engine.program import EndpointCounters, ServiceCounters
from pyloxi.metrics import MetricsExporter, Sources
from pyloxi.model.lb import LoadBalancerEntry


def rules(engine: Engine, n: int) -> None:
    for i in range(n):
        engine.add_rule(LoadBalancerEntry.model_validate({
            "serviceArguments": {"externalIP": f"10.{i // 250 % 250}.{i % 250}.{1 + i // 62500}",
                                 "port": 80, "protocol": "tcp", "name": f"svc{i}"},
            "endpoints": [{"endpointIP": "192.168.1.1", "targetPort": 8080, "weight": 1},
                          {"endpointIP": "192.168.1.2", "targetPort": 8080, "weight": 1}]}))


def build(n: int) -> tuple[Engine, MemoryDatapath]:
    dp = MemoryDatapath()
    engine = Engine(dp)
    rules(engine, n)
    for sid in dp.services:
        dp.counters[sid] = ServiceCounters(
            1_000_000, 900_000_000, 5000,
            (EndpointCounters(600_000, 500_000_000, 12), EndpointCounters(400_000, 400_000_000, 9)))
    dp.stats = {"new_flow": 50_000_000, "drop_source": 12, "no_endpoint": 3}
    return engine, dp


def measure(n: int, exporter: MetricsExporter, what: str) -> None:
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        text = exporter.render()
        times.append(time.perf_counter() - t0)
    lines = text.count(b"\n")
    print(f"{what}, {n} rules: {lines} lines, {len(text) / 1e6:.1f} MB; scrape "
          f"median {statistics.median(times):.3f} s, min {min(times):.3f} s, "
          f"max {max(times):.3f} s (5 runs)")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 10_000
    if "--ebpf" not in sys.argv:
        engine, dp = build(n)
        measure(n, MetricsExporter(Sources(
            rules=engine.rule_table, counters=dp.services_counters,
            datapath_stats=dp.datapath_stats, conntrack=dp.conntrack_summary), enabled=True),
            "memory datapath")
        return
    from pyloxi.datapath.ebpf.backend import EbpfDatapath

    obj = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build",
                       "lb.bpf.o")
    ebpf = EbpfDatapath(f"/sys/fs/bpf/pl{os.getpid()}-metricsbench", obj_path=obj)
    try:
        engine = Engine(ebpf)
        t0 = time.perf_counter()
        rules(engine, n)
        print(f"installed {n} rules in {time.perf_counter() - t0:.1f} s")
        measure(n, MetricsExporter(Sources(
            rules=engine.rule_table, counters=ebpf.services_counters,
            datapath_stats=ebpf.datapath_stats, conntrack=ebpf.conntrack_summary,
            conntrack_capacity=lambda: ebpf.conntrack_capacity), enabled=True), "eBPF datapath")
        t0 = time.perf_counter()
        ebpf.services_counters(engine.programs())
        batch = time.perf_counter() - t0
        t0 = time.perf_counter()
        for prog in engine.programs():
            ebpf.service_counters(prog)
        print(f"counters of {n} services: batch read {batch:.3f} s, one lookup per endpoint "
              f"{time.perf_counter() - t0:.3f} s")
    finally:
        ebpf.destroy()


if __name__ == "__main__":
    main()
