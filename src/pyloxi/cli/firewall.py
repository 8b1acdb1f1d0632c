"""`pyloxi create|get|delete firewall` (loxicmd's firewall / fw verbs).

    pyloxi create firewall --firewallRule="sourceIP:1.2.3.2/32,destinationIP:2.3.1.2/32,preference:200" --allow [--setmark=10]
    pyloxi create firewall --firewallRule="..." --drop
    pyloxi create firewall --firewallRule="sourceIP:10.0.0.0/24" --snat=10.10.10.1[,3030] [--egress]
    pyloxi create firewall --firewallRule="..." --trap
    pyloxi create firewall --firewallRule="..." --redirect=eth1
    pyloxi get firewall [-o json]
    pyloxi delete firewall --firewallRule="sourceIP:1.2.3.2/32,destinationIP:2.3.1.2/32,preference:200"

Rule keys: sourceIP, destinationIP, minSourcePort, maxSourcePort, minDestinationPort,
maxDestinationPort, protocol, portName, preference. --snat=IP[,port] is egress SNAT (doSnat,
toIP, toPort; port 0 or none: allocated); --egress (onDefault) makes it active only while this
node is not HA BACKUP. --trap: matching packets go to this host's own stack untouched (no
load balancing); --redirect=IFACE: out of that interface untouched. loxicmd's --record is sent
as loxilb would; the daemon refuses it (packet tracing is not supported).
"""  # noqa: E501

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError

from pyloxi.cli import render
from pyloxi.cli.client import client_for, reporting, settings_of
from pyloxi.cli.groups import create_app, delete_app, get_app
from pyloxi.cli.parse import InputError
from pyloxi.model.firewall import (
    FirewallEntry,
    FirewallList,
    FirewallOptionEntry,
    FirewallRuleEntry,
)

FW_PATH = "/config/firewall"
FW_COLUMNS = ("Source", "Destination", "SrcPorts", "DstPorts", "Proto", "Port", "Pref",
              "Action", "Mark", "Counter")
_KEYS = ("sourceIP", "destinationIP", "minSourcePort", "maxSourcePort", "minDestinationPort",
         "maxDestinationPort", "protocol", "portName", "preference")
_INTS = {"minSourcePort", "maxSourcePort", "minDestinationPort", "maxDestinationPort",
         "protocol", "preference"}


def parse_rule(text: str) -> FirewallRuleEntry:
    """--firewallRule="key:value,..." as ruleArguments. Raises InputError."""
    data: dict[str, Any] = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        key, sep, value = item.partition(":")
        match = {k.lower(): k for k in _KEYS}.get(key.strip().lower())
        if not sep or match is None:
            raise InputError(f"--firewallRule: {item!r} is not one of {', '.join(_KEYS)}:value")
        if match in _INTS:
            if not value.isdigit():
                raise InputError(f"--firewallRule: {match} {value!r} is not an integer")
            data[match] = int(value)
        else:
            data[match] = value.strip()
    try:
        return FirewallRuleEntry.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"--firewallRule: {exc.errors()[0]['msg']}") from None


def _query(args: FirewallRuleEntry) -> dict[str, Any]:
    return {k: v for k, v in args.wire().items() if v not in ("", 0)}


RuleOpt = Annotated[str, typer.Option("--firewallRule", help="key:value,... (see --help)")]


@create_app.command("firewall")
def create_firewall(
    ctx: typer.Context,
    rule: RuleOpt,
    allow: Annotated[bool, typer.Option("--allow", help="forward matching packets")] = False,
    drop: Annotated[bool, typer.Option("--drop", help="drop matching packets")] = False,
    trap: Annotated[bool, typer.Option("--trap", help="to this host's own stack, "
                                       "untouched (no load balancing)")] = False,
    redirect: Annotated[str, typer.Option("--redirect", help="IFACE: out of that interface, "
                                           "untouched")] = "",
    snat: Annotated[str, typer.Option("--snat", help="IP[,port]: egress SNAT to IP (port: "
                                      "exactly that source port; none: allocated)")] = "",
    egress: Annotated[bool, typer.Option("--egress", help="with --snat: only while this "
                                         "node is not HA BACKUP (onDefault)")] = False,
    record: Annotated[bool, typer.Option("--record", help="(refused: packet tracing is not "
                                         "supported)")] = False,
    setmark: Annotated[int, typer.Option("--setmark", help="with --allow: skb mark")] = 0,
) -> None:
    """Add a firewall rule (no action: drop)."""
    with reporting():
        args = parse_rule(rule)
        to_ip, _, to_port = snat.partition(",")
        try:
            opts = FirewallOptionEntry(
                allow=allow, drop=drop, trap=trap, redirect=bool(redirect),
                redirect_port_name=redirect, record=record, fw_mark=setmark,
                do_snat=bool(snat), to_ip=to_ip.strip(), to_port=int(to_port or 0),
                on_default=egress)
        except (ValidationError, ValueError) as exc:
            raise InputError(f"bad option: {exc}") from None
        entry = FirewallEntry(rule_arguments=args, opts=opts)
        with client_for(ctx) as client:
            client.post(FW_PATH, entry.model_dump(by_alias=True, mode="json",
                                                  exclude={"opts": {"counter"}}))
    typer.echo("created firewall rule")


def _action(o: FirewallOptionEntry) -> str:
    if o.do_snat:
        return f"snat-{o.to_ip}:{o.to_port}" + (" (egress)" if o.on_default else "")
    if o.redirect:
        return f"redirect-{o.redirect_port_name}"
    if o.trap:
        return "trap"
    return "allow" if o.allow else "drop"


def _ports(lo: int, hi: int) -> str:
    if lo == 0 and hi == 0:
        return "any"
    return str(lo) if hi in (0, lo) else f"{lo}-{hi}"


def get_firewall(ctx: typer.Context) -> None:
    """List firewall rules, highest preference first, with their counters (packets:bytes)."""
    settings = settings_of(ctx)
    with reporting(), client_for(ctx) as client:
        data = client.get(f"{FW_PATH}/all")
        if settings.json:
            render.print_json(data)
            return
        entries = render.parse_answer(FirewallList, data).fw_attr
    rows = []
    for e in entries:
        a, o = e.rule_arguments, e.opts
        rows.append([a.source_ip or "any", a.destination_ip or "any",
                     _ports(a.min_source_port, a.max_source_port),
                     _ports(a.min_destination_port, a.max_destination_port),
                     a.protocol or "any", a.port_name or "any", a.preference,
                     _action(o), o.fw_mark or "", o.counter])
    render.print_table(FW_COLUMNS, rows)


@delete_app.command("firewall")
def delete_firewall(ctx: typer.Context, rule: RuleOpt) -> None:
    """Delete a firewall rule (the same --firewallRule it was created with)."""
    with reporting():
        args = parse_rule(rule)
        with client_for(ctx) as client:
            client.delete(FW_PATH, params=_query(args))
    typer.echo("deleted firewall rule")


get_app.command("firewall")(get_firewall)
get_app.command("fw", hidden=True)(get_firewall)
create_app.command("fw", hidden=True)(create_firewall)
delete_app.command("fw", hidden=True)(delete_firewall)
