"""`pyloxi get ha` (loxicmd `get ha`): this node's state in each HA instance.

    pyloxi get ha [-o wide|json]      Instance, HA Status (wide: and the instance's VIP)
"""

from __future__ import annotations

import typer

from pyloxi.cli import render
from pyloxi.cli.client import client_for, reporting, settings_of
from pyloxi.cli.groups import get_app
from pyloxi.model.cluster import CIStatusList

HA_PATH = "/config/cistate/all"
HA_COLUMNS = ("Instance", "HA Status")  # loxicmd's HASTATE_TITLE
HA_WIDE_COLUMNS = (*HA_COLUMNS, "VIP")


@get_app.command("ha")
def get_ha(ctx: typer.Context) -> None:
    """Show the HA state of each cluster instance (-o wide adds its VIP; -o json: API body)."""
    settings = settings_of(ctx)
    with reporting(), client_for(ctx) as client:
        data = client.get(HA_PATH)
        if settings.json:
            render.print_json(data)
            return
        entries = render.parse_answer(CIStatusList, data).attr
    rows = [[e.instance, e.state, *([e.vip] if settings.wide else [])] for e in entries]
    render.print_table(HA_WIDE_COLUMNS if settings.wide else HA_COLUMNS, rows)
