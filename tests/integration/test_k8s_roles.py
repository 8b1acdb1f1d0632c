"""The kube agent's cluster roles against two real `pyloxi daemon --bgp` (each with its gobgpd):

    agent ns (10.78.1.1, 10.78.2.1) ── lb1 (10.78.1.2)
                                   └── lb2 (10.78.2.2)

The agent (`pyloxi kube-agent --setRoles=0.0.0.0 --setBGP=65001 --extBGPPeers=...`, a subprocess
in its own namespace) reaches the daemons at their link addresses, and the fake Kubernetes API
of this process through a UNIX socket (socat on both sides). What is checked is what each
daemon reports: its cistate (GET /config/cistate/all), its neighbours, gobgpd's global config
(`gobgp global` in its namespace) and the Service's rule. The MASTER is killed with SIGKILL;
the other must be promoted; the killed one restarted (its persisted state says MASTER) must be
told BACKUP and be given its BGP config again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from k8sfake import FakeKube, node, service  # noqa: E402

from pyloxi.testing.lab import Lab, cleanup_stale  # noqa: E402

from .conftest import DaemonHandle  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.root,
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("gobgpd") is None or shutil.which("gobgp") is None
                       or shutil.which("socat") is None,
                       reason="needs gobgpd/gobgp and socat (scripts/install-deps)"),
]

LBS = {"lb1": ("10.78.1.1", "10.78.1.2"), "lb2": ("10.78.2.1", "10.78.2.2")}
LOCAL_AS = 65001
PEERS = [("10.78.1.1", 65000), ("10.78.2.1", 65002)]
VIP = "10.99.7.1"
BGP_API = 50200 + os.getpid() % 1000


async def _until(cond, timeout: float, what: str):
    """Poll a blocking check (in a thread: the fake apiserver shares this event loop)."""
    end = time.monotonic() + timeout
    while True:
        res = await asyncio.to_thread(cond)
        if res:
            return res
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)


def _state(d: DaemonHandle) -> str | None:
    """The daemon's state in llb-inst0 (None: its API does not answer)."""
    if d.proc is None or d.proc.poll() is not None:
        return None
    try:
        r = d.api("GET", "/config/cistate/all")
    except (AssertionError, subprocess.TimeoutExpired):
        return None
    if r.status_code != 200:
        return None
    rows = [a for a in r.json()["Attr"] if a["instance"] == "llb-inst0"]
    return rows[0]["state"] if rows else ""


def _neighbors(d: DaemonHandle) -> set[tuple[str, int]]:
    r = d.api("GET", "/config/bgp/neigh/all")
    if r.status_code != 200:
        return set()
    return {(n["ipAddress"], n["remoteAs"]) for n in r.json()["bgpNeiAttr"]}


def _gobgp_global(ns) -> str:
    """gobgpd's own view of its global config ("AS: ...", "Router-ID: ...")."""
    return ns.run(["gobgp", "-p", str(BGP_API), "global"], check=False).stdout


def _web_rule(d: DaemonHandle) -> dict | None:
    r = d.api("GET", "/config/loadbalancer/all")
    if r.status_code != 200:
        return None
    rules = [x for x in r.json()["lbAttr"] if x["serviceArguments"].get("name") == "default_web"]
    return rules[0] if rules else None


async def test_agent_elects_master_fails_over_and_sets_bgp():
    cleanup_stale("plkr")
    lab = Lab("plkr")
    tmp = tempfile.TemporaryDirectory(prefix="pyloxi-k8s-roles-")
    kube = FakeKube()
    daemons: dict[str, DaemonHandle] = {}
    agent = None
    try:
        ag = lab.netns("ag")
        nss = {}
        for name, (ag_ip, lb_ip) in LBS.items():
            ns = lab.netns(name)
            lab.link(ag, f"to{name}", f"{ag_ip}/24", ns, "eth0", f"{lb_ip}/24")
            nss[name] = ns
            d = DaemonHandle(SimpleNamespace(lb=ns, lab=lab, tmp=tmp),  # type: ignore[arg-type]
                             name=name)
            d.extra_args = ["--host", "0.0.0.0", "--bgp", "--bgp-api", f"127.0.0.1:{BGP_API}",
                            "--interfaces", "eth0"]
            daemons[name] = d
        await asyncio.gather(*(asyncio.to_thread(d.start) for d in daemons.values()))

        await kube.start()
        kport = kube.url.rsplit(":", 1)[1]
        sock = os.path.join(tmp.name, "kube.sock")
        kube_bridge = subprocess.Popen(
            ["socat", f"UNIX-LISTEN:{sock},fork", f"TCP:127.0.0.1:{kport}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        lab.processes.append(kube_bridge)
        ag.popen(["socat", f"TCP-LISTEN:{kport},bind=127.0.0.1,reuseaddr,fork",
                  f"UNIX-CONNECT:{sock}"])
        kube.create(node("n1", "10.78.9.9"))
        web = service("web", externalTrafficPolicy="Cluster")
        web["spec"]["ports"] = [{"name": "http", "port": 80, "protocol": "TCP",
                                 "targetPort": 80, "nodePort": 30080}]
        kube.create(web)

        urls = [f"http://{lb_ip}:11111" for _, lb_ip in LBS.values()]
        agent_log = os.path.join(tmp.name, "agent.log")
        with open(agent_log, "wb") as out:
            agent = ag.popen(
                [sys.executable, "-m", "pyloxi.entry", "kube-agent",
                 f"--kubeconfig={kube.kubeconfig(os.path.join(tmp.name, 'kubeconfig'))}",
                 f"--loxiURL={','.join(urls)}", f"--cidrPools=defaultPool={VIP}/32",
                 "--setRoles=0.0.0.0", f"--setBGP={LOCAL_AS}",
                 f"--extBGPPeers={','.join(f'{ip}:{asn}' for ip, asn in PEERS)}",
                 "--resyncPeriod=5", "--loxiTimeout=2"],
                stdout=out, stderr=out, cwd=str(ROOT))

        def agent_alive() -> None:
            if agent.poll() is not None:
                raise AssertionError("agent exited: " + Path(agent_log).read_text()[-2000:])

        # one MASTER (the first loxiURL: both answered before the agent started), one BACKUP
        def roles() -> tuple[str | None, ...]:
            agent_alive()
            return tuple(_state(d) for d in daemons.values())

        await _until(lambda: roles() == ("MASTER", "BACKUP"), 60, "lb1 MASTER, lb2 BACKUP")

        # BGP: each gobgpd runs with AS 65001 and its own address as router id; neighbours
        for name, (_, lb_ip) in LBS.items():
            ns, d = nss[name], daemons[name]

            def configured(ns=ns, d=d, lb_ip=lb_ip) -> bool:
                g = _gobgp_global(ns)
                return str(LOCAL_AS) in g and lb_ip in g and _neighbors(d) == set(PEERS)

            await _until(configured, 90, f"{name}: bgp global config and neighbours")
            # the Service's rule is announced (setBGP on, no annotation)
            rule = await _until(lambda d=d: _web_rule(d), 60, f"{name}: the Service's rule")
            assert rule["serviceArguments"]["externalIP"] == VIP
            assert rule["serviceArguments"]["bgp"] is True

        # the annotation turns it off, on every instance
        kube.patch("Service", "web", metadata={"annotations": {"loxilb.io/bgp": "false"}})
        for name, d in daemons.items():
            await _until(lambda d=d: (_web_rule(d) or {}).get("serviceArguments", {}).get(
                "bgp") is False, 60, f"{name}: bgp off by annotation")

        # kill -9 the MASTER: the BACKUP is promoted
        t0 = time.monotonic()
        await asyncio.to_thread(daemons["lb1"].stop, signal.SIGKILL)
        await _until(lambda: _state(daemons["lb2"]) == "MASTER", 60, "lb2 promoted")
        print(f"\nlb2 MASTER {time.monotonic() - t0:.1f} s after lb1 was killed")

        # lb1 restarts holding MASTER (persisted): it is told BACKUP, and given BGP again
        await asyncio.to_thread(daemons["lb1"].start)
        await _until(lambda: roles() == ("BACKUP", "MASTER"), 60, "lb1 BACKUP after restart")

        def lb1_bgp_back() -> bool:
            g = _gobgp_global(nss["lb1"])
            return "10.78.1.2" in g and _neighbors(daemons["lb1"]) == set(PEERS)

        await _until(lb1_bgp_back, 90, "lb1's bgp config given again")
        log = Path(agent_log).read_text()
        assert "elected MASTER of llb-inst0" in log and "is down" in log, log[-3000:]
        print("".join(line + "\n" for line in log.splitlines()
                      if "roles:" in line or "bgp:" in line))
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
        for d in daemons.values():
            with contextlib.suppress(subprocess.TimeoutExpired, ProcessLookupError):
                await asyncio.to_thread(d.stop)
        await kube.stop()
        lab.close()
        tmp.cleanup()
