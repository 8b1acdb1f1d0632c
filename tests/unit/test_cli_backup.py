"""`pyloxi save` / `pyloxi apply` end to end: real HTTP to two API apps (uvicorn on 127.0.0.1,
rules on datapath.memory): save on one, apply on the other, the same listings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from tests.served import serve
from tests.unit.test_backup_api import EP, FW, RULE, RULE2, build_app
from typer.testing import CliRunner

from pyloxi.cli import client as cli_client
from pyloxi.cli.main import app as cli

B = "/netlox/v1"


def url(env: dict[str, str], path: str) -> str:
    return f"http://{env['PYLOXI_API']}{B}{path}"


def configure(env: dict[str, str]) -> None:
    for path, body in (("/config/loadbalancer", RULE), ("/config/loadbalancer", RULE2),
                       ("/config/firewall", FW), ("/config/endpoint", EP)):
        r = httpx.post(url(env, path), json=body)
        assert r.status_code == 200, r.text


def listings(env: dict[str, str]) -> dict[str, Any]:
    return {p: httpx.get(url(env, p)).json() for p in (
        "/config/loadbalancer/all", "/config/firewall/all", "/config/endpoint/all")}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_save_all_writes_loxilb_files(runner: CliRunner, tmp_path: Path) -> None:
    with serve(build_app()) as env:
        configure(env)
        r = runner.invoke(cli, ["save", "-a", "-c", str(tmp_path)], env=env)
        assert r.exit_code == 0, (r.stdout, r.stderr)
        # pyloxi has no sessions, ULCL or BFD: skipped, said so
        for what in ("Session", "UlCl", "BFD", "IP"):
            assert f"{what} configuration not saved" in r.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "EPconfig.txt", "FWconfig.txt", "lbconfig.txt"]
        lb = json.loads((tmp_path / "lbconfig.txt").read_text())
        web = next(x for x in lb["lbAttr"] if x["serviceArguments"].get("name") == "web")
        # loxicmd's LoadBalancerService keys: BGP/Monitor capitals, omitempty ones left out
        assert list(web["serviceArguments"]) == [
            "externalIP", "port", "protocol", "sel", "mode", "BGP", "Monitor",
            "inactiveTimeOut", "block", "name", "proxyprotocolv2", "egress"]
        assert all(ep["counter"] == "" for ep in web["endpoints"])
        ep = json.loads((tmp_path / "EPconfig.txt").read_text())["Attr"]
        assert {"hostName": "10.0.0.9", "name": "web9", "inactiveReTries": 2,
                "probeType": "tcp", "probeReq": "", "probeResp": "", "probeDuration": 30,
                "probePort": 8080} in ep
        fw = json.loads((tmp_path / "FWconfig.txt").read_text())["fwAttr"]
        assert fw[0]["ruleArguments"]["sourceIP"] == "10.1.0.0/16" and fw[0]["opts"]["drop"]

        # saving again keeps the previous file as *.bk
        first = (tmp_path / "lbconfig.txt").read_text()
        assert httpx.delete(url(env, "/config/loadbalancer/name/web")).status_code == 200
        r = runner.invoke(cli, ["save", "--lb", "-c", str(tmp_path)], env=env)
        assert r.exit_code == 0, r.stderr
        assert (tmp_path / "lbconfig.txt.bk").read_text() == first
        assert len(json.loads((tmp_path / "lbconfig.txt").read_text())["lbAttr"]) == 1


def test_save_then_apply_on_a_fresh_server(runner: CliRunner, tmp_path: Path) -> None:
    with serve(build_app()) as a, serve(build_app()) as b:
        configure(a)
        assert runner.invoke(cli, ["save", "-a", "-c", str(tmp_path)], env=a).exit_code == 0
        r = runner.invoke(cli, ["apply", "--lb", str(tmp_path / "lbconfig.txt"), "--full",
                                "--firewall", str(tmp_path / "FWconfig.txt"),
                                "--endpoint", str(tmp_path / "EPconfig.txt")], env=b)
        assert r.exit_code == 0, (r.stdout, r.stderr)
        assert r.stdout.count("Configuration applied - ") == 3
        assert listings(b) == listings(a)


def test_apply_lb_posts_what_loxicmd_posts(runner: CliRunner, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(build_app()) as env:
        configure(env)
        assert runner.invoke(cli, ["save", "--lb", "-c", str(tmp_path)], env=env).exit_code == 0
    sent: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"result": "Success"})

    monkeypatch.setattr(cli_client, "transport_override", httpx.MockTransport(handler))
    r = runner.invoke(cli, ["apply", "--lb", str(tmp_path / "lbconfig.txt")],
                      env={"PYLOXI_API": "127.0.0.1:1"})
    assert r.exit_code == 0, r.stderr
    web = next(s for s in sent if s["serviceArguments"]["externalIP"] == "20.0.0.1")
    # cmd/dump/apply.go ApplyLbConfig: these fields only, the rest at Go's zero values
    assert web == {
        "serviceArguments": {"externalIP": "20.0.0.1", "port": 80, "protocol": "tcp",
                             "sel": 0, "mode": 0, "BGP": False, "Monitor": False,
                             "inactiveTimeOut": 0, "block": 0, "proxyprotocolv2": False,
                             "egress": False},
        "secondaryIPs": None, "allowedSources": None,
        "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 8080, "weight": 1, "state": "",
                       "counter": ""},
                      {"endpointIP": "10.0.0.2", "targetPort": 8080, "weight": 2, "state": "",
                       "counter": ""}]}


def test_apply_yaml_kinds(runner: CliRunner, tmp_path: Path) -> None:
    doc = tmp_path / "objs.yaml"
    doc.write_text("""
apiVersion: netlox/v1
kind: Loadbalancer
metadata: {name: test}
spec:
  serviceArguments: {externalIP: 123.123.123.1, port: 8080, protocol: tcp, sel: 0, name: y}
  endpoints:
  - {endpointIP: 4.8.1.1, targetPort: 8080, weight: 1}
---
kind: Firewall
spec:
  ruleArguments: {sourceIP: 192.168.1.0/24, preference: 10}
  opts: {allow: true}
""")
    with serve(build_app()) as env:
        r = runner.invoke(cli, ["apply", "-f", str(doc)], env=env)
        assert r.exit_code == 0, (r.stdout, r.stderr)
        got = listings(env)
        assert [x["serviceArguments"]["name"] for x in
                got["/config/loadbalancer/all"]["lbAttr"]] == ["y"]
        assert got["/config/firewall/all"]["fwAttr"][0]["ruleArguments"]["preference"] == 10
        bad = tmp_path / "bad.yaml"
        bad.write_text("kind: Gizmo\nspec: {}\n")
        r = runner.invoke(cli, ["apply", "-f", str(bad)], env=env)
        assert r.exit_code == 2 and "'Gizmo' is not supported" in r.stderr


def test_apply_stops_at_a_refused_entry(runner: CliRunner, tmp_path: Path) -> None:
    saved = {"lbAttr": [
        {"serviceArguments": {"externalIP": "20.0.0.5", "port": 80, "protocol": "tcp"},
         "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80, "weight": 1}]},
        {"serviceArguments": {"externalIP": "20.0.0.6", "port": 80, "protocol": "tcp",
                              "mode": 9}, "endpoints": []},
        {"serviceArguments": {"externalIP": "20.0.0.7", "port": 80, "protocol": "tcp"},
         "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80, "weight": 1}]}]}
    (tmp_path / "lbconfig.txt").write_text(json.dumps(saved))
    with serve(build_app()) as env:
        r = runner.invoke(cli, ["apply", "--lb", str(tmp_path / "lbconfig.txt")], env=env)
        assert r.exit_code == 1 and "entry 1" in r.stderr, (r.stdout, r.stderr)
        got = listings(env)["/config/loadbalancer/all"]["lbAttr"]
        assert [x["serviceArguments"]["externalIP"] for x in got] == ["20.0.0.5"]


def test_save_reports_a_failing_component(runner: CliRunner, tmp_path: Path) -> None:
    broken = APIRouter(prefix="/config")

    @broken.get("/bfd/all")
    def fail() -> None:
        raise RuntimeError("bfd table unreadable")

    with serve(build_app(extra=[broken])) as env:
        configure(env)
        r = runner.invoke(cli, ["save", "-a", "-c", str(tmp_path)], env=env)
        assert r.exit_code == 1
        assert "Error: BFD configuration not saved" in r.stderr
        # the others were saved all the same
        assert (tmp_path / "lbconfig.txt").exists() and (tmp_path / "FWconfig.txt").exists()


def test_save_and_apply_usage(runner: CliRunner, tmp_path: Path) -> None:
    env = {"PYLOXI_API": "127.0.0.1:1"}
    r = runner.invoke(cli, ["save"], env=env)
    assert r.exit_code == 2 and "give one of" in r.stderr
    r = runner.invoke(cli, ["save", "--lb", "--firewall"], env=env)
    assert r.exit_code == 2 and "cannot be given together" in r.stderr
    r = runner.invoke(cli, ["apply"], env=env)
    assert r.exit_code == 2
    r = runner.invoke(cli, ["apply", "--lb", str(tmp_path / "missing.txt")], env=env)
    assert r.exit_code == 2 and "cannot read" in r.stderr
    (tmp_path / "x.txt").write_text("{nope")
    r = runner.invoke(cli, ["apply", "--firewall", str(tmp_path / "x.txt")], env=env)
    assert r.exit_code == 2 and "not JSON" in r.stderr


def net_app() -> Any:
    from tests.unit.netfake import FakeNetConfig

    from pyloxi.api.netcfg import netcfg_router
    return build_app(extra=[netcfg_router(FakeNetConfig("eth0", "eth1"))])


def test_save_ip_and_apply_per_intf(runner: CliRunner, tmp_path: Path) -> None:
    with serve(net_app()) as a, serve(net_app()) as b:
        for path, body in (("/config/ipv4address", {"dev": "eth1", "ipAddress": "10.1.1.1/24"}),
                           ("/config/ipv4address", {"dev": "eth1", "ipAddress": "10.1.2.1/24"}),
                           ("/config/neighbor", {"ipAddress": "10.1.1.9", "dev": "eth1",
                                                 "macAddress": "02:00:00:00:00:09"}),
                           ("/config/route", {"destinationIPNet": "192.168.7.0/24",
                                              "gateway": "10.1.1.254", "protocol": "static"})):
            r = httpx.post(url(a, path), json=body)
            assert r.status_code == 200, r.text
        r = runner.invoke(cli, ["save", "--ip", "-c", str(tmp_path)], env=a)
        assert r.exit_code == 0, (r.stdout, r.stderr)
        eth1 = tmp_path / "ipconfig" / "eth1"
        assert (eth1 / "type").read_text() == "phy"
        assert (eth1 / "ipv4addr").read_text() == "10.1.1.1/24\n10.1.2.1/24\n"
        assert (eth1 / "ipv4neigh").read_text() == "10.1.1.9 lladdr 02:00:00:00:00:09\n"
        assert (eth1 / "ipv4route").read_text() == "192.168.7.0/24 via 10.1.1.254\n"
        assert not (tmp_path / "ipconfig" / "lo").exists()

        # -r: the routes only
        r = runner.invoke(cli, ["apply", "--per-intf", "eth1", "-r", "-c",
                                str(tmp_path / "ipconfig")], env=b)
        assert r.exit_code == 0, r.stderr
        assert "Route Configuration applied for - eth1" in r.stdout
        assert [x["destinationIPNet"] for x in httpx.get(url(b, "/config/route/all")).json()[
            "routeAttr"]] == ["192.168.7.0/24"]
        assert not any(x["ipAddress"] for x in httpx.get(url(b, "/config/ipv4address/all")
                                                        ).json()["ipAttr"] if x["dev"] == "eth1")
        r = runner.invoke(cli, ["apply", "--per-intf", "eth1", "-c",
                                str(tmp_path / "ipconfig")], env=b)
        assert r.exit_code == 0, (r.stdout, r.stderr)
        assert "Configuration applied for - eth1" in r.stdout
        for path in ("/config/ipv4address/all", "/config/neighbor/all", "/config/route/all"):
            assert httpx.get(url(b, path)).json() == httpx.get(url(a, path)).json(), path
        # again: everything is there already, no failure
        r = runner.invoke(cli, ["apply", "--per-intf", "eth1", "-c",
                                str(tmp_path / "ipconfig")], env=b)
        assert r.exit_code == 0, r.stderr

        # a second save keeps the first as ipconfig.bk
        r = runner.invoke(cli, ["save", "--ip", "-c", str(tmp_path)], env=b)
        assert r.exit_code == 0
        assert (tmp_path / "ipconfig.bk" / "eth1" / "ipv4route").exists()
        r = runner.invoke(cli, ["apply", "--per-intf", "eth9", "-c",
                                str(tmp_path / "ipconfig")], env=b)
        assert r.exit_code == 2 and "no saved configuration for eth9" in r.stderr
        r = runner.invoke(cli, ["apply", "--ip", str(eth1 / "ipv4addr")], env=b)
        assert r.exit_code == 2 and "shell command" in r.stderr
