"""host/ without root: directory locks, namespace helpers' error paths, read-only netlink."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyloxi.host import namespaces, ndp, netlink
from pyloxi.host.locks import DirLock, LockError, holder_pid
from pyloxi.host.netlink import default_interfaces, source_address

HOLD = """
import sys
from pyloxi.host.locks import DirLock
lock = DirLock(sys.argv[1], "state directory")
print("locked", flush=True)
sys.stdin.read()  # hold it until the test closes our stdin
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock on tmp_path/state."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "state")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


def test_second_locker_of_a_directory_is_told_who_holds_it(
        tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    with pytest.raises(LockError) as exc:
        DirLock(str(tmp_path / "state"), "state directory")
    assert f"state directory {tmp_path / 'state'} is in use by pid {holder.pid}" in str(exc.value)
    st = os.stat(tmp_path / "state")
    assert holder_pid(st.st_dev, st.st_ino) == holder.pid


def test_lock_is_free_again_when_its_holder_ends(tmp_path: Path,
                                                 holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=10)
    DirLock(str(tmp_path / "state"), "state directory").release()


def test_two_lockers_in_one_process(tmp_path: Path) -> None:
    """flock is per open file: a second DirLock in the same process is refused too."""
    first = DirLock(str(tmp_path / "pins"), "bpffs pin directory")
    with pytest.raises(LockError, match="bpffs pin directory .* is in use by another process"):
        DirLock(str(tmp_path / "pins"), "bpffs pin directory")
    first.release()
    first.release()  # twice is harmless
    DirLock(str(tmp_path / "pins"), "bpffs pin directory").release()


def test_lock_creates_the_directory(tmp_path: Path) -> None:
    lock = DirLock(str(tmp_path / "a" / "b"), "state directory")
    assert (tmp_path / "a" / "b").is_dir()
    lock.release()


def test_holder_pid_of_an_unlocked_inode_is_none(tmp_path: Path) -> None:
    st = os.stat(tmp_path)
    assert holder_pid(st.st_dev, st.st_ino) is None


def test_setns_refuses_what_is_not_a_namespace() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(OSError, match=r"setns\(not-a-ns\)"):
            namespaces.setns_fd(fd, namespaces.CLONE_NEWNET, "not-a-ns")
    finally:
        os.close(fd)


def _netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_entering_a_missing_namespace_fails_and_stays_home() -> None:
    home = _netns()
    with pytest.raises(FileNotFoundError):
        namespaces.enter_netns(f"pyloxi-no-such-ns-{os.getpid()}")
    with pytest.raises(FileNotFoundError), namespaces.in_netns(f"pyloxi-no-such-{os.getpid()}"):
        pytest.fail("the body must not run")
    assert _netns() == home


def test_process_introspection() -> None:
    assert namespaces._ppid(os.getpid()) == os.getppid()
    assert namespaces._threads() >= 1
    assert namespaces._mnt_ns("self") == os.stat("/proc/self/ns/mnt").st_ino


def test_netlink_reads() -> None:
    names = default_interfaces()
    assert "lo" not in names and names == sorted(names)
    assert source_address("127.0.0.1") == "127.0.0.1"


def test_unsolicited_neighbour_advert_layout() -> None:
    mac = bytes.fromhex("020000abcdef")
    na = ndp.neighbour_advert("fd00::1:2", mac)
    assert len(na) == 32
    assert na[0] == 136 and na[1] == 0 and na[2:4] == b"\0\0"  # type, code, checksum (kernel)
    assert na[4:8] == bytes([0x20, 0, 0, 0])  # override only: not solicited, not a router
    assert na[8:24] == bytes.fromhex("fd000000000000000000000000010002")
    assert na[24:26] == bytes([2, 1]) and na[26:] == mac  # target link-layer address option


def test_ndp_helpers_without_privileges() -> None:
    assert ndp.hwaddr("lo") is None  # loopback has no Ethernet address: no NA there
    assert ndp.hwaddr(f"nosuch{os.getpid() % 10000}") is None
    assert ndp.announce({"10.0.0.1"}, ["lo"]) == 0  # v4 only: no socket opened
    assert ndp.prepare_ipv6([f"nosuch{os.getpid() % 10000}"]) == []  # no such interface


def test_vip_spellings() -> None:
    assert netlink._norm("FD00:0::0001") == "fd00::1" and netlink._norm("10.0.0.1") == "10.0.0.1"
    assert [netlink._is_vip(v) for v in ("10.0.0.1", "0.0.0.0", "fd00::1", "::", "::1",
                                         "fe80::1", "ff02::1", "fd00::zz")] == [
        True, False, True, False, False, False, False, False]
