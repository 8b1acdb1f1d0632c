"""A two-node pyloxi cluster in namespaces (demo and test support, not the product).

    cl 10.80.1.2 ── rt (BIRD, AS 65000) ── brf ─┬─ lb1 10.80.2.11 ─┬─ brb ── be1 10.80.3.21
                  10.80.1.1 / 10.80.2.1       └─ lb2 10.80.2.12 ─┘        be2 10.80.3.22

Everything a user would run: on each LB node a full `pyloxi daemon --bgp --cluster <peer>
--self N` (gobgpd under it, conntrack sync over the front link) and keepalived with the shipped
notify script (VRRPv3, 100 ms adverts on the front link; the backends' gateway 10.80.3.1 is its
virtual address, and the notify script posts it as the instance IP: the SNAT source of onearm
and fullnat rules, so their flows' replies follow the MASTER too). The router learns the VIP
from both nodes over eBGP: MED 10 from the MASTER, 20 from the BACKUP, so it routes to the
MASTER. The same rule (round robin; default mode unless `mode` says otherwise) is posted to
both daemons.

A node "dies" by its switch ports going down (no FIN, no BGP NOTIFICATION, no VRRP goodbye).
The other node's keepalived becomes MASTER after ~0.4 s (the backends' gateway moves with a
gratuitous ARP), its daemon becomes MASTER (MED 10), and the router drops the dead node's
route at its BGP hold time (3 s). The flows survive because the new MASTER has them from the
sync: the client's TCP retransmits through it.

The bridges flood unknown unicast as switches do: once lb1's ports are down, frames the router
still sends to lb1's MAC reach lb2, whose datapath leaves frames for another host's MAC to the
kernel (dropped), so nothing but the routing change moves the traffic.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from pyloxi.testing.lab.netns import Lab, Netns
from pyloxi.testing.lab.topology import _NGINX_CONF, wait_listening

VIP = "20.20.20.1"
CLIENT = "10.80.1.2"
BACKENDS = ("10.80.3.21", "10.80.3.22")
GATEWAY = "10.80.3.1"           # the backends' gateway: keepalived's virtual address
LB_FRONT = ("10.80.2.11", "10.80.2.12")
LB_BACK = ("10.80.3.11", "10.80.3.12")
ROUTER = "10.80.2.1"
LB_AS, RT_AS = 65001, 65000
HOLD = 3
API = 11111
SIZE = 4 << 20
TRIGGER = 256 << 10             # bytes downloaded when the MASTER dies (a flow ~0.15 s old)
_REPO = Path(__file__).resolve().parents[3]
NOTIFY = _REPO / "deploy" / "keepalived" / "notify.sh"

BIRD_CONF = f"""
router id {ROUTER};
protocol device {{ scan time 1; }}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
template bgp lb {{
  local as {RT_AS};
  hold time {HOLD}; keepalive time 1; connect retry time 1; error wait time 1, 2;
  ipv4 {{ import all; export none; }};
}}
protocol bgp lb1 from lb {{ neighbor {LB_FRONT[0]} as {LB_AS}; }}
protocol bgp lb2 from lb {{ neighbor {LB_FRONT[1]} as {LB_AS}; }}
"""

KEEPALIVED_CONF = """
global_defs {{
    router_id {name}
    enable_script_security
    script_user root
    vrrp_garp_master_delay 0
}}
vrrp_instance llb-inst0 {{
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 52
    priority {priority}
    version 3
    advert_int 0.1
    virtual_ipaddress {{
        {gateway}/24 dev eth1
    }}
    notify "{notify} llb-inst0 http://127.0.0.1:{api} {gateway}"
}}
"""

# The client: one download, read slowly through a clamped receive buffer (the transfer is
# really in flight when the MASTER dies); exit 0 only for the whole body.
SLOW_GET = """
import socket, sys, time
vip, out = sys.argv[1], sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
s.settimeout(20)
s.connect((vip, 80))
s.sendall(b"GET /big.bin HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
head = b""
while b"\\r\\n\\r\\n" not in head:
    head += s.recv(4096)
head, body = head.split(b"\\r\\n\\r\\n", 1)
length = int([ln.split(b":")[1] for ln in head.split(b"\\r\\n")
              if ln.lower().startswith(b"content-length")][0])
got = len(body)
with open(out, "wb", buffering=0) as f:
    f.write(body)
    while got < length:
        chunk = s.recv(16384)
        if not chunk:
            break
        f.write(chunk)
        got += len(chunk)
        time.sleep(0.008)
sys.exit(0 if got == length else 3)
"""


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, httpx.HTTPError, ValueError, KeyError):
            if cond():
                return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class Node:
    """One LB node: its namespace, its daemon, its keepalived."""

    def __init__(self, cluster: ClusterLab, index: int, sync: bool) -> None:
        self.cluster, self.index, self.name = cluster, index, f"lb{index + 1}"
        self.ns = cluster.lab.netns(self.name)
        self.dir = os.path.join(cluster.tmp, self.name)
        os.makedirs(self.dir)
        self.sync = sync
        self.proc: subprocess.Popen[bytes] | None = None

    def start_daemon(self) -> None:
        peer = LB_FRONT[1 - self.index]
        args = [sys.executable, "-m", "pyloxi.entry", "daemon", "--netns", self.ns.name,
                "--port", str(API), "--state-dir", os.path.join(self.dir, "state"),
                "--bpffs", self.cluster.lab.pin_dir(self.name), "--interfaces", "eth0,eth1",
                "--bgp", "--bgp-timers", f"{HOLD},1,1"]
        if self.sync:
            args += ["--cluster", peer, "--self", str(self.index)]
        with open(os.path.join(self.dir, "daemon.log"), "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.cluster.lab.processes.append(self.proc)

    def wait_daemon(self) -> None:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: daemon exited: {self.log_tail()}")
            return self.api("GET", "/version").status_code == 200
        wait_for(up, 60, f"{self.name}'s API")

    def start_keepalived(self, priority: int) -> None:
        conf = os.path.join(self.dir, "keepalived.conf")
        Path(conf).write_text(KEEPALIVED_CONF.format(name=self.name, priority=priority,
                                                     gateway=GATEWAY, notify=NOTIFY, api=API))
        with open(os.path.join(self.dir, "keepalived.log"), "ab") as log:
            self.ns.popen(["keepalived", "-n", "-l", "-D", "-f", conf,
                           "-p", f"{self.dir}/ka.pid", "-r", f"{self.dir}/vrrp.pid",
                           "-c", f"{self.dir}/checkers.pid"],
                          stdout=log, stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        with open(os.path.join(self.dir, "daemon.log"), errors="replace") as f:
            return f.read()[-2000:]

    def api(self, method: str, path: str, body: object = None) -> httpx.Response:
        """The REST API on the node's loopback (a short Python inside its namespace)."""
        script = ("import httpx,sys,json;"
                  "r=httpx.request(sys.argv[1],sys.argv[2],content=sys.stdin.buffer.read() "
                  "or None,headers={'content-type':'application/json'},timeout=10);"
                  "print(json.dumps({'status':r.status_code,'body':r.text}))")
        proc = subprocess.run(
            self.ns.argv([sys.executable, "-c", script, method,
                          f"http://127.0.0.1:{API}/netlox/v1{path}"]),
            input=json.dumps(body).encode() if body is not None else b"",
            capture_output=True, timeout=30)
        if proc.returncode != 0:
            raise OSError(proc.stderr.decode()[-500:])
        out = json.loads(proc.stdout)
        return httpx.Response(out["status"], text=out["body"])

    def post(self, path: str, body: object) -> None:
        """POST until it is taken: a 503 while gobgpd starts is what a client retries."""
        def taken() -> bool:
            r = self.api("POST", path, body)
            if r.status_code == 503:
                return False
            if r.status_code >= 300:
                raise RuntimeError(f"{self.name} POST {path}: {r.status_code} {r.text}")
            return True
        wait_for(taken, 60, f"{self.name} POST {path}")

    def cli(self, *args: str) -> str:
        proc = self.ns.run([sys.executable, "-m", "pyloxi.entry", *args], check=False)
        return (proc.stdout + proc.stderr).rstrip()

    def ha_state(self) -> str:
        rows = self.api("GET", "/config/cistate/all").json()["Attr"]
        return str(next(r["state"] for r in rows if r["instance"] == "llb-inst0"))

    def flows(self) -> list[dict[str, object]]:
        rows = self.api("GET", "/config/conntrack/all").json()["ctAttr"]
        return [r for r in rows if r.get("conntrackState") == "est"
                and r.get("sourceIP") == CLIENT]


@dataclass
class Failover:
    complete: bool          # the client read the whole body, same SHA-256
    resets: int             # the client's TCP EstabResets during the run
    in_flight_bytes: int    # what the client had when the MASTER died
    takeover_s: float | None  # longest stall of the download after the failure
    flow_age_s: float       # the flow's age (since the answer began) when the MASTER died
    synced_on_backup: bool  # the BACKUP had the flow (from the sync) before the failure
    action: str             # the synced flow's NAT action on the BACKUP ("" if none)
    converged_s: float | None  # failure -> the router routes to the survivor only
    exit_code: int | None


class ClusterLab:
    def __init__(self, *, sync: bool = True, mode: int = 0, hash_seed: int | None = None,
                 prefix: str = "plcl") -> None:
        self.mode = mode  # the rule's: 0 default, 1 onearm, 2 fullnat
        self.lab = Lab(prefix)
        self.tmp = tempfile.mkdtemp(prefix=f"{self.lab.tag}-")
        try:
            self._build(sync)
            if hash_seed is not None:
                # which next hop the router's ECMP hash gives a flow (default: a key random
                # per boot): while the dead node's route waits for the hold time, a flow
                # hashed to it stalls that long
                self.rt.sysctl("net.ipv4.fib_multipath_hash_seed", hash_seed)
        except BaseException:
            self.close()
            raise

    def _build(self, sync: bool) -> None:
        lab = self.lab
        self.sw = lab.netns("sw")
        for br in ("brf", "brb"):
            self.sw.run(f"ip link add {br} type bridge")
            self.sw.run(f"ip link set {br} up")
        self.cl = lab.netns("cl")
        self.rt = lab.netns("rt")
        lab.link(self.cl, "eth0", f"{CLIENT}/24", self.rt, "eth0", "10.80.1.1/24")
        self.cl.run("ip route add default via 10.80.1.1")
        self.cl.sysctl("net.ipv4.tcp_rmem", "4096 16384 65536")
        lab.link(self.rt, "eth1", f"{ROUTER}/24", self.sw, "r0", None)
        self.sw.run("ip link set r0 master brf")
        self.rt.sysctl("net.ipv4.ip_forward", 1)
        self.nodes = [Node(self, i, sync) for i in range(2)]
        for i, node in enumerate(self.nodes):
            ns = node.ns
            lab.link(ns, "eth0", f"{LB_FRONT[i]}/24", self.sw, f"l{i}f", None)
            lab.link(ns, "eth1", f"{LB_BACK[i]}/24", self.sw, f"l{i}b", None)
            for port, br in ((f"l{i}f", "brf"), (f"l{i}b", "brb")):
                self.sw.run(f"ip link set {port} master {br}")
            ns.run(f"ip route add 10.80.1.0/24 via {ROUTER}")
            for key, value in (("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.rp_filter", 0),
                               ("net.ipv4.conf.default.rp_filter", 0)):
                ns.sysctl(key, value)
        self._start_backends()
        conf = os.path.join(self.tmp, "bird.conf")
        Path(conf).write_text(BIRD_CONF)
        self.rt.popen(["bird", "-f", "-c", conf, "-s", os.path.join(self.tmp, "bird.ctl"),
                       "-P", os.path.join(self.tmp, "bird.pid")])

    def _start_backends(self) -> None:
        body = os.urandom(SIZE)
        self.digest = hashlib.sha256(body).hexdigest()
        self.backends: list[Netns] = []
        for i, ip in enumerate(BACKENDS, 1):
            be = self.lab.netns(f"be{i}")
            self.lab.link(be, "eth0", f"{ip}/24", self.sw, f"b{i}", None)
            self.sw.run(f"ip link set b{i} master brb")
            be.run(f"ip route add default via {GATEWAY}")
            d = os.path.join(self.tmp, f"nginx-be{i}")
            os.makedirs(os.path.join(d, "www"))
            Path(d, "www", "big.bin").write_bytes(body)
            Path(d, "nginx.conf").write_text(_NGINX_CONF.format(dir=d, port=80, name=f"be{i}"))
            be.popen(["nginx", "-c", os.path.join(d, "nginx.conf"), "-p", d])
            self.backends.append(be)
        for be in self.backends:
            wait_listening(be, 80)

    # ------------------------------------------------------------------ bring-up

    def start(self, say: Callable[[str], None] = lambda _t: None) -> None:
        """Daemons, BGP sessions, the rule on both nodes, keepalived; returns once lb1 is
        MASTER and the router routes the VIP to it alone."""
        for node in self.nodes:
            node.start_daemon()
        for node in self.nodes:
            node.wait_daemon()
        say("both daemons up; BGP: global config and the router as neighbour (REST)")
        for i, node in enumerate(self.nodes):
            node.post("/config/bgp/global", {"routerId": LB_FRONT[i], "localAs": LB_AS})
            node.post("/config/bgp/neigh", {"ipAddress": ROUTER, "remoteAs": RT_AS})
        rule = {"serviceArguments": {"externalIP": VIP, "port": 80, "protocol": "tcp",
                                     "sel": 0, "mode": self.mode, "bgp": True, "name": "web"},
                "endpoints": [{"endpointIP": ip, "targetPort": 80, "weight": 1}
                              for ip in BACKENDS]}
        for node in self.nodes:
            node.post("/config/loadbalancer", rule)
        say("keepalived on both nodes (lb1 priority 150, lb2 100)")
        self.nodes[0].start_keepalived(150)
        wait_for(lambda: self.nodes[0].ha_state() == "MASTER", 30, "lb1 MASTER")
        self.nodes[1].start_keepalived(100)
        wait_for(lambda: self.nodes[1].ha_state() == "BACKUP", 30, "lb2 BACKUP")
        wait_for(lambda: self.nexthops() == {LB_FRONT[0]}, 90,
                 f"the router's route to {VIP} via lb1 only")

    def nexthops(self) -> set[str]:
        out = self.rt.run(["ip", "-4", "route", "show", f"{VIP}/32"], check=False).stdout
        hops = set(re.findall(r"via (\S+)", out))
        return hops

    def estab_resets(self) -> int:
        lines = [ln.split() for ln in self.cl.run("cat /proc/net/snmp").stdout.splitlines()
                 if ln.startswith("Tcp:")]
        return int(lines[1][lines[0].index("EstabResets")])

    # ------------------------------------------------------------------ the failure

    def kill(self, index: int) -> None:
        """A node dies: both its switch ports go down."""
        self.sw.run(f"ip link set l{index}f down")
        self.sw.run(f"ip link set l{index}b down")

    def download_through_failure(self) -> Failover:
        master, backup = self.nodes
        out = os.path.join(self.tmp, "download.bin")
        resets = self.estab_resets()
        client = self.cl.popen([sys.executable, "-c", SLOW_GET, VIP, out])
        wait_for(lambda: os.path.exists(out), 20, "the download to start")
        t_start = time.monotonic()
        wait_for(lambda: os.path.getsize(out) >= TRIGGER, 30, "256 KiB downloaded")
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append((time.monotonic(), os.path.getsize(out)))
                time.sleep(0.002)

        converged: list[float] = []

        def watch_router() -> None:
            while not done.is_set() or not converged:
                if self.nexthops() == {LB_FRONT[1]}:
                    converged.append(time.monotonic() - t_fail)
                    return
                if time.monotonic() - t_fail > 60:
                    return
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # what the sync gave the BACKUP before the failure (it keeps it: the sender is gone)
        synced_flows = backup.flows() if master.sync else []
        t_fail = time.monotonic()
        self.kill(0)
        at_fail = os.path.getsize(out)
        router = threading.Thread(target=watch_router, daemon=True)
        router.start()
        try:
            client.wait(timeout=90)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait()
        done.set()
        sampler.join()
        grew = [t for (t, n), (_, prev) in zip(samples[1:], samples, strict=False)
                if n > prev and t >= t_fail]
        takeover = max(b - a for a, b in zip([t_fail, *grew], grew, strict=False)) \
            if grew else None
        with open(out, "rb") as f:
            same = hashlib.sha256(f.read()).hexdigest() == self.digest
        router.join()
        return Failover(client.returncode == 0 and same, self.estab_resets() - resets,
                        at_fail, takeover, t_fail - t_start, bool(synced_flows),
                        str(synced_flows[0]["conntrackAct"]) if synced_flows else "",
                        converged[0] if converged else None, client.returncode)

    def close(self) -> None:
        self.lab.close()
        subprocess.run(["rm", "-rf", self.tmp], check=False)


def report(result: Failover) -> dict[str, object]:
    return {"complete": result.complete, "resets": result.resets,
            "in_flight_bytes": result.in_flight_bytes,
            "takeover_s": None if result.takeover_s is None else round(result.takeover_s, 3),
            "flow_age_s": round(result.flow_age_s, 3),
            "synced_on_backup": result.synced_on_backup, "action": result.action,
            "converged_s": None if result.converged_s is None else round(result.converged_s, 1),
            "exit_code": result.exit_code}
