"""Real SCTP associations between namespaces with the user-space stack (pyloxi.testing.usrsctp).

There is no kernel SCTP module here: libusrsctp runs SCTP over raw IP (protocol 132) in the peer
processes. Topology: `cli` <-veth-> `srv` (a second veth pair for multihoming); the echo server
runs in `srv`, the client in `cli`, each as its own process (one stack per process and
namespace), both started with `python -m pyloxi.testing.usrsctp`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from pyloxi.testing.lab.netns import Lab, Netns

from ..waiting import wait_until

PORT = 5000
STREAMS, PPIDS = (1, 3, 5), (60, 46, 18)  # 60: NGAP, 46: Diameter (DTLS), 18: S1AP
ECHO = re.compile(r"echo seq=(\d+) sid=(\d+) ppid=(\d+) from=(\S+) rtt_ms=([\d.]+) data=(\S+)")
MSG = re.compile(r"msg id=\d+ sid=(\d+) ppid=(\d+) from=(\S+) len=\d+ data=(\S+)")

pytestmark = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "ldconfig -p | grep -q libusrsctp.so.2"]).returncode != 0,
    reason="libusrsctp2 is not installed (scripts/install-deps)")


class Pair:
    """Two namespaces, `cli` and `srv`, and the peer processes started in them."""

    def __init__(self) -> None:
        self.lab = Lab(prefix="us")
        self.tmp = tempfile.TemporaryDirectory(prefix=f"{self.lab.tag}-")
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        try:
            self.cli, self.srv = self.lab.netns("cli"), self.lab.netns("srv")
            for ns in (self.cli, self.srv):
                ns.sysctl("net.ipv6.conf.all.accept_dad", 0)
                ns.sysctl("net.ipv6.conf.default.accept_dad", 0)
        except BaseException:
            self.close()
            raise

    def link(self, n: int, v4: str, v6: str) -> None:
        """Link eth<n>: cli has <v4>.1 / <v6>::1, srv has <v4>.2 / <v6>::2."""
        self.lab.link(self.cli, f"eth{n}", f"{v4}.1/24", self.srv, f"eth{n}", f"{v4}.2/24")
        self.cli.run(f"ip -6 addr add {v6}::1/64 dev eth{n} nodad")
        self.srv.run(f"ip -6 addr add {v6}::2/64 dev eth{n} nodad")

    def peer(self, ns: Netns, name: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
        log = os.path.join(self.tmp.name, f"{name}.log")
        with open(log, "wb") as out:
            proc = ns.popen([sys.executable, "-m", "pyloxi.testing.usrsctp", *args], stdout=out,
                            stderr=subprocess.STDOUT, env=self.env)
        return proc, log

    def server(self, bind: str, *opts: str) -> str:
        _, log = self.peer(self.srv, "server", *opts, "server", "--bind", bind,
                           "--port", str(PORT))
        wait_until(lambda: "listening" in read(log), 10, what="the usrsctp server")
        return log

    def client(self, connect: str, *args: str, timeout: float = 20,
               opts: tuple[str, ...] = ()) -> tuple[int, str]:
        proc, log = self.peer(self.cli, "client", *opts, "client", "--connect", connect,
                              "--port", str(PORT), "--timeout", str(timeout), *args)
        rc = proc.wait(timeout + 5)
        return rc, read(log)

    def close(self) -> None:
        self.lab.close()
        self.tmp.cleanup()


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def icmp_out(ns: Netns, name: str) -> int:
    """A counter of the namespace's ICMP/ICMPv6 output (nstat name, e.g. IcmpOutDestUnreachs)."""
    out = ns.run(["nstat", "-az", name]).stdout.split()
    return int(out[out.index(name) + 1])


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    try:
        yield p
    finally:
        p.close()


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_association_streams_ppids_and_shutdown(pair: Pair, family: str) -> None:
    t0 = time.monotonic()
    pair.link(0, "10.91.0", "fd91:0")
    server_ip = "10.91.0.2" if family == "v4" else "fd91:0::2"
    client_ip = "10.91.0.1" if family == "v4" else "fd91::1"
    slog = pair.server(server_ip)
    rc, out = pair.client(server_ip, "--count", "3", "--stream", ",".join(map(str, STREAMS)),
                          "--ppid", ",".join(map(str, PPIDS)), "--data", family)
    assert rc == 0, out
    echoes = ECHO.findall(out)
    assert [(int(sid), int(ppid), data) for _, sid, ppid, _, _, data in echoes] == [
        (s, p, f"{family}-{i}") for i, (s, p) in enumerate(zip(STREAMS, PPIDS, strict=True))], out
    assert out.rstrip().endswith("closed"), out
    # the server saw the same streams and PPIDs from the client's address, then a clean end
    wait_until(lambda: "state=shutdown-complete" in read(slog), 5,
               what="the server seeing the association end")
    log = read(slog)
    msgs = MSG.findall(log)
    assert [(int(s), int(p)) for s, p, _, _ in msgs] == list(zip(STREAMS, PPIDS, strict=True)), log
    assert all(frm.rsplit(":", 1)[0].strip("[]") == client_ip for _, _, frm, _ in msgs), log
    assert "state=comm-up" in log and "shutdown-event" in log, log
    assert "comm-lost" not in log, log
    # a running stack takes every SCTP packet: the kernel answered none of them itself
    assert icmp_out(pair.srv, "IcmpOutDestUnreachs") == 0
    assert icmp_out(pair.srv, "Icmp6OutParmProblems") == 0
    print(f"{family}: association, 3 echoes and shutdown in {time.monotonic() - t0:.2f}s")


def test_without_a_stack_the_kernel_answers_protocol_unreachable(pair: Pair) -> None:
    """No SCTP process in `srv`: the kernel (no SCTP module) sends ICMP protocol-unreachable
    for each INIT; usrsctp does not act on it (no ICMP socket in raw mode), it retransmits the
    INIT until its limit: the client sees a timeout, not a refusal."""
    pair.link(0, "10.91.0", "fd91:0")
    t0 = time.monotonic()
    rc, out = pair.client("10.91.0.2", "--count", "1", timeout=15, opts=("--fast",))
    took = time.monotonic() - t0
    assert rc == 2 and "ETIMEDOUT" in out, out
    assert icmp_out(pair.srv, "IcmpOutDestUnreachs") >= 2
    print(f"no stack: ETIMEDOUT after {took:.2f}s "
          f"({icmp_out(pair.srv, 'IcmpOutDestUnreachs')} protocol-unreachables ignored)")


def test_multihomed_association_fails_over(pair: Pair) -> None:
    """Two links, two addresses on each side; the link of the primary path dies mid-stream and
    every message still arrives, over the second path.

    usrsctp picks source addresses without routing (no routing table in user space): each
    side sends everything from its last bound address (here the eth1 ones) whichever path it
    takes, and the peer answers SACKs to that source. So the link that fails is the one of the
    primary path (eth0: the first address given to connectx), not the one of the sources."""
    t0 = time.monotonic()
    pair.link(0, "10.92.1", "fd92:1")
    pair.link(1, "10.92.2", "fd92:2")
    slog = pair.server("10.92.1.2,10.92.2.2", "--fast")
    count, interval = 30, 0.1
    proc, clog = pair.peer(pair.cli, "client", "--fast", "client",
                           "--connect", "10.92.1.2,10.92.2.2", "--bind", "10.92.1.1,10.92.2.1",
                           "--port", str(PORT), "--count", str(count), "--interval",
                           str(interval), "--stream", "0,1,2", "--ppid", "60", "--timeout", "20")
    wait_until(lambda: len(ECHO.findall(read(clog))) >= 5, 10, what="five echoes")
    assert "primary=10.92.1.2:5000" in read(clog), read(clog)
    before = MSG.findall(read(slog))
    assert {frm.rsplit(":", 1)[0] for _, _, frm, _ in before} == {"10.92.2.1"}, read(slog)
    assert "state=confirmed" in read(slog)  # both client addresses known to the server
    t_down = time.monotonic()
    pair.cli.run("ip link set eth0 down")
    rc = proc.wait(25)
    took = time.monotonic() - t_down
    out, log = read(clog), read(slog)
    assert rc == 0, out
    echoes = ECHO.findall(out)
    assert [int(seq) for seq, *_ in echoes] == list(range(count)), out
    assert all(data == f"hello-{seq}" for seq, *_, data in echoes), out
    assert [int(sid) for _, sid, *_ in echoes] == [i % 3 for i in range(count)], out
    assert all(int(ppid) == 60 for _, _, ppid, *_ in echoes), out
    assert [data for *_, data in MSG.findall(log)] == [f"hello-{i}" for i in range(count)], log
    # the client saw its primary path fail; the association went on (no comm-lost)
    assert re.search(r"path id=\d+ addr=10\.92\.1\.2:5000 state=unreachable", out), out
    worst = max(float(rtt) for *_, rtt, _ in echoes)
    assert worst < 5000, out
    wait_until(lambda: "state=shutdown-complete" in read(slog), 5,
               what="the server seeing the association end")
    assert "comm-lost" not in read(slog)
    print(f"multihoming: failover (worst echo {worst:.0f} ms), the remaining messages in "
          f"{took:.2f}s; test {time.monotonic() - t0:.2f}s")
