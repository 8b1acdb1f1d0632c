"""`pyloxi get ct` (loxicmd `get conntrack`)."""

from __future__ import annotations

from typing import Any

import typer

from pyloxi.cli import render
from pyloxi.cli.client import client_for, reporting, settings_of
from pyloxi.cli.groups import get_app


@get_app.command("ct")
def get_ct(ctx: typer.Context) -> None:
    """List tracked connections (-o json: the API body)."""
    settings = settings_of(ctx)
    with reporting(), client_for(ctx) as client:
        data = client.get("/config/conntrack/all")
    if settings.json:
        render.print_json(data)
        return
    entries: list[dict[str, Any]] = []
    if isinstance(data, dict):
        entries = next((list(v or []) for k, v in data.items() if k.lower() == "ctattr"), [])
    render.print_table(render.CT_COLUMNS, render.ct_rows(entries))


get_app.command("conntrack", hidden=True)(get_ct)
