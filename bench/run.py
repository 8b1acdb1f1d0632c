"""`make bench`: pyloxi side by side with direct routing, nftables DNAT and HAProxy, one run.

    python -m bench.run            # full: 3 interleaved repetitions, 5 s runs, 10,000 rules, 1M ct
    python -m bench.run --smoke    # 1 repetition, 1 s runs, 1,000 rules, 10,000 ct entries

Topology: pyloxi.testing.lab.LbTopology(1): client -- lb -- be1. Every contender serves from the
same single nginx (one worker) in be1, each on a port of its own, and the same iperf3 binary on a
port of its own, so TIME_WAIT of one never meets another's. Only the contender being measured is
installed in the LB namespace (pyloxi's daemon is started and stopped around its runs and detaches
on exit; the nftables table exists only during nftables' runs, with conntrack flushed before and
after; HAProxy runs only during its own). Each LB contender has its own VIP. Load comes from the
client namespace. Everything is removed at the end, pass or fail.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyloxi.testing.lab import LbTopology, cleanup_stale
from pyloxi.testing.lab.topology import wait_listening

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "bench", "out")
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
PNG = os.path.join(ROOT, "docs", "benchmarks.png")
BE_IP = "10.0.11.2"
API_PORT = 11111
HOST_EPHEMERAL_PORTS = "32768 49151"  # what the daemon's prepare_host sets; set for everyone

CONTENDERS = ["direct", "pyloxi-dnat", "pyloxi-fullnat", "nftables", "haproxy"]
# The XDP stage (run_xdp): pyloxi-dnat with `--datapath xdp` beside direct and pyloxi-dnat (TC
# alone), all three with the senders' checksum offload off; its own ports and VIP.
# pyloxi-dnat-xdpn: `--datapath xdp-native` (native XDP on the veths; GRO on the senders'
# ends gives them the NAPI native redirects into a veth need).
XDP_CONTENDERS = ["direct", "pyloxi-dnat", "pyloxi-dnat-xdp", "pyloxi-dnat-xdpn"]
SERVED = [*CONTENDERS, "pyloxi-dnat-xdp", "pyloxi-dnat-xdpn"]   # nginx and iperf3 ports in be1
HTTP_PORT = {c: 8081 + i for i, c in enumerate(SERVED)}
IPERF_PORT = {c: 5301 + i for i, c in enumerate(SERVED)}
VIP = {"direct": BE_IP, "pyloxi-dnat": "20.0.0.100", "pyloxi-fullnat": "20.0.0.103",
       "nftables": "20.0.0.101", "haproxy": "20.0.0.102", "pyloxi-dnat-xdp": "20.0.0.104",
       "pyloxi-dnat-xdpn": "20.0.0.105"}
FRONT_HTTP, FRONT_IPERF = 80, 5201
# The SYN-flood stage's conntrack size: small enough that the flood this VM can send (20-70k
# SYN/s) fills it many times over within its 20 s.
FLOOD_CT_ENTRIES = 65536

METRICS = [  # key, label, unit, higher is better
    ("keepalive_rps", "keep-alive req/s (wrk -t1 -c32)", "req/s", True),
    ("close_cps", "new connections/s (Connection: close, -c32)", "conn/s", True),
    ("iperf_gbps", "iperf3 -P 4 throughput", "Gbit/s", True),
    ("lat_p50_us", "latency p50 (wrk -c1)", "µs", False),
    ("lat_p99_us", "latency p99 (wrk -c1)", "µs", False),
]

NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
daemon off;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
{listens}
        location = / {{ return 200 "be1 $remote_addr\\n"; }}
    }}
}}
"""

HAPROXY_CONF = """
global
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend http
    bind {vip}:{fhttp}
    default_backend http
backend http
    server be1 {be}:{http}
frontend iperf
    bind {vip}:{fiperf}
    default_backend iperf
backend iperf
    server be1 {be}:{iperf}
"""

NFT_RULES = """
table ip plbench {{
    chain pre {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {vip} tcp dport {fhttp} dnat to {be}:{http}
        ip daddr {vip} tcp dport {fiperf} dnat to {be}:{iperf}
    }}
}}
"""


@dataclass
class Config:
    reps: int = 3
    seconds: int = 5
    rules: int = 10_000
    rules_big: int = 64_000     # one client goes on to this many: the last 1,000 against the first
    clients: int = 16           # concurrent clients, `rules` creates between them
    services: int = 65_534      # bench.svc_scale
    ct_flows: int = 1_000_000   # bench.ct_scale: two conntrack entries each
    ct_entries: int = 1_000_000
    repeats: int = 1_000_000
    rule_budget_s: float = 180.0
    smoke: bool = False

    @classmethod
    def smoke_mode(cls) -> Config:
        return cls(reps=1, seconds=1, rules=1000, rules_big=2000, services=2000,
                   ct_flows=20_000, ct_entries=10_000, repeats=10_000, rule_budget_s=10.0,
                   smoke=True)


@dataclass
class Results:
    config: dict[str, object]
    machine: dict[str, str]
    runs: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    micro: dict[str, object] = field(default_factory=dict)
    control_plane: dict[str, object] = field(default_factory=dict)
    scale: dict[str, object] = field(default_factory=dict)   # run_scale
    synflood: dict[str, object] = field(default_factory=dict)
    xdp: dict[str, dict[str, list[float]]] = field(default_factory=dict)   # run_xdp

    def add(self, contender: str, metric: str, value: float) -> None:
        self.runs.setdefault(contender, {}).setdefault(metric, []).append(value)


def machine() -> dict[str, str]:
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return {"date": now, "nproc": str(os.cpu_count()),
            "kernel": platform.release(), "cpu": cpu, "python": platform.python_version()}


# --- load generators (client namespace) ---

_UNIT = {"us": 1.0, "ms": 1e3, "s": 1e6}


def _us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"latency {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def wrk(topo: LbTopology, url: str, seconds: int, conns: int, close: bool = False,
        latency: bool = False) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s"]
    if close:
        cmd += ["-H", "Connection: close"]
    if latency:
        cmd.append("--latency")
    out = topo.client.run([*cmd, url], timeout=seconds + 30).stdout
    res: dict[str, float] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = float(sum(int(x) for x in m.groups())) if m else 0.0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = float(m.group(1)) if m else 0.0
    if latency:
        for pct in ("50", "99"):
            res[f"p{pct}"] = _us(re.search(rf"\s{pct}%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return res


def iperf(topo: LbTopology, host: str, port: int, seconds: int) -> float:
    out = topo.client.run(["iperf3", "-c", host, "-p", str(port), "-P", "4", "-t", str(seconds),
                           "-J"], timeout=seconds + 30).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def cpu_busy_s() -> float:
    """CPU seconds all CPUs spent busy so far (/proc/stat: user, nice, system, irq, softirq,
    steal), machine-wide: veth hands a packet on in the sender's context, so the LB namespace's
    share cannot be told apart; run_xdp reports it against direct routing's."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


# --- contenders (LB namespace) ---


class Bench:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.res = Results(config=cfg.__dict__.copy(), machine=machine())
        self.topo: LbTopology | None = None
        self._n = 0
        self.obj = os.path.join(ROOT, "build", "lb.bpf.o")

    # setup shared by everyone
    def build(self) -> None:
        cleanup_stale()
        self.topo = topo = LbTopology(1, prefix="pl")
        self.res.config["lab_tag"] = topo.lab.tag
        for ns in (topo.client, topo.lb, *topo.backends):
            ns.sysctl("net.core.somaxconn", 4096)
        topo.lb.sysctl("net.ipv4.ip_local_port_range", HOST_EPHEMERAL_PORTS)
        be = topo.backends[0]
        d = os.path.join(topo.tmp.name, "nginx")
        os.makedirs(d, exist_ok=True)
        listens = "\n".join(f"        listen {p} reuseport backlog=4096;"
                            for p in HTTP_PORT.values())
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(dir=d, listens=listens))
        be.popen(["nginx", "-c", os.path.join(d, "nginx.conf"), "-p", d])
        for c in SERVED:
            be.popen(["iperf3", "-s", "-p", str(IPERF_PORT[c])])
        for c in SERVED:
            wait_listening(be, HTTP_PORT[c])
            wait_listening(be, IPERF_PORT[c])

    @contextlib.contextmanager
    def contender(self, name: str) -> Iterator[tuple[str, int, int]]:
        """Install `name` in the LB namespace; yields (host, http port, iperf port) to load."""
        topo = self.topo
        assert topo is not None
        if name == "direct":
            yield BE_IP, HTTP_PORT[name], IPERF_PORT[name]
        elif name.startswith("pyloxi"):
            extra = (("--datapath", "xdp") if name.endswith("-xdp") else
                     ("--datapath", "xdp-native") if name.endswith("-xdpn") else ())
            with self.daemon(topo.lb.name, extra=extra) as _:
                mode = "fullnat" if name.endswith("fullnat") else "default"
                for front, back in ((FRONT_HTTP, HTTP_PORT[name]), (FRONT_IPERF, IPERF_PORT[name])):
                    self.cli("create", "lb", VIP[name], f"--tcp={front}:{back}",
                             f"--endpoints={BE_IP}:1", f"--mode={mode}")
                yield VIP[name], FRONT_HTTP, FRONT_IPERF
        elif name == "nftables":
            topo.lb.run("conntrack -F", check=False)
            rules = NFT_RULES.format(vip=VIP[name], be=BE_IP, fhttp=FRONT_HTTP, fiperf=FRONT_IPERF,
                                     http=HTTP_PORT[name], iperf=IPERF_PORT[name])
            path = os.path.join(topo.tmp.name, "plbench.nft")
            with open(path, "w") as f:
                f.write(rules)
            topo.lb.run(["nft", "-f", path])
            try:
                yield VIP[name], FRONT_HTTP, FRONT_IPERF
            finally:
                topo.lb.run("nft delete table ip plbench", check=False)
                topo.lb.run("conntrack -F", check=False)
        elif name == "haproxy":
            conf = os.path.join(topo.tmp.name, "haproxy.cfg")
            with open(conf, "w") as f:
                f.write(HAPROXY_CONF.format(vip=VIP[name], be=BE_IP, fhttp=FRONT_HTTP,
                                            fiperf=FRONT_IPERF, http=HTTP_PORT[name],
                                            iperf=IPERF_PORT[name]))
            topo.lb.run(f"ip addr add {VIP[name]}/32 dev lo")
            proc = topo.lb.popen(["haproxy", "-db", "-f", conf])
            try:
                wait_listening(topo.lb, FRONT_HTTP)
                wait_listening(topo.lb, FRONT_IPERF)
                yield VIP[name], FRONT_HTTP, FRONT_IPERF
            finally:
                proc.terminate()
                proc.wait(timeout=10)
                topo.lab.processes.remove(proc)
                topo.lb.run(f"ip addr del {VIP[name]}/32 dev lo", check=False)
        else:
            raise ValueError(name)

    @contextlib.contextmanager
    def daemon(self, netns: str, log_level: str = "warning",
               extra: tuple[str, ...] = ()) -> Iterator[subprocess.Popen[bytes]]:
        topo = self.topo
        assert topo is not None
        self._n += 1
        pin = topo.lab.pin_dir(f"bench{self._n}")
        state = os.path.join(topo.tmp.name, f"state{self._n}")
        log_path = os.path.join(topo.tmp.name, f"daemon{self._n}.log")
        self._api_ns = netns
        with open(log_path, "a") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pyloxi.entry", "daemon", "--netns", netns,
                 "--port", str(API_PORT), "--state-dir", state, "--bpffs", pin,
                 "--cleanup-on-exit", "--log-level", log_level, "--bpf-object", self.obj,
                 *extra],
                stdout=log, stderr=subprocess.STDOUT)
        topo.lab.processes.append(proc)
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"daemon exited: {_tail(log_path)}")
                r = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sf", "--max-time", "1",
                                    f"http://127.0.0.1:{API_PORT}/netlox/v1/version"],
                                   capture_output=True)
                if r.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"daemon API not up: {_tail(log_path)}")
                time.sleep(0.1)
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            topo.lab.processes.remove(proc)

    def snapshot_object(self) -> None:
        """Compile the committed bpf/ (git HEAD) once into bench/out, so edits others make to the
        working tree during the run cannot change (or break) the datapath under test."""
        tmp = os.path.join(OUT_DIR, "bpf-head")
        subprocess.run(["rm", "-rf", tmp], check=True)
        os.makedirs(tmp)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run(f"git archive HEAD bpf src | tar -x -C {tmp}", shell=True, cwd=ROOT,
                       check=True)
        # every child (daemon, CLI, micro-benchmark) runs HEAD's pyloxi against HEAD's object
        os.environ["PYTHONPATH"] = os.pathsep.join([os.path.join(tmp, "src"), ROOT])
        arch = {"x86_64": "x86", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
        obj = os.path.join(OUT_DIR, "lb.bpf.o")
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3",
                        f"-D__TARGET_ARCH_{arch}", "-Wall", "-Werror",
                        "-I", os.path.join(tmp, "bpf", "include"),
                        "-I", f"/usr/include/{os.uname().machine}-linux-gnu",
                        "-c", os.path.join(tmp, "bpf", "lb.bpf.c"), "-o", obj], check=True)
        self.obj = obj
        self.res.config["bpf_object"] = f"bpf/ and src/ at git {head}"

    def cli(self, *args: str) -> str:
        r = subprocess.run(["ip", "netns", "exec", self._api_ns, sys.executable, "-m",
                            "pyloxi.entry", *args], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"pyloxi {' '.join(args)}: {r.stdout}{r.stderr}")
        return r.stdout

    # --- the traffic runs ---

    def run_traffic(self) -> None:
        topo, s = self.topo, self.cfg.seconds
        assert topo is not None
        for rep in range(self.cfg.reps):
            for name in CONTENDERS:
                t0 = time.monotonic()
                with open("/proc/loadavg") as f:
                    self.res.add(name, "loadavg_1m", float(f.read().split()[0]))
                with self.contender(name) as (host, http, iport):
                    url = f"http://{host}:{http}/"
                    # correctness first: the answer comes from be1 (and shows the source it saw)
                    body = topo.client.run(["curl", "-sS", "--max-time", "5", url]).stdout.strip()
                    if not body.startswith("be1 "):
                        raise RuntimeError(f"{name}: unexpected answer {body!r}")
                    self.res.checks[name] = body
                    wrk(topo, url, 1, 32)  # warm-up, not recorded
                    ka = wrk(topo, url, s, 32)
                    cl = wrk(topo, url, s, 32, close=True)
                    lat = wrk(topo, url, s, 1, latency=True)
                    gbps = iperf(topo, host, iport, s)
                for metric, value in (("keepalive_rps", ka["rps"]), ("close_cps", cl["rps"]),
                                      ("iperf_gbps", gbps), ("lat_p50_us", lat["p50"]),
                                      ("lat_p99_us", lat["p99"])):
                    self.res.add(name, metric, value)
                bad = {k: r["errors"] + r["non2xx"] for k, r in
                       (("keepalive", ka), ("close", cl), ("latency", lat))}
                if any(bad.values()):
                    self.res.errors.setdefault(name, []).append(f"rep {rep + 1}: {bad}")
                print(f"[rep {rep + 1}/{self.cfg.reps}] {name:15s} ka {ka['rps']:9.0f} req/s  "
                      f"close {cl['rps']:8.0f} conn/s  iperf {gbps:6.2f} Gbit/s  "
                      f"p50 {lat['p50']:7.1f} µs  p99 {lat['p99']:7.1f} µs  "
                      f"({time.monotonic() - t0:.0f} s)", flush=True)

    def run_xdp(self) -> None:
        """XDP on and off side by side: direct, pyloxi-dnat (TC alone) and pyloxi-dnat-xdp
        (`--datapath xdp`; generic XDP on veth) and pyloxi-dnat-xdpn (`--datapath xdp-native`),
        interleaved, the same workloads as run_traffic plus the busy CPU per Gbit/s during
        iperf3. For all of them during this stage the senders' (client and be1) checksum offload
        is off: with it on, every TCP packet carries a partial checksum XDP leaves to TC, and
        XDP's figures would be its pass cost only (bpf/include/pyloxi/xdp.h); and their GRO is
        on (the NAPI native XDP's redirects into their veths need)."""
        topo, s = self.topo, self.cfg.seconds
        assert topo is not None
        senders = (topo.client, *topo.backends)
        for ns in senders:
            ns.run(["ethtool", "-K", "eth0", "tx", "off", "gro", "on"])
        try:
            for rep in range(self.cfg.reps):
                for name in XDP_CONTENDERS:
                    with self.contender(name) as (host, http, iport):
                        url = f"http://{host}:{http}/"
                        body = topo.client.run(["curl", "-sS", "--max-time", "5", url]).stdout
                        if not body.startswith("be1 "):
                            raise RuntimeError(f"xdp stage, {name}: unexpected answer {body!r}")
                        wrk(topo, url, 1, 32)
                        ka = wrk(topo, url, s, 32)
                        cl = wrk(topo, url, s, 32, close=True)
                        lat = wrk(topo, url, s, 1, latency=True)
                        c0 = cpu_busy_s()
                        gbps = iperf(topo, host, iport, s)
                        cpu = cpu_busy_s() - c0
                        xs = self._xdp_stats() if "-xdp" in name else {}
                        fwd, new = xs.get("xdp_fwd", 0.0), xs.get("xdp_new", 0.0)
                    bad = sum(r["errors"] + r["non2xx"] for r in (ka, cl, lat))
                    if bad:
                        self.res.errors.setdefault(f"xdp stage {name}", []).append(
                            f"rep {rep + 1}: {bad:.0f}")
                    for metric, value in (("keepalive_rps", ka["rps"]), ("close_cps", cl["rps"]),
                                          ("iperf_gbps", gbps), ("lat_p50_us", lat["p50"]),
                                          ("lat_p99_us", lat["p99"]),
                                          ("cpu_s_per_gbit", cpu / (gbps * s) if gbps else 0.0),
                                          ("xdp_fwd", fwd), ("xdp_new", new)):
                        self.res.xdp.setdefault(name, {}).setdefault(metric, []).append(value)
                    print(f"[xdp rep {rep + 1}/{self.cfg.reps}] {name:15s} ka {ka['rps']:9.0f} "
                          f"close {cl['rps']:8.0f}  iperf {gbps:6.2f} Gbit/s  "
                          f"p99 {lat['p99']:7.1f} µs  cpu {cpu / (gbps * s or 1):.3f} s/Gbit"
                          f"  xdp_fwd {fwd:.0f} xdp_new {new:.0f}", flush=True)
        finally:
            for ns in senders:
                ns.run(["ethtool", "-K", "eth0", "tx", "on", "gro", "off"], check=False)

    def _xdp_stats(self) -> dict[str, float]:
        """Packets the XDP path forwarded, flows it opened, in the running daemon (stats_map)."""
        from pyloxi.datapath.ebpf.counters import datapath_stats
        from pyloxi.datapath.ebpf.libbpf.maps import Map
        topo = self.topo
        assert topo is not None
        m = Map.from_pin(os.path.join(topo.lab.pin_dir(f"bench{self._n}"), "stats_map"))
        try:
            st = datapath_stats(m)
            return {k: float(st[k]) for k in ("xdp_fwd", "xdp_new")}
        finally:
            m.close()

    # --- datapath micro-benchmark and conntrack sweep (own namespace, own process) ---

    def run_micro(self) -> None:
        out = os.path.join(OUT_DIR, "micro.json")
        subprocess.run([sys.executable, "-m", "bench.micro", "--repeats", str(self.cfg.repeats),
                        "--new-flows", str(self.cfg.repeats), "--ct-entries",
                        str(self.cfg.ct_entries), "--obj", self.obj, "--json", out],
                       check=True, cwd=ROOT,
                       timeout=900)
        with open(out) as f:
            self.res.micro = json.load(f)
        p, sw = self.res.micro["packets"], self.res.micro["sweep"]
        print(f"micro: empty {p['empty_ns']:.0f} ns, not-VIP {p['not_vip_ns']:.0f} ns, "
              f"established {p['established_ns']:.0f} ns, new flow {p['new_flow_ns']:.0f} ns; "
              f"sweep of {sw['ct_entries_present']} entries {sw['sweep_s']:.2f} s", flush=True)

    # --- control plane: a real daemon in a namespace of its own ---

    def run_control_plane(self) -> None:
        """Rule creates through the API (durable writes, the eBPF datapath): one keep-alive
        client (bench.cp_client's raw HTTP/1.1 client: its own CPU stays out of the chain)
        creates `rules` and reads each back, then goes on to `rules_big` in the same daemon;
        then `clients` concurrent clients create `rules` in a fresh one."""
        topo, cfg = self.topo, self.cfg
        assert topo is not None
        ns = topo.lab.netns("cp")

        def client(module: str, name: str, *args: str) -> dict[str, Any]:
            out = os.path.join(OUT_DIR, name)
            ns.run([sys.executable, "-m", module, "--raw", *args, "--json", out],
                   timeout=cfg.rule_budget_s * 3 + 120)
            with open(out) as f:
                res: dict[str, Any] = json.load(f)
            return res

        with self.daemon(ns.name) as proc:
            rss0 = vmrss_mb(proc.pid)
            cp = client("bench.cp_client", "control_plane.json", "--n", str(cfg.rules),
                        "--budget", str(cfg.rule_budget_s))
            rss = vmrss_mb(proc.pid)
            big = client("bench.cp_client", "control_plane_big.json", "--no-list",
                         "--n", str(cfg.rules_big - cfg.rules), "--offset", str(cfg.rules),
                         "--budget", str(cfg.rule_budget_s * 3))
            rss_big = vmrss_mb(proc.pid)
        with self.daemon(ns.name) as proc:
            conc = client("bench.cp_concurrency", "control_plane_conc.json",
                          "--clients", str(cfg.clients), "--n", str(cfg.rules))
        cp |= {"rss_idle_mb": rss0, "rss_mb": rss, "rss_big_mb": rss_big, "big": big,
               "concurrent": conc}
        self.res.control_plane = cp
        print(f"control plane: {cp['created']} rules at {cp['rules_per_s']:.0f}/s, "
              f"p99 {cp['p99_ms']:.1f} ms, RSS {rss:.0f} MB; to {cfg.rules_big}: last 1,000 "
              f"{big['last_1000_per_s']:.0f}/s, RSS {rss_big:.0f} MB; {cfg.clients} clients: "
              f"{conc['rules_per_s']:.0f}/s", flush=True)

    # --- room to grow: 64K services, 2M conntrack entries (own namespaces, own processes) ---

    def run_scale(self) -> None:
        cfg = self.cfg
        svc_out, ct_out = (os.path.join(OUT_DIR, n) for n in ("svc_scale.json", "ct_scale.json"))
        subprocess.run([sys.executable, "-m", "bench.svc_scale", "--services",
                        str(cfg.services), "--obj", self.obj, "--json", svc_out],
                       check=True, cwd=ROOT, timeout=900, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, "-m", "bench.ct_scale", "--flows", str(cfg.ct_flows),
                        "--skip-variants", "--sweeps", "2", "--obj", self.obj, "--json", ct_out],
                       check=True, cwd=ROOT, timeout=900, stdout=subprocess.DEVNULL)
        with open(svc_out) as f, open(ct_out) as g:
            self.res.scale = {"services": json.load(f), "conntrack": json.load(g)["sweep"]}
        sv, ct = self.res.scale["services"], self.res.scale["conntrack"]
        print(f"scale: {sv['services']} services at {sv['creates_per_s']:.0f}/s, 1,024-endpoint "
              f"rule {sv.get('big_service_s', '-')} s; sweep of {2 * ct['flows']} entries "
              f"{ct['sweeps_quiet'][0]['cpu_s']:.2f} s CPU", flush=True)

    # --- established flows under a spoofed SYN flood ---

    def run_synflood(self) -> None:
        from bench import synflood

        sf = synflood.run(self, OUT_DIR, every_s=1.0 if self.cfg.smoke else 10.0,
                          phase_s=2.0 if self.cfg.smoke else 20.0, ct_entries=FLOOD_CT_ENTRIES)
        self.res.synflood = sf
        print(f"syn flood: {sf['flood_pps']:,.0f} SYN/s from spoofed sources for "
              f"{sf['phase_s']:.0f} s; {sf['flows_broken']} of {sf['flows']} established flows "
              f"({sf['bulk']} bulk, {sf['idle']} idle) broken; bulk throughput "
              f"{sf['gbps_before']:.2f} -> {sf['gbps_during']:.2f} Gbit/s; "
              f"a new connection after the flood: {sf['new_conn_after']}", flush=True)

    def close(self) -> None:
        if self.topo is not None:
            self.topo.close()
            self.topo = None


def _tail(path: str) -> str:
    with open(path) as f:
        return f.read()[-2000:]


def vmrss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="1 rep, 1 s runs, small tables")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.*")
    ap.add_argument("--json", default=None, help="raw results (default bench/out/results*.json)")
    ap.add_argument("--only", choices=["synflood", "xdp"], help="run one stage alone (no doc)")
    args = ap.parse_args(argv)
    cfg = Config.smoke_mode() if args.smoke else Config()
    os.makedirs(OUT_DIR, exist_ok=True)
    bench = Bench(cfg)
    t0 = time.monotonic()
    if args.only:
        try:
            bench.snapshot_object()
            bench.build()
            if args.only == "xdp":
                bench.run_xdp()
            else:
                bench.run_synflood()
        finally:
            bench.close()
        if args.only == "xdp":
            path = args.json or os.path.join(OUT_DIR, "results-xdp.json")
            with open(path, "w") as f:
                json.dump(bench.res.__dict__, f, indent=2)
            from bench import report
            print(report.xdp_table(bench.res.__dict__))
        return 0
    try:
        bench.snapshot_object()
        bench.build()
        bench.run_traffic()
        bench.run_xdp()
        bench.run_control_plane()
        bench.run_synflood()
        bench.run_scale()
    finally:
        bench.close()
    path = args.json or os.path.join(OUT_DIR, "results-smoke.json" if cfg.smoke else "results.json")
    with open(path, "w") as f:  # traffic numbers are kept even if what follows fails
        json.dump(bench.res.__dict__, f, indent=2)
    bench.run_micro()
    res = bench.res
    res.config["wall_s"] = round(time.monotonic() - t0, 1)
    with open(path, "w") as f:
        json.dump(res.__dict__, f, indent=2)
    from bench import report
    print(report.tables(res.__dict__))
    if not args.no_doc and not cfg.smoke:
        report.write_doc(res.__dict__, DOC)
        report.write_png(res.__dict__, PNG)
    print(f"raw results: {path} ({res.config['wall_s']} s)")
    return 0


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


if __name__ == "__main__":
    sys.exit(main())
