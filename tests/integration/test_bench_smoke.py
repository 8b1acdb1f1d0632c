"""`python -m bench.run --smoke` end to end: every contender, the micro-benchmark, the control
plane and the scale stage produce numbers. No timing is asserted here (performance is
`make bench`'s business)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from bench.run import CONTENDERS, METRICS, XDP_CONTENDERS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_smoke(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "smoke.json"
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--no-doc",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for c in CONTENDERS:
        for key, *_ in METRICS:
            values = res["runs"][c][key]
            assert len(values) == 1 and all(math.isfinite(v) and v > 0 for v in values), (c, key)
        assert res["checks"][c].startswith("be1 ")
    # XDP on and off side by side (run_xdp): every contender measured, XDP forwarding
    for c in XDP_CONTENDERS:
        for key, *_ in METRICS:
            assert len(res["xdp"][c][key]) == 1 and res["xdp"][c][key][0] > 0, (c, key)
        assert res["xdp"][c]["cpu_s_per_gbit"][0] > 0, c
    assert res["xdp"]["pyloxi-dnat-xdp"]["xdp_fwd"][0] > 0
    assert res["xdp"]["pyloxi-dnat-xdpn"]["xdp_fwd"][0] > 0
    assert res["xdp"]["pyloxi-dnat"]["xdp_fwd"][0] == 0
    p = res["micro"]["packets"]
    for key in ("empty_ns", "not_vip_ns", "established_ns", "new_flow_ns"):
        assert p[key] > 0, key
    assert res["micro"]["sweep"]["ct_entries_present"] == 10_000
    assert res["micro"]["sweep"]["sweep_flows_removed"] == 500
    cp = res["control_plane"]
    assert cp["created"] > 0 and cp["listed"] == cp["created"] and cp["rss_mb"] > 0
    assert cp["big"]["created"] == 1000 and cp["rss_big_mb"] > 0
    assert cp["concurrent"]["created"] == 1000 and cp["concurrent"]["errors"] == 0
    # room to grow (run_scale): services, the 1,024-endpoint rule, the sweep under traffic
    sv, ct = res["scale"]["services"], res["scale"]["conntrack"]
    assert sv["services"] == 2000 and sv["max_services"] >= 65535 and sv["big_service_s"] > 0
    assert sv["maglev_endpoints_served"] == 1024 and sv["ct_bytes_per_entry"] > 0
    assert ct["flows"] == 20_000 and ct["sweeps_quiet"][0]["flows_removed"] == 2000
    assert ct["traffic"]["sweep_calls"] > 0 and ct["traffic_bad_retvals"] == 0
    # the harness removed everything it made
    tag = res["config"]["lab_tag"]
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{tag}-" not in leftovers
    assert not [p for p in os.listdir("/sys/fs/bpf") if p.startswith(f"{tag}-")]
