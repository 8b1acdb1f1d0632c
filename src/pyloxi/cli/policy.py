"""`pyloxi create|get|delete policy` (loxicmd's policy / pol verbs).

    pyloxi create policy pol-hs0 --rate=100:100 --target=hs0:1 [--block-size=12000:6000] [--color] [--pol-type 0]
    pyloxi get policy [-o json]
    pyloxi delete policy pol-hs0

--rate is <peak>:<committed> in Mbps; --target <name>:<attachment> (1 an interface, 2 an LB
rule by its name; pyloxi extensions: 3 an endpoint, IP or IP:PORT, e.g. --target=10.0.0.5:8080:3,
4 a client IP); --block-size <committed>:<excess> bytes (the excess size is ignored: it is
always twice the committed one, as in loxilb); --pol-type 0 trTCM, 1 srTCM.
"""  # noqa: E501

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer
from pydantic import ValidationError

from pyloxi.cli import render
from pyloxi.cli.client import client_for, reporting
from pyloxi.cli.groups import create_app, delete_app, get_app
from pyloxi.cli.parse import InputError
from pyloxi.model.policy import PolicyEntry, PolicyInfo, PolicyList, PolicyObj

POL_PATH = "/config/policy"
POL_COLUMNS = ("Ident", "Type", "PeakRate", "CommittedRate", "CBS", "EBS", "Target",
               "Attachment", "Passed", "Dropped")
_ATTACH = {1: "port", 2: "rule", 3: "endpoint", 4: "client"}


def _pair(text: str, what: str) -> tuple[int, int]:
    a, sep, b = text.partition(":")
    if not (a.strip().isdigit() and (not sep or b.strip().isdigit())):
        raise InputError(f"--{what} {text!r}: expected <number>:<number>")
    return int(a), int(b) if sep else 0


@create_app.command("policy")
def create_policy(
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(help="the policer's name")],
    rate: Annotated[str, typer.Option("--rate", help="<peak>:<committed> Mbps")],
    target: Annotated[str, typer.Option(
        "--target", help="<name>:<attachment> (1 port, 2 rule, 3 endpoint, 4 client)")],
    block_size: Annotated[str, typer.Option("--block-size",
                                            help="<committed>:<excess> bytes")] = "0:0",
    color: Annotated[bool, typer.Option("--color", help="colour aware (accepted; blind)")] = False,
    pol_type: Annotated[int, typer.Option("--pol-type", help="0 trTCM, 1 srTCM")] = 0,
) -> None:
    """Add (or replace) a QoS policer."""
    with reporting():
        peak, committed = _pair(rate, "rate")
        cbs, ebs = _pair(block_size, "block-size")
        name, sep, attach = target.rpartition(":")
        if not sep or not name or not attach.isdigit():
            raise InputError(f"--target {target!r}: expected <name>:<attachment>")
        try:
            entry = PolicyEntry(
                policy_ident=ident,
                policy_info=PolicyInfo(type=pol_type, color_aware=color, peak_info_rate=peak,
                                       committed_info_rate=committed, committed_blk_size=cbs,
                                       excess_blk_size=ebs),
                target_object=PolicyObj(attachment=int(attach), pol_obj_name=name))
        except ValidationError as exc:
            raise InputError(f"bad option: {exc.errors()[0]['msg']}") from None
        with client_for(ctx) as client:
            client.post(POL_PATH, entry.model_dump(by_alias=True, mode="json",
                                                   exclude={"stats"}))
    typer.echo(f"created policy {ident}")


def get_policy(ctx: typer.Context) -> None:
    """List QoS policers with what each let through and dropped (packets)."""
    with reporting():
        got = render.get_answer(ctx, f"{POL_PATH}/all", PolicyList)
    if got is None:
        return
    rows = []
    for e in got.pol_attr:
        i, t, s = e.policy_info, e.target_object, e.stats
        rows.append([e.policy_ident, "srTCM" if i.type == 1 else "trTCM", i.peak_info_rate,
                     i.committed_info_rate, i.committed_blk_size, i.excess_blk_size,
                     t.pol_obj_name, _ATTACH.get(t.attachment, t.attachment),
                     s.packets_ok if s else "", s.packets_dropped if s else ""])
    render.print_table(POL_COLUMNS, rows)


@delete_app.command("policy")
def delete_policy(ctx: typer.Context,
                  ident: Annotated[str, typer.Argument(help="the policer's name")]) -> None:
    """Delete a QoS policer."""
    with reporting(), client_for(ctx) as client:
        client.delete(f"{POL_PATH}/ident/{quote(ident, safe='')}")
    typer.echo(f"deleted policy {ident}")


get_app.command("policy")(get_policy)
get_app.command("pol", hidden=True)(get_policy)
create_app.command("pol", hidden=True)(create_policy)
delete_app.command("pol", hidden=True)(delete_policy)
