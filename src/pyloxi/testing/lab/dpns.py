"""A network namespace for running the datapath under BPF_PROG_TEST_RUN.

`bpf_fib_lookup` resolves against the namespace the calling thread is in, so the datapath tests
and micro-benchmarks move their own thread into a namespace made for them: an LB with a client
subnet on dp0 (10.0.1.1/24) and an endpoint subnet on dp1 (10.0.11.1/24), both with MAC
LB_MAC, forwarding on, plus
whatever neighbours, routes and addresses the caller adds. The thread goes home and the
namespace is deleted on exit, pass or fail.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence

from pyloxi.host.namespaces import in_netns

LB_MAC = "02:00:00:00:01:01"
BASE = (
    # both ends have the LB's MAC: frames the tests address to LB_MAC are this host's
    # (PACKET_HOST) on either side; the datapath ignores frames for other hosts
    f"ip link add dp0 address {LB_MAC} type veth peer name dp1 address {LB_MAC}",
    "ip link set dp0 up", "ip link set dp1 up", "ip link set lo up",
    "ip addr add 10.0.1.1/24 dev dp0", "ip addr add 10.0.11.1/24 dev dp1",
    "sysctl -qw net.ipv4.ip_forward=1",
)


@contextlib.contextmanager
def datapath_netns(name: str, commands: Sequence[str]) -> Iterator[str]:
    """Create namespace `name`, move this thread into it, run BASE then `commands` there."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with in_netns(name):
            for cmd in (*BASE, *commands):
                subprocess.run(cmd.split(), check=True)
            yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
