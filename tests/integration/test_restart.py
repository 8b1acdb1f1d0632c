"""A restart keeps every flow, however the daemon was started and however it was stopped.

Under `ip netns exec` the daemon lives in a private mount namespace: a bpffs it mounts there,
and the pins in it, vanish with the process. The daemon then either rejoins the mount
namespace it was started from (pins outlive it), or, when it may not (no CAP_SYS_CHROOT),
re-adopts on restart the maps of the program it left attached to the interfaces.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyloxi.testing.lab import LbTopology
from pyloxi.testing.lab.topology import CLIENT_IP, ROUTED_VIP, backend_ip

from ..waiting import wait_until
from .conftest import DaemonHandle
from .traffic import http_answers, paced_download

BIG = 64 << 20
ALL = ",".join(f"{backend_ip(i)}:1" for i in (1, 2, 3))

LAUNCH: dict[str, Callable[[str], list[str]]] = {
    "netns-flag": lambda ns: [],  # pyloxi daemon --netns NS
    "ip-netns-exec": lambda ns: ["ip", "netns", "exec", ns],
    # may not rejoin the host's mount namespace (setns needs CAP_SYS_CHROOT): its pins die
    # with it and the restarted daemon must adopt the maps of the attached program
    "ip-netns-exec-private": lambda ns: ["ip", "netns", "exec", ns, "setpriv",
                                         "--bounding-set", "-sys_chroot"],
}


@pytest.fixture
def fresh_lb(topo: LbTopology) -> Iterator[LbTopology]:
    """No datapath attached in the LB namespace before and after the test."""
    ifaces = ["eth0", *(f"eth{i}" for i in range(1, len(topo.backends) + 1))]

    def detach() -> None:
        for ifname in ifaces:
            topo.lb.run(["tc", "qdisc", "del", "dev", ifname, "clsact"], check=False)

    detach()
    yield topo
    detach()


def client_flow(d: DaemonHandle, sport: int | None = None) -> dict[str, object] | None:
    flows: list[dict[str, object]] = d.api("GET", "/config/conntrack/all").json()["ctAttr"]
    for c in flows:
        if c["sourceIP"] == CLIENT_IP and c["destinationIP"] == ROUTED_VIP and \
                c["destinationPort"] == 80 and sport in (None, c["sourcePort"]):
            return c
    return None


def wait_flow(d: DaemonHandle, dropped: set[object]) -> dict[str, object]:
    """The conntrack entry of the client's one open connection to the VIP (not one of the
    `dropped` source ports, whose reset may not have reached the datapath yet)."""
    flows: list[dict[str, object]] = []

    def one() -> bool:
        flows[:] = [c for c in d.api("GET", "/config/conntrack/all").json()["ctAttr"]
                    if c["sourceIP"] == CLIENT_IP and c["destinationIP"] == ROUTED_VIP
                    and c["conntrackState"] == "est" and c["sourcePort"] not in dropped]
        return len(flows) == 1

    wait_until(one, 15, what="the transfer's flow in conntrack")
    return flows[0]


def wait_persisted(d: DaemonHandle, vip: str) -> None:
    """Until the rule is in the state directory (whatever the store's file format): a rule
    acknowledged a moment before a kill -9 is the durability tests' business."""
    def persisted() -> bool:
        for root, _dirs, files in os.walk(d.state):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    if vip.encode() in f.read():
                        return True
        return False

    wait_until(persisted, 15, what=f"rule for {vip} persisted under {d.state}")


def pyloxi_log(d: DaemonHandle) -> str:
    with open(d.log) as f:
        return "".join(ln for ln in f if " pyloxi." in ln and " DEBUG " not in ln)[-3000:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
@pytest.mark.parametrize("how", list(LAUNCH))
def test_restart_during_long_transfer_keeps_the_flow(fresh_lb: LbTopology, how: str,
                                                     sig: int, tmp_path: Path) -> None:
    topo = fresh_lb
    fast = str(tmp_path / "fast")  # created once the flow is checked: the rest at full speed
    d = DaemonHandle(topo, f"rs-{how}-{sig}")
    d.launcher = LAUNCH[how](topo.lb.name)
    d.start()
    try:
        d.cli("create", "lb", ROUTED_VIP, "--tcp=80:80", f"--endpoints={ALL}", "--name=web")
        # A datapath that lost its conntrack picks up the flow's next segment as a new flow
        # and sends it where a fresh rr cursor points, the first answer of a fresh rule. Keep
        # the transfer away from that endpoint so a lost flow shows as a reset, not by luck.
        first = http_answers(topo.client, ROUTED_VIP, 1)[0][0]
        fresh_pick = backend_ip(int(first.removeprefix("be")))
        dropped: set[object] = set()
        for _ in range(8):
            dl = paced_download(topo.client, ROUTED_VIP, "/big.bin", fast)
            before = wait_flow(d, dropped)
            if fresh_pick not in str(before["conntrackAct"]):
                break
            dl.kill()
            dl.wait()
            dropped.add(before["sourcePort"])
        else:
            pytest.fail(f"every transfer went to {fresh_pick}")
        wait_persisted(d, ROUTED_VIP)  # what this test restarts is flows, not a fresh rule
        d.stop(sig)  # the datapath keeps forwarding while no daemon runs
        time.sleep(1)  # the scenario, not a wait: a while with no daemon at all
        d.extra_args = ["--cleanup-on-exit"]  # the second daemon removes everything at the end
        d.start()
        after = client_flow(d, before["sourcePort"])  # type: ignore[arg-type]
        assert after is not None, f"flow lost by the restart ({how}): {pyloxi_log(d)}"
        assert after["conntrackAct"] == before["conntrackAct"]  # same endpoint, same rewrite
        assert dl.poll() is None, "the transfer ended before the check: read it slower"
        open(fast, "w").close()
        out, err = dl.communicate(timeout=120)
        assert dl.returncode == 0, err.decode()
        assert out.decode().split() == [str(BIG), "200"]
        if how == "ip-netns-exec-private":
            with open(d.log) as f:
                assert "adopted" in f.read()
        else:  # pins in the mount namespace the daemon was started from
            assert os.path.exists(os.path.join(d.pin, "svc_map"))
    finally:
        d.stop()


def test_refuses_to_start_when_the_live_datapath_cannot_be_adopted(fresh_lb: LbTopology) -> None:
    """A pyloxi datapath is attached, no pins are left and its maps do not fit this object
    (here: a conntrack table of another size): starting would drop every flow, so the daemon
    refuses and says how to run it."""
    topo = fresh_lb
    d = DaemonHandle(topo, "rs-refuse")
    d.launcher = LAUNCH["ip-netns-exec-private"](topo.lb.name)
    script = ("import sys;from pyloxi.datapath.ebpf.backend import EbpfDatapath;"
              "dp=EbpfDatapath(sys.argv[1], ct_entries=4096);dp.attach(['eth0']);dp.close()")
    # private mount namespace: these pins vanish when the loader exits; the program stays
    topo.lb.run([*d.launcher[4:], sys.executable, "-c", script, d.pin])
    proc = subprocess.run(
        [*d.launcher, sys.executable, "-m", "pyloxi.entry", "daemon", "--state-dir", d.state,
         "--bpffs", d.pin, "--port", "11112"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "cannot be adopted" in proc.stderr and "--netns" in proc.stderr, proc.stderr
