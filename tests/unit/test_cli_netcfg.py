"""`pyloxi create|get|delete route|ip|neighbor|fdb|vlan|vlanmember|vxlan|vxlanpeer` and
`get port` end to end: real HTTP to the API app (uvicorn on 127.0.0.1) over the in-memory
netlink layer; loxicmd's argument order and flags; bad arguments exit 2 with nothing sent."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from netfake import FakeNetConfig
from tests.served import serve
from typer.testing import CliRunner

from pyloxi.api import create_app
from pyloxi.api.netcfg import netcfg_router
from pyloxi.cli.main import app as cli

Rig = tuple[FakeNetConfig, CliRunner, dict[str, str]]


@pytest.fixture
def rig() -> Iterator[Rig]:
    net = FakeNetConfig("eno7", "eno8")
    app = create_app(object(), version="0", extra_routers=[netcfg_router(net)])
    with serve(app) as env:
        yield net, CliRunner(), env


def run(rig: Rig, *args: str, code: int = 0) -> str:
    _, runner, env = rig
    r = runner.invoke(cli, list(args), env=env)
    assert r.exit_code == code, (args, r.stdout, r.stderr)
    return r.stdout if code == 0 else r.stderr


def test_loxicmd_examples(rig: Rig) -> None:
    net = rig[0]
    run(rig, "create", "route", "192.168.212.0/24", "172.17.0.254", "--proto=static")
    assert net.routes_ == {"192.168.212.0/24": ("172.17.0.254", "static")}
    run(rig, "create", "ip", "192.168.0.1/24", "eno7")
    run(rig, "create", "neighbor", "192.168.0.1", "eno7", "--macAddress=aa:aa:aa:aa:aa:aa")
    run(rig, "create", "vlan", "100")
    run(rig, "create", "vlanmember", "100", "eno7", "--tagged=true")
    run(rig, "create", "vlanmember", "100", "eno8")
    run(rig, "create", "vxlan", "100", "eno7")
    run(rig, "create", "vxlanpeer", "100", "1.1.1.1")
    run(rig, "create", "fdb", "02:00:00:00:00:01", "eno8")
    assert net.devs["eno7"].addrs == ["192.168.0.1/24"]
    assert net.neigh == {("192.168.0.1", "eno7"): "aa:aa:aa:aa:aa:aa"}
    assert net.devs["eno7.100"].master == "vlan100" and net.devs["eno8"].master == "vlan100"
    assert net.devs["vxlan100"].peers == ["1.1.1.1"] and net.devs["eno8"].fdb == [
        "02:00:00:00:00:01"]

    out = run(rig, "get", "route")
    assert "192.168.212.0/24" in out and "172.17.0.254" in out and "destinationIPNet" in out
    assert "192.168.0.1/24" in run(rig, "get", "ip")
    assert "aa:aa:aa:aa:aa:aa" in run(rig, "get", "nei")
    vlan = run(rig, "get", "vlan")
    assert "vlan100" in vlan and "eno7(tagged)" in vlan and "eno8(untagged)" in vlan
    vx = run(rig, "get", "vxlan")
    assert "vxlan100" in vx and "1.1.1.1" in vx and "eno7" in vx
    assert "02:00:00:00:00:01" in run(rig, "get", "fdb")
    got = json.loads(run(rig, "get", "port", "-o", "json"))
    assert {p["portName"] for p in got["portAttr"]} >= {"eno7", "eno8", "vlan100", "vxlan100"}
    wide = run(rig, "get", "port", "-o", "wide")
    assert "isActive/bpf" in wide and "mtu" in wide

    run(rig, "delete", "vxlanpeer", "100", "1.1.1.1")
    run(rig, "delete", "vxlan", "100")
    run(rig, "delete", "vlanmember", "100", "eno7", "--tagged=true")
    run(rig, "delete", "vlan-member", "100", "eno8")
    run(rig, "delete", "vlan", "100")
    run(rig, "delete", "fdb", "02:00:00:00:00:01", "eno8")
    run(rig, "delete", "neigh", "192.168.0.1", "eno7")
    run(rig, "delete", "ipv4address", "192.168.0.1/24", "eno7")
    run(rig, "delete", "route", "192.168.212.0/24")
    assert net.routes_ == {} and net.neigh == {} and set(net.devs) == {"lo", "eno7", "eno8"}
    assert net.devs["eno7"].addrs == [] and net.devs["eno8"].fdb == []


def test_tagged_flag_forms(rig: Rig) -> None:
    net = rig[0]
    run(rig, "create", "vlan", "7")
    run(rig, "create", "vlanmember", "7", "eno7", "--tagged")
    assert "eno7.7" in net.devs
    run(rig, "delete", "vlanmember", "7", "eno7", "--tagged=false", code=1)  # not untagged
    run(rig, "delete", "vlanmember", "7", "eno7", "--tagged=true")
    assert "eno7.7" not in net.devs


@pytest.mark.parametrize("args, words", [
    (("create", "route", "10.0.0.0/33", "1.1.1.1"), "DestinationIPNet"),
    (("create", "route", "10.0.0.0/8", "gw"), "gateway"),
    (("create", "ip", "10.0.0.1", "eno7"), "DeviceIPNet"),
    (("create", "ip", "10.0.0.1/24", "bad/name"), "device"),
    (("create", "neighbor", "10.0.0.1", "eno7"), "--macAddress"),
    (("create", "neighbor", "10.0.0.1", "eno7", "--macAddress=zz"), "--macAddress"),
    (("create", "vlan", "4095"), "Vid"),
    (("create", "vlan", "x"), "Vid"),
    (("create", "vlanmember", "100", "eno7", "--tagged=maybe"), "--tagged"),
    (("create", "vxlan", "0", "eno7"), "VxlanID"),
    (("create", "vxlanpeer", "100", "1.1.1"), "PeerIP"),
    (("delete", "fdb", "xx", "eno7"), "MacAddress"),
])
def test_bad_arguments_exit_2_and_send_nothing(rig: Rig, args: tuple[str, ...],
                                               words: str) -> None:
    before = rig[0].state()
    err = run(rig, *args, code=2)
    assert err.startswith("Error:") and words in err
    assert rig[0].state() == before


def test_api_refusal_is_one_line_exit_1(rig: Rig) -> None:
    err = run(rig, "create", "ip", "10.0.0.1/24", "nosuch0", code=1)
    assert "no such device nosuch0" in err and len(err.strip().splitlines()) == 1
    run(rig, "create", "vlan", "100")
    assert "exists" in run(rig, "create", "vlan", "100", code=1)
