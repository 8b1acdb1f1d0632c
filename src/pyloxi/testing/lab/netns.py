"""Uniquely named network namespaces and veth links that are always removed again.

Names carry the creating process id (`<prefix><pid>-<role>`), so a later run can tell a
leftover of a dead run (`cleanup_stale`) from a namespace that is still in use.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

Cmd = str | Sequence[str]


def _argv(cmd: Cmd) -> list[str]:
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def sh(cmd: Cmd, *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(_argv(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(_argv(cmd))!r} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class Netns:
    """One namespace: run commands in it, start background processes tracked by its lab."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name

    def argv(self, cmd: Cmd) -> list[str]:
        return ["ip", "netns", "exec", self.name, *_argv(cmd)]

    def run(self, cmd: Cmd, *, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return sh(self.argv(cmd), check=check, timeout=timeout)

    def popen(self, cmd: Cmd, **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            self.argv(cmd), start_new_session=True, **kwargs)
        self.lab.processes.append(proc)
        return proc

    def sysctl(self, key: str, value: str | int) -> None:
        self.run(["sysctl", "-qw", f"{key}={value}"])

    def unlimit_icmp(self) -> None:
        """No rate limit on the ICMP errors this namespace sends (port unreachable,
        fragmentation needed...): by default the kernel sends one per second per destination
        after a burst of 6, and icmp_msgs_per_sec overall, so a test that counts on an ICMP
        error would pass or fail with the load of the machine."""
        for key, value in (("net.ipv4.icmp_ratelimit", 0), ("net.ipv4.icmp_msgs_per_sec", 100000),
                           ("net.ipv4.icmp_msgs_burst", 100000), ("net.ipv6.icmp.ratelimit", 0)):
            self.sysctl(key, value)

    def __repr__(self) -> str:
        return f"Netns({self.name})"


class Lab:
    """Owns namespaces, processes and pinned BPF paths; `close()` removes all of them."""

    def __init__(self, prefix: str = "pl") -> None:
        self.tag = f"{prefix}{os.getpid()}"
        self.namespaces: list[Netns] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.pin_dirs: list[str] = []
        self._ids = itertools.count()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def netns(self, role: str) -> Netns:
        ns = Netns(self, f"{self.tag}-{role}")
        sh(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)
        ns.run("ip link set lo up")
        return ns

    def link(self, a: Netns, a_if: str, a_addr: str | None, b: Netns, b_if: str,
             b_addr: str | None) -> None:
        """A veth pair between two namespaces, named a_if/b_if inside them, addressed and up."""
        n = next(self._ids)
        tmp_a, tmp_b = f"{self.tag[-9:]}a{n}", f"{self.tag[-9:]}b{n}"
        sh(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
        for ns, tmp, name, addr in ((a, tmp_a, a_if, a_addr), (b, tmp_b, b_if, b_addr)):
            sh(["ip", "link", "set", tmp, "netns", ns.name])
            ns.run(["ip", "link", "set", tmp, "name", name])
            if addr:
                ns.run(["ip", "addr", "add", addr, "dev", name])
            ns.run(["ip", "link", "set", name, "up"])

    def pin_dir(self, name: str = "bpf") -> str:
        path = f"/sys/fs/bpf/{self.tag}-{name}"
        self.pin_dirs.append(path)
        return path

    def close(self) -> None:
        for proc in reversed(self.processes):
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        self.processes.clear()
        for ns in reversed(self.namespaces):
            _kill_netns_pids(ns.name)
            sh(["ip", "netns", "del", ns.name], check=False)
        self.namespaces.clear()
        for path in self.pin_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self.pin_dirs.clear()


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal a process's group when it leads one (Netns.popen), else the process alone."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def _kill_netns_pids(name: str) -> None:
    pids = sh(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def cleanup_stale(prefix: str = "pl") -> list[str]:
    """Remove namespaces and pins left by runs whose process is gone; return what was removed."""
    removed: list[str] = []
    listing = sh("ip netns list", check=False).stdout.splitlines()
    names = [line.split()[0] for line in listing if line]
    pins = os.listdir("/sys/fs/bpf") if os.path.isdir("/sys/fs/bpf") else []
    for name in names + pins:
        head = name.split("-", 1)[0]
        if not head.startswith(prefix) or not head[len(prefix):].isdigit():
            continue
        pid = int(head[len(prefix):])
        if pid == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue
        if name in names:
            _kill_netns_pids(name)
            sh(["ip", "netns", "del", name], check=False)
        else:
            shutil.rmtree(f"/sys/fs/bpf/{name}", ignore_errors=True)
        removed.append(name)
    if removed:
        log.info("removed stale lab objects: %s", " ".join(removed))
    return removed
