"""`pyloxi create|get|delete mirror` (loxicmd's mirror / mirr verbs).

    pyloxi create mirror mirr-1 --mirrorInfo="type:0,port:hs0" --targetObject="attachement:1,mirrObjName:hs1"
    pyloxi create mirror mirr-2 --mirrorInfo="type:1,port:hs0,vlan:100" --targetObject="attachment:2,mirrObjName:web"
    pyloxi get mirror [-o json]
    pyloxi delete mirror mirr-1

mirrorInfo keys: type (0 SPAN, 1 RSPAN, 2 ERSPAN: refused), port, vlan, remoteIP, sourceIP,
tunnelID. targetObject keys: attachment (loxicmd's spelling "attachement" too; 1 port, 2 LB
rule name), mirrObjName.
"""  # noqa: E501

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError

from pyloxi.cli import render
from pyloxi.cli.client import client_for, path_segment, reporting
from pyloxi.cli.groups import create_app, delete_app, get_app
from pyloxi.cli.parse import InputError
from pyloxi.model.mirror import MirrorEntry, MirrorInfo, MirrorList, MirrorTarget

MIRR_PATH = "/config/mirror"
MIRR_COLUMNS = ("Name", "Type", "Port", "Vlan", "Attachment", "Target", "Counter")
_TYPES = {0: "span", 1: "rspan", 2: "erspan"}
_INFO_KEYS = {"type": "type", "port": "port", "vlan": "vlan", "remoteip": "remoteIP",
              "sourceip": "sourceIP", "tunnelid": "tunnelID"}
_TARGET_KEYS = {"attachment": "attachment", "attachement": "attachment",
                "mirrobjname": "mirrObjName"}
_INTS = {"type", "vlan", "tunnelID", "attachment"}


def _parse(option: str, text: str, keys: dict[str, str], model: type[BaseModel]) -> Any:
    """--option="key:value,..." as `model`. Raises InputError."""
    data: dict[str, Any] = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        key, sep, value = item.partition(":")
        name = keys.get(key.strip().lower())
        if not sep or name is None:
            names = ", ".join(sorted(set(keys.values())))
            raise InputError(f"--{option}: {item!r} is not one of {names}:value")
        value = value.strip()
        if name in _INTS:
            if not value.isdigit():
                raise InputError(f"--{option}: {name} {value!r} is not an integer")
            data[name] = int(value)
        else:
            data[name] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InputError(f"--{option}: {where}: {err['msg']}") from None


@create_app.command("mirror")
def create_mirror(
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(help="the mirror's name")],
    info: Annotated[str, typer.Option("--mirrorInfo", help="type:N,port:IF[,vlan:N]")],
    target: Annotated[str, typer.Option("--targetObject",
                                        help="attachment:1|2,mirrObjName:NAME")],
) -> None:
    """Copy the traffic of an interface or of an LB rule to a mirror port."""
    with reporting():
        entry = MirrorEntry(
            mirror_ident=ident,
            mirror_info=_parse("mirrorInfo", info, _INFO_KEYS, MirrorInfo),
            target_object=_parse("targetObject", target, _TARGET_KEYS, MirrorTarget))
        with client_for(ctx) as client:
            client.post(MIRR_PATH, entry.wire())
    typer.echo(f"created mirror {ident}")


def get_mirror(ctx: typer.Context) -> None:
    """List mirrors with their counters (packets:bytes sent to the mirror port)."""
    with reporting():
        got = render.get_answer(ctx, f"{MIRR_PATH}/all", MirrorList)
    if got is None:
        return
    rows = []
    for e in got.mirr_attr:
        i, t = e.mirror_info, e.target_object
        rows.append([e.mirror_ident, _TYPES.get(i.type, str(i.type)), i.port, i.vlan or "",
                     {1: "port", 2: "rule"}.get(t.attachment, str(t.attachment)),
                     t.mirr_obj_name, e.counter])
    render.print_table(MIRR_COLUMNS, rows)


@delete_app.command("mirror")
def delete_mirror(ctx: typer.Context,
                  ident: Annotated[str, typer.Argument(help="the mirror's name")]) -> None:
    """Delete a mirror."""
    with reporting(), client_for(ctx) as client:
        client.delete(f"{MIRR_PATH}/ident/{path_segment(ident)}")
    typer.echo(f"deleted mirror {ident}")


get_app.command("mirror")(get_mirror)
get_app.command("mirr", hidden=True)(get_mirror)
create_app.command("mirr", hidden=True)(create_mirror)
delete_app.command("mirr", hidden=True)(delete_mirror)
