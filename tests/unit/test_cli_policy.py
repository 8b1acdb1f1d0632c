"""`pyloxi create|get|delete policy` end to end: real HTTP to the API app (uvicorn on
127.0.0.1) with the policer table on the in-memory datapath."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from tests.served import serve
from typer.testing import CliRunner

from pyloxi.api import create_app
from pyloxi.api.policy import policy_router
from pyloxi.cli.main import app as cli
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.policer import Policers

Rig = tuple[MemoryDatapath, CliRunner, dict[str, str]]


@pytest.fixture
def rig() -> Iterator[Rig]:
    dp = MemoryDatapath()
    app = create_app(object(), version="0", extra_routers=[policy_router(Policers(dp))])
    with serve(app) as env:
        yield dp, CliRunner(), env


def test_create_get_delete(rig: Rig) -> None:
    dp, runner, env = rig
    r = runner.invoke(cli, ["create", "policy", "pol-hs0", "--rate=100:100", "--target=eth0:1",
                            "--block-size=12000:6000"], env=env)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    (p,) = dp.policers.values()
    assert (p.port, p.cir, p.pir, p.cbs, p.ebs, p.srtcm) == (
        "eth0", 12_500_000, 12_500_000, 12000, 24000, False)
    r = runner.invoke(cli, ["create", "pol", "pol-web", "--rate=200:50", "--target=web:2",
                            "--pol-type", "1", "--color"], env=env)
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(cli, ["get", "policy", "-o", "json"], env=env)
    got = {e["policyIdent"]: e for e in json.loads(r.stdout)["polAttr"]}
    assert got["pol-web"]["policyInfo"]["type"] == 1
    assert got["pol-web"]["policyInfo"]["colorAware"] is True
    assert got["pol-web"]["targetObject"] == {"attachment": 2, "polObjName": "web"}
    r = runner.invoke(cli, ["get", "policy"], env=env)
    assert r.exit_code == 0 and "pol-hs0" in r.stdout and "srTCM" in r.stdout
    r = runner.invoke(cli, ["delete", "policy", "pol-hs0"], env=env)
    assert r.exit_code == 0, r.stderr
    assert [p.rule for p in dp.policers.values()] == ["web"]
    r = runner.invoke(cli, ["delete", "policy", "pol-hs0"], env=env)
    assert r.exit_code != 0


def test_same_twice_is_an_error(rig: Rig) -> None:
    _dp, runner, env = rig
    args = ["create", "policy", "p", "--rate=100:100", "--target=eth0:1"]
    assert runner.invoke(cli, args, env=env).exit_code == 0
    r = runner.invoke(cli, args, env=env)
    assert r.exit_code != 0 and "pol-exists" in r.stderr


@pytest.mark.parametrize("args", [
    ["--rate=100", "--target=eth0:1"],  # no committed rate: 0, refused by the daemon
    ["--rate=a:b", "--target=eth0:1"],
    ["--rate=100:100", "--target=eth0"],
    ["--rate=100:100", "--target=eth0:x"],
    ["--rate=100:100", "--target=eth0:1", "--block-size=big"],
])
def test_bad_arguments_fail_and_change_nothing(rig: Rig, args: list[str]) -> None:
    dp, runner, env = rig
    r = runner.invoke(cli, ["create", "policy", "p", *args], env=env)
    assert r.exit_code != 0
    assert dp.policers == {}
