"""deploy/grafana/pyloxi.json queries only metrics the daemon exports (pyloxi.metrics' catalog,
which test_metrics checks against a real scrape)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyloxi.metrics import series_names

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "pyloxi.json"

_FUNCTIONS_AND_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
    # aggregation operators, which may be followed by a by/without clause instead of "("
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
})
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions (followed
    by "("), keywords, label names (inside {...} or a by/without/on/ignoring list), durations
    ([1m]) or Grafana variables ($rule)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1",
                  text)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # dashboard variables
    names = set()
    for m in _IDENT.finditer(text):
        word = m.group()
        rest = text[m.end():].lstrip()
        if word.lower() in _FUNCTIONS_AND_KEYWORDS or rest.startswith("("):
            continue
        if text[max(0, m.start() - 1)].isdigit():  # e.g. the "e" of 1e3
            continue
        names.add(word)
    return names


def queries(node: Any) -> Iterator[str]:
    """Every PromQL expression in the dashboard: panel targets and variable queries."""
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        q = node.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if isinstance(q, str) and q.startswith("label_values("):
            inner = q[len("label_values("):-1].rsplit(",", 1)[0]
            yield inner
        for v in node.values():
            yield from queries(v)
    elif isinstance(node, list):
        for v in node:
            yield from queries(v)


def test_the_extractor_finds_names_and_only_names() -> None:
    assert metric_names('sum by (rule, endpoint) (rate(pyloxi_endpoint_packets_total'
                        '{rule=~"$rule"}[1m])) * 8') == {"pyloxi_endpoint_packets_total"}
    assert metric_names("2 * sum(a_b) / max(c:d) and on(x) e offset 5m") == {"a_b", "c:d", "e"}
    assert metric_names("pyloxi_ha_state == 1e3") == {"pyloxi_ha_state"}


def test_a_wrong_name_is_caught() -> None:
    assert not metric_names("rate(pyloxi_no_such_metric_total[1m])") <= series_names()


def test_every_query_names_an_exported_metric() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = list(queries(dash))
    assert len(exprs) >= 20
    exported = series_names()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{expr!r} names {sorted(unknown)}, not exported by pyloxi"


@pytest.mark.parametrize("key", ["title", "uid", "panels", "templating"])
def test_the_dashboard_is_importable(key: str) -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash[key]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
