"""`pyloxi create endpoint`, `get endpoint|ep`, `delete endpoint` (loxicmd create/get/delete ep).

    pyloxi create endpoint 31.31.31.1 --probetype=tcp --probeport=8080 --period=5 --retries=2
    pyloxi get ep [-o wide|json]
    pyloxi delete endpoint 31.31.31.1 --probetype=tcp --probeport=8080
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pyloxi.cli import render
from pyloxi.cli.client import client_for, path_segment, reporting, settings_of
from pyloxi.cli.groups import create_app, delete_app, get_app
from pyloxi.cli.parse import PROBE_NAMES, InputError, parse_choice, parse_int, parse_ip
from pyloxi.model.endpoint import EndPoint, EndPointGetEntry, EndPointList
from pyloxi.model.enums import ProbeType
from pyloxi.model.limits import MAX_PROBE_PERIOD, MAX_PROBE_RETRIES, PORT_MAX

EP_PATH = "/config/endpoint"
EP_COLUMNS = ("Host", "Name", "PType", "Port", "Period", "Retries", "MinDelay", "AvgDelay",
              "MaxDelay", "State")
EP_WIDE_COLUMNS = (*EP_COLUMNS, "LastProbe", "Result", "Reason")


PORTED_PROBES = (ProbeType.TCP, ProbeType.UDP, ProbeType.SCTP)  # no default port


def build_endpoint(ip: str, *, name: str = "", probetype: str = "ping", probeport: int = 0,
                   probereq: str = "", proberesp: str = "", period: int = 10,
                   retries: int = 2) -> EndPoint:
    """The POST /config/endpoint object. Raises InputError on bad input (nothing is sent)."""
    host = parse_ip(ip, "endpoint IP")
    ptype = parse_choice(probetype, PROBE_NAMES, "--probetype")
    port = parse_int(probeport, "--probeport", 0, PORT_MAX)
    if ptype in PORTED_PROBES and port == 0:
        raise InputError(f"--probeport is required for {ptype} probes")
    return EndPoint(
        host_name=host, name=name, probe_type=ptype, probe_port=port, probe_req=probereq,
        probe_resp=proberesp, probe_duration=parse_int(period, "--period", 1, MAX_PROBE_PERIOD),
        inactive_retries=parse_int(retries, "--retries", 1, MAX_PROBE_RETRIES),
    )


@create_app.command("endpoint")
def create_endpoint(
    ctx: typer.Context,
    ip: Annotated[str, typer.Argument(metavar="IP", help="endpoint (host) IP")],
    name: Annotated[str, typer.Option("--name", help="endpoint id (default IP_TYPE_PORT)")] = "",
    probetype: Annotated[str, typer.Option(
        "--probetype", help="|".join(PROBE_NAMES))] = "ping",
    probeport: Annotated[int, typer.Option("--probeport", help="port to probe")] = 0,
    probereq: Annotated[str, typer.Option(
        "--probereq", help="request (http path, tcp/udp payload)")] = "",
    proberesp: Annotated[str, typer.Option("--proberesp", help="expected response")] = "",
    period: Annotated[int, typer.Option("--period", help="probe period, seconds")] = 10,
    retries: Annotated[int, typer.Option(
        "--retries", help="failed probes before the endpoint is down")] = 2,
) -> None:
    """Monitor an endpoint with a liveness probe."""
    with reporting():
        ep = build_endpoint(ip, name=name, probetype=probetype, probeport=probeport,
                            probereq=probereq, proberesp=proberesp, period=period,
                            retries=retries)
        with client_for(ctx) as client:
            client.post(EP_PATH, ep.wire())
    typer.echo(f"created endpoint {ep.name or ip}")


def ep_rows(entries: list[EndPointGetEntry], wide: bool) -> list[list[Any]]:
    rows = []
    for e in entries:
        row: list[Any] = [e.host_name, e.name, e.probe_type, e.probe_port, e.probe_duration,
                          e.inactive_retries, e.min_delay, e.avg_delay, e.max_delay, e.curr_state]
        if wide:
            row += [e.last_probe_time, e.last_probe_result, e.reason]
        rows.append(row)
    return rows


def get_endpoints(ctx: typer.Context) -> None:
    """List monitored endpoints and their state (-o wide adds last probe; -o json: API body)."""
    settings = settings_of(ctx)
    with reporting(), client_for(ctx) as client:
        data = client.get(f"{EP_PATH}/all")
        if settings.json:
            render.print_json(data)
            return
        entries = render.parse_answer(EndPointList, data).attr
    columns = EP_WIDE_COLUMNS if settings.wide else EP_COLUMNS
    render.print_table(columns, ep_rows(entries, settings.wide))


get_app.command("endpoint")(get_endpoints)
get_app.command("ep", hidden=True)(get_endpoints)


@delete_app.command("endpoint")
def delete_endpoint(
    ctx: typer.Context,
    ip: Annotated[str, typer.Argument(metavar="IP", help="endpoint (host) IP")],
    name: Annotated[str, typer.Option("--name", help="endpoint id")] = "",
    probetype: Annotated[str, typer.Option("--probetype")] = "ping",
    probeport: Annotated[int, typer.Option("--probeport")] = 0,
) -> None:
    """Stop monitoring an endpoint (by --name, or by IP, --probetype and --probeport)."""
    with reporting():
        host = parse_ip(ip, "endpoint IP")
        params: dict[str, Any] = {
            "probe_port": parse_int(probeport, "--probeport", 0, PORT_MAX)}
        if name:
            params["name"] = name
        params["probe_type"] = parse_choice(probetype, PROBE_NAMES, "--probetype").value
        with client_for(ctx) as client:
            client.delete(f"{EP_PATH}/epipaddress/{path_segment(host)}", params=params)
    typer.echo(f"deleted endpoint {name or host}")


delete_app.command("ep", hidden=True)(delete_endpoint)
create_app.command("ep", hidden=True)(create_endpoint)
