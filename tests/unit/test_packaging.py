"""Packaging: the wheel carries the compiled datapath, and the daemon finds it there (flag >
$PYLOXI_BPF_OBJECT > package data > an error naming the make target)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pyloxi.bpf
from pyloxi.bpf import ObjectMissing, locate_object

ROOT = Path(__file__).resolve().parents[2]


def test_explicit_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag, env = tmp_path / "flag.o", tmp_path / "env.o"
    flag.write_bytes(b"")
    env.write_bytes(b"")
    monkeypatch.setenv("PYLOXI_BPF_OBJECT", str(env))
    assert locate_object(str(flag)) == str(flag)
    assert locate_object() == str(env)
    with pytest.raises(ObjectMissing, match=r"--bpf-object .*nope\.o: no such file"):
        locate_object(str(tmp_path / "nope.o"))
    monkeypatch.setenv("PYLOXI_BPF_OBJECT", str(tmp_path / "gone.o"))
    with pytest.raises(ObjectMissing, match=r"\$PYLOXI_BPF_OBJECT .*gone\.o: no such file"):
        locate_object()


def test_installed_object_or_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYLOXI_BPF_OBJECT", raising=False)
    installed = Path(pyloxi.bpf.__file__).with_name("lb.bpf.o")
    if installed.is_file():
        assert locate_object() == str(installed)
    monkeypatch.setattr(pyloxi.bpf, "OBJECT_NAME", "missing.bpf.o")
    with pytest.raises(ObjectMissing, match="run `make build`"):
        locate_object()


@pytest.mark.skipif(shutil.which("clang") is None or shutil.which("make") is None,
                    reason="building the datapath needs clang and make")
@pytest.mark.timeout(600)
def test_wheel_carries_the_datapath(tmp_path: Path) -> None:
    """From a tree with no compiled object: setup.py compiles it into the package."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.o", "apipb")
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "Makefile", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("bpf", "src"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
         str(src)], capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("pyloxi-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pyloxi/bpf/lb.bpf.o" in names
    if Path("/usr/share/gocode/src/github.com/osrg/gobgp/api/gobgp.proto").is_file():
        # generated at build time (make bgp-stubs), not committed
        assert "pyloxi/bgp/apipb/gobgp_pb2_grpc.py" in names
    assert "pyloxi/testing/demo.py" in names and "pyloxi/py.typed" in names
    assert {"pyloxi/ui/index.html", "pyloxi/ui/ui.js", "pyloxi/ui/ui.css"} <= set(names)
    assert not any(n.startswith(("bpf/", "tests/")) for n in names)
