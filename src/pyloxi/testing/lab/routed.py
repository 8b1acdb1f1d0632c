"""A lab with a router between client and load balancer, for real-network tests (PMTU, TTL).

    cl:  eth0 10.0.1.2/24 (MTU 1500), default via 10.0.1.1
    rt:  eth0 10.0.1.1/24 (MTU `client_link_mtu`, toward the client), eth1 10.0.2.1/24;
         default via 10.0.2.2 (the LB: VIPs and backends are behind it)
    lb:  eth0 10.0.2.2/24, 10.0.1.0/24 via 10.0.2.1; ethN 10.0.(10+N).1/24 as in LbTopology
    beN: eth0 10.0.(10+N).2/24, default via 10.0.(10+N).1

The MTU differs at the two ends of the client link on purpose: the client advertises an MSS
for 1500 bytes, so only path MTU discovery (the router's 'fragmentation needed', addressed to
whoever sent the packet: the VIP for traffic through the LB) keeps big downloads going.
"""

from __future__ import annotations

from pyloxi.testing.lab.netns import Netns
from pyloxi.testing.lab.topology import CLIENT_IP, LbTopology, backend_ip

ROUTER_CLIENT_IP = "10.0.1.1"
ROUTER_LB_IP = "10.0.2.1"
LB_ROUTER_SIDE_IP = "10.0.2.2"


class RoutedTopology(LbTopology):
    """client - router - LB - N backends; `close()` removes everything it made."""

    def __init__(self, n_backends: int = 3, prefix: str = "pl",
                 client_link_mtu: int = 1400) -> None:
        self.client_link_mtu = client_link_mtu
        super().__init__(n_backends, prefix)

    def _build(self, n: int) -> None:
        lab = self.lab
        self.client: Netns = lab.netns("cl")
        self.router: Netns = lab.netns("rt")
        self.lb: Netns = lab.netns("lb")
        self.backends: list[Netns] = []
        lab.link(self.client, "eth0", f"{CLIENT_IP}/24", self.router, "eth0",
                 f"{ROUTER_CLIENT_IP}/24")
        self.router.run(["ip", "link", "set", "eth0", "mtu", str(self.client_link_mtu)])
        self.client.run(f"ip route add default via {ROUTER_CLIENT_IP}")
        lab.link(self.router, "eth1", f"{ROUTER_LB_IP}/24", self.lb, "eth0",
                 f"{LB_ROUTER_SIDE_IP}/24")
        self.router.run(f"ip route add default via {LB_ROUTER_SIDE_IP}")
        self.lb.run(f"ip route add 10.0.1.0/24 via {ROUTER_LB_IP}")
        for i in range(1, n + 1):
            be = lab.netns(f"be{i}")
            lab.link(be, "eth0", f"{backend_ip(i)}/24", self.lb, f"eth{i}", f"10.0.{10 + i}.1/24")
            be.run(f"ip route add default via 10.0.{10 + i}.1")
            self.backends.append(be)
        for ns in (self.router, self.lb):
            for key, value in (("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.rp_filter", 0),
                               ("net.ipv4.conf.default.rp_filter", 0)):
                ns.sysctl(key, value)
        for ns in (self.client, self.router, self.lb, *self.backends):
            ns.sysctl("net.ipv4.ip_local_port_range", "10000 60999")
            # ICMP errors are what these tests are about: the kernel's per-destination rate
            # limit would make them depend on how fast the tests run
            ns.sysctl("net.ipv4.icmp_ratelimit", 0)
