"""Integration: the real daemon in the LB namespace of a client / LB / 3-backend lab."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pyloxi.testing.lab import LbTopology, cleanup_stale

from ..waiting import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
API_PORT = 11111


class DaemonHandle:
    """Starts/stops `pyloxi daemon` in the LB namespace; talks to it like a user would.

    `launcher` is how it is started: [] for `pyloxi daemon --netns NS`, or a prefix such as
    `ip netns exec NS` (the daemon then runs in a private mount namespace)."""

    def __init__(self, topo: LbTopology, name: str = "dp") -> None:
        self.topo = topo
        self.pin = topo.lab.pin_dir(name)
        self.state = os.path.join(topo.tmp.name, f"state-{name}")
        self.log = os.path.join(topo.tmp.name, f"daemon-{name}.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []
        self.launcher: list[str] = []

    def start(self) -> None:
        log = open(self.log, "a")  # noqa: SIM115 - handed to the daemon for its lifetime
        netns = [] if self.launcher else ["--netns", self.topo.lb.name]
        self.proc = subprocess.Popen(
            [*self.launcher, sys.executable, "-m", "pyloxi.entry", "daemon", *netns,
             "--port", str(API_PORT), "--state-dir", self.state, "--bpffs", self.pin,
             "--log-level", "debug", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT)
        self.topo.lab.processes.append(self.proc)
        proc = self.proc

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.log_tail()}")
            # `ss` first: each `pyloxi version` is a Python start-up (about a second on a busy
            # machine) competing with the daemon's own for the CPU
            listening = self.topo.lb.run(["ss", "-H", "-lnt", f"sport = :{API_PORT}"],
                                         check=False).stdout.strip()
            return bool(listening) and self.cli("version", check=False).returncode == 0

        try:
            wait_until(answers, 45)  # generous: a busy CI machine starts Python slowly
        except TimeoutError:
            raise TimeoutError(f"daemon API not up: {self.log_tail()}") from None

    def log_tail(self) -> str:
        with open(self.log) as f:
            return f.read()[-2000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_established(self, timeout: float = 15) -> list[dict[str, Any]]:
        """The datapath's established flows, once there is one (a transfer just started)."""
        flows: list[dict[str, Any]] = []

        def some() -> bool:
            flows[:] = [c for c in self.api("GET", "/config/conntrack/all").json()["ctAttr"]
                        if c["conntrackState"] == "est"]
            return bool(flows)

        wait_until(some, timeout, what="an established flow in conntrack")
        return flows

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = self.topo.lb.run([sys.executable, "-m", "pyloxi.entry", *args], check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"pyloxi {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc

    def api(self, method: str, path: str, body: object = None,
            raw: bytes | None = None) -> httpx.Response:
        """HTTP from inside the LB namespace (the API listens on its loopback)."""
        script = (
            "import httpx,sys,json;"
            "r=httpx.request(sys.argv[1],sys.argv[2],content=sys.stdin.buffer.read() or None,"
            "headers={'content-type':'application/json'},timeout=10);"
            "print(json.dumps({'status':r.status_code,'body':r.text}))"
        )
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        proc = subprocess.run(
            self.topo.lb.argv([sys.executable, "-c", script, method,
                               f"http://127.0.0.1:{API_PORT}/netlox/v1{path}"]),
            input=data, capture_output=True, timeout=30)
        if proc.returncode != 0:
            raise AssertionError(proc.stderr.decode())
        out = json.loads(proc.stdout)
        return httpx.Response(out["status"], text=out["body"])


@pytest.fixture(scope="module")
def topo() -> Iterator[LbTopology]:
    cleanup_stale()
    t = LbTopology(3)
    try:
        t.start_http(big_mb=64)
        t.start_udp()
        yield t
    finally:
        t.close()


@pytest.fixture(scope="module")
def daemon(topo: LbTopology) -> Iterator[DaemonHandle]:
    d = DaemonHandle(topo)
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def lb(daemon: DaemonHandle) -> Iterator[DaemonHandle]:
    """The daemon with no rules before and after the test."""
    daemon.cli("delete", "lb", "--all", check=False)
    yield daemon
    daemon.cli("delete", "lb", "--all", check=False)
