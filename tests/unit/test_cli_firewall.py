"""`pyloxi create|get|delete firewall` end to end: real HTTP to the API app (uvicorn on
127.0.0.1) with the firewall table on the in-memory datapath."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from tests.served import serve
from typer.testing import CliRunner

from pyloxi.api import create_app
from pyloxi.api.firewall import firewall_router
from pyloxi.cli.main import app as cli
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.firewall import Firewall

RULE = "sourceIP:10.1.2.0/24,destinationIP:20.0.0.1/32,minDestinationPort:80,protocol:6," \
       "preference:200"


@pytest.fixture
def rig() -> Iterator[tuple[MemoryDatapath, CliRunner, dict[str, str]]]:
    dp = MemoryDatapath(interfaces=frozenset({"eth0", "eth1"}))
    app = create_app(object(), version="0", extra_routers=[firewall_router(Firewall(dp))])
    with serve(app) as env:
        yield dp, CliRunner(), env


def test_create_get_delete(rig: tuple[MemoryDatapath, CliRunner, dict[str, str]]) -> None:
    dp, runner, env = rig
    r = runner.invoke(cli, ["create", "firewall", f"--firewallRule={RULE}", "--allow",
                            "--setmark=10"], env=env)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert [(p.src, p.dst, p.dport, p.proto, p.allow, p.mark) for p in dp.firewall] == [
        ("10.1.2.0/24", "20.0.0.1/32", (80, 80), 6, True, 10)]
    r = runner.invoke(cli, ["create", "fw", "--firewallRule=sourceIP:10.0.0.0/8", "--drop"],
                      env=env)
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(cli, ["get", "firewall", "-o", "json"], env=env)
    got = json.loads(r.stdout)["fwAttr"]
    assert [e["ruleArguments"]["sourceIP"] for e in got] == ["10.1.2.0/24", "10.0.0.0/8"]
    r = runner.invoke(cli, ["get", "firewall"], env=env)
    assert r.exit_code == 0 and "10.1.2.0/24" in r.stdout and "drop" in r.stdout
    r = runner.invoke(cli, ["delete", "firewall", f"--firewallRule={RULE}"], env=env)
    assert r.exit_code == 0, r.stderr
    assert [p.src for p in dp.firewall] == ["10.0.0.0/8"]


def test_refusals(rig: tuple[MemoryDatapath, CliRunner, dict[str, str]]) -> None:
    dp, runner, env = rig
    r = runner.invoke(cli, ["create", "firewall", "--firewallRule=source:1.2.3.4", "--drop"],
                      env=env)
    assert r.exit_code == 2 and "sourceIP" in r.stderr
    r = runner.invoke(cli, ["create", "firewall", "--firewallRule=sourceIP:10.0.0.0/8",
                            "--snat=10.10.10.1,3030", "--setmark=4"], env=env)
    assert r.exit_code == 1 and "fwMark not allowed together with doSnat" in r.stderr
    r = runner.invoke(cli, ["create", "firewall", "--firewallRule=sourceIP:10.0.0.0/8",
                            "--snat=nonsense"], env=env)
    assert r.exit_code == 1 and "not an IP address" in r.stderr
    r = runner.invoke(cli, ["create", "firewall", "--firewallRule=sourceIP:10.0.0.0/8",
                            "--record"], env=env)
    assert r.exit_code == 1 and "record (packet tracing) is not supported" in r.stderr
    r = runner.invoke(cli, ["create", "firewall", "--firewallRule=sourceIP:10.0.0.0/8",
                            "--redirect=nope0"], env=env)
    assert r.exit_code == 1 and "no interface named 'nope0'" in r.stderr
    r = runner.invoke(cli, ["create", "firewall", "--firewallRule=sourceIP:10.0.0.0/8",
                            "--trap", "--drop"], env=env)
    assert r.exit_code == 1 and "trap is an action of its own" in r.stderr
    assert dp.firewall == []


def test_trap_and_redirect(rig: tuple[MemoryDatapath, CliRunner, dict[str, str]]) -> None:
    dp, runner, env = rig
    r = runner.invoke(cli, ["create", "firewall", "--firewallRule=sourceIP:10.0.0.0/8",
                            "--trap"], env=env)
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(cli, ["create", "firewall",
                            "--firewallRule=sourceIP:10.1.0.0/16,preference:5",
                            "--redirect=eth1"], env=env)
    assert r.exit_code == 0, r.stderr
    assert [(p.src, p.trap, p.redirect) for p in dp.firewall] == [
        ("10.1.0.0/16", False, "eth1"), ("10.0.0.0/8", True, "")]
    r = runner.invoke(cli, ["get", "firewall"], env=env)
    assert "redirect-eth1" in r.stdout and "trap" in r.stdout and "drop" not in r.stdout


def test_snat_and_egress(rig: tuple[MemoryDatapath, CliRunner, dict[str, str]]) -> None:
    dp, runner, env = rig
    r = runner.invoke(cli, ["create", "firewall", "--firewallRule=sourceIP:10.0.0.0/8",
                            "--snat=10.10.10.1,3030"], env=env)
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(cli, ["create", "firewall",
                            "--firewallRule=sourceIP:10.2.0.0/16,preference:5",
                            "--snat=10.10.10.2", "--egress"], env=env)
    assert r.exit_code == 0, r.stderr
    assert [(p.src, p.snat_ip, p.snat_port) for p in dp.firewall] == [
        ("10.2.0.0/16", "10.10.10.2", 0), ("10.0.0.0/8", "10.10.10.1", 3030)]
    got = json.loads(runner.invoke(cli, ["get", "fw", "-o", "json"], env=env).stdout)["fwAttr"]
    assert [(e["opts"]["doSnat"], e["opts"]["toIP"], e["opts"]["toPort"],
             e["opts"]["onDefault"], e["opts"]["drop"]) for e in got] == [
        (True, "10.10.10.2", 0, True, False), (True, "10.10.10.1", 3030, False, False)]
    r = runner.invoke(cli, ["get", "firewall"], env=env)
    assert "snat-10.10.10.1:3030" in r.stdout and "snat-10.10.10.2:0 (egress)" in r.stdout
    r = runner.invoke(cli, ["delete", "firewall",
                            "--firewallRule=sourceIP:10.2.0.0/16,preference:5"], env=env)
    assert r.exit_code == 0, r.stderr
    assert [p.snat_ip for p in dp.firewall] == ["10.10.10.1"]
