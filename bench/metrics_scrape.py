"""Scrape time of GET /netlox/v1/metrics with N rules (default 10,000), two endpoints each.

The engine side is the real one (pyloxi.engine with its rule table); the datapath is the
in-memory one with counters set on every endpoint, so this measures the collection and the
exposition, not the kernel's map reads (those are one batch syscall per service and map; see
docs/operations.md). Prints times; asserts nothing.

    PYTHONPATH=src .venv/bin/python bench/metrics_scrape.py [rules]
"""

from __future__ import annotations

import statistics
import sys
import time

from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine
from pyloxi.engine.program import EndpointCounters, ServiceCounters
from pyloxi.metrics import MetricsExporter, Sources
from pyloxi.model.lb import LoadBalancerEntry


def build(n: int) -> tuple[Engine, MemoryDatapath]:
    dp = MemoryDatapath()
    engine = Engine(dp)
    for i in range(n):
        engine.add_rule(LoadBalancerEntry.model_validate({
            "serviceArguments": {"externalIP": f"10.{i // 250 % 250}.{i % 250}.{1 + i // 62500}",
                                 "port": 80, "protocol": "tcp", "name": f"svc{i}"},
            "endpoints": [{"endpointIP": "192.168.1.1", "targetPort": 8080, "weight": 1},
                          {"endpointIP": "192.168.1.2", "targetPort": 8080, "weight": 1}]}))
    for sid in dp.services:
        dp.counters[sid] = ServiceCounters(
            1_000_000, 900_000_000, 5000,
            (EndpointCounters(600_000, 500_000_000, 12), EndpointCounters(400_000, 400_000_000, 9)))
    dp.stats = {"new_flow": 50_000_000, "drop_source": 12, "no_endpoint": 3}
    return engine, dp


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    engine, dp = build(n)
    exporter = MetricsExporter(Sources(rules=engine.rule_table, counters=dp.services_counters,
                                       datapath_stats=dp.datapath_stats,
                                       conntrack=dp.conntrack_summary), enabled=True)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        text = exporter.render()
        times.append(time.perf_counter() - t0)
    lines = text.count(b"\n")
    print(f"{n} rules: {lines} lines, {len(text) / 1e6:.1f} MB; scrape "
          f"median {statistics.median(times):.3f} s, min {min(times):.3f} s, "
          f"max {max(times):.3f} s (5 runs)")


if __name__ == "__main__":
    main()
