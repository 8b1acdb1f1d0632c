"""`pyloxi get ct` (loxicmd `get conntrack`)."""

from __future__ import annotations

import typer

from pyloxi.cli import render
from pyloxi.cli.client import client_for, reporting, settings_of
from pyloxi.cli.groups import get_app
from pyloxi.model.conntrack import ConntrackList


@get_app.command("ct")
def get_ct(ctx: typer.Context) -> None:
    """List tracked connections (-o json: the API body)."""
    settings = settings_of(ctx)
    with reporting(), client_for(ctx) as client:
        data = client.get("/config/conntrack/all")
        if settings.json:
            render.print_json(data)
            return
        entries = render.parse_answer(ConntrackList, data).ct_attr
    render.print_table(render.CT_COLUMNS, render.ct_rows(entries))


get_app.command("conntrack", hidden=True)(get_ct)
