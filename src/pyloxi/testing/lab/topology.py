"""The standard lab: a client, a load balancer and N backends, each in its own namespace.

    cl:  eth0 10.0.1.2/24, default via 10.0.1.1
    lb:  eth0 10.0.1.1/24 (client side), ethN 10.0.(10+N).1/24 (backend N side); forwarding on
    beN: eth0 10.0.(10+N).2/24, default via 10.0.(10+N).1

With `v6=True` every link is dual stack: fd00:1::2/64 (client), fd00:1::1/64 and fd00:(10+N)::1/64
(LB), fd00:(10+N)::2/64 (backend N), default routes likewise, IPv6 forwarding on the LB.

Backends answer HTTP (nginx) and UDP with their own name, so a client can tell who answered,
over both families.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from pyloxi.testing.lab.netns import Lab, Netns

CLIENT_IP = "10.0.1.2"
LB_CLIENT_IP = "10.0.1.1"
ROUTED_VIP = "20.0.0.100"  # reached through the client's default route
ONLINK_VIP = "10.0.1.100"  # on the client's own subnet: the LB answers ARP for it
CLIENT_IP6 = "fd00:1::2"
LB_CLIENT_IP6 = "fd00:1::1"
ROUTED_VIP6 = "fd00:20::100"  # reached through the client's default IPv6 route

_UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)   # IPv4 peers too (mapped)
s.bind(("::", int(sys.argv[1])))
name = sys.argv[2].encode()
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(name + b" " + data, peer)
"""

_NGINX_CONF = """
user root root;  # the lab tmp dir is private to root
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    sendfile on;
    server {{
        listen {port} reuseport backlog=4096;
        listen [::]:{port} reuseport backlog=4096 ipv6only=on;
        root {dir}/www;
        location = / {{ return 200 "{name} $remote_addr\\n"; }}
    }}
}}
"""


def backend_ip(i: int) -> str:
    return f"10.0.{10 + i}.2"


def backend_ip6(i: int) -> str:
    return f"fd00:{10 + i}::2"


def lb_ip_toward(i: int, v6: bool = False) -> str:
    """The LB's own address on backend i's link (onearm's source)."""
    return f"fd00:{10 + i}::1" if v6 else f"10.0.{10 + i}.1"


class LbTopology:
    """Builds the lab; `close()` (or the context manager) removes everything it made."""

    def __init__(self, n_backends: int = 3, prefix: str = "pl", v6: bool = False) -> None:
        self.v6 = v6
        self.lab = Lab(prefix)
        self.tmp = tempfile.TemporaryDirectory(prefix=f"{self.lab.tag}-")
        try:
            self._build(n_backends)
        except BaseException:
            self.close()
            raise

    def _ns(self, role: str) -> Netns:
        ns = self.lab.netns(role)
        if self.v6:  # no DAD wait for the veths' addresses
            for scope in ("all", "default"):
                ns.sysctl(f"net.ipv6.conf.{scope}.accept_dad", 0)
        return ns

    def _v6_link(self, a: Netns, a_if: str, a_addr: str, b: Netns, b_if: str,
                 b_addr: str) -> None:
        a.run(f"ip -6 addr add {a_addr}/64 dev {a_if} nodad")
        b.run(f"ip -6 addr add {b_addr}/64 dev {b_if} nodad")
        a.run(f"ip -6 route add default via {b_addr}")

    def _build(self, n: int) -> None:
        lab = self.lab
        self.client: Netns = self._ns("cl")
        self.lb: Netns = self._ns("lb")
        self.backends: list[Netns] = []
        lab.link(self.client, "eth0", f"{CLIENT_IP}/24", self.lb, "eth0", f"{LB_CLIENT_IP}/24")
        self.client.run(f"ip route add default via {LB_CLIENT_IP}")
        if self.v6:
            self._v6_link(self.client, "eth0", CLIENT_IP6, self.lb, "eth0", LB_CLIENT_IP6)
            self.lb.sysctl("net.ipv6.conf.all.forwarding", 1)
        for i in range(1, n + 1):
            be = self._ns(f"be{i}")
            lab.link(be, "eth0", f"{backend_ip(i)}/24", self.lb, f"eth{i}", f"10.0.{10 + i}.1/24")
            be.run(f"ip route add default via 10.0.{10 + i}.1")
            if self.v6:
                self._v6_link(be, "eth0", backend_ip6(i), self.lb, f"eth{i}",
                              lb_ip_toward(i, v6=True))
            self.backends.append(be)
        for key, value in (("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.rp_filter", 0),
                           ("net.ipv4.conf.default.rp_filter", 0)):
            self.lb.sysctl(key, value)
        for ns in (self.client, self.lb, *self.backends):
            ns.sysctl("net.ipv4.ip_local_port_range", "10000 60999")
            ns.unlimit_icmp()  # ICMP errors every test can count on, however busy the machine

    @property
    def backend_ips(self) -> list[str]:
        return [backend_ip(i) for i in range(1, len(self.backends) + 1)]

    @property
    def backend_ips6(self) -> list[str]:
        return [backend_ip6(i) for i in range(1, len(self.backends) + 1)]

    def backend_name(self, i: int) -> str:
        return f"be{i}"

    def start_http(self, port: int = 80, big_mb: int = 0) -> None:
        """nginx in every backend: `/` answers the backend's name, `/big.bin` is big_mb MiB."""
        for i, be in enumerate(self.backends, 1):
            d = os.path.join(self.tmp.name, f"nginx-be{i}-{port}")
            os.makedirs(os.path.join(d, "www"), exist_ok=True)
            if big_mb:
                with open(os.path.join(d, "www", "big.bin"), "wb") as f:
                    f.truncate(big_mb << 20)
            with open(os.path.join(d, "nginx.conf"), "w") as f:
                f.write(_NGINX_CONF.format(dir=d, port=port, name=f"be{i}"))
            be.popen(["nginx", "-c", os.path.join(d, "nginx.conf"), "-p", d])
        for be in self.backends:
            wait_listening(be, port, "tcp")

    def start_udp(self, port: int = 5353) -> None:
        for i, be in enumerate(self.backends, 1):
            be.popen([sys.executable, "-c", _UDP_SERVER, str(port), f"be{i}"])
        for be in self.backends:
            wait_listening(be, port, "udp")

    def close(self) -> None:
        self.lab.close()
        self.tmp.cleanup()

    def __enter__(self) -> LbTopology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_listening(ns: Netns, port: int, proto: str = "tcp", timeout: float = 10) -> None:
    flag = "-lnt" if proto == "tcp" else "-lnu"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ns.run(["ss", "-H", flag, f"sport = :{port}"], check=False).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {proto}/{port} in {ns.name}")


def curl(ns: Netns, url: str, *, timeout: float = 5, extra: tuple[str, ...] = ()) -> str:
    """GET a URL from inside a namespace; returns the body, raises on failure."""
    proc = ns.run(["curl", "-sS", "--max-time", str(timeout), *extra, url], check=False,
                  timeout=timeout + 5)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, url, proc.stdout, proc.stderr)
    return proc.stdout
