"""Operational verbs (loxicmd get_param.go, set_param.go, get_status.go, get_lbversion.go):

    pyloxi set log-level <level>      POST /config/params (trace debug info notice warning error
                                      critical alert emergency)
    pyloxi get log-level              Param Name / Value
    pyloxi get process                the device's processes (top), busiest first
    pyloxi get device                 host, machine id, OS, kernel ... (loxicmd defines it but
    pyloxi get filesystem             never registers it; so is filesystem)
    pyloxi get lbversion              the daemon's version and build info

`-o json` prints the API's body; `-o wide` is the table (these objects have no wider form).
"""

from __future__ import annotations

from typing import Annotated

import typer

from pyloxi.cli import render
from pyloxi.cli.client import client_for, reporting, settings_of
from pyloxi.cli.groups import get_app, set_app
from pyloxi.cli.parse import InputError
from pyloxi.model.status import (
    LOG_LEVELS,
    DeviceInfoEntry,
    FileSystemList,
    OperParams,
    ProcessList,
)

PARAMS_PATH = "/config/params"
PARAM_COLUMNS = ("Param Name", "Value")  # loxicmd's PARAM_TITLE
PROCESS_COLUMNS = ("pid", "user", "priority", "nice", "virtMemory", "residentSize",
                   "sharedMemory", "status", "CPUUsage", "MemoryUsage", "time", "command")
DEVICE_COLUMNS = ("hostName", "machineID", "bootID", "OS", "kernel", "architecture", "uptime")
FILESYSTEM_COLUMNS = ("fileSystem", "type", "size", "used", "avail", "usePercent", "mountedOn")
LBVERSION_COLUMNS = ("LoxiLB Version", "LoxiLB Build Info")  # loxicmd's LBVERSION_TITLE


@set_app.command("log-level")
def set_log_level(
    ctx: typer.Context,
    level: Annotated[str, typer.Argument(help=f"one of {', '.join(LOG_LEVELS)}",
                                         metavar="LEVEL")],
) -> None:
    """Set the daemon's log level (takes effect at once; a restart takes --loglevel again)."""
    with reporting():
        if level not in LOG_LEVELS:
            raise InputError(f"set log-level in the {','.join(LOG_LEVELS)}")
        with client_for(ctx) as client:
            client.post(PARAMS_PATH, OperParams(log_level=level).wire())  # type: ignore[arg-type]
    typer.echo(f"log level set to {level}")


@get_app.command("log-level")
def get_log_level(ctx: typer.Context) -> None:
    """Show the daemon's log level."""
    with reporting():
        params = render.get_answer(ctx, PARAMS_PATH, OperParams)
    if params is None:
        return
    render.print_table(PARAM_COLUMNS, [["Log level", params.log_level]])


@get_app.command("process")
def get_process(ctx: typer.Context) -> None:
    """Show the processes of the daemon's device, busiest first (as top)."""
    with reporting():
        procs = render.get_answer(ctx, "/status/process", ProcessList)
    if procs is None:
        return
    render.print_table(PROCESS_COLUMNS, [
        [p.pid, p.user, p.priority, p.nice, p.virt_memory, p.resident_size, p.shared_memory,
         p.status, p.cpu_usage, p.memory_usage, p.time, p.command] for p in procs.process_attr])


@get_app.command("device")
def get_device(ctx: typer.Context) -> None:
    """Show the daemon's device: host name, machine and boot ids, OS, kernel, uptime."""
    with reporting():
        d = render.get_answer(ctx, "/status/device", DeviceInfoEntry)
    if d is None:
        return
    render.print_table(DEVICE_COLUMNS, [[d.host_name, d.machine_id, d.boot_id, d.os, d.kernel,
                                         d.architecture, d.uptime]])


@get_app.command("filesystem")
def get_filesystem(ctx: typer.Context) -> None:
    """Show the mounted file systems of the daemon's device (as df -hT)."""
    with reporting():
        fss = render.get_answer(ctx, "/status/filesystem", FileSystemList)
    if fss is None:
        return
    render.print_table(FILESYSTEM_COLUMNS, [
        [f.file_system, f.type, f.size, f.used, f.avail, f.use_percent, f.mounted_on]
        for f in fss.filesystem_attr])


@get_app.command("lbversion")
def get_lbversion(ctx: typer.Context) -> None:
    """Show the daemon's version and build info."""
    settings = settings_of(ctx)
    with reporting(), client_for(ctx) as client:
        data = client.get("/version")
    if settings.json:
        render.print_json(data)
        return
    if not isinstance(data, dict):
        data = {}
    render.print_table(LBVERSION_COLUMNS, [[str(data.get("version", "")),
                                            str(data.get("buildInfo", ""))]])


# loxicmd's aliases
get_app.command("loglevel", hidden=True)(get_log_level)
set_app.command("loglevel", hidden=True)(set_log_level)
get_app.command("processes", hidden=True)(get_process)
get_app.command("devices", hidden=True)(get_device)
get_app.command("fs", hidden=True)(get_filesystem)
for _alias in ("LBversion", "LBVersion", "llbversion"):
    get_app.command(_alias, hidden=True)(get_lbversion)
