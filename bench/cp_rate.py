"""Control-plane create rate against a real daemon (eBPF datapath) in a namespace of its own,
with optional py-spy profiles of the daemon (issue 14). As root, after `make build`:

    python -m bench.cp_rate --n 10000 --clients 1 --clients 16 --out bench/out/cp_rate
    python -m bench.cp_rate --n 10000 --profile --out bench/out/cp_rate   # needs py-spy
    python -m bench.cp_rate --n 10000 --clients 1 --raw   # a client lighter than httpx

Each run starts a fresh daemon (empty state dir). With --profile, py-spy records the daemon
(speedscope JSON) during the first `--phase` creates, and again during the last `--phase`
creates of a table already holding n - phase rules.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

from pyloxi.testing.lab import cleanup_stale
from pyloxi.testing.lab.netns import Lab, Netns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_PORT = 11111


@contextlib.contextmanager
def daemon(lab: Lab, ns: Netns, tmp: str, n: int) -> Iterator[subprocess.Popen[bytes]]:
    log_path = os.path.join(tmp, f"daemon{n}.log")
    with open(log_path, "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyloxi.entry", "daemon", "--netns", ns.name,
             "--port", str(API_PORT), "--state-dir", os.path.join(tmp, f"state{n}"),
             "--bpffs", lab.pin_dir(f"cprate{n}"), "--cleanup-on-exit", "--log-level",
             "warning", "--bpf-object", os.path.join(ROOT, "build", "lb.bpf.o")],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while ns.run(["curl", "-sf", "--max-time", "1",
                      f"http://127.0.0.1:{API_PORT}/netlox/v1/version"],
                     check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log_path) as f:
                    raise RuntimeError(f"daemon not up: {f.read()[-2000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class CpuSampler:
    """The daemon's CPU time (its own and its waited-for children's: `ip -batch`), sampled
    every 0.25 s against CLOCK_MONOTONIC, so CPU per create can be read per part of a run even
    on a busy machine where wall time says more about the neighbours than about us."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def cpu(self) -> float:
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """(the daemon's own CPU seconds, its waited-for children's)."""
        user, system, children = self.cpu_kinds()
        return user + system, children

    def cpu_kinds(self) -> tuple[float, float, float]:
        """The daemon's user and system CPU seconds, and its waited-for children's."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = [int(x) for x in fields[11:15]]  # utime stime cutime cstime
        return ticks[0] / self._tick, ticks[1] / self._tick, (ticks[2] + ticks[3]) / self._tick

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.perf_counter(), self.cpu()))
            self._stop.wait(0.25)

    def at(self, t: float) -> float:
        """CPU seconds at time t (linear between samples)."""
        s = self.samples
        for (t1, c1), (t2, c2) in zip(s, s[1:], strict=False):
            if t1 <= t <= t2:
                return c1 + (c2 - c1) * (t - t1) / (t2 - t1 or 1)
        return s[-1][1] if s and t > s[-1][0] else (s[0][1] if s else 0.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def ctx_switches(pid: int) -> int:
    """Context switches of the daemon's live threads so far (voluntary and not): a thread
    hand-off (the store's writer, a worker, the loop's wake-up) is one or two, so this counts
    hand-offs per create, steadier than CPU time on a shared machine."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if "ctxt_switches:" in line:
                    total += int(line.split()[-1])
    return total


def cpu_per_create(res: dict[str, object], cpu: CpuSampler, chunk: int = 1000) -> list[float]:
    """Daemon CPU ms per create, per `chunk` creates of a single-client run."""
    t0 = float(res["t0"])  # type: ignore[arg-type]
    rates = res["per_1000_per_s"]
    assert isinstance(rates, list)
    out, t = [], t0
    for r in rates:
        t_next = t + chunk / float(r)
        out.append((cpu.at(t_next) - cpu.at(t)) / chunk * 1e3)
        t = t_next
    return out


def client(ns: Netns, out: str, n: int, clients: int, offset: int = 0,
           raw: bool = False) -> dict[str, object]:
    if clients == 1:
        cmd = [sys.executable, "-m", "bench.cp_client", "--n", str(n), "--budget", "900",
               "--no-list"]
    else:
        cmd = [sys.executable, "-m", "bench.cp_concurrency", "--clients", str(clients),
               "--n", str(n)]
    if raw:
        cmd.append("--raw")
    ns.run([*cmd, "--offset", str(offset), "--json", out], timeout=1200)
    with open(out) as f:
        res: dict[str, object] = json.load(f)
    return res


def pyspy(pid: int, out: str, rate: int = 200) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", str(rate), "--format",
                             "speedscope", "--output", out, "--threads", "--nonblocking", "--gil"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
    spy.wait(timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--clients", type=int, action="append", help="1 and/or N (repeatable)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--raw", action="store_true",
                    help="clients send with bench.cp_client.RawClient instead of httpx")
    ap.add_argument("--phase", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--profile-clients", type=int, default=1,
                    help="clients of the profiled phases (the fill between is one client)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "cp_rate"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cleanup_stale()
    results: dict[str, object] = {}
    with Lab(prefix="cr") as lab, tempfile.TemporaryDirectory() as tmp:
        ns = lab.netns("cp")
        runs = 0
        for clients in args.clients or []:
            runs += 1
            with daemon(lab, ns, tmp, runs) as proc:
                cpu = CpuSampler(proc.pid)
                before = cpu.cpu_kinds()
                switches = ctx_switches(proc.pid)
                res = client(ns, os.path.join(args.out, f"c{clients}.json"), args.n, clients,
                             raw=args.raw)
                user, system, kids = (b - a for a, b in zip(before, cpu.cpu_kinds(), strict=True))
                res["daemon_cpu_ms_per_create"] = (user + system + kids) / args.n * 1e3
                res["daemon_system_cpu_ms_per_create"] = system / args.n * 1e3
                res["daemon_children_cpu_ms_per_create"] = kids / args.n * 1e3
                res["daemon_ctx_switches_per_create"] = (ctx_switches(proc.pid) - switches) / args.n
                cpu.stop()
                if clients == 1:
                    res["daemon_cpu_ms_per_create_by_1000"] = cpu_per_create(res, cpu)
            results[f"clients_{clients}"] = res
            print(json.dumps({f"clients_{clients}": res}), flush=True)
        if args.profile:
            runs += 1
            with daemon(lab, ns, tmp, runs) as proc:
                spy = pyspy(proc.pid, os.path.join(args.out, "early.speedscope.json"), args.rate)
                time.sleep(1)
                early = client(ns, os.path.join(args.out, "early.json"), args.phase,
                               args.profile_clients, raw=args.raw)
                stop(spy)
                fill = args.n - 2 * args.phase
                if fill > 0:
                    client(ns, os.path.join(args.out, "fill.json"), fill, 1, offset=args.phase,
                           raw=args.raw)
                spy = pyspy(proc.pid, os.path.join(args.out, "late.speedscope.json"), args.rate)
                time.sleep(1)
                late = client(ns, os.path.join(args.out, "late.json"), args.phase,
                              args.profile_clients, offset=args.n - args.phase, raw=args.raw)
                stop(spy)
            results["profile"] = {"early": early, "late": late}
            print(json.dumps(results["profile"]), flush=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
