"""Builds the datapath into the package: pyloxi.bpf/lb.bpf.o, compiled by `make datapath-object`
from bpf/ (clang, libbpf headers), so an installed pyloxi carries the object it loads.

It also generates the gobgpd gRPC stubs (pyloxi.bgp.apipb, `make bgp-stubs`) from the protos of
Debian's golang-github-osrg-gobgp-dev 3.10 with grpcio-tools (a build requirement); without
those protos the package is built without them, and `pyloxi daemon --bgp` says so.

Everything else is declared in pyproject.toml. PYLOXI_BUILD_BPF=0 builds without compiling
(a CLI-only install on a machine without clang; `pyloxi daemon` then asks for --bpf-object).
"""

import os
import subprocess
import sys

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
        self._bgp_stubs()
        super().run()

    def _bgp_stubs(self) -> None:
        protos = os.environ.get("GOBGP_PROTO",
                                "/usr/share/gocode/src/github.com/osrg/gobgp/api")
        if not os.path.isfile(os.path.join(protos, "gobgp.proto")):
            print(f"pyloxi: no gobgp protos in {protos}: building without the BGP stubs "
                  "(apt-get install golang-github-osrg-gobgp-dev)", file=sys.stderr)
            return
        proc = subprocess.run(["make", "-s", "bgp-stubs", f"PY={sys.executable}",
                               f"GOBGP_PROTO={protos}"], cwd=HERE, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise SystemExit("pyloxi: generating the gobgp stubs (make bgp-stubs) failed:\n"
                             f"{proc.stdout}{proc.stderr}")
        # generated after setuptools listed the packages: add it to what is built
        if self.packages is not None and "pyloxi.bgp.apipb" not in self.packages:
            self.packages.append("pyloxi.bgp.apipb")


setup(cmdclass={"build_py": BuildWithDatapath})
