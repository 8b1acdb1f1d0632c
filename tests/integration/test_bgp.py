"""BGP: two pyloxi daemons (two LB namespaces, each with its own gobgpd) announce one VIP to a
BIRD 2 router namespace; the router's kernel table is what is checked.

    lb1 (10.77.1.2, AS 65001) ── rt (10.77.1.1 / 10.77.2.1, AS 65000, BIRD) ── lb2 (10.77.2.2)

Timers are short (hold 3, keepalive 1, connect retry 1). Convergence times are printed (run
with -s to see them), never asserted: the numbers go to docs/bgp-notes.md.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from types import SimpleNamespace

import pytest

from pyloxi.testing.lab import Lab, Netns, cleanup_stale
from pyloxi.testing.lab.netns import sh

from ..waiting import wait_until
from .conftest import DaemonHandle

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("gobgpd") is None or shutil.which("bird") is None,
                       reason="needs gobgpd and bird2 (scripts/install-deps)"),
]

VIP = "10.99.0.1"
LB_AS, RT_AS = 65001, 65000
HOLD = 3
LBS = {"lb1": ("10.77.1.1", "10.77.1.2"), "lb2": ("10.77.2.1", "10.77.2.2")}

BIRD_CONF = """
router id 10.77.0.1;
protocol device {{ scan time 1; }}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
template bgp lb {{
  local as {rt_as};
  hold time {hold}; keepalive time 1; connect retry time 1; error wait time 1, 2;
  ipv4 {{ import all; export none; }};
}}
protocol bgp lb1 from lb {{ neighbor 10.77.1.2 as {lb_as}; }}
protocol bgp lb2 from lb {{ neighbor 10.77.2.2 as {lb_as}; }}
"""


class BgpLab:
    def __init__(self) -> None:
        self.lab = Lab("plbgp")
        self.tmp = tempfile.TemporaryDirectory(prefix="pyloxi-bgp-")
        self.rt = self.lab.netns("rt")
        self.daemons: dict[str, DaemonHandle] = {}
        self.nss: dict[str, Netns] = {}
        for name, (rt_ip, lb_ip) in LBS.items():
            ns = self.lab.netns(name)
            self.lab.link(self.rt, f"to{name}", f"{rt_ip}/24", ns, "eth0", f"{lb_ip}/24")
            self.nss[name] = ns
        conf = os.path.join(self.tmp.name, "bird.conf")
        with open(conf, "w") as f:
            f.write(BIRD_CONF.format(rt_as=RT_AS, lb_as=LB_AS, hold=HOLD))
        self.birdc_sock = os.path.join(self.tmp.name, "bird.ctl")
        # the router's kernel route changes, time-stamped, to time them against the daemon
        self.monitor_log = os.path.join(self.tmp.name, "routes.log")
        with open(self.monitor_log, "wb") as out:
            self.rt.popen(["ip", "-ts", "monitor", "route"], stdout=out)
        self.rt.popen(["bird", "-f", "-c", conf, "-s", self.birdc_sock,
                       "-P", os.path.join(self.tmp.name, "bird.pid")])
        for name, ns in self.nss.items():
            # DaemonHandle wants a topology: the LB namespace, the lab, a temp directory
            d = DaemonHandle(SimpleNamespace(lb=ns, lab=self.lab, tmp=self.tmp),  # type: ignore[arg-type]
                             name=name)
            # a per-test gobgpd API port (the namespaces keep them apart anyway)
            api_port = 50100 + os.getpid() % 1000
            d.extra_args = ["--bgp", "--bgp-api", f"127.0.0.1:{api_port}",
                            "--bgp-timers", f"{HOLD},1,1", "--interfaces", "eth0"]
            d.start()
            self.daemons[name] = d

    def close(self) -> None:
        for d in self.daemons.values():
            d.stop()
        self.lab.close()
        self.tmp.cleanup()

    def nexthops(self) -> set[str]:
        """The router's kernel next hops for the VIP."""
        out = self.rt.run(["ip", "-4", "route", "show", f"{VIP}/32"], check=False).stdout
        return set(re.findall(r"via (\S+)", out))

    def configure(self, name: str) -> None:
        rt_ip, lb_ip = LBS[name]
        d = self.daemons[name]

        def posted(path: str, body: dict[str, object]) -> bool:
            # 503 while gobgpd is still starting (or restarted by the supervisor after a slow
            # start on a busy machine): the API says so, and a client tries again
            r = d.api("POST", path, body)
            if r.status_code == 503:
                return False
            ok(r)
            return True

        wait_until(lambda: posted("/config/bgp/global", {"routerId": lb_ip, "localAs": LB_AS}),
                   60, interval=0.5, what=f"{name}: gobgpd answering")
        wait_until(lambda: posted("/config/bgp/neigh", {"ipAddress": rt_ip, "remoteAs": RT_AS}),
                   60, interval=0.5, what=f"{name}: neighbour added")

    def add_rule(self, name: str, bgp: bool = True) -> None:
        ok(self.daemons[name].api("POST", "/config/loadbalancer", {
            "serviceArguments": {"externalIP": VIP, "port": 80, "protocol": "tcp",
                                 "bgp": bgp},
            "endpoints": [{"endpointIP": "10.77.9.9", "targetPort": 80, "weight": 1}]}))

    def delete_rule(self, name: str) -> None:
        ok(self.daemons[name].api(
            "DELETE", f"/config/loadbalancer/externalipaddress/{VIP}/port/80/protocol/tcp"))

    def established(self, name: str) -> bool:
        r = self.daemons[name].api("GET", "/config/bgp/neigh/all")
        return r.status_code == 200 and [n["state"] for n in r.json()["bgpNeiAttr"]] == [
            "established"]

    def gobgpd_pid(self, name: str) -> int:
        ns = self.nss[name]
        for pid in sh(["ip", "netns", "pids", ns.name]).stdout.split():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == "gobgpd":
                        return int(pid)
            except OSError:
                continue
        raise AssertionError(f"no gobgpd in {name}")


    def rpc_to_kernel_ms(self, name: str, since: float) -> float | None:
        """From the daemon's first announce/withdraw of the VIP after `since` (wall clock; it
        is logged just before gobgpd's AddPath/DeletePath) to the first change of the VIP's
        route in the router's kernel after it."""
        rpc = _first_after(self.daemons[name].log, since, rf"bgp: (announce|withdraw) {VIP}\b",
                           r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", "%Y-%m-%d %H:%M:%S,%f")
        if rpc is None:
            return None
        kernel = _first_after(self.monitor_log, rpc, rf"\b{VIP}\b",
                              r"^\[(\S+)\]", "%Y-%m-%dT%H:%M:%S.%f")
        return None if kernel is None else (kernel - rpc) * 1000


def _first_after(path: str, since: float, pattern: str, stamp: str, fmt: str) -> float | None:
    with open(path, errors="replace") as f:
        for line in f:
            m = re.search(stamp, line)
            if not m or not re.search(pattern, line):
                continue
            t = datetime.strptime(m.group(1), fmt).timestamp()
            if t >= since:
                return t
    return None


def ok(resp: object) -> None:
    status = getattr(resp, "status_code", None)
    assert status == 200, f"{status}: {getattr(resp, 'text', '')}"


def converge(lab: BgpLab, want: set[str], what: str, timeout: float = 20,
             node: str = "", since: float = 0.0) -> float:
    """Seconds until the router's next hops for the VIP are `want` (polled every 2 ms). With
    `node`, also prints the gobgpd RPC -> router kernel time of that node's change."""
    took = wait_until(lambda: lab.nexthops() == want, timeout, interval=0.002, what=what)
    line = f"\n[bgp] {what}: converged {took * 1000:.0f} ms after the call returned"
    if node:
        time.sleep(0.2)  # the monitor's line may still be in its pipe
        ms = lab.rpc_to_kernel_ms(node, since)
        line += f"; gobgp RPC -> router kernel {ms:.1f} ms" if ms is not None else ""
    print(line)
    return took


@pytest.fixture
def bgp_lab() -> Iterator[BgpLab]:
    cleanup_stale("plbgp")
    lab = BgpLab()
    try:
        for name in LBS:
            lab.configure(name)
        for name in LBS:
            # gobgpd 3.10 waits 5-10 s between connect attempts: a missed first one costs that
            wait_until(lambda n=name: lab.established(n), 60, what=f"{name} established")
        yield lab
    finally:
        lab.close()


def test_two_nodes_give_the_router_an_ecmp_route_and_withdraws_converge(bgp_lab: BgpLab):
    both = {LBS["lb1"][1], LBS["lb2"][1]}
    assert bgp_lab.nexthops() == set()
    bgp_lab.add_rule("lb1")
    t = time.time()
    bgp_lab.add_rule("lb2")
    converge(bgp_lab, both, "announce on both nodes -> ECMP route", node="lb2", since=t)
    # gobgpd never listens on the host's (here: the namespace's) port 179
    for ns in bgp_lab.nss.values():
        assert ns.run(["ss", "-H", "-lnt", "sport = :179"]).stdout.strip() == ""
    # rule deleted on lb1: only lb2 is left
    t = time.time()
    bgp_lab.delete_rule("lb1")
    converge(bgp_lab, {LBS["lb2"][1]}, "rule deleted on lb1 -> lb2 only", node="lb1", since=t)
    # lb2's rule replaced by one with bgp=false: no route at all
    t = time.time()
    bgp_lab.delete_rule("lb2")
    bgp_lab.add_rule("lb2", bgp=False)
    converge(bgp_lab, set(), "bgp=false on lb2 -> no route", node="lb2", since=t)
    # and back
    t = time.time()
    bgp_lab.add_rule("lb1")
    converge(bgp_lab, {LBS["lb1"][1]}, "re-announce on lb1", node="lb1", since=t)


def test_silent_node_death_converges_within_the_hold_time(bgp_lab: BgpLab):
    both = {LBS["lb1"][1], LBS["lb2"][1]}
    bgp_lab.add_rule("lb1")
    bgp_lab.add_rule("lb2")
    converge(bgp_lab, both, "announce on both nodes -> ECMP route")
    # lb1 goes silent: everything it sends or receives is dropped (no FIN, no RST, carrier
    # stays up), so only the router's hold timer can tell
    lb1 = bgp_lab.nss["lb1"]
    lb1.run(["nft", "add table inet silent"])
    for hook in ("input", "output"):
        lb1.run(["nft", f"add chain inet silent {hook} "
                        f"{{ type filter hook {hook} priority -300; policy drop; }}"])
    start = time.monotonic()
    converge(bgp_lab, {LBS["lb2"][1]}, f"lb1 silent -> lb2 only (hold {HOLD} s)")
    print(f"[bgp] silent death total {1000 * (time.monotonic() - start):.0f} ms")
    lb1.run(["nft", "delete table inet silent"])
    converge(bgp_lab, both, "lb1 back -> ECMP again", timeout=30)


def test_gobgpd_killed_is_restarted_with_its_state(bgp_lab: BgpLab):
    both = {LBS["lb1"][1], LBS["lb2"][1]}
    bgp_lab.add_rule("lb1")
    bgp_lab.add_rule("lb2")
    converge(bgp_lab, both, "announce on both nodes -> ECMP route")
    old = bgp_lab.gobgpd_pid("lb1")
    os.kill(old, signal.SIGKILL)
    converge(bgp_lab, {LBS["lb2"][1]}, "gobgpd on lb1 killed -> lb2 only")
    # the daemon's supervisor starts a new gobgpd and gives it the global config, the
    # neighbour and the VIP again
    converge(bgp_lab, both, "gobgpd restarted -> ECMP again", timeout=30)
    assert bgp_lab.gobgpd_pid("lb1") != old
    assert "restarting it" in bgp_lab.daemons["lb1"].log_tail()
