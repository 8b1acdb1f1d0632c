"""`pyloxi`: one typer app for the CLI verbs and the daemon / kube-agent modes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import pyloxi.daemon
import pyloxi.k8s.agent
from pyloxi.cli.main import _command_name, hoist_global_options
from pyloxi.entry import app

runner = CliRunner()


def test_help_lists_every_mode_and_verb() -> None:
    res = runner.invoke(app, ["--help"], prog_name="pyloxi")
    assert res.exit_code == 0
    for word in ("daemon", "kube-agent", "create", "get", "delete", "version", "Modes"):
        assert word in res.stdout


def test_installed_entry_point_help() -> None:
    res = subprocess.run([sys.executable, "-m", "pyloxi.entry", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "kube-agent" in res.stdout and "daemon" in res.stdout


@pytest.mark.parametrize(("mode", "options"), [
    ("daemon", ("--state-dir", "--bpf-object", "--conntrack-entries", "--netns")),
    ("kube-agent", ("--loxiURL", "--cidrPools", "--config")),
])
def test_mode_help_is_its_own(mode: str, options: tuple[str, ...]) -> None:
    res = subprocess.run([sys.executable, "-m", "pyloxi.entry", mode, "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    assert res.stdout.startswith(f"usage: pyloxi {mode}")
    for opt in options:
        assert opt in res.stdout


@pytest.mark.parametrize(("mode", "module"), [("daemon", pyloxi.daemon),
                                              ("kube-agent", pyloxi.k8s.agent)])
def test_mode_gets_its_arguments_untouched(monkeypatch: pytest.MonkeyPatch, mode: str,
                                           module: object) -> None:
    """Options that are also the CLI's globals (-p/--port, -o) belong to the mode."""
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    monkeypatch.setattr(module, "main", fake_main)
    monkeypatch.setenv("PYLOXI_API", "not a url::")  # the CLI's setting; modes ignore it
    args = ["--port", "11112", "-o", "x", "--netns", "lb", "pos", "--flag=1"]
    res = runner.invoke(app, [mode, *args], prog_name="pyloxi")
    assert seen == [args]
    assert res.exit_code == 7


def test_command_name_skips_global_options() -> None:
    assert _command_name(["-s", "10.0.0.1", "--port", "1", "daemon", "--port", "2"]) == "daemon"
    assert _command_name(["-ojson", "get", "lb"]) == "get"
    assert _command_name(["--help"]) is None


def test_verbs_still_take_global_options_anywhere() -> None:
    assert hoist_global_options(["get", "lb", "-o", "wide"]) == ["-o", "wide", "get", "lb"]
