"""Wire models of loxilb's operational routes: /config/params, /status/*, /config/cors, /logs.

Field names are loxilb's swagger's (OperParams, ProcessInfoEntry, DeviceInfoEntry,
FileSystemInfoEntry, CorsEntry, Logs, LogArchives). Every status value is a string, as there.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from pydantic import Field

from pyloxi.model.base import HostText, WireModel, wire_names

# loxilb's log levels (OperParams enum), most verbose first
LogLevel = Literal["trace", "debug", "info", "notice", "warning", "error", "critical", "alert",
                   "emergency"]
LOG_LEVELS: Final[tuple[str, ...]] = get_args(LogLevel)
MAX_CORS_ORIGINS: Final = 64


class OperParams(WireModel):
    model_config = wire_names(log_level="logLevel")

    log_level: LogLevel


class ProcessInfoEntry(WireModel):
    model_config = wire_names(
        pid="pid", user="user", priority="priority", nice="nice", virt_memory="virtMemory",
        resident_size="residentSize", shared_memory="sharedMemory", status="status",
        cpu_usage="CPUUsage", memory_usage="MemoryUsage", time="time", command="command",
    )  # fmt: skip

    pid: str = ""
    user: str = ""
    priority: str = ""
    nice: str = ""
    virt_memory: str = ""  # KiB, as top's VIRT
    resident_size: str = ""  # KiB, RES
    shared_memory: str = ""  # KiB, SHR
    status: str = ""  # R S D Z T ...
    cpu_usage: str = ""  # % of one CPU over the process's life, as ps %cpu
    memory_usage: str = ""  # % of MemTotal
    time: str = ""  # CPU time, top's TIME+ (m:ss.hh)
    command: str = ""


class ProcessList(WireModel):
    model_config = wire_names(process_attr="processAttr")

    process_attr: list[ProcessInfoEntry] = Field(default_factory=list)


class DeviceInfoEntry(WireModel):
    model_config = wire_names(
        host_name="hostName", machine_id="machineID", boot_id="bootID", os="OS",
        kernel="kernel", architecture="architecture", uptime="uptime",
    )  # fmt: skip

    host_name: str = ""
    machine_id: str = ""
    boot_id: str = ""
    os: str = ""
    kernel: str = ""
    architecture: str = ""
    uptime: str = ""  # seconds since boot (the first number of /proc/uptime)


class FileSystemInfoEntry(WireModel):
    model_config = wire_names(
        file_system="fileSystem", type="type", size="size", used="used", avail="avail",
        use_percent="usePercent", mounted_on="mountedOn",
    )  # fmt: skip

    file_system: str = ""
    type: str = ""
    size: str = ""  # df -h units
    used: str = ""
    avail: str = ""
    use_percent: str = ""
    mounted_on: str = ""


class FileSystemList(WireModel):
    model_config = wire_names(filesystem_attr="filesystemAttr")

    filesystem_attr: list[FileSystemInfoEntry] = Field(default_factory=list)


class CorsEntry(WireModel):
    model_config = wire_names(cors="cors")

    cors: list[HostText] = Field(max_length=MAX_CORS_ORIGINS)


class CorsList(WireModel):
    model_config = wire_names(cors_attr="corsAttr")

    cors_attr: list[str] = Field(default_factory=list)


class Logs(WireModel):
    model_config = wire_names(
        logs="logs", log_file="log_file", log_count="log_count", total_size="total_size",
        has_more="has_more", next_cursor="next_cursor", scanned_bytes="scanned_bytes",
    )  # fmt: skip

    logs: list[str] = Field(default_factory=list)
    log_file: str = ""
    log_count: int
    total_size: int
    has_more: bool
    next_cursor: str | None = None
    scanned_bytes: int


class LogArchiveInfo(WireModel):
    model_config = wire_names(name="name", size_bytes="size_bytes", modified="modified")

    name: str
    size_bytes: int
    modified: str  # RFC 3339


class LogArchives(WireModel):
    model_config = wire_names(archives="archives", archive_info="archive_info")

    archives: list[str] = Field(default_factory=list)
    archive_info: list[LogArchiveInfo] = Field(default_factory=list)
