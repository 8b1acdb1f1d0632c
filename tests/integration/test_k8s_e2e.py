"""End to end: fake Kubernetes API → `pyloxi kube-agent` → real `pyloxi daemon` → real packets.

The daemon runs in the LB namespace of the lab topology (client, lb, 3 nginx backends). Its REST
port (127.0.0.1 inside that namespace) is bridged to 127.0.0.1 of the test's namespace through a
UNIX socket (socat on both sides), so the agent (a `pyloxi kube-agent` subprocess) and the fake
apiserver (in this process) stay on loopback. "Nodes" are the backend namespaces: Node
InternalIP = backend IP, NodePort 80 = nginx; then usepodnetwork with pod IPs = backend IPs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from k8sfake import FakeKube, endpoint_slice, free_port, node, service  # noqa: E402

from pyloxi.client import ApiError, AsyncClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(150)  # root: tests/conftest.py skips it for non-root users


async def _until(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while True:
        res = cond()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return res
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _rules(url: str) -> list[dict] | None:
    try:
        async with AsyncClient(url, timeout=3) as api:
            return await api.list_loadbalancers()
    except ApiError:
        return None


def _who(topo, vip: str, tries: int) -> list[str]:
    from pyloxi.testing.lab.topology import curl

    out = []
    for _ in range(tries):
        try:
            body = curl(topo.client, f"http://{vip}/", timeout=2).split()
            out.append(body[0] if body else "")  # nginx answers "<backend> [client address]"
        except subprocess.CalledProcessError:
            out.append("")
    return out


async def test_service_served_through_pyloxi_daemon(tmp_path):
    from pyloxi.testing.lab.topology import ROUTED_VIP, ROUTED_VIP6, LbTopology

    procs: list[subprocess.Popen] = []
    daemon = None
    bpffs = f"/sys/fs/bpf/pyloxi-k8s-e2e-{os.getpid()}"
    kube = FakeKube()
    topo = LbTopology(3, prefix="k8", v6=True)
    try:
        topo.start_http(80)
        api_port = 11111
        sock = tmp_path / "loxi.sock"
        daemon_log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115
        ifaces = ",".join(["eth0"] + [f"eth{i}" for i in range(1, len(topo.backends) + 1)])
        daemon = topo.lb.popen(
            [sys.executable, "-m", "pyloxi.entry", "daemon", "--host", "127.0.0.1",
             "--port", str(api_port), "--state-dir", str(tmp_path / "state"),
             "--bpffs", bpffs, "--interfaces", ifaces, "--cleanup-on-exit"],
            stdout=daemon_log, stderr=daemon_log, cwd=str(ROOT))
        topo.lb.popen(["socat", f"UNIX-LISTEN:{sock},fork", f"TCP:127.0.0.1:{api_port}"])
        local_port = free_port()
        procs.append(subprocess.Popen(
            ["socat", f"TCP-LISTEN:{local_port},bind=127.0.0.1,reuseaddr,fork",
             f"UNIX-CONNECT:{sock}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        loxi_url = f"http://127.0.0.1:{local_port}"

        async def daemon_up() -> bool:
            if daemon.poll() is not None:
                raise AssertionError("daemon exited: " +
                                     (tmp_path / "daemon.log").read_text()[-2000:])
            return await _rules(loxi_url) is not None

        await _until(daemon_up, 30, "pyloxi daemon REST API")

        await kube.start()
        for i, (ip, ip6) in enumerate(zip(topo.backend_ips, topo.backend_ips6, strict=True), 1):
            kube.create(node(f"be{i}", ip, ip6=ip6))   # dual-stack Nodes
        web = service("web", externalTrafficPolicy="Cluster")
        web["spec"]["ports"] = [{"name": "http", "port": 80, "protocol": "TCP",
                                 "targetPort": 80, "nodePort": 80}]
        kube.create(web)
        kube.create(endpoint_slice("web", topo.backend_ips[:2], ports=[("http", 80, "TCP")]))
        agent_log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
        agent = subprocess.Popen(
            [sys.executable, "-m", "pyloxi.entry", "kube-agent",
             f"--kubeconfig={kube.kubeconfig(str(tmp_path / 'kubeconfig'))}",
             f"--loxiURL={loxi_url}", f"--cidrPools=defaultPool={ROUTED_VIP}/32",
             f"--cidr6Pools=defaultPool={ROUTED_VIP6}/128", "--resyncPeriod=5"],
            stdout=agent_log, stderr=agent_log, cwd=str(ROOT), start_new_session=True)
        procs.append(agent)

        def status_ip() -> str | None:
            svc = kube.get("Service", "web")
            ing = (svc["status"].get("loadBalancer") or {}).get("ingress") or []
            return ing[0].get("ip") if ing else None

        def agent_alive() -> None:
            if agent.poll() is not None:
                raise AssertionError("agent exited: " +
                                     (tmp_path / "agent.log").read_text()[-2000:])

        async def programmed() -> bool:
            agent_alive()
            rules = await _rules(loxi_url) or []
            return any(r["serviceArguments"].get("name") == "default_web" for r in rules)

        await _until(programmed, 30, "rule programmed by the agent")
        await _until(lambda: status_ip() == ROUTED_VIP, 10, "status.loadBalancer.ingress")
        rule = next(r for r in await _rules(loxi_url)
                    if r["serviceArguments"].get("name") == "default_web")
        assert rule["serviceArguments"]["externalIP"] == ROUTED_VIP
        assert sorted(e["endpointIP"] for e in rule["endpoints"]) == sorted(topo.backend_ips)

        # node mode: every Node (backend) at NodePort 80 answers through the VIP
        seen = await asyncio.to_thread(_who, topo, ROUTED_VIP, 12)
        assert set(seen) == {"be1", "be2", "be3"}, seen

        # an IPv6 Service in node mode: its VIP from the IPv6 pool, the Nodes' IPv6 addresses
        # as endpoints, every backend answering through the IPv6 VIP
        web6 = service("web6", externalTrafficPolicy="Cluster", ipFamilies=["IPv6"],
                       ipFamilyPolicy="SingleStack")
        web6["spec"]["ports"] = [{"name": "http", "port": 80, "protocol": "TCP",
                                  "targetPort": 80, "nodePort": 80}]
        kube.create(web6)

        def status_ip6() -> str | None:
            ing = (kube.get("Service", "web6")["status"].get("loadBalancer") or {}).get(
                "ingress") or []
            return ing[0].get("ip") if ing else None

        await _until(lambda: status_ip6() == ROUTED_VIP6, 30, "the IPv6 Service's ingress")
        seen = await asyncio.to_thread(_who, topo, f"[{ROUTED_VIP6}]", 12)
        assert set(seen) == {"be1", "be2", "be3"}, (seen, await _rules(loxi_url))
        rule6 = next(r for r in await _rules(loxi_url) or []
                     if r["serviceArguments"]["externalIP"] == ROUTED_VIP6)
        assert sorted(e["endpointIP"] for e in rule6["endpoints"]) == sorted(topo.backend_ips6)
        kube.delete("Service", "web6")

        # switch to the pod network: only the EndpointSlice's ready addresses (be1, be2)
        kube.patch("Service", "web",
                   metadata={"annotations": {"loxilb.io/usepodnetwork": "yes"}})

        async def two_eps() -> bool:
            agent_alive()
            rules = await _rules(loxi_url) or []
            r = [x for x in rules if x["serviceArguments"].get("name") == "default_web"]
            return bool(r) and len(r[0]["endpoints"]) == 2

        await _until(two_eps, 20, "pod-network endpoints")
        seen = await asyncio.to_thread(_who, topo, ROUTED_VIP, 10)
        assert set(seen) == {"be1", "be2"}, seen

        # Service deleted: the rule goes, the VIP stops answering
        kube.delete("Service", "web")

        async def gone() -> bool:
            agent_alive()
            rules = await _rules(loxi_url)
            return rules is not None and not any(
                r["serviceArguments"].get("name") == "default_web" for r in rules)

        await _until(gone, 20, "rule removed")
        seen = await asyncio.to_thread(_who, topo, ROUTED_VIP, 2)
        assert seen == ["", ""], seen
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        if daemon is not None and daemon.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(10)
        await kube.stop()
        topo.close()
        if os.path.isdir(bpffs):
            shutil.rmtree(bpffs, ignore_errors=True)
