"""`pyloxi create|get|delete bgpneighbor` (loxicmd's bgpneighbor / bgpnei verbs).

    pyloxi create bgpneighbor 10.10.10.1 64512 [--remotePort=179] [--setMultiHtop]
    pyloxi get bgpneighbor [-o json]
    pyloxi delete bgpneighbor 10.10.10.1 [--remoteAs=64512]

There is no loxicmd verb for the BGP global config: it is POST /config/bgp/global.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pyloxi.cli import render
from pyloxi.cli.client import client_for, path_segment, reporting, settings_of
from pyloxi.cli.groups import create_app, delete_app, get_app
from pyloxi.cli.parse import parse_int, parse_ip
from pyloxi.model.bgp import BGPNeigh, BGPNeighList
from pyloxi.model.limits import PORT_MAX

NEIGH_PATH = "/config/bgp/neigh"
ASN_MAX = 4294967295
NEIGH_COLUMNS = ("Peer", "AS", "Up/Down", "State")


def build_neighbor(ip: str, asn: str | int, *, remote_port: int = 179,
                   multihop: bool = False) -> BGPNeigh:
    """The POST /config/bgp/neigh object. Raises InputError on bad input (nothing is sent)."""
    return BGPNeigh(ip_address=parse_ip(ip, "neighbor IP"),
                    remote_as=parse_int(asn, "remote AS", 1, ASN_MAX),
                    remote_port=parse_int(remote_port, "--remotePort", 1, PORT_MAX),
                    set_multi_hop=multihop)


@create_app.command("bgpneighbor")
def create_bgpneighbor(
    ctx: typer.Context,
    ip: Annotated[str, typer.Argument(metavar="IP", help="neighbor IP")],
    asn: Annotated[str, typer.Argument(metavar="ASN", help="neighbor AS number")],
    remote_port: Annotated[int, typer.Option("--remotePort", help="neighbor's port")] = 179,
    multihop: Annotated[bool, typer.Option(
        "--setMultiHtop", "--setMultiHop", help="eBGP multihop (loxicmd spells it MultiHtop)",
    )] = False,
) -> None:
    """Add a BGP neighbor."""
    with reporting():
        neigh = build_neighbor(ip, asn, remote_port=remote_port, multihop=multihop)
        with client_for(ctx) as client:
            client.post(NEIGH_PATH, neigh.wire())
    typer.echo(f"created bgpneighbor {neigh.ip_address}")


def get_bgpneighbors(ctx: typer.Context) -> None:
    """List BGP neighbors and their session state (-o json: the API body)."""
    settings = settings_of(ctx)
    with reporting(), client_for(ctx) as client:
        data = client.get(f"{NEIGH_PATH}/all")
        if settings.json:
            render.print_json(data)
            return
        entries = render.parse_answer(BGPNeighList, data).attr
    render.print_table(NEIGH_COLUMNS, [[e.ip_address, e.remote_as, e.updowntime, e.state]
                                       for e in entries])


@delete_app.command("bgpneighbor")
def delete_bgpneighbor(
    ctx: typer.Context,
    ip: Annotated[str, typer.Argument(metavar="IP", help="neighbor IP")],
    remote_as: Annotated[int, typer.Option("--remoteAs", help="neighbor AS (checked)")] = 0,
) -> None:
    """Delete a BGP neighbor."""
    with reporting():
        peer = parse_ip(ip, "neighbor IP")
        params = {"remoteAs": parse_int(remote_as, "--remoteAs", 0, ASN_MAX)} if remote_as \
            else None
        with client_for(ctx) as client:
            client.delete(f"{NEIGH_PATH}/{path_segment(peer)}", params=params)
    typer.echo(f"deleted bgpneighbor {peer}")


get_app.command("bgpneighbor")(get_bgpneighbors)
get_app.command("bgpnei", hidden=True)(get_bgpneighbors)
create_app.command("bgpnei", hidden=True)(create_bgpneighbor)
delete_app.command("bgpnei", hidden=True)(delete_bgpneighbor)
