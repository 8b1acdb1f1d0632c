"""Output: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from pyloxi.model.lb import NatMode, Selection


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


def enum_name(enum: type[Selection] | type[NatMode], value: Any) -> str:
    try:
        return enum(int(value)).name.lower()
    except (TypeError, ValueError):
        return str(value)


def port_text(port: Any, port_max: Any) -> str:
    return f"{port}-{port_max}" if port_max and port_max != port else str(port)


def _svc(rule: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in (rule.get("serviceArguments") or {}).items()}


LB_COLUMNS = ("ExternalIP", "Port", "Protocol", "Name", "Block", "Select", "Mode", "#Endpoints")
LB_WIDE_COLUMNS = (
    "ExternalIP", "Port", "Protocol", "Name", "Block", "Select", "Mode",
    "Endpoint", "TargetPort", "Weight", "State", "Counters",
)  # fmt: skip


def lb_rows(rules: list[dict[str, Any]], wide: bool) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for rule in rules:
        s = _svc(rule)
        head = [
            s.get("externalip", ""),
            port_text(s.get("port", 0), s.get("portmax", 0)),
            s.get("protocol", ""),
            s.get("name", ""),
            s.get("block", 0),
            enum_name(Selection, s.get("sel", 0)),
            enum_name(NatMode, s.get("mode", 0)),
        ]
        eps = rule.get("endpoints") or []
        if not wide:
            rows.append([*head, len(eps)])
            continue
        if not eps:
            rows.append([*head, "", "", "", "", ""])
        for i, ep in enumerate(eps):
            e = {k.lower(): v for k, v in ep.items()}
            lead = head if i == 0 else [""] * len(head)
            rows.append(
                [
                    *lead,
                    e.get("endpointip", ""),
                    e.get("targetport", ""),
                    e.get("weight", ""),
                    e.get("state", ""),
                    e.get("counter", ""),
                ]
            )
    return rows


CT_COLUMNS = (
    "DestIP", "SrcIP", "DPort", "SPort", "Proto", "State", "Act", "Packets", "Bytes", "Service",
)  # fmt: skip


def ct_rows(entries: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for entry in entries:
        c = {k.lower(): v for k, v in entry.items()}
        rows.append(
            [
                c.get("destinationip", ""),
                c.get("sourceip", ""),
                c.get("destinationport", ""),
                c.get("sourceport", ""),
                c.get("protocol", ""),
                c.get("conntrackstate", ""),
                c.get("conntrackact", ""),
                c.get("packets", 0),
                c.get("bytes", 0),
                c.get("servname", ""),
            ]
        )
    return rows
