"""`pyloxi create|get|delete mirror` end to end: real HTTP to the API app (uvicorn on
127.0.0.1) with the mirror table on the in-memory datapath."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from tests.served import serve
from typer.testing import CliRunner

from pyloxi.api import create_app
from pyloxi.api.mirror import mirror_router
from pyloxi.cli.main import app as cli
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.mirror import MirrorProgram, Mirrors


@pytest.fixture
def rig() -> Iterator[tuple[MemoryDatapath, CliRunner, dict[str, str]]]:
    dp = MemoryDatapath(interfaces=frozenset({"hs0", "hs1"}))
    app = create_app(object(), version="0", extra_routers=[mirror_router(Mirrors(dp))])
    with serve(app) as env:
        yield dp, CliRunner(), env


def test_create_get_delete(rig: tuple[MemoryDatapath, CliRunner, dict[str, str]]) -> None:
    dp, runner, env = rig
    # loxicmd's own example, typo included
    r = runner.invoke(cli, ["create", "mirror", "mirr-1", "--mirrorInfo=type:0,port:hs0",
                            "--targetObject=attachement:1,mirrObjName:hs1"], env=env)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    r = runner.invoke(cli, ["create", "mirr", "web", "--mirrorInfo=type:1,port:hs0,vlan:100",
                            "--targetObject=attachment:2,mirrObjName:websvc"], env=env)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert dp.mirrors == [MirrorProgram(0, "hs0", 0, False, "hs1"),
                          MirrorProgram(1, "hs0", 100, True, "websvc")]
    dp.mirr_counters[0] = (2, 120)
    r = runner.invoke(cli, ["get", "mirror", "-o", "json"], env=env)
    got = json.loads(r.stdout)["mirrAttr"]
    assert [(e["mirrorIdent"], e["counter"]) for e in got] == [("mirr-1", "2:120"),
                                                               ("web", "0:0")]
    r = runner.invoke(cli, ["get", "mirror"], env=env)
    assert r.exit_code == 0 and "rspan" in r.stdout and "websvc" in r.stdout
    assert "2:120" in r.stdout
    r = runner.invoke(cli, ["delete", "mirror", "mirr-1"], env=env)
    assert r.exit_code == 0, r.stderr
    assert [m.target for m in dp.mirrors] == ["websvc"]
    r = runner.invoke(cli, ["delete", "mirror", "mirr-1"], env=env)
    assert r.exit_code == 1 and "no such mirror" in r.stderr


def test_refusals(rig: tuple[MemoryDatapath, CliRunner, dict[str, str]]) -> None:
    dp, runner, env = rig
    r = runner.invoke(cli, ["create", "mirror", "m", "--mirrorInfo=kind:0,port:hs0",
                            "--targetObject=attachment:1,mirrObjName:hs1"], env=env)
    assert r.exit_code == 2 and "kind" in r.stderr
    r = runner.invoke(cli, ["create", "mirror", "m", "--mirrorInfo=type:x,port:hs0",
                            "--targetObject=attachment:1,mirrObjName:hs1"], env=env)
    assert r.exit_code == 2 and "integer" in r.stderr
    r = runner.invoke(cli, ["create", "mirror", "m", "--mirrorInfo=type:2,port:hs0",
                            "--targetObject=attachment:1,mirrObjName:hs1"], env=env)
    assert r.exit_code == 1 and "ERSPAN" in r.stderr and "not supported" in r.stderr
    r = runner.invoke(cli, ["create", "mirror", "m", "--mirrorInfo=type:1,port:hs0",
                            "--targetObject=attachment:1,mirrObjName:hs1"], env=env)
    assert r.exit_code == 1 and "RSPAN needs a vlan" in r.stderr
    assert dp.mirrors == []
