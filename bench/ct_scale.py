"""Conntrack at 2M entries (issue 14); run as its own process, like bench.micro (it enters a
network namespace of its own, so bpf_fib_lookup sees only its routes).

    python -m bench.ct_scale --json OUT [--flows 1000000] [--rounds 3]

What it measures (docs/benchmarks.md, "Conntrack at 2M entries"):
- memory of the established table (ct_map, 2M entries) preallocated (the shipped flags,
  bpf/include/pyloxi/maps.h) vs BPF_F_NO_PREALLOC (the same source built with
  -DPL_CT_MAP_FLAGS=BPF_F_NO_PREALLOC): the kernel's own account of the map (`memlock` in
  the map fd's fdinfo: for a table that is not preallocated, its buckets plus elem_size + 8
  per element in use) -- idle after load, and with `--flows` flows (two entries each) written
  in; as a cross-check, how much the machine's slab caches grew during the fill (slabinfo;
  noisy: the machine is shared).
- established and new-flow ns of both variants under BPF_PROG_TEST_RUN, the loops of bench.micro
  (its docstring has the methods), on an empty table and on one holding `--flows` flows:
  a new flow's two inserts are where the variants differ. Variants alternate, `--rounds`
  times, medians reported.
- the daemon's aging sweep (age_flows: batch read of both tables, numpy pass, conditional
  deletes in the kernel) over `--flows` flows, 10% of them idle past the timeout: CPU seconds
  of this process (time.process_time: user + system, the batch reads' kernel time included),
  and wall seconds, after what the daemon does before its first sweep (prepare_aging: the
  sweep's buffers faulted in; timed apart, and skipped with --no-prepare), and RSS. Then a
  sweep with nothing to remove, then the 10% written back and swept
  again: first with no traffic, then all that again during the traffic below (which runs on
  the other vCPU and shares the caches and memory bandwidth with the sweep).
- packets/s of an established flow during a sweep vs without: a child process (forked, so no
  GIL is shared, as with real traffic) runs established-flow BPF_PROG_TEST_RUN loops (254
  repetitions a call) back to back; each call's end time and kernel duration are recorded, and
  calls are split into those that ended during a sweep and the rest. Reported: runs per wall
  second (what the loop achieved: on a 2-vCPU machine the sweep and the loop may share a CPU)
  and kernel ns per packet (the program's own cost: bucket-lock or cache disturbance).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import subprocess
import time

import numpy as np

from bench.micro import (
    CHAIN,
    CLIENT,
    EP,
    NETNS_SETUP,
    OBJ,
    ROOT,
    TC_ACT_REDIRECT,
    VIP,
    VIP_E,
    ctx_for,
    establish,
    loop_ns,
    once_ns,
    service,
    tcp_packet,
)
from pyloxi.testing.ctfill import synthetic_flows, write_entries
from pyloxi.testing.lab.dpns import datapath_netns

NO_PREALLOC_OBJ = os.path.join(ROOT, "build", "bench-ct-noprealloc.bpf.o")
SEC = 10**9


def build_no_prealloc() -> str:
    """lb.bpf.c with a ct_map that is not preallocated (PL_CT_MAP_FLAGS BPF_F_NO_PREALLOC),
    the compiler flags as the Makefile's."""
    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3", f"-D__TARGET_ARCH_{arch}",
                    "-DPL_CT_MAP_FLAGS=BPF_F_NO_PREALLOC", "-Wall", "-Werror",
                    "-I", os.path.join(ROOT, "bpf", "include"),
                    "-I", f"/usr/include/{os.uname().machine}-linux-gnu", "-c",
                    os.path.join(ROOT, "bpf", "lb.bpf.c"), "-o", NO_PREALLOC_OBJ], check=True)
    return NO_PREALLOC_OBJ


def memlock(fd: int) -> int:
    """The kernel's account of a map's memory (fdinfo `memlock`)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    raise RuntimeError("no memlock in fdinfo")


def slab_bytes() -> int:
    """Bytes of every slab cache's objects (/proc/slabinfo num_objs x objsize), the whole
    machine's: the elements of a table that is not preallocated come from kmalloc caches
    (bpf_mem_alloc), so their growth over a fill is a cross-check of memlock. A preallocated
    table's elements are one vmalloc area, counted in memlock and absent here."""
    total = 0
    with open("/proc/slabinfo") as f:
        for line in f.readlines()[2:]:
            parts = line.split()
            total += int(parts[2]) * int(parts[3])
    return total


def rss_mib() -> dict[str, float]:
    """This process's resident memory now and at its peak (/proc/self/status), MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0].lower()] = int(line.split()[1]) / 1024
    return out


def handshake_templates() -> tuple[bytes, bytes, bytes]:
    """SYN, SYN-ACK and ACK of a DNAT flow CLIENT:1024 -> VIP:80 (-> EP:8080), as bytes; a
    flow's own copies differ in the client port only (patched in, checksums left: the
    datapath does not verify them)."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from bench.micro import CLIENT_MAC, LB_MAC
    syn = tcp_packet(CLIENT, VIP, 1024, 80, "S")
    sa = bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=EP, dst=CLIENT) / TCP(
        sport=8080, dport=1024, flags="SA", seq=5000, ack=1001))
    ack = bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP) / TCP(
        sport=1024, dport=80, flags="A", seq=1001, ack=5001))
    return syn, sa, ack


def _port(pkt: bytes, off: int, port: int) -> bytes:
    return pkt[:off] + port.to_bytes(2, "big") + pkt[off + 2:]


def handshakes_ns(dp, ctx: bytes, ports: range) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """A new flow's three packets, each flow's run once (repeat=1; the kernel's duration then
    includes one timer read, the same for every variant): the SYN creates the half-open
    entries (ct_half, an LRU), the SYN-ACK answers, the ACK promotes the flow into ct_map (two
    inserts there, two deletes from ct_half): the inserts where the variants differ."""
    syn, sa, ack = handshake_templates()
    out = {}
    for name, tpl, off in (("syn", syn, 34), ("synack", sa, 36), ("ack_promote", ack, 34)):
        d, rvs = once_ns(dp.prog_fd, [_port(tpl, off, p) for p in ports], ctx)
        assert rvs == {TC_ACT_REDIRECT}, (name, rvs)
        out[f"{name}_ns"] = float(d.mean())
    return out


def open_variant(obj: str, tag: str):  # type: ignore[no-untyped-def]
    """A datapath from `obj` with the bench services and the established identity flow."""
    from pyloxi.datapath.ebpf.backend import EbpfDatapath
    dp = EbpfDatapath(f"/sys/fs/bpf/pl{os.getpid()}-cts-{tag}", obj_path=obj)
    service(dp, 1, VIP, EP, 80, 8080)
    service(dp, 2, VIP_E, VIP_E, 80, 80)  # identity rewrite: a repeatable established hit
    ctx0 = ctx_for("dp0")
    _, rvs = once_ns(dp.prog_fd, [tcp_packet(CLIENT, VIP_E, 40000, 80, "S", ttl=255)], ctx0)
    assert rvs == {TC_ACT_REDIRECT}, rvs
    establish(dp.prog_fd, ctx0, CLIENT, VIP_E, 40000, 80, VIP_E, 80)
    return dp


def drop_client_flows(dp) -> None:  # type: ignore[no-untyped-def]
    """Delete the handshake flows (client CLIENT, or the endpoint's replies to it) but not the
    established identity flow (port 40000)."""
    from pyloxi.datapath.ebpf import layout as L
    ct = dp.maps["ct_map"]
    kb, _, n = ct.lookup_batch_all(65536)
    keys = np.frombuffer(kb, dtype=L.CT_KEY_DTYPE, count=n)
    client = np.void(L.addr(CLIENT)[0])
    mine = ((keys["saddr"] == client) | (keys["daddr"] == client)) & \
        (keys["sport"] != np.uint16(40000).byteswap()) & \
        (keys["dport"] != np.uint16(40000).byteswap())
    raw = np.frombuffer(kb, dtype="V40", count=n)  # whole records: copies keep the pad bytes
    ct.delete_batch([bytes(k) for k in raw[mine]])


def count_entries(m) -> int:  # type: ignore[no-untyped-def]
    return sum(n for _, _, n in m.lookup_batch_raw(batch=65536))


def packet_costs(dp, ctx: bytes, calls: int, ports: range,  # type: ignore[no-untyped-def]
                 tag: str) -> dict[str, float]:
    """An established packet's ns (`calls` loops of CHAIN) and a new flow's three packets'
    (one flow a client port of `ports`), the keys suffixed _`tag`."""
    est = tcp_packet(CLIENT, VIP_E, 40000, 80, "A", ttl=255)
    ns, rvs, _ = loop_ns(dp.prog_fd, est, ctx, calls * CHAIN)
    assert rvs == {TC_ACT_REDIRECT}, rvs
    return {f"established_ns_{tag}": ns} | {
        f"{k}_{tag}": v for k, v in handshakes_ns(dp, ctx, ports).items()}


def bench_variants(flows: int, rounds: int, calls: int, handshakes: int) -> dict[str, object]:
    """Memory and packet costs of both variants, alternating, medians over rounds."""
    objs = {"no_prealloc": build_no_prealloc(), "prealloc": OBJ}
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in objs}
    ctx0 = ctx_for("dp0")
    for rnd in range(rounds):
        for variant, obj in objs.items():
            r: dict[str, float] = {}
            t0 = time.perf_counter()
            dp = open_variant(obj, variant)
            try:
                r["load_s"] = time.perf_counter() - t0
                ct = dp.maps["ct_map"]
                r["max_entries"] = ct.max_entries
                r["memlock_idle"] = memlock(ct.fd)
                r |= packet_costs(dp, ctx0, calls, range(1024, 1024 + handshakes), "empty")
                keys, vals = synthetic_flows(dp._dp_of[1], VIP, EP, flows, time.monotonic_ns())
                slab0 = slab_bytes()
                write_entries(ct, keys, vals)
                r["slab_growth_fill"] = slab_bytes() - slab0
                del keys, vals
                r["entries_full"] = count_entries(ct)
                r["memlock_full"] = memlock(ct.fd)
                r |= packet_costs(dp, ctx0, calls, range(41000, 41000 + handshakes), "full")
                # churn: those flows closed (deleted), as many new ones: inserts that can
                # reuse freed elements, as on a busy node in steady state
                drop_client_flows(dp)
                time.sleep(0.2)  # an RCU grace period: freed elements become reusable
                for k, v in handshakes_ns(dp, ctx0, range(41000, 41000 + handshakes)).items():
                    r[f"{k}_churn"] = v
                r["entries_end"] = count_entries(ct)
            finally:
                dp.destroy()
            runs[variant].append(r)
            print(f"round {rnd} {variant}: {json.dumps(r)}", flush=True)
            time.sleep(2)  # let RCU free the last variant's elements before the next reads
    return {v: {k: statistics.median(x[k] for x in rs) for k in rs[0]} | {"rounds": rs}
            for v, rs in runs.items()}


def _traffic(fd: int, pkt: bytes, ctx: bytes, stop: mmap.mmap, out_path: str) -> None:
    """Child: established-flow loops until stop[0] is set (or 120 s); per call its end time
    and kernel duration."""
    from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
    n = 4_000_000
    end, dur = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    bad, i = 0, 0
    deadline = time.monotonic_ns() + 120 * SEC
    while i < n and not stop[0]:
        r = prog_test_run(fd, pkt, ctx=ctx, repeat=CHAIN, data_size_out=256)
        now = time.monotonic_ns()
        end[i], dur[i] = now, r.duration_ns
        bad += r.retval != TC_ACT_REDIRECT
        i += 1
        if now >= deadline:
            break
    np.savez(out_path, end=end[:i], dur=dur[:i], bad=np.array([bad]))


def _split(end: np.ndarray, dur: np.ndarray, windows: list[tuple[int, int]]) -> dict[str, float]:
    """Per-packet kernel ns and runs per wall second, inside the sweep windows and outside."""
    inside = np.zeros(len(end), dtype=bool)
    for a, b in windows:
        inside |= (end >= a) & (end <= b)
    start = end - dur * CHAIN  # approximately: when the first call began
    out: dict[str, float] = {}
    for name, m in (("sweep", inside), ("idle", ~inside)):
        if not m.any():
            continue
        # the kernel reports a call's mean duration per repetition
        out[f"{name}_ns_per_packet"] = float(dur[m].mean())
        out[f"{name}_calls"] = int(m.sum())
        if name == "sweep":
            wall = sum(b - a for a, b in windows)
        else:
            wall = int(end[-1] - start[0]) - sum(b - a for a, b in windows)
        out[f"{name}_pps"] = float(m.sum() * CHAIN / (wall / SEC))
    return out


def bench_sweep(flows: int, sweeps: int, prepare: bool = True,
                obj: str = OBJ) -> dict[str, object]:
    """The daemon's sweep over `flows` flows, in CPU seconds, while a child process sends an
    established flow's packets; then that flow's packets/s split by sweep / no sweep.
    `prepare`: first what the daemon does before its first sweep (daemon.py's aging loop:
    the sweep's buffers faulted in), timed apart."""
    dp = open_variant(obj, "sweep")
    res: dict[str, object] = {"flows": flows, "rss_open": rss_mib()}
    tmp = f"/tmp/pl{os.getpid()}-cts-traffic.npz"
    try:
        if prepare:
            c0, t0 = time.process_time(), time.perf_counter()
            # the daemon's prepare_aging sizes it by conn_map's established flows, which the
            # synthetic flows below do not count in: the same size given directly
            dp.ct.prepare_sweep(2 * flows + 65536)
            res |= {"prepare_s": time.perf_counter() - t0,
                    "prepare_cpu_s": time.process_time() - c0, "rss_prepared": rss_mib()}
        ct = dp.maps["ct_map"]
        res["max_entries"] = ct.max_entries
        keys, vals = synthetic_flows(dp._dp_of[1], VIP, EP, flows, time.monotonic_ns())
        t0 = time.perf_counter()
        write_entries(ct, keys, vals)
        res["fill_s"] = time.perf_counter() - t0
        res["rss_filled"] = rss_mib()
        pkt = tcp_packet(CLIENT, VIP_E, 40000, 80, "A", ttl=255)
        ctx0 = ctx_for("dp0")
        quiet_s = 3.0

        def sweeps_now(tag: str, windows: list[tuple[int, int]]) -> list[dict[str, float]]:
            runs: list[dict[str, float]] = []
            for s in range(sweeps):
                if s and s % 2 == 0:  # the idle flows again, for another sweep removing them
                    write_entries(ct, keys, vals)
                    time.sleep(1)
                c0, w0 = time.process_time(), time.monotonic_ns()
                removed = dp.age_flows()
                w1, c1 = time.monotonic_ns(), time.process_time()
                windows.append((w0, w1))
                runs.append({"cpu_s": c1 - c0, "wall_s": (w1 - w0) / SEC,
                             "flows_removed": removed} | rss_mib())
                print(f"sweep {tag} {s}: {runs[-1]}", flush=True)
                time.sleep(1.5)
            if tag == "quiet":  # the traffic phase starts from the same full table
                write_entries(ct, keys, vals)
            return runs

        res["sweeps_quiet"] = sweeps_now("quiet", [])
        windows: list[tuple[int, int]] = []
        stop = mmap.mmap(-1, 1)  # shared with the child: set to stop it
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                _traffic(dp.prog_fd, pkt, ctx0, stop, tmp)
            finally:
                os._exit(0)
        try:
            time.sleep(quiet_s)
            sweep_runs = sweeps_now("traffic", windows)
            time.sleep(quiet_s)
        finally:
            stop[0] = 1
            os.waitpid(pid, 0)
        res["sweeps_traffic"] = sweep_runs
        res["entries_after"] = sum(n for _, _, n in ct.lookup_batch_raw(batch=65536))
        t = np.load(tmp)
        res["traffic"] = _split(t["end"], t["dur"], windows)
        res["traffic_bad_retvals"] = int(t["bad"][0])
    finally:
        dp.destroy()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=400, help="established loop calls (254 runs)")
    ap.add_argument("--handshakes", type=int, default=20_000, help="new flows per figure")
    ap.add_argument("--sweeps", type=int, default=4)
    ap.add_argument("--skip-variants", action="store_true")
    ap.add_argument("--no-prepare", action="store_true",
                    help="sweep without the daemon's start-up preparation (cold buffers)")
    ap.add_argument("--obj", default=OBJ, help="datapath object of the sweep (default build/)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    with datapath_netns(f"pl{os.getpid()}-cts", NETNS_SETUP):
        sweep = bench_sweep(args.flows, args.sweeps, prepare=not args.no_prepare, obj=args.obj)
        out: dict[str, object] = {"sweep": sweep}
        if not args.skip_variants:
            out["variants"] = bench_variants(args.flows, args.rounds, args.calls,
                                             args.handshakes)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
