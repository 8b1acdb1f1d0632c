"""`pyloxi create|get|set|delete bfd` (loxicmd's bfd verbs): the built-in BFD sessions.

    pyloxi create bfd 32.32.32.2 --instance=llb-inst0 --sourceIP=32.32.32.1 \\
                      --interval=200000 --retryCount=3
    pyloxi set bfd 32.32.32.2 --instance=llb-inst0 --interval=300000 --retryCount=5
    pyloxi get bfd [-o json]
    pyloxi delete bfd 32.32.32.2 [--instance=llb-inst0]

`set bfd` is the same POST with new parameters: loxilb changes the running session's.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pyloxi.cli import render
from pyloxi.cli.client import client_for, path_segment, reporting, settings_of
from pyloxi.cli.groups import create_app, delete_app, get_app, set_app
from pyloxi.cli.parse import InputError, parse_int, parse_ip
from pyloxi.model.bfd import MAX_TX_INTERVAL_US, BfdEntry, BfdList
from pyloxi.model.cluster import DEFAULT_INSTANCE

BFD_PATH = "/config/bfd"
BFD_COLUMNS = ("Instance", "RemoteIP", "SourceIP", "Port", "Interval", "Retry Count", "State")

Instance = Annotated[str, typer.Option("--instance", help="HA instance the session decides")]
Interval = Annotated[int, typer.Option(
    "--interval", help="TX interval in microseconds (>= 100000; 0: 200000)")]
Retries = Annotated[int, typer.Option(
    "--retryCount", help="packets missed before the peer is lost (0: 3)")]


def build_bfd(remote: str, *, instance: str = DEFAULT_INSTANCE, source: str = "0.0.0.0",
              interval: int = 0, retries: int = 0) -> BfdEntry:
    """The POST /config/bfd body. Raises InputError on bad input (nothing is sent)."""
    if interval and interval < 100_000:
        raise InputError(f"invalid --interval {interval}: at least 100000 us")
    return BfdEntry(instance=instance, remote_ip=parse_ip(remote, "remote IP"),
                    source_ip=parse_ip(source, "--sourceIP"),
                    interval=parse_int(interval, "--interval", 0, MAX_TX_INTERVAL_US),
                    retry_count=parse_int(retries, "--retryCount", 0, 255))


@create_app.command("bfd")
def create_bfd(
    ctx: typer.Context,
    remote: Annotated[str, typer.Argument(metavar="REMOTE_IP", help="the peer's address")],
    instance: Instance = DEFAULT_INSTANCE,
    source: Annotated[str, typer.Option(
        "--sourceIP", help="this node's address (0.0.0.0: the route's source)")] = "0.0.0.0",
    interval: Interval = 0,
    retries: Retries = 0,
) -> None:
    """Start a BFD session with a peer; its election sets the instance's HA state."""
    with reporting():
        entry = build_bfd(remote, instance=instance, source=source, interval=interval,
                          retries=retries)
        with client_for(ctx) as client:
            client.post(BFD_PATH, entry.wire())
    typer.echo(f"created bfd {entry.remote_ip}")


@set_app.command("bfd")
def set_bfd(
    ctx: typer.Context,
    remote: Annotated[str, typer.Argument(metavar="REMOTE_IP", help="the peer's address")],
    instance: Instance = DEFAULT_INSTANCE,
    interval: Interval = 0,
    retries: Retries = 0,
) -> None:
    """Change a BFD session's interval and retry count."""
    with reporting():
        entry = build_bfd(remote, instance=instance, interval=interval, retries=retries)
        with client_for(ctx) as client:
            client.post(BFD_PATH, entry.wire())
    typer.echo(f"set bfd {entry.remote_ip}")


@get_app.command("bfd")
def get_bfd(ctx: typer.Context) -> None:
    """List the BFD sessions and their state (-o json: the API body)."""
    settings = settings_of(ctx)
    with reporting(), client_for(ctx) as client:
        data = client.get(f"{BFD_PATH}/all")
        if settings.json:
            render.print_json(data)
            return
        entries = render.parse_answer(BfdList, data).attr
    render.print_table(BFD_COLUMNS, [[e.instance, e.remote_ip, e.source_ip, e.port, e.interval,
                                      e.retry_count, e.state] for e in entries])


@delete_app.command("bfd")
def delete_bfd(
    ctx: typer.Context,
    remote: Annotated[str, typer.Argument(metavar="REMOTE_IP", help="the peer's address")],
    instance: Annotated[str, typer.Option("--instance", help="HA instance (checked)")] = "",
) -> None:
    """Delete a BFD session (the peer hears AdminDown)."""
    with reporting():
        peer = parse_ip(remote, "remote IP")
        with client_for(ctx) as client:
            client.delete(f"{BFD_PATH}/remoteIP/{path_segment(peer)}",
                          params={"instance": instance} if instance else None)
    typer.echo(f"deleted bfd {peer}")
