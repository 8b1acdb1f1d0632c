"""Every probe type against a real peer in a network namespace, and the down/up timing.

Topology: `prb` (the prober) 10.77.0.1/24 fd77::1/64 <-veth-> `peer` 10.77.0.2/24 fd77::2/64.
The ProbeManager runs in an asyncio loop on a thread that entered `prb` (setns), so every probe
socket lives in that namespace. Peers: nginx (http, https, mTLS), socat (tcp, udp; udp over v6
on 7004), a raw-socket SCTP responder over v4 and v6 (INIT-ACK on 3868, ABORT on 3869), and the
kernel (ping, port-unreachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from pyloxi.api.probe_adapter import EndpointAdapter
from pyloxi.host.namespaces import enter_netns
from pyloxi.model.endpoint import EndPointGetEntry
from pyloxi.probes import ProbeManager, ProbeStatus, ProbeTarget
from pyloxi.testing.lab.netns import Lab
from pyloxi.testing.lab.topology import wait_listening

from ..waiting import wait_until

PEER, PEER6, GONE = "10.77.0.2", "fd77::2", "10.77.0.3"
R = TypeVar("R")


class NetnsLoop:
    """An asyncio loop on a thread that lives in network namespace `name`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.error: BaseException | None = None

        def main() -> None:
            try:
                enter_netns(name)
            except BaseException as exc:
                self.error = exc
                ready.set()
                return
            asyncio.set_event_loop(self.loop)
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        ready.wait(5)
        if self.error:
            raise self.error

    def run(self, coro: Coroutine[Any, Any, R], timeout: float = 30) -> R:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., R], *args: object) -> R:
        """fn(*args) on the loop's thread, where the ProbeManager may be touched."""
        async def _call() -> R:
            return fn(*args)
        return self.run(_call())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


SCTP_RESPONDER = r"""
import select, socket, struct, sys
from pyloxi.probes.sctp import (parse_sctp, sctp_packet, init_ack_chunk, abort_chunk,
                                CHUNK_INIT, CHUNK_ABORT)
# raw sockets of both families: v4 ones read the IP header too, v6 ones only the payload
socks = {socket.socket(socket.AF_INET, socket.SOCK_RAW, 132): True,
         socket.socket(socket.AF_INET6, socket.SOCK_RAW, 132): False}
log = open(sys.argv[1], "a", buffering=1)
log.write("listening\n")
while True:
    for s in select.select(list(socks), [], [])[0]:
        data, addr = s.recvfrom(4096)
        peer = addr[0]
        p = parse_sctp(data, socks[s])
        if not p:
            continue
        sport, dport, vtag, chunks = p
        for ctype, value in chunks:
            if ctype == CHUNK_INIT and dport == 3868:
                (tag,) = struct.unpack_from("!I", value, 0)
                s.sendto(sctp_packet(dport, sport, tag, init_ack_chunk(0xA5A5A5A5, 1)), (peer, 0))
            elif ctype == CHUNK_INIT and dport == 3869:
                (tag,) = struct.unpack_from("!I", value, 0)
                s.sendto(sctp_packet(dport, sport, tag, abort_chunk()), (peer, 0))
            elif ctype == CHUNK_ABORT and vtag == 0xA5A5A5A5:
                log.write(f"abort-after-init-ack {'v4' if socks[s] else 'v6'}\n")
"""

NGINX_CONF = """
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
    server {{
        listen 80; listen [::]:80;
        listen 443 ssl;
        ssl_certificate {d}/server.crt; ssl_certificate_key {d}/server.key;
        location = /health {{ return 200 "ok"; }}
        location = /bad {{ return 503 "no"; }}
        location / {{ return 200 "root"; }}
    }}
    server {{
        listen 8443 ssl;
        ssl_certificate {d}/server.crt; ssl_certificate_key {d}/server.key;
        ssl_client_certificate {d}/ca.crt; ssl_verify_client on;
        location / {{ return 200 "mtls"; }}
    }}
}}
"""


def make_pki(d: str) -> None:
    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
         "-days", "2", "-subj", "/CN=pyloxi test CA")
    for name, ext in (("server", f"subjectAltName=IP:{PEER},IP:{PEER6}"),
                      ("client", "extendedKeyUsage=clientAuth")):
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
             f"{name}.csr", "-subj", f"/CN={name}")
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    # A second CA the server cert does not chain to.
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out",
         "other.crt", "-days", "2", "-subj", "/CN=other CA")


class Rig:
    def __init__(self) -> None:
        self.lab = Lab(prefix="pr")
        self.tmp = tempfile.TemporaryDirectory(prefix=f"{self.lab.tag}-")
        self.loop: NetnsLoop | None = None
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        lab, d = self.lab, self.tmp.name
        self.prb, self.peer = lab.netns("prb"), lab.netns("peer")
        for ns in (self.prb, self.peer):
            ns.sysctl("net.ipv6.conf.all.accept_dad", 0)
            ns.sysctl("net.ipv6.conf.default.accept_dad", 0)
            ns.unlimit_icmp()  # every udp probe of a closed port gets its port-unreachable
        lab.link(self.prb, "eth0", "10.77.0.1/24", self.peer, "eth0", f"{PEER}/24")
        self.prb.run("ip -6 addr add fd77::1/64 dev eth0 nodad")
        self.peer.run(f"ip -6 addr add {PEER6}/64 dev eth0 nodad")
        make_pki(d)
        os.makedirs(os.path.join(d, "tmp"))
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(d=d))
        self.peer.popen(["nginx", "-c", os.path.join(d, "nginx.conf"), "-p", d])
        self.peer.popen("socat TCP4-LISTEN:7001,fork,reuseaddr PIPE")  # tcp echo
        self.peer.popen(["socat", "UDP4-RECVFROM:7002,fork",  # udp: answers "pong"
                        "SYSTEM:head -c1 >/dev/null; echo pong"])
        self.peer.popen("socat -u UDP4-RECV:7003 OPEN:/dev/null")  # udp: silent sink
        self.peer.popen(["socat", "UDP6-RECVFROM:7004,fork",  # udp over v6: answers "pong6"
                        "SYSTEM:head -c1 >/dev/null; echo pong6"])
        self.sctp_log = os.path.join(d, "sctp.log")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        self.peer.popen([sys.executable, "-c", SCTP_RESPONDER, self.sctp_log], env=env)
        for proto, port in (("tcp", 80), ("tcp", 443), ("tcp", 8443), ("tcp", 7001),
                            ("udp", 7002), ("udp", 7003), ("udp", 7004)):
            wait_listening(self.peer, port, proto)
        wait_until(lambda: "listening" in self.sctp_lines(), 15,
                   what="the SCTP responder's raw socket")
        self.loop = NetnsLoop(self.prb.name)

    def sctp_lines(self) -> list[str]:
        try:
            with open(self.sctp_log) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    @property
    def netns_loop(self) -> NetnsLoop:
        assert self.loop is not None
        return self.loop

    def status(self, mgr: ProbeManager, key: str) -> ProbeStatus:
        st = self.netns_loop.call(mgr.status, key)
        assert st is not None, key
        return st

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()
        self.lab.close()
        self.tmp.cleanup()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig()
    try:
        yield r
    finally:
        r.close()


@contextlib.contextmanager
def running(rig: Rig, **kw: Any) -> Iterator[ProbeManager]:
    """A ProbeManager started on the rig's loop (its probes leave from `prb`), stopped when
    the block ends."""
    loop = rig.netns_loop
    mgr = loop.call(lambda: ProbeManager(cert_dir=None, **kw))
    loop.run(mgr.start())
    try:
        yield mgr
    finally:
        loop.run(mgr.stop())


def T(key: str, ip: str, ptype: str, port: int = 0, **kw: Any) -> ProbeTarget:  # noqa: N802
    kw.setdefault("period", 1.0)
    return ProbeTarget(key, ip, ptype, port, **kw)


def cases(d: str) -> list[tuple[ProbeTarget, bool, str]]:
    ca, other = os.path.join(d, "ca.crt"), os.path.join(d, "other.crt")
    cc, ck = os.path.join(d, "client.crt"), os.path.join(d, "client.key")
    return [
        (T("ping4", PEER, "ping"), True, "ping reply"),
        (T("ping6", PEER6, "ping"), True, "ping reply"),
        (T("ping-gone", GONE, "ping"), False, "no reply"),
        (T("tcp", PEER, "tcp", 7001), True, "connect ok"),
        (T("tcp-closed", PEER, "tcp", 7999), False, "refused"),
        (T("tcp-gone", GONE, "tcp", 80), False, "timeout"),
        (T("tcp6", PEER6, "tcp", 80), True, "connect ok"),
        (T("tcp-echo", PEER, "tcp", 7001, req="hello", resp="hello"), True, "matched"),
        (T("tcp-echo-bad", PEER, "tcp", 7001, req="hello", resp="world"), False, "mismatch"),
        (T("udp-answer", PEER, "udp", 7002, req="hi", resp="pong"), True, "matched"),
        (T("udp-answer-bad", PEER, "udp", 7002, req="hi", resp="nope"), False, "mismatch"),
        (T("udp-reply", PEER, "udp", 7002), True, "reply received"),
        (T("udp-closed", PEER, "udp", 7999), False, "port unreachable"),
        (T("udp6", PEER6, "udp", 7004, req="hi", resp="pong6"), True, "matched"),
        (T("udp6-reply", PEER6, "udp", 7004), True, "reply received"),
        (T("udp6-closed", PEER6, "udp", 7999), False, "port unreachable"),
        (T("udp-silent", PEER, "udp", 7003), True, "no reply and no port-unreachable"),
        (T("udp-silent-strict", PEER, "udp", 7003, req="hi", resp="pong"), False, "no response"),
        (T("http", PEER, "http", 80), True, "200"),
        (T("http-body", PEER, "http", 80, req="health", resp="ok"), True, "200"),
        (T("http-body-bad", PEER, "http", 80, req="health", resp="nope"), False, "mismatch"),
        (T("http-503", PEER, "http", 80, req="bad"), False, "status 503"),
        (T("http6", PEER6, "http", 80, req="health", resp="ok"), True, "200"),
        (T("http-closed", PEER, "http", 8080), False, "connect failed"),
        (T("https", PEER, "https", 443, req="health", resp="ok", ca_file=ca), True, "200"),
        (T("https-wrong-ca", PEER, "https", 443, ca_file=other), False, "CERTIFICATE_VERIFY"),
        (T("https-noverify", PEER, "https", 443, ca_file=other, tls_verify=False), True, "200"),
        (T("mtls", PEER, "https", 8443, ca_file=ca, cert_file=cc, key_file=ck), True, "200"),
        (T("mtls-nocert", PEER, "https", 8443, ca_file=ca), False, "status 400"),
        (T("sctp", PEER, "sctp", 3868), True, "INIT-ACK"),
        (T("sctp-abort", PEER, "sctp", 3869), False, "ABORT"),
        (T("sctp-silent", PEER, "sctp", 3870), False, "no INIT-ACK"),
        (T("sctp6", PEER6, "sctp", 3868), True, "INIT-ACK"),
        (T("sctp6-abort", PEER6, "sctp", 3869), False, "ABORT"),
        (T("none", GONE, "none"), True, ""),
    ]


AllTypes = tuple[dict[str, ProbeStatus], list[EndPointGetEntry]]


@pytest.fixture(scope="module")
def all_types(rig: Rig) -> AllTypes:
    """All cases probed at once by one manager until each one was probed at least twice;
    their statuses and the API listing."""
    targets = [t for t, _, _ in cases(rig.tmp.name)]
    loop = rig.netns_loop

    def statuses(mgr: ProbeManager) -> dict[str, ProbeStatus]:
        out = {t.key: mgr.status(t.key) for t in targets}
        return {k: st for k, st in out.items() if st is not None}

    def probed_twice(mgr: ProbeManager) -> bool:
        sts = statuses(mgr)
        return len(sts) == len(targets) and all(
            st.probes >= 2 for st in sts.values() if st.target.ptype != "none")

    with running(rig, first_probe_spread=0.1) as mgr:
        for t in targets:
            loop.call(mgr.upsert, t)
        wait_until(lambda: loop.call(probed_twice, mgr), 30, what="two probes of every target")
        return loop.call(lambda: (statuses(mgr), EndpointAdapter(mgr).api_list()))


@pytest.mark.parametrize("key,up,why", [(t.key, up, why) for t, up, why in cases("/")],
                         ids=[t.key for t, _, _ in cases("/")])
def test_probe_type(all_types: AllTypes, key: str, up: bool, why: str) -> None:
    statuses, _ = all_types
    st = statuses[key]
    assert st.up is up, f"{key}: {st.last_reason}"
    assert why in st.last_reason, st.last_reason
    if st.target.ptype != "none":
        assert st.probes >= 2


def test_listing_has_rtt_and_last_probe(all_types: AllTypes) -> None:
    _, listing = all_types
    by = {e.name: e.wire() for e in listing}
    assert by["ping4"]["currState"] == "ok" and by["ping4"]["avgDelay"].endswith("s")
    assert by["ping4"]["avgDelay"] != "0s" and by["ping4"]["lastProbeResult"] == "success"
    assert by["ping-gone"]["currState"] == "nok" and by["ping-gone"]["avgDelay"] == "0s"
    assert by["tcp"]["lastProbeTime"].endswith("Z") and by["tcp"]["minDelay"] == ""


def test_sctp_prober_aborts_after_init_ack(all_types: AllTypes, rig: Rig) -> None:
    # the responder is another process: it may write its line a moment after the probe ended
    both = {"abort-after-init-ack v4", "abort-after-init-ack v6"}
    wait_until(lambda: both <= set(rig.sctp_lines()), 10,
               what="the responder seeing an ABORT after its INIT-ACK, over v4 and v6")


def _timeline(rig: Rig, target: ProbeTarget, kill: Callable[[], None],
              revive: Callable[[], None]) -> tuple[float, float]:
    """Start probing, kill the peer, time the DOWN; revive it, time the UP. The times come
    from the manager's own change events, so how often the test looks does not count."""
    events: list[tuple[float, bool, str]] = []  # appended on the loop's thread

    def on_change(t: ProbeTarget, up: bool, why: str) -> None:
        events.append((time.monotonic(), up, why))

    with running(rig, on_change=on_change, first_probe_spread=0.05) as mgr:
        rig.netns_loop.call(mgr.upsert, target)
        # after the second probe the next one is a full period away: the peer dies at the
        # start of a period, the slowest moment to notice it
        wait_until(lambda: rig.status(mgr, target.key).probes >= 2, 15,
                   what="two probes of the live peer")
        assert rig.status(mgr, target.key).up and not events
        t_kill = time.monotonic()
        kill()
        bound = target.eff_period * target.eff_retries + 1
        wait_until(lambda: events, bound + 2, interval=0.01, what="marked down")
        assert events[-1][1] is False, "never marked down"
        down = events[-1][0] - t_kill
        revive()
        t_rev = time.monotonic()  # the peer is serving again from here on
        wait_until(lambda: len(events) >= 2, 5, interval=0.01, what="marked up again")
        assert len(events) == 2 and events[-1][1] is True, "never marked up again"
        return down, events[-1][0] - t_rev


def test_tcp_peer_dies_and_returns(rig: Rig) -> None:
    procs: list[subprocess.Popen[bytes]] = [rig.peer.popen("socat TCP4-LISTEN:7010,fork,"
                                                           "reuseaddr PIPE")]
    wait_listening(rig.peer, 7010, "tcp")

    def kill() -> None:
        procs[0].terminate()
        procs[0].wait(5)

    def revive() -> None:
        procs[0] = rig.peer.popen("socat TCP4-LISTEN:7010,fork,reuseaddr PIPE")
        wait_listening(rig.peer, 7010, "tcp")

    t = T("tcp-timing", PEER, "tcp", 7010, period=1.0, retries=2)
    down, up = _timeline(rig, t, kill, revive)
    print(f"tcp: down after {down:.3f}s (bound 3s), up after {up:.3f}s (bound 1s)")
    assert down <= t.eff_period * t.eff_retries + 1
    assert up <= t.eff_period


def test_silent_death_ping(rig: Rig) -> None:
    """The peer's address vanishes: probes time out (the slow case) and the bound still holds."""
    rig.peer.run("ip addr add 10.77.0.9/24 dev eth0")

    def kill() -> None:
        rig.peer.run("ip addr del 10.77.0.9/24 dev eth0")

    def revive() -> None:
        rig.peer.run("ip addr add 10.77.0.9/24 dev eth0")

    t = T("ping-timing", "10.77.0.9", "ping", period=1.0, retries=2)
    try:
        down, up = _timeline(rig, t, kill, revive)
    finally:
        with contextlib.suppress(RuntimeError):
            rig.peer.run("ip addr del 10.77.0.9/24 dev eth0", check=False)
    print(f"ping: down after {down:.3f}s (bound 3s), up after {up:.3f}s (bound 1s)")
    assert down <= t.eff_period * t.eff_retries + 1
    assert up <= t.eff_period


def _udp_closed_rate_limited(rig: Rig, hold: float | None) -> ProbeStatus:
    """Probe a closed UDP port while the peer may send one port-unreachable a minute (what the
    kernel's ICMP rate limit does to a busy prober); the status after a dozen probes."""
    from pyloxi.probes import udp

    table = f"pl{os.getpid()}rl"
    rig.peer.run(["nft", "add", "table", "inet", table])
    hook = "{ type filter hook output priority 0; }"
    rig.peer.run(["nft", f"add chain inet {table} out {hook}"])
    rig.peer.run(["nft", "add", "rule", "inet", table, "out", "icmp", "type",
                  "destination-unreachable", "limit", "rate", "over", "1/minute", "burst", "1",
                  "packets", "drop"])
    saved = getattr(udp, "UNREACH_HOLD_S", None)
    if hold is not None:
        udp.UNREACH_HOLD_S = hold
    target = T("udp-ratelimited", PEER, "udp", 7998, period=0.2, retries=2, timeout=0.15)

    try:
        with running(rig, first_probe_spread=0.01) as mgr:
            rig.netns_loop.call(mgr.upsert, target)
            wait_until(lambda: rig.status(mgr, target.key).probes >= 12, 30,
                       what="a dozen probes")
            return rig.status(mgr, target.key)
    finally:
        if saved is not None:
            udp.UNREACH_HOLD_S = saved
        rig.peer.run(["nft", "delete", "table", "inet", table], check=False)


def test_udp_closed_port_stays_down_when_icmp_is_rate_limited(rig: Rig) -> None:
    """Silence right after a port-unreachable is a rate-limited ICMP, not an open port: the
    closed port must not flap back up (before: every silent probe counted as a success)."""
    st = _udp_closed_rate_limited(rig, hold=None)
    assert st.probes >= 5
    assert st.up is False, st.last_reason
    assert "rate-limited" in st.last_reason, st.last_reason


def test_udp_silent_port_comes_back_after_the_hold(rig: Rig) -> None:
    """A port that stopped sending port-unreachables (a silent service started there) is up
    again once the hold has passed."""
    st = _udp_closed_rate_limited(rig, hold=0.6)
    assert st.up is True, st.last_reason
    assert "no reply and no port-unreachable" in st.last_reason
