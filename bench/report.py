"""Tables (markdown), targets and the chart of one bench run's raw results."""

from __future__ import annotations

import re
import statistics

from bench.run import CONTENDERS, METRICS, XDP_CONTENDERS

START, END = "<!-- bench:start (written by `make bench`) -->", "<!-- bench:end -->"
LBS = ["pyloxi-dnat", "pyloxi-fullnat"]
OTHERS = ["nftables", "haproxy"]


def med(xs: list[float]) -> float:
    return float(statistics.median(xs))


def fmt(v: float, unit: str) -> str:
    if unit == "Gbit/s":
        return f"{v:.2f}"
    if unit == "µs":
        return f"{v:.0f}"
    return f"{v:,.0f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "-"


def main_table(res: dict) -> str:
    runs = res["runs"]
    head = "| contender | " + " | ".join(f"{label} [{u}]" for _, label, u, _ in METRICS) + " |"
    lines = [head, "|---" * (len(METRICS) + 1) + "|"]
    for c in CONTENDERS:
        if c not in runs:
            continue
        cells = []
        for key, _, unit, _ in METRICS:
            xs = runs[c].get(key, [])
            if not xs:
                cells.append("-")
                continue
            d = med(runs["direct"][key]) if "direct" in runs else 0
            spread = f" ({fmt(min(xs), unit)}–{fmt(max(xs), unit)})" if len(xs) > 1 else ""
            rel = "" if c == "direct" else f" **{ratio(med(xs), d)}**"
            cells.append(f"{fmt(med(xs), unit)}{spread}{rel}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pair_table(res: dict) -> str:
    runs = res["runs"]
    cols = [(a, b) for a in LBS for b in OTHERS if a in runs and b in runs]
    cols += [("pyloxi-fullnat", "pyloxi-dnat")] if all(x in runs for x in LBS) else []
    lines = ["| metric | " + " | ".join(f"{a} / {b}" for a, b in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for key, label, _, higher in METRICS:
        cells = [ratio(med(runs[a][key]), med(runs[b][key])) for a, b in cols]
        lines.append(f"| {label} ({'higher' if higher else 'lower'} is better) | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


XDP_METRICS = [*METRICS, ("cpu_s_per_gbit", "busy CPU per Gbit (iperf3, machine-wide)",
                            "s/Gbit", False)]


def xdp_table(res: dict) -> str:
    """run_xdp's three contenders (checksum offload off at the senders): medians, spread and
    ratio to direct; the CPU row also as the excess over direct routing (the LB's part)."""
    runs = res.get("xdp", {})
    if "direct" not in runs:
        return ""
    lines = ["| metric | " + " | ".join(c for c in XDP_CONTENDERS if c in runs) + " |",
             "|---" * (len(runs) + 1) + "|"]
    for key, label, unit, _ in XDP_METRICS:
        d = med(runs["direct"][key])
        cells = []
        for c in XDP_CONTENDERS:
            if c not in runs:
                continue
            xs = runs[c][key]
            v = f"{med(xs):.3f}" if unit == "s/Gbit" else fmt(med(xs), unit)
            if len(xs) > 1 and unit != "s/Gbit":
                v += f" ({fmt(min(xs), unit)}–{fmt(max(xs), unit)})"
            if c != "direct":
                v += f" **{ratio(med(xs), d)}**"
                if unit == "s/Gbit":
                    v += f" ({med(xs) - d:+.3f} over direct)"
            cells.append(v)
        lines.append(f"| {label} [{unit}] | " + " | ".join(cells) + " |")
    fwd = [f"{c} {med(runs[c]['xdp_fwd']):,.0f} packets, {med(runs[c].get('xdp_new', [0])):,.0f}"
           " flows" for c in XDP_CONTENDERS if "-xdp" in c and c in runs]
    if fwd:
        lines += ["", "What the XDP path forwarded and opened per block (median, the daemon's "
                  f"counters `xdp_fwd`, `xdp_new`): {'; '.join(fwd)}."]
    return "\n".join(lines)


def throughput_latency(tag: str, v: dict, d: dict, rate_min: float,
                       p99_max: float) -> list[tuple[str, str, bool | None]]:
    """Targets of `tag`'s medians `v` against direct's `d`: keep-alive req/s and iperf3 at
    least `rate_min`× direct, p99 latency at most `p99_max`× direct."""
    out: list[tuple[str, str, bool | None]] = []
    for k, name in (("keepalive_rps", "keep-alive req/s"), ("iperf_gbps", "iperf3")):
        r = v[k] / d[k]
        out.append((f"{tag}: {name} ≥ {rate_min}× direct", f"{r:.3f}×", r >= rate_min))
    r = v["lat_p99_us"] / d["lat_p99_us"]
    out.append((f"{tag}: p99 latency ≤ {p99_max}× direct",
                f"{v['lat_p99_us']:.0f} vs {d['lat_p99_us']:.0f} µs ({r:.2f}×)", r <= p99_max))
    return out


def xdp_targets(res: dict) -> list[tuple[str, str, bool | None]]:
    """Issue 14's end-to-end targets, for XDP on and off (run_xdp)."""
    runs, out = res.get("xdp", {}), []
    if "direct" not in runs:
        return []
    d = {k: med(runs["direct"][k]) for k, *_ in METRICS}
    for c, tag in (("pyloxi-dnat", "XDP off"), ("pyloxi-dnat-xdp", "XDP on (generic)"),
                   ("pyloxi-dnat-xdpn", "XDP on (native)")):
        if c not in runs:
            continue
        v = {k: med(runs[c][k]) for k, *_ in METRICS}
        r = v["close_cps"] / d["close_cps"]
        out.append((f"{tag}: new connections/s ≥ 1.0× direct", f"{r:.3f}×", r >= 1.0))
        out += throughput_latency(tag, v, d, 1.1, 1.0)
    return out


def targets(res: dict) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for every target of the issue."""
    out: list[tuple[str, str, bool | None]] = []
    runs, mi, cp = res["runs"], res.get("micro", {}), res.get("control_plane", {})
    if "direct" in runs:
        d = {k: med(runs["direct"][k]) for k, *_ in METRICS}
        for lb in LBS:
            if lb not in runs:
                continue
            v = {k: med(runs[lb][k]) for k, *_ in METRICS}
            r = v["close_cps"] / d["close_cps"]
            out.append((f"{lb}: new connections/s ≥ 0.97× direct", f"{r:.3f}×", r >= 0.97))
            for o in OTHERS:
                if o in runs:
                    ov = med(runs[o]["close_cps"])
                    out.append((f"{lb}: new connections/s ahead of {o}",
                                f"{v['close_cps']:,.0f} vs {ov:,.0f} ({v['close_cps'] / ov:.2f}×)",
                                v["close_cps"] > ov))
            out += throughput_latency(lb, v, d, 0.95, 1.1)
    out += xdp_targets(res)
    p = mi.get("packets", {})
    if p:
        out.append(("BPF_PROG_TEST_RUN established ≤ 100 ns", f"{p['established_ns']:.0f} ns",
                    p["established_ns"] <= 100))
        for key, name in (("xdp_established_ns", "XDP established (IPv4)"),
                          ("xdp_established6_ns", "XDP established (IPv6)")):
            if key in p:
                out.append((f"BPF_PROG_TEST_RUN {name} ≤ 100 ns", f"{p[key]:.0f} ns",
                            p[key] <= 100))
        for key, name in (("new_flow_ns", "new flow (TC, IPv4)"),
                          ("new_flow6_ns", "new flow (TC, IPv6)"),
                          ("xdp_new_flow_ns", "XDP new flow (IPv4)"),
                          ("xdp_new_flow6_ns", "XDP new flow (IPv6)")):
            if key in p:
                out.append((f"BPF_PROG_TEST_RUN {name} ≤ 400 ns", f"{p[key]:.0f} ns",
                            p[key] <= 400))
    if cp:
        partial = f" (stopped at {cp['created']} of {cp['requested']} by the time budget)" \
            if cp.get("budget_hit") else ""
        out.append(("≥ 2,000 rule creates/s from one keep-alive client",
                    f"{cp['rules_per_s']:,.0f}/s{partial}", cp["rules_per_s"] >= 2000))
        out.append(("p99 of one rule create ≤ 5 ms", f"{cp['p99_ms']:.1f} ms", cp["p99_ms"] <= 5))
        out.append((f"daemon RSS ≤ 250 MB at {cp['created']:,} rules", f"{cp['rss_mb']:.0f} MB",
                    cp["rss_mb"] <= 250))
        big, conc = cp.get("big"), cp.get("concurrent")
        if big:
            last, first = big["last_1000_per_s"], cp["first_1000_per_s"]
            out.append((f"the last 1,000 of {cp['created'] + big['created']:,} rules as fast as "
                        f"the first 1,000 (≥ 0.9×)", f"{last:,.0f} vs {first:,.0f}/s "
                        f"({last / first:.2f}×)", last >= 0.9 * first))
        if conc:
            out.append((f"≥ 5,000 rule creates/s from {conc['clients']} clients",
                        f"{conc['rules_per_s']:,.0f}/s", conc["rules_per_s"] >= 5000))
    sf = res.get("synflood", {})
    if sf:
        out.append(("established flows broken by a spoofed SYN flood: 0",
                    f"{sf['flows_broken']} of {sf['flows']}", sf["flows_broken"] == 0))
    sc = res.get("scale", {})
    if sc:
        sv, ct = sc["services"], sc["conntrack"]
        out.append(("64K services", f"{sv['max_services']:,}", sv["max_services"] >= 65535))
        out.append(("a rule of 1,024 endpoints", f"{sv.get('big_service_s', 'refused')} s",
                    "big_service_s" in sv))
        if "maglev_busiest_over_share" in sv:
            over = sv["maglev_busiest_over_share"]
            out.append(("Maglev: busiest of 1,024 endpoints ≤ 1 % over its share",
                        f"{over * 100:.2f} %", over <= 0.01))
        out.append(("2M conntrack entries", f"{sv['ct_max_entries']:,}",
                    sv["ct_max_entries"] >= 2_000_000))
        worst = max(s["cpu_s"] for s in ct["sweeps_quiet"] + ct["sweeps_traffic"])
        out.append((f"aging sweep of {2 * ct['flows']:,} entries < 2 s of CPU (the slowest)",
                    f"{worst:.2f} s", worst < 2))
        tr = ct["traffic"]
        out.append(("packets/s during a sweep ≥ 0.95× without",
                    f"{tr['sweep_pps'] / tr['idle_pps']:.2f}×",
                    tr["sweep_pps"] >= 0.95 * tr["idle_pps"]))
    sw = mi.get("sweep", {})
    if sw:
        out.append((f"conntrack sweep of {sw['ct_entries_present']:,} entries ≤ 2 s",
                    f"{sw['sweep_s']:.2f} s", sw["sweep_s"] <= 2))
    return out


def micro_table(res: dict) -> str:
    p, sw = res["micro"]["packets"], res["micro"]["sweep"]
    rows = [
        ("empty TC program (`return TC_ACT_OK`, the floor)", p["empty_ns"], "-"),
        ("not for a VIP (passed to the kernel)", p["not_vip_ns"], p["not_vip_cold_ns"]),
        ("established flow (conntrack hit, DNAT rewrite, fib, redirect)", p["established_ns"],
         p["established_cold_ns"]),
        ("new flow (SYN: conntrack miss, service, select, 2 inserts, rewrite, fib, redirect)",
         p["new_flow_ns"], p["new_flow_cold_ns"]),
    ]
    if "established6_ns" in p:
        rows += [
            ("IPv6 established flow (NAT66)", p["established6_ns"], "-"),
            ("IPv6 new flow (NAT66)", p["new_flow6_ns"], "-"),
            ("NAT64 established, IPv6 -> IPv4 (timer read included)", "-",
             p["nat64_6to4_cold_ns"]),
            ("NAT64 established, IPv4 -> IPv6 (timer read included)", "-",
             p["nat64_4to6_cold_ns"]),
        ]
    if "xdp_established_ns" in p:   # the XDP fast path (bpf/include/pyloxi/xdp.h)
        rows += [
            ("empty XDP program (`return XDP_PASS`)", p["xdp_empty_ns"], "-"),
            ("XDP: established flow (the same packet as TC's)", p["xdp_established_ns"],
             p["xdp_established_cold_ns"]),
            ("XDP: IPv6 established flow", p["xdp_established6_ns"], "-"),
            ("XDP: NAT64 established, IPv6 -> IPv4 (timer read included)", "-",
             p.get("xdp_nat64_6to4_cold_ns", "-")),
            ("XDP: NAT64 established, IPv4 -> IPv6 (timer read included)", "-",
             p.get("xdp_nat64_4to6_cold_ns", "-")),
            ("XDP: handed to TC (no flow, not a VIP; XDP's part)", p["xdp_pass_ns"], "-"),
        ]
    if "xdp_new_flow_ns" in p:
        rows += [
            ("XDP: new flow (the same SYNs as TC's)", p["xdp_new_flow_ns"],
             p["xdp_new_flow_cold_ns"]),
            ("XDP: IPv6 new flow (NAT66)", p["xdp_new_flow6_ns"], "-"),
        ]
    lines = ["| packet | ns/packet, kernel loop | ns/packet, one run per call (cold) |",
             "|---|---|---|"]
    for name, warm, cold in rows:
        w = warm if isinstance(warm, str) else f"**{warm:.0f}**"
        lines.append(f"| {name} | {w} | {cold if isinstance(cold, str) else f'{cold:.0f}'} |")
    lines.append("")
    lines.append(f"Kernel loops: {p['repeats']:,} runs each (established and new flow: "
                 f"{p['established_runs']:,} and {p['new_flow_runs']:,} runs in loops of "
                 f"{p['chain']}); cold: up to 100,000 calls with repeat=1, the timer read "
                 f"({p['timer_overhead_ns']:.0f} ns, measured on the empty program) subtracted. "
                 f"XDP loops run with pyloxi_xdp held in the kernel's XDP dispatcher, as on a "
                 f"port in native mode (bench/micro.py, hold_xdp_dispatcher).")
    lines.append("")
    lines.append(f"Conntrack aging sweep (the daemon's `age_flows`: batch read of the whole "
                 f"table, numpy pass, conditional delete in the kernel, 256 entries per program "
                 f"run): **{sw['sweep_s']:.2f} s** over "
                 f"{sw['ct_entries_present']:,} entries ({sw['ct_entries_present'] // 2:,} "
                 f"established TCP flows, 10% of them idle past the timeout, "
                 f"{sw['sweep_flows_removed']:,} flows removed); the next sweep with nothing to "
                 f"remove (read + numpy only): {sw['scan_only_s']:.2f} s. Filling the map with "
                 f"batch updates took {sw['fill_s']:.2f} s (ct_map max_entries "
                 f"{sw['ct_max_entries']:,} on a bench-only object).")
    return "\n".join(lines)


def cp_text(res: dict) -> str:
    cp = res["control_plane"]
    tenths = ", ".join(f"{x:.1f}" for x in cp["p99_ms_by_tenth"])
    text = (f"{cp['created']:,} rules (distinct VIPs, 4 endpoints each, tcp/80) created one by "
            f"one through `POST /netlox/v1/config/loadbalancer` by one keep-alive client (a raw "
            f"HTTP/1.1 client, `bench.cp_client --raw`) in the daemon's namespace, every answer "
            f"durable: **{cp['rules_per_s']:,.0f} rules/s** over {cp['wall_s']:.1f} s "
            f"(first 1,000: {cp['first_1000_per_s']:,.0f}/s, last 1,000: "
            f"{cp['last_1000_per_s']:,.0f}/s); latency of one create p50 {cp['p50_ms']:.2f} ms, "
            f"**p99 {cp['p99_ms']:.1f} ms**, max {cp['max_ms']:.0f} ms; p99 per tenth of the run "
            f"(ms): {tenths}. Daemon RSS (VmRSS): {cp['rss_idle_mb']:.0f} MB idle, "
            f"**{cp['rss_mb']:.0f} MB** with {cp['created']:,} rules.")
    big, conc = cp.get("big"), cp.get("concurrent")
    if big:
        total = cp["created"] + big["created"]
        text += (f" The same client then goes on to {total:,} rules: "
                 f"{big['rules_per_s']:,.0f} rules/s, the last 1,000 at "
                 f"**{big['last_1000_per_s']:,.0f}/s** (the first 1,000 of the table: "
                 f"{cp['first_1000_per_s']:,.0f}/s), p99 {big['p99_ms']:.1f} ms, max "
                 f"{big['max_ms']:.0f} ms; RSS {cp['rss_big_mb']:.0f} MB.")
    if conc:
        text += (f" {conc['clients']} concurrent keep-alive clients, {conc['created']:,} rules "
                 f"in a fresh daemon: **{conc['rules_per_s']:,.0f} rules/s**, p50 "
                 f"{conc['p50_ms']:.1f} ms, p99 {conc['p99_ms']:.1f} ms, {conc['errors']} "
                 f"errors.")
    return text


def scale_text(res: dict) -> str:
    sv, ct = res["scale"]["services"], res["scale"]["conntrack"]
    mib = 1 << 20
    per_flow = 2 * sv["ct_bytes_per_entry"]
    quiet, busy, tr = ct["sweeps_quiet"], ct["sweeps_traffic"], ct["traffic"]
    text = (f"{sv['services']:,} one-endpoint services through the engine and the eBPF "
            f"backend (`bench.svc_scale`): {sv['creates_per_s']:,.0f} creates/s (per 8,192: "
            f"{', '.join(f'{x:,.0f}' for x in sv['creates_per_s_by_8192'])}); capacity "
            f"{sv['max_services']:,} services. Kernel memory of the service maps "
            f"{sv['memlock_service_maps'] / mib:.0f} MiB, **"
            f"{sv['service_maps_per_1k_services'] / mib:.2f} MiB per 1K services** of capacity, "
            f"plus {sv['pool_bytes_per_1k_services'] / 1e3:.0f} KB of pools per 1K one-endpoint "
            f"services in use; all pinned maps {sv['memlock_total'] / mib:.0f} MiB. Conntrack: "
            f"{sv['ct_max_entries']:,} entries preallocated, {sv['ct_bytes_per_entry']:.0f} "
            f"bytes each: **{per_flow * 1e6 / mib:.0f} MiB per 1M flows** (two entries a flow).")
    if "big_service_s" in sv:
        text += (f" One hash rule with 1,024 endpoints: built and written in "
                 f"{sv['big_service_s']:.2f} s, a {sv['maglev_slots']:,}-slot Maglev table "
                 f"serving {sv['maglev_endpoints_served']:,} endpoints, the busiest with "
                 f"**{sv['maglev_busiest_over_share'] * 100:.2f} % more slots than its share**.")
    else:
        text += f" One hash rule with 1,024 endpoints: refused ({sv.get('big_service_error')})."
    text += (f" Aging sweep (`bench.ct_scale`: the daemon's `age_flows` over "
             f"{2 * ct['flows']:,} entries, {ct['flows']:,} flows, 10 % idle past their "
             f"timeout): **{quiet[0]['cpu_s']:.2f} s of CPU** removing "
             f"{quiet[0]['flows_removed']:,} flows, {quiet[1]['cpu_s']:.2f} s with nothing to "
             f"remove; during established-flow traffic {busy[0]['cpu_s']:.2f} / "
             f"{busy[1]['cpu_s']:.2f} s. That traffic (BPF_PROG_TEST_RUN loops in another "
             f"process): **{tr['sweep_pps'] / 1e6:.2f} M packets/s during sweeps, "
             f"{tr['idle_pps'] / 1e6:.2f} M without**, {tr['sweep_ns_per_packet']:.0f} / "
             f"{tr['idle_ns_per_packet']:.0f} ns per packet in the kernel.")
    return text


def synflood_text(res: dict) -> str:
    sf = res["synflood"]
    reasons = "; ".join(sorted(set(sf["broken_reasons"].values()))) or "none"
    return (f"`bench/synflood.c` sends TCP SYNs from random spoofed sources (10.128.0.0/9, "
            f"blackholed in the LB namespace) from the client namespace as fast as it can: "
            f"**{sf['flood_pps']:,.0f} SYN/s** for {sf['phase_s']:.0f} s "
            f"({sf['flood_sent']:,} SYNs) at a service with two endpoints, with the daemon's "
            f"conntrack tables (established and half-open) sized to {sf['ct_entries']:,} "
            f"entries each so the flood fills the half-open one many times over. Meanwhile "
            f"{sf['bulk']} bulk downloads and {sf['idle']} mostly idle "
            f"connections (an echo every {sf['idle_every_s']:.0f} s) through the same VIP, "
            f"opened before the flood, keep going (`bench/flows.py`). "
            f"**Established flows broken: {sf['flows_broken']} of {sf['flows']}** "
            f"(reasons: {reasons}). Bulk throughput {sf['gbps_before']:.2f} Gbit/s in the "
            f"{sf['phase_s']:.0f} s before the flood, **{sf['gbps_during']:.2f} Gbit/s during "
            f"it** ({sf['gbps_during'] / sf['gbps_before']:.2f}×; the flooder, the flows and "
            f"the LB share 2 vCPUs). A new connection after the flood: {sf['new_conn_after']}.")


def tables(res: dict) -> str:
    parts = ["### Traffic: median (min–max) and ratio to direct routing", "", main_table(res), "",
             "### pyloxi against the other load balancers (ratio of medians)", "", pair_table(res)]
    if res.get("xdp"):
        parts += ["", "### XDP on and off side by side (senders' checksum offload off)", "",
                  xdp_table(res)]
    if res.get("micro"):
        parts += ["", "### Datapath under BPF_PROG_TEST_RUN", "", micro_table(res)]
    if res.get("control_plane"):
        parts += ["", "### Control plane", "", cp_text(res)]
    if res.get("synflood"):
        parts += ["", "### Established flows under a SYN flood", "", synflood_text(res)]
    if res.get("scale"):
        parts += ["", "### Room to grow: 64K services, 2M conntrack entries", "",
                  scale_text(res)]
    parts += ["", "### Targets", "", "| target | measured | |", "|---|---|---|"]
    for name, got, ok in targets(res):
        parts.append(f"| {name} | {got} | {'met' if ok else '**missed**'} |")
    if res.get("errors"):
        parts += ["", "Errors reported by wrk: " + "; ".join(
            f"{c}: {' / '.join(e)}" for c, e in res["errors"].items())]
    return "\n".join(parts)


def doc_section(res: dict) -> str:
    m, c = res["machine"], res["config"]
    checks = "; ".join(f"{k}: `{v}`" for k, v in res.get("checks", {}).items())
    return f"""{START}
## Side by side (`make bench`)

Run {m['date']} on {m['nproc']} vCPU ({m['cpu']}), Linux {m['kernel']}, Python {m['python']};
{c['reps']} interleaved repetitions (every contender once, then again), {c['seconds']} s per
run; the whole `make bench` took {c.get('wall_s', 0) / 60:.1f} min. Datapath:
{c.get('bpf_object', 'build/lb.bpf.o')}. Chart: `docs/benchmarks.png`;
raw numbers: `bench/out/results.json` (not committed).

**Setup.** `pyloxi.testing.lab.LbTopology(1)`: client (10.0.1.2) — lb — be1 (10.0.11.2), veth pairs,
each in its own namespace, all on this VM's 2 vCPUs. Load generators (wrk, iperf3 client) run in the
client namespace. **Every contender serves from the same single backend**: one nginx (one worker) in
be1 listening on a port per contender (direct :8081, pyloxi-dnat :8082, pyloxi-fullnat :8083,
nftables :8084, haproxy :8085) and an iperf3 server per contender (:5301–:5305), so TIME_WAIT of one
never meets another's. Rules have one endpoint (be1) so no contender is helped or hurt by spreading.
Each LB contender has its own VIP (pyloxi-dnat 20.0.0.100, pyloxi-fullnat 20.0.0.103, nftables
20.0.0.101, haproxy 20.0.0.102, front ports 80 and 5201) and only the contender being measured is
installed in the LB namespace:

- **direct**: client → 10.0.11.2 directly; the LB namespace only routes (kernel forwarding, no
  conntrack, no TC program). The ceiling.
- **pyloxi-dnat / pyloxi-fullnat**: a real `pyloxi daemon --cleanup-on-exit` in the LB namespace,
  started before and stopped (TC program detached) after its runs; the rules are created with the
  CLI (`pyloxi create lb <vip> --tcp=80:<port> --endpoints=10.0.11.2:1 --mode=default|fullnat`).
- **nftables**: `nat prerouting` `dnat to 10.0.11.2:<port>` (what kube-proxy's nftables mode does;
  one backend, so no `numgen`), with the kernel's conntrack; `conntrack -F` before and after, the
  table is deleted after its runs.
- **haproxy**: HAProxy {_haproxy_version()} `mode tcp`, default threads (one per CPU), bound to
  its VIP on the LB's `lo`, started and stopped around its runs.

Same sysctls for all: LB `ip_forward=1`, `rp_filter=0`, `ip_local_port_range=32768 49151` (what
the daemon sets), `somaxconn=4096` everywhere, client ports 10000–60999. Each contender's block
starts with a curl checked for "be1" and a 1 s wrk warm-up (what be1 saw as the source: {checks}).
Workloads: `wrk -t1 -c32 -d{c['seconds']}s` (keep-alive), the same with `-H 'Connection: close'`
(one TCP connection per request: new connections/s), `wrk -t1 -c1 --latency` (latency of one
request at a time: p50/p99), `iperf3 -P 4 -t {c['seconds']}` (throughput, received).

Other engineers share this VM; the 1-minute load average at the start of each block (median per
contender: {_loads(res)}) shows how quiet it was.

{tables(res)}
{END}
"""


def _loads(res: dict) -> str:
    return ", ".join(f"{c} {med(r['loadavg_1m']):.2f}" for c, r in res["runs"].items()
                     if r.get("loadavg_1m"))


def _haproxy_version() -> str:
    import subprocess
    try:
        out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
        m = re.search(r"version (\S+)", out)
        return m.group(1) if m else ""
    except OSError:
        return ""


def write_doc(res: dict, path: str) -> None:
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    new = doc_section(res)
    if START in old and END in old:
        text = old[:old.index(START)] + new.rstrip("\n") + old[old.index(END) + len(END):]
    else:
        head = "# Benchmarks\n\n"
        body = old[len(head):] if old.startswith(head) else old
        text = head + new + "\n" + body
    with open(path, "w") as f:
        f.write(text)


def write_png(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = res["runs"]
    names = [c for c in CONTENDERS if c in runs]
    colors = {"direct": "#888888", "pyloxi-dnat": "#1f77b4", "pyloxi-fullnat": "#17becf",
              "nftables": "#ff7f0e", "haproxy": "#d62728"}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 4.2))
    for ax, (key, label, unit, higher) in zip(axes, METRICS, strict=True):
        meds = [med(runs[c][key]) for c in names]
        lo = [m - min(runs[c][key]) for m, c in zip(meds, names, strict=True)]
        hi = [max(runs[c][key]) - m for m, c in zip(meds, names, strict=True)]
        ax.bar(range(len(names)), meds, yerr=[lo, hi], capsize=3,
               color=[colors[c] for c in names])
        d = meds[0] if names and names[0] == "direct" else None
        for i, m in enumerate(meds):
            if d and i:
                ax.text(i, m, f"{m / d:.2f}×", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{label}\n[{unit}, {'higher' if higher else 'lower'} is better]", fontsize=9)
    m = res["machine"]
    fig.suptitle(f"pyloxi side by side — {m['date']}, {m['nproc']} vCPU {m['cpu']}, "
                 f"Linux {m['kernel']} (median, bars: min–max of {res['config']['reps']} runs; "
                 f"labels: ratio to direct)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
