"""`pyloxi create|get|delete session|sessionulcl` (loxicmd's GTP verbs).

    pyloxi create session user1 192.168.20.1 --accessNetworkTunnel=1:1.232.16.1 \\
                          --coreNetworkTunnel=1:1.233.16.1
    pyloxi create sessionulcl user1 --ulclArgs=16:192.33.125.1      # <QFI>:<ulclIP>
    pyloxi get session | sessionulcl [-o json]
    pyloxi delete session user1 ; pyloxi delete sessionulcl user1 --ulclAddress=192.33.125.1

pyloxi has no GTP-U datapath: the daemon checks these and answers 501 (docs/api.md).
"""

from __future__ import annotations

from typing import Annotated

import typer

from pyloxi.cli import render
from pyloxi.cli.client import client_for, path_segment, reporting, settings_of
from pyloxi.cli.groups import create_app, delete_app, get_app
from pyloxi.cli.parse import InputError, parse_int, parse_ip
from pyloxi.model.session import MAX_QFI, SessionList, UlclList

SESSION_PATH = "/config/session"
ULCL_PATH = "/config/sessionulcl"
SESSION_COLUMNS = ("Ident", "Session IP", "Access Network Tunnel", "Core Network Tunnel")
ULCL_COLUMNS = ("Ident", "ULCL IP", "QFI")


def _pair(text: str, opt: str, hi: int) -> tuple[int, str]:
    """'<number>:<ip>' -> (number, ip)."""
    number, sep, ip = text.partition(":")
    if not sep:
        raise InputError(f"invalid {opt} {text!r}: <number>:<IP>")
    return parse_int(number, opt, 0, hi), parse_ip(ip, f"{opt} IP")


@create_app.command("session")
def create_session(
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(help="user identifier")],
    session_ip: Annotated[str, typer.Argument(metavar="SESSION_IP", help="user's IP")],
    an_tun: Annotated[str, typer.Option("--accessNetworkTunnel", help="<TeID>:<IP>")] = "",
    cn_tun: Annotated[str, typer.Option("--coreNetworkTunnel", help="<TeID>:<IP>")] = "",
) -> None:
    """Create a GTP user session (the daemon answers 501: no GTP-U datapath)."""
    with reporting():
        an = _pair(an_tun, "--accessNetworkTunnel", 2**32 - 1)
        cn = _pair(cn_tun, "--coreNetworkTunnel", 2**32 - 1)
        body = {"ident": ident, "sessionIP": parse_ip(session_ip, "session IP"),
                "accessNetworkTunnel": {"TeID": an[0], "tunnelIP": an[1]},
                "coreNetworkTunnel": {"TeID": cn[0], "tunnelIP": cn[1]}}
        with client_for(ctx) as client:
            client.post(SESSION_PATH, body)
    typer.echo(f"created session {ident}")


@create_app.command("sessionulcl")
def create_ulcl(
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(help="user identifier")],
    args: Annotated[str, typer.Option("--ulclArgs", help="<QFI>:<ulclIP>")] = "",
) -> None:
    """Create a ULCL filter (the daemon answers 501: no GTP-U datapath)."""
    with reporting():
        qfi, ip = _pair(args, "--ulclArgs", MAX_QFI)
        with client_for(ctx) as client:
            client.post(ULCL_PATH, {"ulclIdent": ident,
                                    "ulclArgument": {"qfi": qfi, "ulclIP": ip}})
    typer.echo(f"created sessionulcl {ident}")


@get_app.command("session")
def get_sessions(ctx: typer.Context) -> None:
    """List GTP user sessions."""
    settings = settings_of(ctx)
    with reporting(), client_for(ctx) as client:
        data = client.get(f"{SESSION_PATH}/all")
        if settings.json:
            render.print_json(data)
            return
        entries = render.parse_answer(SessionList, data).attr
    render.print_table(SESSION_COLUMNS, [
        [e.ident, e.session_ip, f"{e.an_tun.teid}:{e.an_tun.tunnel_ip}",
         f"{e.cn_tun.teid}:{e.cn_tun.tunnel_ip}"] for e in entries])


@get_app.command("sessionulcl")
def get_ulcls(ctx: typer.Context) -> None:
    """List ULCL filters."""
    settings = settings_of(ctx)
    with reporting(), client_for(ctx) as client:
        data = client.get(f"{ULCL_PATH}/all")
        if settings.json:
            render.print_json(data)
            return
        entries = render.parse_answer(UlclList, data).attr
    render.print_table(ULCL_COLUMNS, [[e.ident, e.args.ulcl_ip, e.args.qfi] for e in entries])


@delete_app.command("session")
def delete_session(ctx: typer.Context,
                   ident: Annotated[str, typer.Argument(help="user identifier")]) -> None:
    """Delete a GTP user session."""
    with reporting(), client_for(ctx) as client:
        client.delete(f"{SESSION_PATH}/ident/{path_segment(ident)}")
    typer.echo(f"deleted session {ident}")


@delete_app.command("sessionulcl")
def delete_ulcl(
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(help="user identifier")],
    address: Annotated[str, typer.Option("--ulclAddress", help="the filter's ULCL IP")] = "",
) -> None:
    """Delete a ULCL filter."""
    with reporting():
        ip = parse_ip(address, "--ulclAddress")
        with client_for(ctx) as client:
            client.delete(f"{ULCL_PATH}/ident/{path_segment(ident)}/ulclAddress/"
                          f"{path_segment(ip)}")
    typer.echo(f"deleted sessionulcl {ident}")


create_app.command("ulcl", hidden=True)(create_ulcl)
get_app.command("ulcl", hidden=True)(get_ulcls)
delete_app.command("ulcl", hidden=True)(delete_ulcl)
