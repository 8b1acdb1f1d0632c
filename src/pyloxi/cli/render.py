"""Output: rich tables for people, JSON for scripts.

Tables are rendered from the wire models: an answer is first parsed with the same model the
server answers with (`parse_answer`), so the CLI reads the keys in any letter case, as the API
does, and never guesses at a key's spelling.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from pyloxi.cli.client import ApiError, client_for, settings_of
from pyloxi.model.base import WireModel
from pyloxi.model.conntrack import ConntrackEntry
from pyloxi.model.lb import LoadBalancerEntry

M = TypeVar("M", bound=WireModel)


def console() -> Console:
    # Not a terminal (pipe, file, test): do not squeeze the table into 80 columns.
    width = None if sys.stdout.isatty() else 250
    return Console(width=width, highlight=False, soft_wrap=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(*columns, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    con = console()
    with con.capture() as captured:
        con.print(table)
    lines = [line.rstrip() for line in captured.get().splitlines()]
    sys.stdout.write("\n".join(lines) + "\n")


def parse_answer(model: type[M], data: Any) -> M:
    """An API answer as `model`; ApiError (one line, exit 1) if it is not one."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(
            None, f"unexpected answer from the API: {model.__name__} {where}: {first['msg']}"
        ) from None


def get_answer(ctx: typer.Context, path: str, model: type[M]) -> M | None:
    """GET `path` as `model`, or None once printed as JSON (-o json)."""
    settings = settings_of(ctx)
    with client_for(ctx) as client:
        data = client.get(path)
    if settings.json:
        print_json(data)
        return None
    return parse_answer(model, data)


def host_text(ip: str) -> str:
    """An address before a ":port": IPv6 in brackets, so the port stays readable."""
    return f"[{ip}]" if ":" in ip else ip


def port_text(port: int, port_max: int) -> str:
    return f"{port}-{port_max}" if port_max and port_max != port else str(port)


LB_COLUMNS = ("ExternalIP", "Port", "Protocol", "Name", "Block", "Select", "Mode", "#Endpoints")
LB_WIDE_COLUMNS = (
    "ExternalIP", "Port", "Protocol", "Name", "Block", "Select", "Mode",
    "Endpoint", "TargetPort", "Weight", "State", "Counters",
)  # fmt: skip


def lb_rows(rules: list[LoadBalancerEntry], wide: bool) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for rule in rules:
        s = rule.service_arguments
        head: list[Any] = [
            s.external_ip,
            port_text(s.port, s.port_max),
            s.protocol.value,
            s.name,
            s.block,
            s.sel.name.lower(),
            s.mode.name.lower(),
        ]
        eps = rule.endpoints
        if not wide:
            rows.append([*head, len(eps)])
            continue
        if not eps:
            rows.append([*head, "", "", "", "", ""])
        for i, ep in enumerate(eps):
            lead = head if i == 0 else [""] * len(head)
            rows.append([*lead, ep.endpoint_ip, ep.target_port, ep.weight, ep.state, ep.counter])
    return rows


CT_COLUMNS = (
    "DestIP", "SrcIP", "DPort", "SPort", "Proto", "State", "Act", "Packets", "Bytes", "Service",
)  # fmt: skip


def ct_rows(entries: list[ConntrackEntry]) -> list[list[Any]]:
    return [
        [
            c.destination_ip,
            c.source_ip,
            c.destination_port,
            c.source_port,
            c.protocol,
            c.conntrack_state,
            c.conntrack_act,
            c.packets,
            c.bytes,
            c.serv_name,
        ]
        for c in entries
    ]
