"""Real SCTP associations (libusrsctp peers, pyloxi.testing.usrsctp) through the VIP with the
ports translated: the datapath updates the CRC32c, which both stacks check."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from pyloxi.testing.lab.topology import ROUTED_VIP, backend_ip

from ..waiting import wait_until
from .conftest import DaemonHandle

SERVER_PORT, VIP_PORT = 38412, 36412
ECHO = re.compile(r"echo seq=(\d+) sid=(\d+) ppid=(\d+)")

pytestmark = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "ldconfig -p | grep -q libusrsctp.so.2"]).returncode != 0,
    reason="libusrsctp2 is not installed (scripts/install-deps)")


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


@pytest.fixture(scope="module")
def sctp_server(daemon: DaemonHandle) -> Iterator[str]:
    """The usrsctp echo server in be1 on SERVER_PORT; yields its log."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with tempfile.TemporaryDirectory(prefix="pl-sctp-") as tmp:
        log = os.path.join(tmp, "server.log")
        with open(log, "wb") as out:
            proc = daemon.topo.backends[0].popen(
                [sys.executable, "-m", "pyloxi.testing.usrsctp", "--fast", "server", "--bind",
                 backend_ip(1), "--port", str(SERVER_PORT)],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until(lambda: "listening" in read(log), 10, what="the usrsctp server")
            yield log
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.mark.parametrize("mode", ["default", "onearm", "fullnat"])
def test_association_through_translated_ports(lb: DaemonHandle, sctp_server: str,
                                              mode: str) -> None:
    lb.cli("create", "lb", ROUTED_VIP, f"--sctp={VIP_PORT}:{SERVER_PORT}",
           f"--endpoints={backend_ip(1)}:1", f"--mode={mode}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with tempfile.TemporaryDirectory(prefix="pl-sctp-") as tmp:
        log = os.path.join(tmp, "client.log")
        with open(log, "wb") as out:
            proc = lb.topo.client.popen(
                [sys.executable, "-m", "pyloxi.testing.usrsctp", "--fast", "client",
                 "--connect", ROUTED_VIP, "--port", str(VIP_PORT), "--stream", "0,1",
                 "--ppid", "18", "--count", "4", "--data", "x" * 1000, "--timeout", "15"],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        rc = proc.wait(25)
        text = read(log)
    assert rc == 0, text
    assert [int(m[0]) for m in ECHO.findall(text)] == [0, 1, 2, 3], text
    assert text.rstrip().endswith("closed"), text
