"""Builds the datapath into the package: pyloxi.bpf/lb.bpf.o, compiled by `make datapath-object`
from bpf/ (clang, libbpf headers), so an installed pyloxi carries the object it loads.

Everything else is declared in pyproject.toml. PYLOXI_BUILD_BPF=0 builds without compiling
(a CLI-only install on a machine without clang; `pyloxi daemon` then asks for --bpf-object).
"""

import os
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithDatapath(build_py):
    def run(self) -> None:
        if os.environ.get("PYLOXI_BUILD_BPF", "1") != "0" and os.path.isdir(
                os.path.join(HERE, "bpf")):
            try:
                proc = subprocess.run(["make", "-s", "datapath-object"], cwd=HERE,
                                      capture_output=True, text=True)
                failed = proc.returncode != 0
                output = proc.stdout + proc.stderr
            except OSError as exc:  # no make
                failed, output = True, str(exc)
            if failed:
                raise SystemExit(
                    "pyloxi: compiling the datapath (make datapath-object) failed:\n"
                    f"{output}\n"
                    "Install clang and libbpf-dev (scripts/install-deps), or set "
                    "PYLOXI_BUILD_BPF=0 to build without the datapath.")
        super().run()


setup(cmdclass={"build_py": BuildWithDatapath})
