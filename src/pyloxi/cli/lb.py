"""`pyloxi create lb`, `get lb`, `delete lb` (loxicmd C/cmd/create/create_loadbalancer.go …)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pyloxi.cli import render
from pyloxi.cli.client import (
    ApiError,
    Client,
    client_for,
    path_segment,
    reporting,
    settings_of,
)
from pyloxi.cli.groups import create_app, delete_app, get_app
from pyloxi.cli.parse import (
    MODE_NAMES,
    PROBE_NAMES,
    SELECT_NAMES,
    InputError,
    PortSpec,
    parse_choice,
    parse_cidrs,
    parse_delete_ports,
    parse_endpoints,
    parse_int,
    parse_ip,
    parse_port_specs,
    split_list,
)
from pyloxi.model.enums import Oper, ProbeType, Protocol
from pyloxi.model.lb import (
    AllowedSource,
    Endpoint,
    LoadBalancerEntry,
    LoadBalancerList,
    SecondaryIP,
    ServiceArguments,
)
from pyloxi.model.limits import (
    MAX_IDLE_TIMEOUT,
    MAX_PROBE_RETRIES,
    MAX_PROBE_TIMEOUT,
    PORT_MAX,
    UINT32_MAX,
)

LB_PATH = "/config/loadbalancer"


def build_rules(
    vip: str,
    *,
    tcp: list[str] | None = None,
    udp: list[str] | None = None,
    sctp: list[str] | None = None,
    icmp: bool = False,
    endpoints: list[str] | None = None,
    select: str = "rr",
    mode: str = "default",
    inatimeout: int = 0,
    name: str = "",
    sources: list[str] | None = None,
    secips: list[str] | None = None,
    mark: int = 0,
    bgp: bool = False,
    monitor: bool = False,
    probetype: str = "",
    probeport: int = 0,
    probereq: str = "",
    proberesp: str = "",
    probetimeout: int = 0,
    proberetries: int = 0,
    attach: bool = False,
    detach: bool = False,
) -> list[LoadBalancerEntry]:
    """The rules `create lb` posts: one per (protocol, port pair). Raises InputError (an option
    the CLI can name) or ValidationError (a value the wire model refuses, e.g. a long name)."""
    vip_ip = parse_ip(vip, "VIP")
    rules: list[tuple[Protocol, PortSpec]] = []
    for proto, values in ((Protocol.TCP, tcp), (Protocol.UDP, udp), (Protocol.SCTP, sctp)):
        rules += [(proto, spec) for spec in parse_port_specs(values, f"--{proto}")]
    if icmp:
        rules.append((Protocol.ICMP, PortSpec(0, 0, 0)))
    if not rules:
        raise InputError("no service port: give --tcp, --udp, --sctp (PORT:TARGET) or --icmp")
    eps = parse_endpoints(endpoints)
    if not eps:
        raise InputError("no endpoints: give --endpoints=IP:WEIGHT[,IP:WEIGHT...]")
    if attach and detach:
        raise InputError("--attachEP and --detachEP exclude each other")
    sel = parse_choice(select, SELECT_NAMES, "--select")
    nat = parse_choice(mode, MODE_NAMES, "--mode")
    ptype = parse_choice(probetype, PROBE_NAMES, "--probetype") if probetype.strip() else None
    parse_int(probeport, "--probeport", 0, PORT_MAX)
    parse_int(inatimeout, "--inatimeout", 0, MAX_IDLE_TIMEOUT)
    parse_int(probetimeout, "--probetimeout", 0, MAX_PROBE_TIMEOUT)
    parse_int(proberetries, "--proberetries", 0, MAX_PROBE_RETRIES)
    parse_int(mark, "--mark", 0, UINT32_MAX)
    allowed = [AllowedSource(prefix=p) for p in parse_cidrs(sources)] or None
    secondary = [SecondaryIP(secondary_ip=parse_ip(a, "secondary IP")) for a in split_list(secips)]
    oper = Oper.ATTACH if attach else Oper.DETACH if detach else Oper.CREATE

    entries = []
    for proto, spec in rules:
        svc = ServiceArguments(
            external_ip=vip_ip,
            port=spec.port,
            port_max=spec.port_max,
            protocol=proto,
            sel=sel,
            mode=nat,
            bgp=bgp,
            monitor=monitor or ptype not in (None, ProbeType.NONE),
            probe_type=ptype or "",
            probe_port=probeport,
            probe_req=probereq,
            probe_resp=proberesp,
            probe_timeout=probetimeout,
            probe_retries=proberetries,
            block=mark,
            inactive_timeout=inatimeout,
            name=name,
            oper=oper,
        )
        entries.append(
            LoadBalancerEntry(
                service_arguments=svc,
                endpoints=[
                    Endpoint(endpoint_ip=ip, target_port=spec.target, weight=w) for ip, w in eps
                ],
                secondary_ips=secondary or None,
                allowed_sources=allowed,
            )
        )
    return entries


def rule_label(entry: LoadBalancerEntry) -> str:
    s = entry.service_arguments
    return f"{render.host_text(s.external_ip)}:{render.port_text(s.port, s.port_max)}/{s.protocol}"


@create_app.command("lb")
def create_lb(
    ctx: typer.Context,
    vip: Annotated[str, typer.Argument(metavar="VIP", help="external (virtual) IP")],
    endpoints: Annotated[
        list[str] | None,
        typer.Option("--endpoints", metavar="IP:WEIGHT[,...]", help="backends, weight default 1"),
    ] = None,
    tcp: Annotated[
        list[str] | None,
        typer.Option("--tcp", metavar="PORTS", help="PORT:TARGET or PMIN-PMAX:TARGET"),
    ] = None,
    udp: Annotated[
        list[str] | None, typer.Option("--udp", metavar="PORTS", help="as --tcp, for UDP")
    ] = None,
    sctp: Annotated[
        list[str] | None, typer.Option("--sctp", metavar="PORTS", help="as --tcp, for SCTP")
    ] = None,
    icmp: Annotated[bool, typer.Option("--icmp", help="an ICMP (ping) rule")] = False,
    select: Annotated[
        str, typer.Option("--select", help="|".join(SELECT_NAMES))
    ] = "rr",
    mode: Annotated[
        str, typer.Option("--mode", help="|".join(MODE_NAMES))
    ] = "default",
    inatimeout: Annotated[int, typer.Option("--inatimeout", help="idle timeout, s")] = 0,
    name: Annotated[str, typer.Option("--name", help="service name")] = "",
    sources: Annotated[
        list[str] | None, typer.Option("--sources", metavar="CIDR[,...]", help="allowed sources")
    ] = None,
    secips: Annotated[
        list[str] | None, typer.Option("--secips", metavar="IP[,...]", help="SCTP secondary IPs")
    ] = None,
    mark: Annotated[int, typer.Option("--mark", help="block number (part of the rule key)")] = 0,
    bgp: Annotated[
        bool, typer.Option("--bgp", help="advertise the VIP with BGP (daemon --bgp)")
    ] = False,
    monitor: Annotated[bool, typer.Option("--monitor", help="probe the endpoints")] = False,
    probetype: Annotated[
        str, typer.Option("--probetype", help=f"{'|'.join(PROBE_NAMES)} (implies --monitor)")
    ] = "",
    probeport: Annotated[int, typer.Option("--probeport")] = 0,
    probereq: Annotated[str, typer.Option("--probereq")] = "",
    proberesp: Annotated[str, typer.Option("--proberesp")] = "",
    probetimeout: Annotated[int, typer.Option("--probetimeout", help="probe period, s")] = 0,
    proberetries: Annotated[int, typer.Option("--proberetries")] = 0,
    attach: Annotated[bool, typer.Option("--attachEP", help="add endpoints to the rule")] = False,
    detach: Annotated[
        bool, typer.Option("--detachEP", help="remove endpoints from the rule")
    ] = False,
) -> None:
    """Create a load-balancer rule (one per protocol and port pair).

    Example: pyloxi create lb 20.20.20.1 --tcp=80:8080 --endpoints=31.31.31.1:1,32.32.32.1:1
    """
    with reporting():
        entries = build_rules(
            vip,
            tcp=tcp,
            udp=udp,
            sctp=sctp,
            icmp=icmp,
            endpoints=endpoints,
            select=select,
            mode=mode,
            inatimeout=inatimeout,
            name=name,
            sources=sources,
            secips=secips,
            mark=mark,
            bgp=bgp,
            monitor=monitor,
            probetype=probetype,
            probeport=probeport,
            probereq=probereq,
            proberesp=proberesp,
            probetimeout=probetimeout,
            proberetries=proberetries,
            attach=attach,
            detach=detach,
        )
        with client_for(ctx) as client:
            _send_each(client, "POST",
                       [(rule_label(e), LB_PATH, e.request_body(), None) for e in entries])


def _send_each(
    client: Client, method: str, calls: list[tuple[str, str, Any, dict[str, Any] | None]]
) -> None:
    """Make every call; report each failure; exit 1 if any failed (connection loss stops)."""
    failed = 0
    verb = "created" if method == "POST" else "deleted"
    for label, path, body, params in calls:
        try:
            client.request(method, path, body=body, params=params)
        except ApiError as exc:
            if exc.code is None:  # not reachable: no point trying the rest
                raise
            failed += 1
            typer.echo(f"Error: {label}: {exc.message}", err=True)
            continue
        typer.echo(f"{verb} lb {label}")
    if failed:
        raise typer.Exit(1)


@get_app.command("lb")
def get_lb(ctx: typer.Context) -> None:
    """List load-balancer rules (-o wide: one row per endpoint; -o json: the API body)."""
    settings = settings_of(ctx)
    with reporting(), client_for(ctx) as client:
        data = client.get(f"{LB_PATH}/all")
        if settings.json:
            render.print_json(data)
            return
        rules = render.parse_answer(LoadBalancerList, data).lb_attr
    if settings.wide:
        render.print_table(render.LB_WIDE_COLUMNS, render.lb_rows(rules, wide=True))
    else:
        render.print_table(render.LB_COLUMNS, render.lb_rows(rules, wide=False))


get_app.command("loadbalancer", hidden=True)(get_lb)


def delete_calls(
    vip: str | None,
    *,
    tcp: list[str] | None = None,
    udp: list[str] | None = None,
    sctp: list[str] | None = None,
    icmp: bool = False,
    portmax: int = 0,
    mark: int = 0,
    bgp: bool = False,
    host: str = "",
    name: str = "",
    all_rules: bool = False,
) -> list[tuple[str, str, Any, dict[str, Any] | None]]:
    """(label, path, body, params) for each DELETE `delete lb` makes. Raises InputError."""
    chosen = sum(bool(x) for x in (vip, name, all_rules))
    if chosen != 1:
        raise InputError("give exactly one of: VIP with --tcp/--udp/--sctp/--icmp, --name, --all")
    if all_rules:
        return [("all rules", f"{LB_PATH}/all", None, None)]
    if name:
        return [(f"named {name!r}", f"{LB_PATH}/name/{path_segment(name)}", None, None)]
    assert vip is not None
    vip_ip = parse_ip(vip, "VIP")
    parse_int(mark, "--mark", 0, UINT32_MAX)
    parse_int(portmax, "--portmax", 0, PORT_MAX)
    keys: list[tuple[str, int, int]] = []
    for proto, values in (("tcp", tcp), ("udp", udp), ("sctp", sctp)):
        for port, pmax in parse_delete_ports(values, f"--{proto}"):
            if portmax and not pmax:
                if portmax < port:
                    raise InputError(f"invalid --portmax {portmax}: below port {port}")
                pmax = 0 if portmax == port else portmax
            keys.append((proto, port, pmax))
    if icmp:
        keys.append(("icmp", 0, 0))
    if not keys:
        raise InputError("no service port: give --tcp, --udp, --sctp (PORT[,PORT]) or --icmp")
    params: dict[str, Any] = {"block": mark}
    if bgp:
        params["bgp"] = "true"
    prefix = f"{LB_PATH}/hosturl/{path_segment(host)}" if host else LB_PATH
    calls: list[tuple[str, str, Any, dict[str, Any] | None]] = []
    for proto, port, pmax in keys:
        path = f"{prefix}/externalipaddress/{path_segment(vip_ip)}/port/{port}"
        if pmax:
            path += f"/portmax/{pmax}"
        path += f"/protocol/{proto}"
        label = f"{render.host_text(vip_ip)}:{render.port_text(port, pmax)}/{proto}"
        calls.append((label, path, None, dict(params)))
    return calls


@delete_app.command("lb")
def delete_lb(
    ctx: typer.Context,
    vip: Annotated[str | None, typer.Argument(metavar="[VIP]", show_default=False)] = None,
    tcp: Annotated[
        list[str] | None, typer.Option("--tcp", metavar="PORT[,...]", help="PORT or PMIN-PMAX")
    ] = None,
    udp: Annotated[list[str] | None, typer.Option("--udp", metavar="PORT[,...]")] = None,
    sctp: Annotated[list[str] | None, typer.Option("--sctp", metavar="PORT[,...]")] = None,
    icmp: Annotated[bool, typer.Option("--icmp")] = False,
    portmax: Annotated[int, typer.Option("--portmax", help="end of the port range")] = 0,
    mark: Annotated[int, typer.Option("--mark", help="block number of the rule")] = 0,
    bgp: Annotated[bool, typer.Option("--bgp")] = False,
    host: Annotated[str, typer.Option("--host", help="L7 host URL of the rule")] = "",
    name: Annotated[str, typer.Option("--name", help="delete every rule with this name")] = "",
    all_rules: Annotated[bool, typer.Option("--all", help="delete every rule")] = False,
) -> None:
    """Delete load-balancer rules: by key (VIP --tcp=80), by --name, or --all."""
    with reporting():
        calls = delete_calls(
            vip,
            tcp=tcp,
            udp=udp,
            sctp=sctp,
            icmp=icmp,
            portmax=portmax,
            mark=mark,
            bgp=bgp,
            host=host,
            name=name,
            all_rules=all_rules,
        )
        with client_for(ctx) as client:
            _send_each(client, "DELETE", calls)
