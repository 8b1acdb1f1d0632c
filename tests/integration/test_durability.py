"""Control-plane durability: an answered change survives `kill -9`, a full or read-only disk
refuses changes (the client gets an error, nothing spins, nothing acknowledged is lost), two
daemons never share a state or pin directory, a bulk delete does not freeze the API, and a
corrupt state file stops the start with the file untouched."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pyloxi.datapath.ebpf.libbpf import Map
from pyloxi.model.lb import NatMode
from pyloxi.testing.lab import LbTopology
from pyloxi.testing.lab.netns import sh
from pyloxi.testing.lab.topology import ROUTED_VIP, backend_ip

from ..waiting import wait_until
from .conftest import API_PORT, DaemonHandle
from .traffic import http_answers

# Runs in the LB namespace: POST rules (ports base..base+n-1) sequentially or all at once, and
# the moment the last answer is in, SIGKILL the daemon. Prints the acknowledged ports.
_POST_THEN_KILL = """
import json, os, signal, sys, threading, httpx
pid, base, n, concurrent = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
api = "http://127.0.0.1:%d/netlox/v1/config/loadbalancer" % int(sys.argv[5])
acked, lock = [], threading.Lock()
def post(port, client):
    body = {"serviceArguments": {"externalIP": sys.argv[6], "port": port, "protocol": "tcp"},
            "endpoints": [{"endpointIP": sys.argv[7], "targetPort": 80, "weight": 1}]}
    r = client.post(api, json=body, timeout=30)
    if r.status_code == 200:
        with lock:
            acked.append(port)
    elif r.status_code < 500 or "undone" not in r.text:
        print("unexpected", r.status_code, r.text, file=sys.stderr)
if concurrent == "1":
    clients = [httpx.Client() for _ in range(n)]
    ts = [threading.Thread(target=post, args=(base + i, clients[i])) for i in range(n)]
    for t in ts: t.start()
    for t in ts: t.join()
else:
    with httpx.Client() as c:
        for i in range(n):
            post(base + i, c)
if pid:
    os.kill(pid, signal.SIGKILL)
print(json.dumps(sorted(acked)))
"""

# Runs in the LB namespace: DELETE /all in one thread; 0.3 s later a POST in another; /version
# polled meanwhile. Prints the statuses and the slowest /version answer.
_DELETE_ALL_WHILE_POLLING = """
import json, sys, threading, time, httpx
api = "http://127.0.0.1:%d/netlox/v1" % int(sys.argv[1])
out = {}
def delete_all():
    with httpx.Client(timeout=120) as c:
        out["delete"] = c.delete(api + "/config/loadbalancer/all").status_code
def post():
    body = {"serviceArguments": {"externalIP": sys.argv[2], "port": 9, "protocol": "tcp"},
            "endpoints": [{"endpointIP": sys.argv[3], "targetPort": 80, "weight": 1}]}
    with httpx.Client(timeout=120) as c:
        out["post"] = c.post(api + "/config/loadbalancer", json=body).status_code
d = threading.Thread(target=delete_all)
p = threading.Thread(target=post)
slowest, polls = 0.0, 0
with httpx.Client(timeout=60) as c:
    d.start()
    t0 = time.monotonic()
    while d.is_alive() or p.is_alive():
        if not p.ident and time.monotonic() - t0 > 0.3:
            p.start()
        s = time.monotonic()
        assert c.get(api + "/version").status_code == 200
        slowest = max(slowest, time.monotonic() - s)
        polls += 1
        time.sleep(0.05)  # the scenario's pace, not a wait: a client asking ~20 times a second
d.join(); p.join()
out.update(slowest=slowest, polls=polls)
print(json.dumps(out))
"""

# Runs in the LB namespace: create rules 1..n with `conc` concurrent keep-alive clients.
_CREATE_MANY = """
import json, sys, threading, httpx
api = "http://127.0.0.1:%d/netlox/v1/config/loadbalancer" % int(sys.argv[1])
n, conc = int(sys.argv[2]), int(sys.argv[3])
bad = []
def worker(k):
    with httpx.Client(timeout=60) as c:
        for i in range(k, n, conc):
            body = {"serviceArguments": {"externalIP": "30.%d.%d.%d" % (i >> 16 & 255,
                    i >> 8 & 255, i & 255), "port": 80, "protocol": "tcp"},
                    "endpoints": [{"endpointIP": "10.100.0.%d" % (i % 250 + 1),
                                   "targetPort": 8080, "weight": 1}]}
            r = c.post(api, json=body)
            if r.status_code != 200:
                bad.append(r.text)
ts = [threading.Thread(target=worker, args=(k,)) for k in range(conc)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(bad[:3]))
"""


class Handle(DaemonHandle):
    """A daemon with its own state directory and log (and optionally pin dir, extra args)."""

    def __init__(self, topo: LbTopology, name: str, state: str | None = None) -> None:
        super().__init__(topo)
        self.state = state or os.path.join(topo.tmp.name, name, "state")
        self.log = os.path.join(topo.tmp.name, f"{name}.log")

    def kill9(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)

    def ports(self) -> list[int]:
        resp = self.api("GET", "/config/loadbalancer/all")
        assert resp.status_code == 200, resp.text
        return sorted(r["serviceArguments"]["port"] for r in resp.json()["lbAttr"])

    def py(self, script: str, *args: object, timeout: float = 120) -> object:
        proc = self.topo.lb.run([sys.executable, "-c", script, *map(str, args)], check=False,
                                timeout=timeout)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def post_then_kill(self, base: int, n: int, concurrent: bool) -> list[int]:
        assert self.proc is not None
        acked = self.py(_POST_THEN_KILL, self.proc.pid, base, n, int(concurrent), API_PORT,
                        ROUTED_VIP, backend_ip(1))
        self.proc.wait(timeout=15)
        assert isinstance(acked, list)
        return acked

    def post_rules(self, base: int, n: int) -> list[int]:
        acked = self.py(_POST_THEN_KILL, 0, base, n, 0, API_PORT, ROUTED_VIP, backend_ip(1))
        assert isinstance(acked, list)
        return acked


def start_second(topo: LbTopology, name: str, state: str, pin: str,
                 port: int) -> tuple[int, str]:
    """Run another daemon to its end (it must refuse to start); return (exit code, output)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pyloxi.entry", "daemon", "--netns", topo.lb.name,
         "--port", str(port), "--state-dir", state, "--bpffs", pin],
        capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def handles(topo: LbTopology) -> Iterator[list[Handle]]:
    made: list[Handle] = []
    yield made
    for h in made:
        if h.proc is not None and h.proc.poll() is None:
            h.stop()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- kill -9


def test_answered_rules_survive_kill9_right_after_the_answer(
    topo: LbTopology, handles: list[Handle]
) -> None:
    d = Handle(topo, "kill9")
    handles.append(d)
    acked_all: list[int] = []
    trials = [(False, 2), (False, 2), (False, 2), (True, 8), (True, 8)]
    for t, (concurrent, n) in enumerate(trials):
        d.start()
        before = d.ports()
        assert before == sorted(acked_all), f"trial {t}: lost {set(acked_all) - set(before)}"
        acked = d.post_then_kill(1000 + 10 * t, n, concurrent)
        assert len(acked) == n  # a healthy disk: every POST answered 200
        acked_all += acked
    d.start()
    assert d.ports() == sorted(acked_all)
    d.api("DELETE", "/config/loadbalancer/all")
    d.stop()


# --------------------------------------------------------------------------- full disk


@pytest.fixture
def tiny_tmpfs(topo: LbTopology) -> Iterator[str]:
    path = os.path.join(topo.tmp.name, "tiny")
    os.makedirs(path)
    sh(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", path])
    try:
        yield path
    finally:
        if sh(["umount", path], check=False).returncode != 0:
            sh(["umount", "-l", path], check=False)


def test_full_disk_refuses_changes_and_keeps_every_answered_one(
    topo: LbTopology, handles: list[Handle], tiny_tmpfs: str
) -> None:
    d = Handle(topo, "full", state=os.path.join(tiny_tmpfs, "state"))
    handles.append(d)
    d.start()
    acked = d.post_rules(2000, 150)
    assert 0 < len(acked) < 150, "the tmpfs should fill part-way"
    assert d.ports() == acked  # refused changes were undone in memory as well
    # a refused change left no ghost in the datapath: one service per answered rule
    with Map.from_pin(os.path.join(d.pin, "svc_map")) as m:
        assert len(list(m.lookup_batch(65536))) == len(acked)
    d.stop()
    d.start()
    assert d.ports() == acked
    d.stop()


# --------------------------------------------------------------------------- read-only


def test_read_only_state_dir_refuses_changes_without_spinning(
    topo: LbTopology, handles: list[Handle]
) -> None:
    d = Handle(topo, "ro")
    handles.append(d)
    d.start()
    assert d.post_rules(3000, 2) == [3000, 3001]
    d.stop()
    sh(["mount", "--bind", d.state, d.state])
    try:
        sh(["mount", "-o", "remount,bind,ro", d.state])
        d.start()
        assert d.ports() == [3000, 3001]  # existing rules are served
        resp = d.api("POST", "/config/loadbalancer", {
            "serviceArguments": {"externalIP": ROUTED_VIP, "port": 3005, "protocol": "tcp"},
            "endpoints": [{"endpointIP": backend_ip(1), "targetPort": 80, "weight": 1}]})
        assert resp.status_code == 500, resp.text
        body = resp.json()
        assert body["code"] == 500 and "read-only" in body["message"], body
        assert d.post_rules(3010, 20) == []  # a client retrying in a loop: each one refused
        assert d.api("DELETE", "/config/loadbalancer/externalipaddress/"
                     f"{ROUTED_VIP}/port/3000/protocol/tcp").status_code == 500
        assert d.ports() == [3000, 3001]
        assert d.proc is not None
        cpu0, log0 = cpu_seconds(d.proc.pid), os.path.getsize(d.log)
        time.sleep(3)  # the scenario, not a wait: what an idle daemon costs over 3 s
        cpu1, log1 = cpu_seconds(d.proc.pid), os.path.getsize(d.log)
        # today's daemon spun at 100% of a core, logging ~1,400 tracebacks a second
        assert cpu1 - cpu0 < 1.0, f"daemon busy while idle: {cpu1 - cpu0:.2f} s CPU in 3 s"
        assert log1 - log0 < 20_000, f"log grew {log1 - log0} bytes in 3 idle seconds"
        d.stop()
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        sh(["umount", d.state], check=False)
    d.start()  # writable again: nothing was lost, nothing refused was kept
    assert d.ports() == [3000, 3001]
    d.api("DELETE", "/config/loadbalancer/all")
    d.stop()


# --------------------------------------------------------------------------- two daemons


def test_second_daemon_on_same_state_or_pins_refuses_and_first_keeps_working(
    topo: LbTopology, handles: list[Handle]
) -> None:
    d = Handle(topo, "first")
    handles.append(d)
    d.start()
    assert d.proc is not None
    d.cli("create", "lb", ROUTED_VIP, "--tcp=80:80",
          f"--endpoints={backend_ip(1)}:1,{backend_ip(2)}:1", "--name=web")
    before = d.ports()
    other_pin = topo.lab.pin_dir("other")
    code, out = start_second(topo, d.state, d.state, other_pin, API_PORT + 1)
    assert code != 0
    assert f"state directory {d.state} is in use by pid {d.proc.pid}" in out, out
    assert not os.path.exists(os.path.join(other_pin, "svc_map"))  # nothing loaded
    other_state = os.path.join(topo.tmp.name, "other-state")
    code, out = start_second(topo, "second", other_state, d.pin, API_PORT + 2)
    assert code != 0
    assert f"bpffs pin directory {d.pin} is in use by pid {d.proc.pid}" in out, out
    # the first daemon still owns the datapath and its rules
    answers = {b for b, _ in http_answers(topo.client, ROUTED_VIP, 6)}
    assert answers == {"be1", "be2"}
    assert d.ports() == before
    d.restart()
    assert d.ports() == before
    d.api("DELETE", "/config/loadbalancer/all")
    d.stop()


# --------------------------------------------------------------------------- bulk delete


def test_api_answers_while_a_large_delete_all_runs(topo: LbTopology,
                                                   handles: list[Handle]) -> None:
    d = Handle(topo, "bulk")
    handles.append(d)
    d.start()
    assert d.py(_CREATE_MANY, API_PORT, 2500, 16, timeout=300) == []
    out = d.py(_DELETE_ALL_WHILE_POLLING, API_PORT, ROUTED_VIP, backend_ip(1), timeout=300)
    assert isinstance(out, dict)
    print(f"delete all 2500 rules: /version polled {out['polls']} times, "
          f"slowest answer {out['slowest']:.3f} s")
    assert out["delete"] == 200 and out["post"] == 200
    assert out["slowest"] < 3.0  # liveness bound; today one POST froze /version for 6.8 s
    assert d.ports() in ([9], [])  # the POST landed after (or, if early, before) the snapshot
    d.api("DELETE", "/config/loadbalancer/all")
    d.stop()


# --------------------------------------------------------------------------- corrupt state


@pytest.mark.parametrize("content", [b"garbage" * 100, b""], ids=["garbage", "empty"])
def test_corrupt_state_file_stops_the_start_untouched(
    topo: LbTopology, handles: list[Handle], content: bytes
) -> None:
    d = Handle(topo, f"corrupt-{len(content)}")
    handles.append(d)
    os.makedirs(d.state)
    db = os.path.join(d.state, "lbconfig.db")
    with open(db, "wb") as f:
        f.write(content)
    with pytest.raises(RuntimeError, match=f"corrupt rule store {db}"):
        d.start()
    assert d.proc is not None and d.proc.returncode != 0
    with open(db, "rb") as f:
        assert f.read() == content
    assert os.listdir(d.state) == ["lbconfig.db"]


# --------------------------------------------------------------------------- boot failures


def test_rule_failing_at_boot_is_kept_and_applied_once_it_can(
    topo: LbTopology, handles: list[Handle]
) -> None:
    """An onearm rule needs a local address toward its endpoint. Persisted, then the address
    goes away and the daemon restarts: the rule cannot apply, other changes are written, and
    once the address is back the rule is applied by the retry loop (and survives restarts)."""
    d = Handle(topo, "boot")
    handles.append(d)
    addr = ["ip", "addr", "{}", "10.0.99.1/24", "dev", "eth1"]
    onearm = {"serviceArguments": {"externalIP": ROUTED_VIP, "port": 4000, "protocol": "tcp",
                                   "mode": NatMode.ONEARM.value},
              "endpoints": [{"endpointIP": "10.0.99.2", "targetPort": 80, "weight": 1}]}
    topo.lb.run([a.format("add") for a in addr])
    try:
        d.start()
        assert d.api("POST", "/config/loadbalancer", onearm).status_code == 200
        d.stop()
        topo.lb.run([a.format("del") for a in addr])
        d.start()
        assert d.ports() == []
        with open(d.log) as f:
            assert "no local address toward 10.0.99.2" in f.read()
        assert d.post_rules(4001, 1) == [4001]  # a write after boot does not erase it
        d.restart()
        assert d.ports() == [4001]
        topo.lb.run([a.format("add") for a in addr])
        wait_until(lambda: d.ports() == [4000, 4001], 20, what="the retry loop applying 4000")
        d.restart()
        assert d.ports() == [4000, 4001]
        d.api("DELETE", "/config/loadbalancer/all")
        d.stop()
    finally:
        topo.lb.run([a.format("del") for a in addr], check=False)
