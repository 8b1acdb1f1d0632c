"""deploy/: the daemon's DaemonSet and systemd unit run flags the daemon accepts, with what the
datapath needs (capabilities, the host's bpffs, a state directory), in the image `make image`
builds. The image itself is built and run in tests/integration/test_image.py."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pyloxi.daemon import parse_args

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
UNIT = ROOT / "deploy" / "systemd" / "pyloxi.service"
ENV = ROOT / "deploy" / "systemd" / "pyloxi.env"
# what loading, attaching and pinning the datapath cannot do without
DATAPATH_CAPS = {"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN"}


def makefile_image() -> str:
    m = re.search(r"^IMAGE \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, "Makefile: no IMAGE ?= line"
    return m.group(1)


def daemonset() -> dict:
    return yaml.safe_load((K8S / "daemonset.yaml").read_text())


def daemon_container(ds: dict) -> dict:
    (container,) = [c for c in ds["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "pyloxi"]
    return container


def test_every_image_is_the_one_make_image_builds():
    image = makefile_image()
    script = (ROOT / "scripts" / "build-image").read_text()
    assert f"IMAGE=${{IMAGE:-{image}}}" in script
    spec = daemonset()["spec"]["template"]["spec"]
    used = [c["image"] for c in spec["containers"] + spec["initContainers"]]
    agent = yaml.safe_load((K8S / "deployment.yaml").read_text())
    used += [c["image"] for c in agent["spec"]["template"]["spec"]["containers"]]
    assert used and set(used) == {image}


def test_daemonset_is_listed_by_the_kustomization():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "daemonset.yaml" in kustomization["resources"]


def test_daemonset_runs_the_daemon_on_the_host_network_with_its_capabilities():
    ds = daemonset()
    assert ds["kind"] == "DaemonSet"
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    container = daemon_container(ds)
    ctx = container["securityContext"]
    assert not ctx.get("privileged")
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert set(ctx["capabilities"]["add"]) >= DATAPATH_CAPS
    # the daemon's flags, parsed by the daemon's own parser (a typo exits here)
    assert container["command"] == ["pyloxi", "daemon"]
    args = parse_args(container["args"])
    assert args.host == "0.0.0.0"  # the agent reaches it on the node's address
    ports = {p["containerPort"] for p in container["ports"]}
    assert args.port in ports
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == args.port


def test_daemonset_pins_on_the_hosts_bpffs_and_keeps_state_on_the_host():
    ds = daemonset()
    container = daemon_container(ds)
    args = parse_args(container["args"])
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    # pins below a mount of the host's /sys/fs/bpf: they outlive the pod
    bpffs = next(p for p in mounts if Path(args.bpffs).is_relative_to(p))
    assert mounts[bpffs]["hostPath"]["path"] == "/sys/fs/bpf"
    state = next(p for p in mounts if Path(args.state_dir).is_relative_to(p))
    assert "hostPath" in mounts[state]
    # a read-only root: everything the daemon writes is on those two
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_daemonset_init_container_sets_sysctls_that_exist():
    init = daemonset()["spec"]["template"]["spec"]["initContainers"]
    (sysctls,) = [c for c in init if c["name"] == "sysctls"]
    assert sysctls["command"][:2] == ["sysctl", "-w"]
    for setting in sysctls["command"][2:]:
        key = setting.split("=")[0]
        assert Path("/proc/sys", *key.split(".")).exists(), key


# -- systemd --

def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def exec_start_argv() -> list[str]:
    """ExecStart as systemd runs it with the example environment file: an unquoted $VAR is
    split on whitespace."""
    (line,) = unit_settings()["ExecStart"]
    env_line = next(v for v in ENV.read_text().splitlines() if v.startswith("PYLOXI_ARGS="))
    extra = shlex.split(env_line.split("=", 1)[1])[0].split()
    argv = []
    for word in shlex.split(line):
        argv += extra if word == "$PYLOXI_ARGS" else [word]
    return argv


def test_unit_restarts_keeps_state_and_waits_for_bpffs():
    s = unit_settings()
    assert s["Restart"] == ["on-failure"]
    assert s["StateDirectory"] == ["pyloxi"]
    assert "/sys/fs/bpf" in " ".join(s["RequiresMountsFor"]).split()
    assert s["EnvironmentFile"] == ["-/etc/default/pyloxi"]
    caps = set(" ".join(s["CapabilityBoundingSet"]).split())
    assert {f"CAP_{c}" for c in DATAPATH_CAPS} <= caps
    # the same capabilities as the DaemonSet (and SYS_RESOURCE for MEMLOCK on old kernels)
    ds_caps = set(daemon_container(daemonset())["securityContext"]["capabilities"]["add"])
    assert caps - {"CAP_SYS_RESOURCE"} == {f"CAP_{c}" for c in ds_caps}


def test_unit_flags_are_the_daemons():
    argv = exec_start_argv()
    assert argv[:2] == ["/opt/pyloxi/bin/pyloxi", "daemon"]
    args = parse_args(argv[2:])
    # the state directory is the one systemd creates; pins under the bpffs it waits for
    assert args.state_dir == "/var/lib/" + unit_settings()["StateDirectory"][0]
    assert Path(args.bpffs).is_relative_to("/sys/fs/bpf")
    assert args.interfaces and args.prometheus  # the example file's flags got through


def _verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of a copy whose ExecStart binary exists (verify requires it;
    /opt/pyloxi is where the docs install pyloxi, not this machine)."""
    stub = tmp_path / "pyloxi"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    copy = tmp_path / "pyloxi.service"
    copy.write_text(unit.read_text().replace("/opt/pyloxi/bin/pyloxi", str(stub)))
    return subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="no systemd-analyze (apt-get install systemd)")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    proc = _verify(UNIT, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # no warning about our unit either (unknown keys, bad values are warnings, exit 0)
    assert "pyloxi.service" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="no systemd-analyze (apt-get install systemd)")
def test_systemd_analyze_catches_a_mistake(tmp_path):
    bad = tmp_path / "bad" / "pyloxi.service"
    bad.parent.mkdir()
    bad.write_text(UNIT.read_text().replace("ProtectHome=yes", "ProtectHom=yes"))
    proc = _verify(bad, tmp_path)
    assert "Unknown key 'ProtectHom'" in proc.stdout + proc.stderr
