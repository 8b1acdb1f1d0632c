"""Status of the machine the daemon runs on (loxilb handler/status.go, apiutils/status):

- GET /status/process     {"processAttr": [ProcessInfoEntry]}: every process, as `top -bn1`
                          lists them (busiest first), read from /proc
- GET /status/device      DeviceInfoEntry {hostName, machineID, bootID, OS, kernel,
                          architecture, uptime}
- GET /status/filesystem  {"filesystemAttr": [FileSystemInfoEntry]}: as `df -hT`

loxilb runs `top`, `ps`, `uname` and `df` and parses their output; here /proc, /etc and
statvfs are read directly (no child process, nothing a PATH can change). A file that does not
exist (no /etc/machine-id in a container) is an empty string, not a failed answer.
"""

from __future__ import annotations

import math
import os
import platform
import pwd
import socket
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from pyloxi.api.errors import LoxiRoute
from pyloxi.model.status import (
    DeviceInfoEntry,
    FileSystemInfoEntry,
    FileSystemList,
    ProcessInfoEntry,
    ProcessList,
)

# Pseudo file systems df leaves out unless -a: they have no blocks, so they are skipped by
# size 0 anyway; these are skipped by type too (some report the RAM size).
_PSEUDO = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs",
                     "tracefs", "securityfs", "pstore", "bpf", "configfs", "fusectl",
                     "hugetlbfs", "autofs", "binfmt_misc", "nsfs", "rpc_pipefs", "selinuxfs"})


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _user(uid: int, cache: dict[int, str]) -> str:
    if uid not in cache:
        try:
            cache[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            cache[uid] = str(uid)
    return cache[uid]


def _cpu_time(ticks: int, hz: int) -> str:
    """top's TIME+: minutes:seconds.hundredths."""
    hundredths = ticks * 100 // hz
    minutes, rest = divmod(hundredths, 6000)
    return f"{minutes}:{rest // 100:02d}.{rest % 100:02d}"


def _meminfo_kib(proc: Path) -> int:
    for line in _read(proc / "meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _process(pid_dir: Path, *, hz: int, page_kib: int, uptime: float, mem_total: int,
             users: dict[int, str]) -> tuple[float, ProcessInfoEntry] | None:
    try:
        stat_text = (pid_dir / "stat").read_text()
        statm = (pid_dir / "statm").read_text().split()
        uid = pid_dir.stat().st_uid
    except OSError:
        return None  # exited meanwhile, or not ours to read
    # comm is in parentheses and may contain spaces and ')': split at the last one
    left, _, right = stat_text.rpartition(")")
    comm = left.partition("(")[2]
    fields = right.split()
    if len(fields) < 20 or len(statm) < 3:
        return None
    state = fields[0]
    utime, stime = int(fields[11]), int(fields[12])
    priority, nice = fields[15], fields[16]
    start = int(fields[19]) / hz
    ticks = utime + stime
    elapsed = uptime - start
    cpu = 100.0 * ticks / hz / elapsed if elapsed > 0 else 0.0
    rss_kib = int(statm[1]) * page_kib
    return cpu, ProcessInfoEntry(
        pid=pid_dir.name, user=_user(uid, users),
        priority="rt" if int(priority) <= -100 else priority, nice=nice,
        virt_memory=str(int(statm[0]) * page_kib), resident_size=str(rss_kib),
        shared_memory=str(int(statm[2]) * page_kib), status=state,
        cpu_usage=f"{cpu:.1f}",
        memory_usage=f"{100.0 * rss_kib / mem_total:.1f}" if mem_total else "0.0",
        time=_cpu_time(ticks, hz), command=comm)


def processes(proc: Path = Path("/proc")) -> list[ProcessInfoEntry]:
    """Every process /proc shows, busiest first (then by pid)."""
    hz = os.sysconf("SC_CLK_TCK")
    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
    try:
        uptime = float(_read(proc / "uptime").split()[0])
    except (IndexError, ValueError):
        uptime = 0.0
    mem_total = _meminfo_kib(proc)
    users: dict[int, str] = {}
    found: list[tuple[float, int, ProcessInfoEntry]] = []
    try:
        entries = list(proc.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        got = _process(entry, hz=hz, page_kib=page_kib, uptime=uptime, mem_total=mem_total,
                       users=users)
        if got is not None:
            found.append((-got[0], int(entry.name), got[1]))
    found.sort(key=lambda item: (item[0], item[1]))
    return [entry for _, _, entry in found]


def _os_name(etc: Path) -> str:
    for line in _read(etc / "os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"')
    return _read(etc / "issue").replace("\\n", "").replace("\\l", "").strip()


def device(proc: Path = Path("/proc"), etc: Path = Path("/etc")) -> DeviceInfoEntry:
    uname = platform.uname()
    uptime = _read(proc / "uptime").split()
    return DeviceInfoEntry(
        host_name=socket.gethostname(), machine_id=_read(etc / "machine-id"),
        boot_id=_read(proc / "sys/kernel/random/boot_id"), os=_os_name(etc),
        kernel=f"{uname.system} {uname.release} {uname.version}".strip(),
        architecture=uname.machine, uptime=uptime[0] if uptime else "")


def human(size: int) -> str:
    """df -h: powers of 1024, rounded up, one decimal below 10 (`3.9G`, `20G`, `512`)."""
    if size < 1024:
        return str(size)
    value = float(size)
    units = iter("KMGTPE")
    unit = next(units)
    value /= 1024
    for larger in units:
        if math.ceil(value) < 1024:
            break
        value /= 1024
        unit = larger
    if value < 10 and math.ceil(value * 10) < 100:
        return f"{math.ceil(value * 10) / 10:.1f}{unit}"
    return f"{math.ceil(value)}{unit}"


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def filesystems(mounts: Path = Path("/proc/self/mounts")) -> list[FileSystemInfoEntry]:
    out: list[FileSystemInfoEntry] = []
    seen: set[str] = set()
    for line in _read(mounts).splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        source, target, fstype = _unescape(parts[0]), _unescape(parts[1]), parts[2]
        if fstype in _PSEUDO or target in seen:
            continue
        try:
            st = os.statvfs(target)
        except OSError:
            continue
        if st.f_blocks == 0:
            continue
        seen.add(target)
        size = st.f_blocks * st.f_frsize
        free = st.f_bfree * st.f_frsize
        avail = st.f_bavail * st.f_frsize
        used = size - free
        # df: used / (used + available), rounded up
        base = used + avail
        pct = -(-used * 100 // base) if base else 0
        out.append(FileSystemInfoEntry(
            file_system=source, type=fstype, size=human(size), used=human(used),
            avail=human(avail), use_percent=f"{pct}%", mounted_on=target))
    return out


def status_router() -> APIRouter:
    router = APIRouter(prefix="/status", tags=["status"], route_class=LoxiRoute)

    @router.get("/process", summary="Processes on the device, busiest first (top)",
                response_model=ProcessList)
    def get_process() -> dict[str, Any]:
        return ProcessList(process_attr=processes()).wire()

    @router.get("/device", summary="The device: host, machine and boot ids, OS, kernel, "
                "architecture, uptime", response_model=DeviceInfoEntry)
    def get_device() -> dict[str, Any]:
        return device().wire()

    @router.get("/filesystem", summary="Mounted file systems and their use (df)",
                response_model=FileSystemList)
    def get_filesystem() -> dict[str, Any]:
        return FileSystemList(filesystem_attr=filesystems()).wire()

    return router
