"""IPv6 VIPs made local by VipPlumber, as root in throwaway namespaces: a peer on a veth
resolves them (proxy NDP) and reaches them, hears the unsolicited NA when one appears, and loses
them when they are removed; a restarted plumber knows its own. No traffic leaves the lab.

The plumber runs in a Python child inside the "lb" namespace (its netlink socket lives on a
worker thread for the life of the process, as in the daemon)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from pyloxi.testing.lab.netns import Lab, Netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]

LB_ADDR, PEER_ADDR = "fd00:6::1", "fd00:6::2"
VIP, SEEDED_VIP = "fd00:6::100", "fd00:6::101"
WRONG_MAC = "02:00:00:00:be:ef"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

# Prints "ready", then the target of each neighbour advertisement heard, for `seconds`.
LISTEN_NA = """
import ipaddress, select, socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while (left := end - time.monotonic()) > 0:
    if select.select([s], [], [], left)[0]:
        data, src = s.recvfrom(2048)
        if data[0] == 136 and len(data) >= 24:
            flags = int.from_bytes(data[4:8], "big")
            print(ipaddress.IPv6Address(data[8:24]), hex(flags), src[0], flush=True)
"""


@pytest.fixture
def lab() -> Iterator[tuple[Netns, Netns]]:
    with Lab() as lab:
        lb, peer = lab.netns("v6lb"), lab.netns("v6peer")
        for ns in (lb, peer):  # no DAD wait for the link-local addresses of the veth
            ns.sysctl("net.ipv6.conf.default.accept_dad", 0)
        lab.link(lb, "eth0", None, peer, "eth0", None)
        lb.run(["ip", "addr", "add", f"{LB_ADDR}/64", "dev", "eth0", "nodad"])
        peer.run(["ip", "addr", "add", f"{PEER_ADDR}/64", "dev", "eth0", "nodad"])
        yield lb, peer


def run_in(ns: Netns, code: str) -> object:
    """Run `code` in a Python child inside `ns`; it prints one JSON value last."""
    proc = subprocess.run(ns.argv([sys.executable, "-c", textwrap.dedent(code)]),
                          capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def mac(ns: Netns, ifname: str = "eth0") -> str:
    return str(json.loads(ns.run(["ip", "-j", "link", "show", ifname]).stdout)[0]["address"])


def neigh(ns: Netns, addr: str) -> dict[str, object] | None:
    entries = json.loads(ns.run(["ip", "-j", "-6", "neigh", "show", addr, "dev", "eth0"]).stdout)
    return entries[0] if entries else None


def ping(ns: Netns, addr: str) -> bool:
    return ns.run(["ping", "-6", "-c1", "-W2", addr], check=False).returncode == 0


def proxies(ns: Netns) -> list[list[str]]:
    out = json.loads(ns.run(["ip", "-j", "-6", "neigh", "show", "proxy"]).stdout or "[]")
    return sorted([e["dst"], e["dev"], str(e.get("protocol"))] for e in out)


def test_v6_vip_answers_neighbour_discovery_and_is_announced(lab: tuple[Netns, Netns]) -> None:
    lb, peer = lab
    lb_mac = mac(lb)
    # the peer believes SEEDED_VIP is somewhere else: the NA must correct it with no traffic
    peer.run(["ip", "-6", "neigh", "add", SEEDED_VIP, "lladdr", WRONG_MAC, "dev", "eth0",
              "nud", "stale"])
    listener = subprocess.Popen(peer.argv([sys.executable, "-c", LISTEN_NA, "4"]),
                                stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert listener.stdout is not None and listener.stdout.readline() == "ready\n"
        out = run_in(lb, f"""
            import json, subprocess
            from pyloxi.host.netlink import VipPlumber
            v = VipPlumber(["eth0"])
            v.change({{"{VIP}", "{SEEDED_VIP}", "20.0.0.1"}}, set())
            def sysctl(k):
                return subprocess.run(["sysctl", "-n", k], capture_output=True,
                                      text=True).stdout.strip()
            print(json.dumps([sorted(v.owned), [sysctl(k) for k in (
                "net.ipv6.conf.eth0.forwarding", "net.ipv6.conf.eth0.proxy_ndp",
                "net.ipv6.neigh.eth0.proxy_delay", "net.ipv6.conf.eth0.accept_ra",
                "net.ipv6.conf.all.forwarding")]]))
        """)
        heard, _ = listener.communicate(timeout=10)
    finally:
        listener.kill()
        listener.wait()
    assert out == [["20.0.0.1", VIP, SEEDED_VIP], ["1", "1", "0", "2", "0"]]
    nas = [line.split() for line in heard.splitlines()]
    assert [VIP, "0x20000000"] in [na[:2] for na in nas]  # override, not solicited, not router
    assert [SEEDED_VIP, "0x20000000"] in [na[:2] for na in nas]
    seeded = neigh(peer, SEEDED_VIP)
    assert seeded is not None and seeded["lladdr"] == lb_mac  # updated by the NA alone
    assert proxies(lb) == [[VIP, "eth0", "250"], [SEEDED_VIP, "eth0", "250"]]

    assert neigh(peer, VIP) is None
    assert ping(peer, VIP)  # NS answered by proxy NDP, echo by the local route
    entry = neigh(peer, VIP)
    assert entry is not None and entry["lladdr"] == lb_mac
    # what the datapath passes up for a VIP without a live rule is refused, as for v4
    refused = peer.run([sys.executable, "-c", textwrap.dedent(f"""
        import socket
        s = socket.socket(socket.AF_INET6)
        s.settimeout(3)
        try:
            s.connect(("{VIP}", 80))
        except ConnectionRefusedError:
            print("refused")
    """)]).stdout
    assert refused.strip() == "refused"

    run_in(lb, f"""
        from pyloxi.host.netlink import VipPlumber
        v = VipPlumber(["eth0"])
        v.change(set(), {{"{VIP}"}})
        print("null")
    """)
    assert proxies(lb) == [[SEEDED_VIP, "eth0", "250"]]
    peer.run(["ip", "-6", "neigh", "flush", "dev", "eth0"])
    assert not ping(peer, VIP)
    entry = neigh(peer, VIP)
    assert entry is None or entry.get("lladdr") != lb_mac


def test_restarted_plumber_knows_its_v6_vips_and_repairs_proxy_entries(
        lab: tuple[Netns, Netns]) -> None:
    lb, peer = lab
    run_in(lb, f"""
        from pyloxi.host.netlink import VipPlumber
        VipPlumber(["eth0"]).change({{"{VIP}", "fd00:6:0::0102", "20.0.0.1"}}, set())
        print("null")
    """)
    # while it is down: one of its proxy entries vanishes, and a stray one of ours appears
    lb.run(["ip", "-6", "neigh", "del", "proxy", VIP, "dev", "eth0"])
    lb.run(["ip", "-6", "neigh", "add", "proxy", "fd00:6::999", "dev", "eth0", "protocol", "250"])
    lb.run(["ip", "-6", "neigh", "add", "proxy", "fd00:6::998", "dev", "eth0"])  # not ours
    out = run_in(lb, """
        import json
        from pyloxi.host.netlink import VipPlumber
        v = VipPlumber(["eth0"])
        print(json.dumps(sorted(v.owned)))
    """)
    assert out == ["20.0.0.1", VIP, "fd00:6::102"]
    assert proxies(lb) == [[VIP, "eth0", "250"], ["fd00:6::102", "eth0", "250"],
                           ["fd00:6::998", "eth0", "None"]]
    assert ping(peer, VIP)
    out = run_in(lb, """
        import json, subprocess
        from pyloxi.host.netlink import VipPlumber
        v = VipPlumber(["eth0"])
        v.sync(set())
        routes = subprocess.run(["ip", "-j", "route", "show", "table", "all", "proto", "250"],
                                capture_output=True, text=True, check=True).stdout
        print(json.dumps([sorted(v.owned), json.loads(routes)]))
    """)
    assert out == [[], []]
    assert proxies(lb) == [["fd00:6::998", "eth0", "None"]]


def test_thousand_v6_vips_timing(lab: tuple[Netns, Netns], capsys: pytest.CaptureFixture[str]
                                 ) -> None:
    """A rough number for the report; no timed assertion."""
    lb, _ = lab
    out = run_in(lb, """
        import json, subprocess, time
        from pyloxi.host.netlink import VipPlumber
        vips = {f"fd00:7::{i:x}" for i in range(1, 1001)}
        v = VipPlumber(["eth0"])
        t0 = time.monotonic()
        v.change(vips, set())
        t1 = time.monotonic()
        n = len(subprocess.run(["ip", "-6", "neigh", "show", "proxy"], capture_output=True,
                               text=True).stdout.splitlines())
        restarted = VipPlumber(["eth0"])
        t2 = time.monotonic()
        seen = len(restarted.owned)
        restarted.sync(set())
        t3 = time.monotonic()
        print(json.dumps([n, seen, len(restarted.owned), t1 - t0, t2 - t1, t3 - t2]))
    """)
    assert isinstance(out, list)
    n, seen, left, add_s, start_s, remove_s = out
    assert n == 1000 and seen == 1000 and left == 0
    with capsys.disabled():
        print(f"\n1,000 v6 VIPs: add {add_s:.3f} s (with NAs), restart scan {start_s:.3f} s, "
              f"remove {remove_s:.3f} s")
