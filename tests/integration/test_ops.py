"""Operational routes of the real daemon: the log level changes what the daemon logs, at once
(`pyloxi set log-level`), GET /logs reads the --log-file, /status/process lists the daemon."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from pyloxi.testing.lab import LbTopology

from ..waiting import wait_until
from .conftest import DaemonHandle


@pytest.fixture(scope="module")
def ops(topo: LbTopology) -> Iterator[DaemonHandle]:
    d = DaemonHandle(topo, name="ops")
    d.extra_args = ["--log-file", os.path.join(topo.tmp.name, "ops-log", "pyloxi.log")]
    d.start()
    try:
        yield d
    finally:
        d.stop()


def logged(d: DaemonHandle, keyword: str) -> list[str]:
    resp = d.api("GET", f"/logs?keyword={keyword}&lines=50")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["log_file"] == "pyloxi.log"
    return list(body["logs"])


def vip_is_local(d: DaemonHandle, vip: str) -> bool:
    out = d.topo.lb.run(["ip", "route", "show", "table", "local"], check=False).stdout
    return f"local {vip} " in out


def test_log_level_takes_effect_at_once(ops: DaemonHandle) -> None:
    out = ops.cli("get", "log-level", "-o", "json").stdout
    assert json.loads(out) == {"logLevel": "debug"}  # the daemon was started at debug
    quiet, loud = "20.77.0.1", "20.77.0.2"
    ops.cli("set", "log-level", "error")
    assert json.loads(ops.cli("get", "log-level", "-o", "json").stdout) == {"logLevel": "error"}
    ops.cli("create", "lb", quiet, "--tcp=80:80", "--endpoints=10.0.0.1:1")
    wait_until(lambda: vip_is_local(ops, quiet), 15, what=f"{quiet} made local")
    ops.cli("set", "log-level", "info")
    ops.cli("create", "lb", loud, "--tcp=80:80", "--endpoints=10.0.0.1:1")
    wait_until(lambda: bool(logged(ops, loud)), 15, what=f"{loud} in the daemon's log")
    # the info line about the first VIP was never written: the level held at error
    assert logged(ops, quiet) == []
    archives = ops.api("GET", "/log-archives").json()["archives"]
    assert archives == ["pyloxi.log"]
    resp = ops.api("GET", "/log-archives/..%2F..%2Fetc%2Fpasswd")
    assert resp.status_code in (400, 404) and "root:" not in resp.text
    ops.cli("delete", "lb", quiet, "--tcp=80")
    ops.cli("delete", "lb", loud, "--tcp=80")


def test_status_process_lists_the_daemon(ops: DaemonHandle) -> None:
    assert ops.proc is not None
    rows = ops.api("GET", "/status/process").json()["processAttr"]
    [me] = [r for r in rows if r["pid"] == str(ops.proc.pid)]
    assert me["command"].startswith("python") and int(me["residentSize"]) > 0
    table = ops.cli("get", "process").stdout
    assert any(line.split()[0] == str(ops.proc.pid) for line in table.splitlines()[1:])
