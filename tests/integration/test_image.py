"""The container image (deploy/image/Containerfile, scripts/build-image): built once for this
module from a Debian root (mmdebstrap) with podman, then the daemon runs from it with podman in
the LB namespace of a lab, with the DaemonSet's capabilities and the host's /sys/fs/bpf, serves
the API, balances a VIP, and leaves its pinned datapath forwarding when the container stops.

The image is tagged localhost/pyloxi-test:<pid> and removed at the end; the build context
(build/image-test: the Debian root, the wheels) stays, so a later run downloads no wheel again.
Building takes 75 s on an idle 2-core machine (mmdebstrap ~17 s, wheels ~25 s, podman build
~35 s), 3 to 4 minutes when other jobs share it; build/image-test/build.log has the steps' times.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pyloxi.testing.lab import LbTopology, cleanup_stale
from pyloxi.testing.lab.topology import CLIENT_IP, ROUTED_VIP, curl

from ..waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
API = "http://127.0.0.1:11111/netlox/v1"

pytestmark = [
    pytest.mark.skipif(shutil.which("podman") is None or shutil.which("mmdebstrap") is None,
                       reason="needs podman and mmdebstrap (scripts/install-deps)"),
    pytest.mark.timeout(900),
]


def podman(*args: str, check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {proc.stdout}{proc.stderr}")
    return proc


def run_flags() -> list[str]:
    """What `podman run` needs on this kind of machine, harmless elsewhere: crun 1.8 refuses a
    host with cgroup v1 and v2 mounted side by side ("cgroups in hybrid mode not supported"),
    runc does not; and podman 4.3 asks the runtime for RLIMIT_NOFILE 1048576 and an RLIMIT_NPROC
    above the 32768 it lowered its own to, which fails without CAP_SYS_RESOURCE: ask for what
    this process has instead."""
    flags = ["--runtime", "runc"] if shutil.which("runc") else []
    limits = []
    for name, rlimit, cap in (("nofile", resource.RLIMIT_NOFILE, 1 << 20),
                              ("nproc", resource.RLIMIT_NPROC, 32768)):
        hard = resource.getrlimit(rlimit)[1]
        n = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        limits += ["--ulimit", f"{name}={n}:{n}"]
    return flags + limits


def daemonset_caps() -> list[str]:
    ds = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "daemonset.yaml").read_text())
    (container,) = [c for c in ds["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "pyloxi"]
    caps: list[str] = container["securityContext"]["capabilities"]["add"]
    return caps


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    tag = f"localhost/pyloxi-test:{os.getpid()}"
    ctx = ROOT / "build" / "image-test"
    ctx.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "IMAGE": tag, "CTX": str(ctx), "PY": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build-image")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=840)
    # the steps' times ("build-image: [ 12s] ..."), for whoever wonders where the time goes
    (ctx / "build.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    try:
        yield tag
    finally:
        podman("rmi", "-f", tag, check=False)


def test_image_carries_the_daemon_the_agent_the_datapath_and_gobgpd(image: str) -> None:
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["pyloxi"] and config["Cmd"] == ["daemon"]
    # offline: everything is in the image
    script = ("set -e; pyloxi daemon --help >/dev/null; pyloxi kube-agent --help >/dev/null;"
              "python3 -c 'import pyloxi.bpf as b, pyloxi.bgp.apipb; print(b.locate_object())';"
              "gobgpd --version; ip -V >/dev/null; sysctl --version >/dev/null")
    proc = podman("run", "--rm", "--network=none", *run_flags(), "--entrypoint", "sh", image,
                  "-c", script)
    lines = proc.stdout.split("\n")
    assert lines[0].endswith("/site-packages/pyloxi/bpf/lb.bpf.o"), proc.stdout
    assert "gobgpd version 3." in proc.stdout
    # the kube agent as deployment.yaml runs it: nobody, read-only root, no capabilities
    agent = podman("run", "--rm", "--network=none", *run_flags(), "--user", "65534",
                   "--read-only", "--cap-drop=all", image, "kube-agent", "--help")
    assert "--config" in agent.stdout


def logs(name: str) -> str:
    proc = podman("logs", name, check=False)
    return (proc.stdout + proc.stderr)[-3000:]


def container_state(name: str) -> dict[str, object]:
    state: dict[str, object] = json.loads(podman("inspect", name).stdout)[0]["State"]
    return state


def wait_api(topo: LbTopology, name: str) -> None:
    def up() -> bool:
        if not container_state(name)["Running"]:
            raise AssertionError(f"the container exited: {logs(name)}")
        return topo.lb.run(["curl", "-sf", f"{API}/version"], check=False).returncode == 0

    wait_until(up, 60, interval=0.5, what="the containerised daemon's API")


def answers(topo: LbTopology, n: int) -> list[tuple[str, str]]:
    return [tuple(curl(topo.client, f"http://{ROUTED_VIP}/").split()) for _ in range(n)]


def test_daemon_from_the_image_serves_the_api_and_balances_a_vip(image: str) -> None:
    cleanup_stale()
    with LbTopology(2) as topo:
        topo.start_http()
        pin = topo.lab.pin_dir("image")
        state = Path(topo.tmp.name) / "state"
        state.mkdir()
        name = f"{topo.lab.tag}-pyloxi"
        caps = ",".join(daemonset_caps())
        # the DaemonSet's security context: no --privileged, all capabilities dropped but its
        # own; the host's bpffs, and the lab's LB namespace standing in for hostNetwork
        podman("run", "-d", "--name", name, *run_flags(),
               "--network", f"ns:/run/netns/{topo.lb.name}",
               "--cap-drop=all", f"--cap-add={caps}", "--read-only",
               "-v", "/sys/fs/bpf:/sys/fs/bpf", "-v", f"{state}:/var/lib/pyloxi",
               image, "daemon", "--bpffs", pin, "--log-level", "debug")
        try:
            wait_api(topo, name)
            # the host's CLI, in the namespace, talks to the containerised daemon
            cli = [sys.executable, "-m", "pyloxi.entry"]
            be2 = topo.backend_ips[1]
            topo.lb.run([*cli, "create", "lb", ROUTED_VIP, "--tcp=80:80",
                         f"--endpoints={be2}:1", "--name=image"])
            # real traffic from the client, through the container's datapath, to be2 only
            assert answers(topo, 4) == [("be2", CLIENT_IP)] * 4
            assert os.listdir(pin), "no pinned maps on the host's bpffs"

            podman("stop", "-t", "20", name)
            assert container_state(name)["ExitCode"] == 0, logs(name)
            # no daemon: the pins (host's bpffs) and the attached datapath keep forwarding
            assert os.listdir(pin)
            assert answers(topo, 2) == [("be2", CLIENT_IP)] * 2

            # a restarted container adopts it and restores the rule from the state volume
            podman("start", name)
            wait_api(topo, name)
            rules = topo.lb.run(["curl", "-sf", f"{API}/config/loadbalancer/all"]).stdout
            (rule,) = json.loads(rules)["lbAttr"]
            assert rule["serviceArguments"]["externalIP"] == ROUTED_VIP
            assert answers(topo, 2) == [("be2", CLIENT_IP)] * 2
        finally:
            podman("rm", "-f", "-t", "5", name, check=False)
