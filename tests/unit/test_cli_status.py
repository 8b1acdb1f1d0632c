"""`pyloxi set|get log-level`, `get process|device|filesystem|lbversion` and `completion`,
end to end: real HTTP to the API app (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tests.served import serve
from typer.testing import CliRunner

from pyloxi.api import create_app
from pyloxi.api.params import params_router
from pyloxi.cli.main import app as cli
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine import Engine
from pyloxi.oplog import LogControl


@dataclass
class Rig:
    levels: LogControl
    runner: CliRunner
    env: dict[str, str]

    def run(self, *args: str) -> tuple[int, str, str]:
        r = self.runner.invoke(cli, list(args), env=self.env)
        return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    levels = LogControl("info", logger="pyloxi.test-cli-status")
    app = create_app(Engine(MemoryDatapath()), version="3.2.1", build_info="cli-test",
                     extra_routers=[params_router(levels)])
    with serve(app) as env:
        yield Rig(levels, CliRunner(), env)


def test_set_and_get_log_level(rig: Rig) -> None:
    code, out, err = rig.run("set", "log-level", "debug")
    assert code == 0, err
    assert rig.levels.level() == "debug"
    code, out, _ = rig.run("get", "log-level")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["Param", "Name", "Value"]
    assert lines[1].split() == ["Log", "level", "debug"]
    code, out, _ = rig.run("get", "loglevel", "-o", "json")  # loxicmd's alias
    assert code == 0 and json.loads(out) == {"logLevel": "debug"}
    code, _, _ = rig.run("set", "loglevel", "emergency")
    assert code == 0 and rig.levels.level() == "emergency"
    rig.levels.set("info")


def test_set_log_level_refuses_unknown_levels_without_asking(rig: Rig) -> None:
    code, _, err = rig.run("set", "log-level", "loud")
    assert code == 2 and "trace,debug,info" in err
    assert rig.levels.level() == "info"
    code, _, _ = rig.run("set", "log-level")
    assert code == 2


def test_get_process_lists_the_daemon_host(rig: Rig) -> None:
    code, out, err = rig.run("get", "process")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["pid", "user", "priority", "nice", "virtMemory", "residentSize",
                                "sharedMemory", "status", "CPUUsage", "MemoryUsage", "time",
                                "command"]
    # the server runs in this process: its row is there, with all 12 columns
    [mine] = [line.split() for line in lines[1:] if line.split()[0] == str(os.getpid())]
    assert len(mine) >= 12
    code, out, _ = rig.run("get", "processes", "-o", "json")
    assert code == 0 and any(p["pid"] == str(os.getpid())
                             for p in json.loads(out)["processAttr"])


def test_get_device_filesystem_lbversion(rig: Rig) -> None:
    code, out, _ = rig.run("get", "device")
    assert code == 0 and socket.gethostname() in out.splitlines()[1]
    code, out, _ = rig.run("get", "filesystem", "-o", "json")
    assert code == 0 and any(f["mountedOn"] == "/" for f in json.loads(out)["filesystemAttr"])
    code, out, _ = rig.run("get", "fs")
    assert code == 0 and out.splitlines()[0].split()[0] == "fileSystem"
    code, out, _ = rig.run("get", "lbversion")
    assert code == 0
    assert out.strip().splitlines()[1].split() == ["3.2.1", "cli-test"]
    code, out, _ = rig.run("get", "LBVersion", "-o", "json")
    assert code == 0 and json.loads(out) == {"version": "3.2.1", "buildInfo": "cli-test"}


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o"), ("zsh", "compdef"),
                                          ("fish", "complete --command pyloxi"),
                                          ("powershell", "Register-ArgumentCompleter")])
def test_completion_scripts(shell: str, marker: str) -> None:
    r = CliRunner().invoke(cli, ["completion", shell])
    assert r.exit_code == 0 and marker in r.stdout and "_PYLOXI_COMPLETE" in r.stdout


def test_completion_refuses_other_shells() -> None:
    r = CliRunner().invoke(cli, ["completion", "tcsh"])
    assert r.exit_code == 2 and "bash" in r.stderr


@pytest.mark.parametrize("line,expect,absent", [
    ("pyloxi get lo", {"log-level"}, {"lb"}),
    ("pyloxi set ", {"log-level"}, set()),
    ("pyloxi ", {"get", "set", "create", "delete", "completion"}, set()),
    ("pyloxi create lb 20.20.20.1 --t", {"--tcp"}, {"--udp"}),
    ("pyloxi --o", {"--output"}, set()),
])
def test_the_completion_script_is_answered(line: str, expect: set[str],
                                           absent: set[str]) -> None:
    """What the bash script asks pyloxi when TAB is pressed, and the candidates it gets."""
    words = line.split(" ")
    r = CliRunner().invoke(cli, [], prog_name="pyloxi", env={
        "_PYLOXI_COMPLETE": "complete_bash", "COMP_WORDS": line,
        "COMP_CWORD": str(len(words) - 1)})
    assert r.exit_code == 0, r.stderr
    got = set(r.stdout.split())
    assert expect <= got and not absent & got, got
