"""`make demo` (demo support, not the product): the main job on a built-in topology.

Builds client / LB / three nginx backends in network namespaces, starts `pyloxi daemon` in
the LB namespace, creates a VIP with the CLI, sends traffic from the client, shows who
answered, the per-endpoint counters and the conntrack table, then removes everything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pyloxi.testing.lab import LbTopology, cleanup_stale
from pyloxi.testing.lab.topology import ROUTED_VIP, ROUTED_VIP6, curl

NAT64_VIP = "fd00:20::164"

REQUESTS = 9


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def pyloxi(topo: LbTopology, *args: str) -> str:
    print(f"$ pyloxi {' '.join(args)}", flush=True)
    proc = topo.lb.run([sys.executable, "-m", "pyloxi.entry", *args], check=False)
    out = (proc.stdout + proc.stderr).rstrip()
    print(out, flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pyloxi {' '.join(args)} failed")
    return out


def start_daemon(topo: LbTopology) -> subprocess.Popen[bytes]:
    log = os.path.join(topo.tmp.name, "daemon.log")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyloxi.entry", "daemon", "--netns", topo.lb.name,
             "--state-dir", os.path.join(topo.tmp.name, "state"),
             "--bpffs", topo.lab.pin_dir("demo"), "--cleanup-on-exit"],
            stdout=out, stderr=subprocess.STDOUT)
    topo.lab.processes.append(proc)
    for _ in range(100):
        if proc.poll() is not None:
            break
        version = topo.lb.run([sys.executable, "-m", "pyloxi.entry", "version"], check=False)
        if version.returncode == 0:
            return proc
        time.sleep(0.2)
    with open(log) as f:
        raise RuntimeError(f"daemon did not come up:\n{f.read()[-3000:]}")


def main() -> int:
    cleanup_stale()
    say("Topology: client 10.0.1.2 -- LB 10.0.1.1 -- backends be1..be3 (10.0.11-13.2), "
        "dual stack (fd00:1::2 -- fd00:1::1 -- fd00:11-13::2)")
    with LbTopology(3, prefix="pl", v6=True) as topo:
        topo.start_http()
        say(f"pyloxi daemon in namespace {topo.lb.name} (eBPF on every interface)")
        daemon = start_daemon(topo)
        say(f"Create VIP {ROUTED_VIP}:80 over the three backends (round robin)")
        eps = ",".join(f"{ip}:1" for ip in topo.backend_ips)
        pyloxi(topo, "create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={eps}",
               "--name=demo-web")
        say(f"{REQUESTS} requests from the client to http://{ROUTED_VIP}/")
        for i in range(1, REQUESTS + 1):
            backend, seen = curl(topo.client, f"http://{ROUTED_VIP}/").split()
            print(f"  request {i}: answered by {backend} (it saw the client as {seen})")
        eps6 = ",".join(f"{ip}:1" for ip in topo.backend_ips6)
        say(f"Create IPv6 VIP [{ROUTED_VIP6}]:80 over the backends' IPv6 addresses (NAT66)")
        pyloxi(topo, "create", "lb", ROUTED_VIP6, "--tcp=80:80", f"--endpoints={eps6}",
               "--name=demo-web6")
        say(f"Create NAT64 VIP [{NAT64_VIP}]:80 over the backends' IPv4 addresses")
        pyloxi(topo, "create", "lb", NAT64_VIP, "--tcp=80:80", f"--endpoints={eps}",
               "--name=demo-nat64")
        for vip in (ROUTED_VIP6, NAT64_VIP):
            say(f"{REQUESTS} requests from the client to http://[{vip}]/")
            for i in range(1, REQUESTS + 1):
                backend, seen = curl(topo.client, f"http://[{vip}]/").split()
                print(f"  request {i}: answered by {backend} (it saw the client as {seen})")
        say("Rules with per-endpoint counters (packets:bytes)")
        pyloxi(topo, "get", "lb", "-o", "wide")
        say("Conntrack: one line per connection, with its NAT action")
        pyloxi(topo, "get", "ct")
        say("Stopping the daemon and removing the namespaces")
        daemon.terminate()
        daemon.wait(timeout=15)
    print("done.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
