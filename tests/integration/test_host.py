"""host/ as root, in throwaway network namespaces: entering them, VIP routes, sysctls, rejoining
the host's mount namespace from `ip netns exec`.

The netlink helpers keep one socket on a worker thread for the life of the process, so they are
exercised in a child process started inside the namespace, as the daemon itself runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from pyloxi.host.namespaces import in_netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"plhost{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def run_in(ns: str, code: str) -> object:
    """Run `code` in a Python child inside namespace `ns`; it prints one JSON value."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def _net_ino(path: str = "/proc/thread-self/ns/net") -> int:
    return os.stat(path).st_ino


def test_in_netns_enters_and_returns(netns: str) -> None:
    home = _net_ino()
    target = _net_ino(f"/var/run/netns/{netns}")
    with in_netns(netns):
        assert _net_ino() == target
    assert _net_ino() == home
    with pytest.raises(RuntimeError), in_netns(netns):
        raise RuntimeError("the body failed")
    assert _net_ino() == home


def test_vips_become_local_routes_and_are_recognised_after_a_restart(netns: str) -> None:
    first = run_in(netns, """
        import json, subprocess
        from pyloxi.host.netlink import VipPlumber
        v = VipPlumber()
        v.sync({"20.0.0.1", "20.0.0.2", "::1", "0.0.0.0"})  # IPv4 VIPs only
        print(json.dumps(sorted(v.owned)))
    """)
    assert first == ["20.0.0.1", "20.0.0.2"]
    again = run_in(netns, """
        import json, subprocess
        from pyloxi.host.netlink import VipPlumber
        v = VipPlumber()  # a restarted daemon: finds its own routes by their protocol
        found = sorted(v.owned)
        v.change(set(), {"20.0.0.1"})
        routes = subprocess.run(["ip", "-j", "route", "show", "table", "local", "proto", "250"],
                                capture_output=True, text=True, check=True).stdout
        print(json.dumps([found, sorted(r["dst"] for r in json.loads(routes))]))
    """)
    assert again == [["20.0.0.1", "20.0.0.2"], ["20.0.0.2"]]


def test_prepare_host_and_lookups(netns: str) -> None:
    out = run_in(netns, """
        import json, subprocess
        from pyloxi.host.netlink import default_interfaces, prepare_host, source_address
        ip = ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"]
        subprocess.run(ip, check=True)
        subprocess.run(["ip", "addr", "add", "10.9.0.1/24", "dev", "v0"], check=True)
        subprocess.run(["ip", "link", "set", "v0", "up"], check=True)
        names = default_interfaces()
        prepare_host(names)
        def sysctl(k):
            return subprocess.run(["sysctl", "-n", k], capture_output=True, text=True).stdout
        print(json.dumps({
            "names": names,
            "forward": sysctl("net.ipv4.ip_forward").strip(),
            "ports": sysctl("net.ipv4.ip_local_port_range").split(),
            "src": source_address("10.9.0.7"),
            "unroutable": source_address("192.0.2.1"),
        }))
    """)
    assert out == {"names": ["v0", "v1"], "forward": "1", "ports": ["32768", "49151"],
                   "src": "10.9.0.1", "unroutable": None}


def test_share_host_mounts_rejoins_the_starting_mount_namespace(netns: str) -> None:
    """`ip netns exec` gives its child a private mount namespace; the daemon goes back to the
    one it was started from, so pins outlive it."""
    out = run_in(netns, """
        import json, os
        from pyloxi.host.namespaces import share_host_mounts
        before = os.stat("/proc/thread-self/ns/mnt").st_ino
        joined = share_host_mounts()
        print(json.dumps([before, joined, os.stat("/proc/thread-self/ns/mnt").st_ino]))
    """)
    assert isinstance(out, list)
    before, joined, after = out
    mine = os.stat("/proc/self/ns/mnt").st_ino
    assert before != mine and joined is True and after == mine
