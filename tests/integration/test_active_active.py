"""Active-active: three pyloxi nodes behind a BIRD router (ECMP), one dies mid-transfer.

    cl (10.80.0.2) ── rt ── br0 10.81.0.0/24: lb1 .11, lb2 .12, lb3 .13  (AS 65001 each)
                      │     (BIRD, AS 65000, merge paths on, L4 multipath hash)
                      └──── br1 10.82.0.0/24: be1 .2, be2 .3  (nginx; default via rt)

Every node is a full `pyloxi daemon --bgp --cluster <the others> --self i`, all serving (cistate
MASTER), each with its own instance IP (cistate vip 10.90.0.i). One fullnat rule, hash (Maglev)
selection, `bgp: true`: the router has an ECMP route for the VIP over the three nodes. Flows
are source-NATed to the instance IP of the node that opened them; each node announces its own
instance IP with MED 10 and its peers' (learnt on the control channel) with MED 20, and
streams its flows to every peer (conntrack sync).

N paced downloads from distinct client ports spread over the nodes; the router's first next
hop loses its links (silently: no FIN, no RST, BGP notices by the hold timer, 3 s). Its
flows reach the survivors (ECMP re-hash) and the backends' replies to its instance IP go to
the survivors too (the MED-20 routes): both have the flows from the sync. Success = download
complete, byte-identical, no reset. The control run (no --cluster: no sync, no backup routes)
must lose flows. Numbers printed with -s; docs/cluster.md "Active-active (ECMP)".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from pyloxi.datapath.ebpf.counters import datapath_stats
from pyloxi.datapath.ebpf.libbpf.maps import Map
from pyloxi.testing.lab import Lab, Netns, cleanup_stale
from pyloxi.testing.lab.topology import _NGINX_CONF, wait_listening

from ..waiting import wait_until
from .conftest import DaemonHandle

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("gobgpd") is None or shutil.which("bird") is None
                       or shutil.which("nginx") is None,
                       reason="needs gobgpd, bird2 and nginx (scripts/install-deps)"),
]

VIP = "20.0.0.100"
LB_AS, RT_AS = 65001, 65000
HOLD = 3
NODES = 3
LB_IPS = [f"10.81.0.1{i}" for i in range(1, NODES + 1)]
INSTANCE_IPS = [f"10.90.0.{i}" for i in range(1, NODES + 1)]
BACKENDS = ["10.82.0.2", "10.82.0.3"]
FLOWS = int(os.environ.get("PYLOXI_AA_FLOWS", "30"))
SIZE = 4 << 20
TRIGGER = 256 << 10  # every download has this much before the node dies

BIRD_CONF = """
router id 10.81.0.1;
protocol device {{ scan time 1; }}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
template bgp lb {{
  local as {rt_as};
  hold time {hold}; keepalive time 1; connect retry time 1; error wait time 1, 2;
  ipv4 {{ import all; export none; }};
}}
{neighbors}
"""

# N paced downloads in one process (threads), each from its own port; progress in a JSON file.
_MANY_GET = """
import hashlib, json, os, socket, sys, threading, time
vip, n, out, pace = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
state = [{"port": 0, "got": 0, "len": 0, "sha": "", "err": "", "done": False} for _ in range(n)]

def one(st):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(20)
    try:
        s.connect((vip, 80))
        st["port"] = s.getsockname()[1]
        s.sendall(b"GET /big.bin HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
        head = b""
        while b"\\r\\n\\r\\n" not in head:
            c = s.recv(4096)
            if not c:
                raise EOFError("closed in the header")
            head += c
        head, body = head.split(b"\\r\\n\\r\\n", 1)
        st["len"] = int([ln.split(b":")[1] for ln in head.split(b"\\r\\n")
                         if ln.lower().startswith(b"content-length")][0])
        h = hashlib.sha256(body)
        st["got"] = len(body)
        while st["got"] < st["len"]:
            c = s.recv(16384)
            if not c:
                break
            h.update(c)
            st["got"] += len(c)
            time.sleep(pace)
        st["sha"] = h.hexdigest()
    except Exception as exc:
        st["err"] = repr(exc)
    finally:
        s.close()
        st["done"] = True

def dump():
    with open(out + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(out + ".tmp", out)

threads = [threading.Thread(target=one, args=(st,), daemon=True) for st in state]
for t in threads:
    t.start()
    time.sleep(0.01)
while not all(st["done"] for st in state):
    dump()
    time.sleep(0.1)
dump()
"""


class AaLab:
    def __init__(self, sync: bool) -> None:
        self.sync = sync
        self.lab = Lab("plaa")
        self.tmp = tempfile.TemporaryDirectory(prefix="pyloxi-aa-")
        self.daemons: list[DaemonHandle] = []
        self.lbs: list[Netns] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        lab, tmp = self.lab, self.tmp.name
        self.rt = rt = lab.netns("rt")
        for key, value in (("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.rp_filter", 0),
                           ("net.ipv4.conf.default.rp_filter", 0),
                           ("net.ipv4.fib_multipath_hash_policy", 1)):  # L4: flows spread
            rt.sysctl(key, value)
        rt.run("ip link add br0 type bridge")
        rt.run("ip link add br1 type bridge")
        rt.run("ip addr add 10.81.0.1/24 dev br0")
        rt.run("ip addr add 10.82.0.1/24 dev br1")
        rt.run("ip link set br0 up")
        rt.run("ip link set br1 up")
        self.cl = lab.netns("cl")
        lab.link(self.cl, "eth0", "10.80.0.2/24", rt, "cl0", "10.80.0.1/24")
        self.cl.run("ip route add default via 10.80.0.1")
        # counts what reaches the client from a backend's own address: a reply forwarded
        # un-NATed (a node without the flow must drop it: `reply_miss`)
        self.cl.run(["nft", "add table ip leak"])
        self.cl.run(["nft", "add chain ip leak in { type filter hook input priority 0; }"])
        self.cl.run(["nft", "add rule ip leak in ip saddr 10.82.0.0/24 counter"])
        # a clamped receive buffer: the servers cannot push the file before the failure
        self.cl.sysctl("net.ipv4.tcp_rmem", "4096 16384 65536")
        body = os.urandom(SIZE)
        self.digest = hashlib.sha256(body).hexdigest()
        for i, ip in enumerate(BACKENDS, 1):
            be = lab.netns(f"be{i}")
            lab.link(be, "eth0", f"{ip}/24", rt, f"be{i}", None)
            rt.run(f"ip link set be{i} master br1")
            be.run("ip route add default via 10.82.0.1")  # the instance IPs: via the router
            d = os.path.join(tmp, f"nginx-be{i}")
            os.makedirs(os.path.join(d, "www"))
            with open(os.path.join(d, "www", "big.bin"), "wb") as f:
                f.write(body)
            with open(os.path.join(d, "nginx.conf"), "w") as f:
                f.write(_NGINX_CONF.format(dir=d, port=80, name=f"be{i}"))
            be.popen(["nginx", "-c", os.path.join(d, "nginx.conf"), "-p", d])
            wait_listening(be, 80)
        for i, ip in enumerate(LB_IPS, 1):
            lb = lab.netns(f"lb{i}")
            lab.link(lb, "eth0", f"{ip}/24", rt, f"lb{i}", None)
            rt.run(f"ip link set lb{i} master br0")
            lb.run("ip route add default via 10.81.0.1")
            for key, value in (("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.rp_filter", 0),
                               ("net.ipv4.conf.default.rp_filter", 0)):
                lb.sysctl(key, value)
            self.lbs.append(lb)
        conf = os.path.join(tmp, "bird.conf")
        neighbors = "\n".join(f"protocol bgp lb{i} from lb {{ neighbor {ip} as {LB_AS}; }}"
                              for i, ip in enumerate(LB_IPS, 1))
        with open(conf, "w") as f:
            f.write(BIRD_CONF.format(rt_as=RT_AS, hold=HOLD, neighbors=neighbors))
        rt.popen(["bird", "-f", "-c", conf, "-s", os.path.join(tmp, "bird.ctl"),
                  "-P", os.path.join(tmp, "bird.pid")])
        api_port = 50100 + os.getpid() % 1000
        for i, lb in enumerate(self.lbs):
            d = DaemonHandle(SimpleNamespace(lb=lb, lab=lab, tmp=self.tmp),  # type: ignore[arg-type]
                             name=f"lb{i + 1}")
            d.extra_args = ["--bgp", "--bgp-api", f"127.0.0.1:{api_port}",
                            "--bgp-timers", f"{HOLD},1,1", "--interfaces", "eth0"]
            if self.sync:
                others = [ip for j, ip in enumerate(LB_IPS) if j != i]
                d.extra_args += ["--cluster", ",".join(others), "--self", str(i)]
            d.start()
            self.daemons.append(d)
        for i, d in enumerate(self.daemons):
            self._configure(i, d)

    def _configure(self, i: int, d: DaemonHandle) -> None:
        def posted(path: str, body: dict[str, Any]) -> bool:
            r = d.api("POST", path, body)
            if r.status_code == 503:  # gobgpd still starting: a client tries again
                return False
            assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
            return True

        posted("/config/cistate", {"instance": "llb-inst0", "state": "MASTER",
                                   "vip": INSTANCE_IPS[i]})
        wait_until(lambda: posted("/config/bgp/global",
                                  {"routerId": LB_IPS[i], "localAs": LB_AS}),
                   60, interval=0.5, what=f"lb{i + 1}: gobgpd answering")
        wait_until(lambda: posted("/config/bgp/neigh",
                                  {"ipAddress": "10.81.0.1", "remoteAs": RT_AS}),
                   60, interval=0.5, what=f"lb{i + 1}: neighbour added")
        posted("/config/loadbalancer", {
            "serviceArguments": {"externalIP": VIP, "port": 80, "protocol": "tcp",
                                 "mode": 2, "sel": 1, "bgp": True},
            "endpoints": [{"endpointIP": ip, "targetPort": 80, "weight": 1}
                          for ip in BACKENDS]})

    def nexthops(self, prefix: str) -> set[str]:
        out = self.rt.run(["ip", "-4", "route", "show", f"{prefix}/32"], check=False).stdout
        return set(re.findall(r"via (\S+)", out))

    def routes(self) -> dict[str, set[str]]:
        return {p: self.nexthops(p) for p in (VIP, *INSTANCE_IPS)}

    def ct_detail(self, i: int, ports: set[int]) -> list[str]:
        """Node i's conntrack entries of these client ports (both directions), for a report."""
        r = self.daemons[i].api("GET", "/config/conntrack/all")
        return [f"{c['sourceIP']}:{c['sourcePort']}->{c['destinationIP']}:"
                f"{c['destinationPort']} {c['conntrackState']} {c['conntrackAct']} "
                f"{c['packets']}p" for c in r.json()["ctAttr"]
                if c["sourcePort"] in ports or c["destinationPort"] in ports]

    def packets(self, i: int) -> dict[tuple[str, int], int]:
        """Node i's VIP flows: (SNAT source, client port) -> packets counted on the entry."""
        r = self.daemons[i].api("GET", "/config/conntrack/all")
        out = {}
        for c in r.json()["ctAttr"]:
            m = re.match(r"fdnat-([^,]+),", c["conntrackAct"])
            if c["destinationIP"] == VIP and m:
                out[(m.group(1), int(c["sourcePort"]))] = int(c["packets"])
        return out

    def leaked(self) -> int:
        """Packets the client got from a backend's own address."""
        out = self.cl.run(["nft", "list table ip leak"]).stdout
        return int(re.search(r"counter packets (\d+)", out).group(1))  # type: ignore[union-attr]

    def flows(self, i: int) -> dict[str, set[int]]:
        """Node i's established flows of the VIP by SNAT source (its own instance IP: opened
        here; a peer's: synced), as client ports."""
        r = self.daemons[i].api("GET", "/config/conntrack/all")
        assert r.status_code == 200, r.text
        out: dict[str, set[int]] = {}
        for c in r.json()["ctAttr"]:
            m = re.match(r"fdnat-([^,]+),", c["conntrackAct"])
            if c["destinationIP"] == VIP and c["conntrackState"] == "est" and m:
                out.setdefault(m.group(1), set()).add(int(c["sourcePort"]))
        return out

    def stats(self, i: int) -> dict[str, int]:
        """Node i's datapath counters (read from its pinned stats map), the non-zero ones."""
        m = Map.from_pin(os.path.join(self.daemons[i].pin, "stats_map"))
        try:
            return {k: v for k, v in datapath_stats(m).items() if v}
        finally:
            m.close()

    def kill_links(self, i: int) -> None:
        """Node i goes silent: its link down on the router's side (no FIN, no RST; BIRD's hold
        timer and the router's ECMP route are what notice)."""
        self.rt.run(f"ip link set lb{i + 1} down")

    def close(self) -> None:
        for d in self.daemons:
            # a dead node's daemon may be slow on its way out: the lab kills what is left
            with contextlib.suppress(Exception):
                d.stop()
        self.lab.close()
        self.tmp.cleanup()


def estab_resets(ns: Netns) -> int:
    lines = [ln.split() for ln in ns.run("cat /proc/net/snmp").stdout.splitlines()
             if ln.startswith("Tcp:")]
    return int(lines[1][lines[0].index("EstabResets")])


def run_failover(lab: AaLab) -> dict[str, Any]:
    want = set(LB_IPS)
    took = wait_until(lambda: lab.nexthops(VIP) == want, 90, interval=0.2,
                      what="ECMP route over the three nodes")
    # each node's instance IP is routed to it alone (MED 10 beats the peers' MED 20)
    wait_until(lambda: all(lab.nexthops(ip) == {LB_IPS[i]}
                           for i, ip in enumerate(INSTANCE_IPS)), 30, interval=0.2,
               what="instance IPs routed to their nodes")
    before = lab.routes()
    out = os.path.join(lab.tmp.name, "progress.json")
    resets = estab_resets(lab.cl)
    client = lab.cl.popen([sys.executable, "-c", _MANY_GET, VIP, str(FLOWS), out, "0.04"],
                          stderr=subprocess.PIPE)

    def progress() -> list[dict[str, Any]]:
        try:
            with open(out) as f:
                return list(json.load(f))
        except (OSError, ValueError):
            return []

    wait_until(lambda: len(p := progress()) == FLOWS and all(
        s["got"] >= TRIGGER or s["done"] for s in p), 60, interval=0.05,
        what="every download under way")
    # where the flows are: opened by which node (its instance IP), synced to which
    local: list[set[int]] = []
    synced: list[set[int]] = []
    for i in range(NODES):
        f = lab.flows(i)
        local.append(f.get(INSTANCE_IPS[i], set()))
        synced.append(set().union(*[v for k, v in f.items() if k != INSTANCE_IPS[i]]))
    # The victim: the router's first next hop. A hash-threshold multipath route gives each
    # next hop a slice of the hash space in route order; when the first goes, the second's
    # slice shifts and a share of *its* flows moves to the third (the middle one going would
    # move nobody else's): the harder case, where survivors' flows need their synced copies.
    route = lab.rt.run(["ip", "-4", "route", "show", f"{VIP}/32"]).stdout
    victim = LB_IPS.index(re.findall(r"via (\S+)", route)[0])
    stats_before = [lab.stats(i) for i in range(NODES)]
    packets_before = [lab.packets(i) for i in range(NODES)]
    at_fail = progress()
    in_flight = sum(1 for s in at_fail if not s["done"])
    lab.kill_links(victim)
    t_fail = time.monotonic()
    survivors = {LB_IPS[i] for i in range(NODES) if i != victim}
    # BGP converges: the VIP over the survivors; the victim's instance IP over the survivors
    # (their MED-20 routes) with sync, gone without
    victim_ip = INSTANCE_IPS[victim]
    converged = wait_until(lambda: lab.nexthops(VIP) == survivors, 30, interval=0.01,
                           what="VIP route without the dead node")
    if lab.sync:
        wait_until(lambda: lab.nexthops(victim_ip) == survivors, 30, interval=0.01,
                   what="dead node's instance IP over the survivors")
    after = lab.routes()
    client.wait(timeout=180)
    t_end = time.monotonic() - t_fail
    final = progress()
    # flows of a surviving node whose client packets the router moved to the other survivor
    # (plain multipath re-hash): that one's synced copy carried them
    moved = 0
    for i in range(NODES):
        if i == victim:
            continue
        now = lab.packets(i)
        moved += sum(1 for (snat, port), n in now.items()
                     if snat not in (INSTANCE_IPS[i], victim_ip)
                     and n > packets_before[i].get((snat, port), n))
    ok = [s for s in final if not s["err"] and s["len"] == SIZE and s["got"] == SIZE
          and s["sha"] == lab.digest]
    by_port = {s["port"]: s for s in final}
    lost_ports = sorted(p for p, s in by_port.items() if s not in ok)
    report = {
        "sync": lab.sync, "flows": FLOWS, "in_flight_at_failure": in_flight,
        "per_node_local": [len(x) for x in local], "per_node_synced": [len(x) for x in synced],
        "victim": f"lb{victim + 1}",
        "survived": len(ok), "share": round(len(ok) / FLOWS, 4),
        "survivors_flows_moved_by_router": moved,
        "lost_on_victim": sum(1 for p in lost_ports if p in local[victim]),
        "lost_elsewhere": sum(1 for p in lost_ports if p not in local[victim]),
        "client_estab_resets": estab_resets(lab.cl) - resets,
        "unnated_replies_at_client": lab.leaked(),
        "errors": sorted({s["err"][:60] for s in final if s["err"]}),
        "vip_route_converged_s": round(converged, 2),
        "all_done_after_failure_s": round(t_end, 1),
        "bgp_setup_s": round(took, 1),
        "routes_before": {k: sorted(v) for k, v in before.items()},
        "routes_after": {k: sorted(v) for k, v in after.items()},
        "stats_before": {f"lb{i + 1}": stats_before[i] for i in range(NODES)},
        "stats_after": {f"lb{i + 1}": lab.stats(i) for i in range(NODES) if i != victim},
        "local": local, "synced": synced,
        "lost": {p: next((f"lb{i + 1}" for i in range(NODES) if p in local[i]), "?")
                 for p in lost_ports},
        "lost_ct": {f"lb{i + 1}": lab.ct_detail(i, set(lost_ports))
                    for i in range(NODES) if i != victim and lost_ports},
    }
    return report


@pytest.fixture(params=[True, False], ids=["sync", "control"])
def aa_lab(request: pytest.FixtureRequest) -> Iterator[AaLab]:
    cleanup_stale("plaa")
    lab = AaLab(sync=request.param)
    try:
        yield lab
    finally:
        lab.close()


def test_one_node_of_three_dies_mid_transfer(aa_lab: AaLab) -> None:
    r = run_failover(aa_lab)
    local, synced = r.pop("local"), r.pop("synced")
    print("\n[active-active] " + json.dumps(r, indent=1, default=sorted))
    # the flows spread: every node opened some, each flow on exactly one node
    assert all(local), r["per_node_local"]
    assert sum(len(x) for x in local) == FLOWS and len(set().union(*local)) == FLOWS
    # the failure was real: downloads were in flight when the node died
    assert r["in_flight_at_failure"] == FLOWS, r
    # whatever was lost, no endpoint's reply reached the client un-NATed
    assert r["unnated_replies_at_client"] == 0, r
    if aa_lab.sync:
        # every node had every other node's flows (sync to all peers)
        for i in range(NODES):
            others = set().union(*[local[j] for j in range(NODES) if j != i])
            assert synced[i] == others, (i, r)
        assert r["share"] >= 0.99, r
        assert r["client_estab_resets"] == 0, r
    else:
        # without sync (and without the backup routes) the dead node's flows are lost (and,
        # above, none of their replies leaked un-NATed)
        assert r["survived"] < FLOWS, r


def _next_hops(rt: Netns, ports: range) -> dict[int, str]:
    """The router's choice for client flows 10.80.0.2:port -> VIP:80 (forwarded, L4 hash)."""
    batch = os.path.join(tempfile.gettempdir(), f"{rt.name}-get")
    with open(batch, "w") as f:
        for p in ports:
            f.write(f"route get {VIP} from 10.80.0.2 iif cl0 ipproto tcp sport {p} dport 80\n")
    try:
        out = rt.run(["ip", "-batch", batch]).stdout
    finally:
        os.unlink(batch)
    hops = re.findall(r"via (\S+)", out)
    assert len(hops) == len(ports), out[-500:]
    return dict(zip(ports, hops, strict=True))


def test_router_multipath_moves_surviving_flows_a_resilient_group_does_not() -> None:
    """What the router does to the flows of the nodes that stay when one of three goes: a
    plain multipath route (what BIRD and FRR install) re-hashes a share of them to another
    node (which then needs the synced flow); a resilient next-hop group moves none."""
    cleanup_stale("plecmp")
    ports = range(20000, 21000)
    moved: dict[str, tuple[int, int]] = {}
    with Lab("plecmp") as lab:
        rt = lab.netns("rt")
        cl = lab.netns("cl")
        lab.link(cl, "eth0", "10.80.0.2/24", rt, "cl0", "10.80.0.1/24")
        rt.sysctl("net.ipv4.ip_forward", 1)
        rt.sysctl("net.ipv4.fib_multipath_hash_policy", 1)
        for i in (1, 2, 3):
            node = lab.netns(f"n{i}")
            lab.link(node, "eth0", f"10.81.{i}.2/24", rt, f"nh{i}", f"10.81.{i}.1/24")
        hops = [f"10.81.{i}.2" for i in (1, 2, 3)]
        for kind in ("multipath", "resilient"):
            rt.run(["ip", "route", "flush", f"{VIP}/32"], check=False)
            rt.run(["ip", "nexthop", "flush"], check=False)
            if kind == "multipath":
                rt.run(["ip", "route", "add", f"{VIP}/32",
                        *[w for h in hops for w in ("nexthop", "via", h)]])
            else:
                for i, h in enumerate(hops, 1):
                    rt.run(["ip", "nexthop", "add", "id", str(i), "via", h, "dev", f"nh{i}"])
                rt.run(["ip", "nexthop", "add", "id", "10", "group", "1/2/3", "type",
                        "resilient", "buckets", "64", "idle_timer", "0"])
                rt.run(["ip", "route", "add", f"{VIP}/32", "nhid", "10"])
            before = _next_hops(rt, ports)
            assert set(before.values()) == set(hops)
            if kind == "multipath":  # the node's route withdrawn: the route replaced
                rt.run(["ip", "route", "replace", f"{VIP}/32",
                        *[w for h in hops[:2] for w in ("nexthop", "via", h)]])
            else:
                rt.run(["ip", "nexthop", "del", "id", "3"])
            after = _next_hops(rt, ports)
            stayed = [p for p in ports if before[p] != hops[2]]
            moved[kind] = (sum(1 for p in stayed if after[p] != before[p]), len(stayed))
    print(f"\n[ecmp] flows of the surviving next hops moved when 1 of 3 went: "
          f"plain multipath {moved['multipath'][0]}/{moved['multipath'][1]}, "
          f"resilient group (64 buckets) {moved['resilient'][0]}/{moved['resilient'][1]}")
    assert moved["resilient"][0] == 0
    assert moved["multipath"][0] > 0
