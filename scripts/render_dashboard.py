#!/usr/bin/env python3
"""Draws pyloxi's Grafana dashboard (deploy/grafana/pyloxi.json) from a real Prometheus, without
Grafana: every query of every panel goes through Prometheus's HTTP API (query_range), with the
dashboard's variables and Grafana's $__interval / $__rate_interval / $__range substituted as
Grafana does, and the answers are drawn into one static HTML page on the dashboard's grid
(gridPos): time series as inline SVG lines, stat panels as numbers, tables of the last values.
Nothing is loaded from outside the page (no CDN, no fonts, no scripts).

    scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 5 \\
        --html /tmp/dash.html [--json /tmp/dash.json]

--json writes what each query answered (the expression as sent, its error if any, its series):
tests/integration/test_grafana_prometheus.py checks it. Only the standard library is used, so
any python3 runs it. It is a look at the same queries, not a copy of Grafana's drawing.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "pyloxi.json"
PAGE_WIDTH = 1600  # px: the grid's 24 columns
ROW_HEIGHT = 30  # px per gridPos unit of height, as Grafana's grid
MARGIN = 8  # px between panels
PALETTE = ("#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
           "#705da0", "#37872d", "#fade2a", "#c4162a", "#1f60c4")


@dataclass
class Series:
    legend: str
    labels: dict[str, str]
    points: list[tuple[float, float]]  # (unix time, value)


@dataclass
class Target:
    ref: str
    expr: str  # as sent to Prometheus, variables substituted
    error: str | None = None
    series: list[Series] = field(default_factory=list)


@dataclass
class Panel:
    id: int
    type: str
    title: str
    unit: str
    grid: dict[str, int]
    step: float
    targets: list[Target] = field(default_factory=list)


class PromError(Exception):
    pass


def _get(base: str, path: str, params: list[tuple[str, str]]) -> Any:
    url = f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as e:  # Prometheus answers 400/422 with a JSON error
        try:
            body = json.load(e)
        except ValueError:
            raise PromError(f"HTTP {e.code}") from None
    if body.get("status") != "success":
        raise PromError(f"{body.get('errorType')}: {body.get('error')}")
    return body["data"]


def _regex_escape(value: str) -> str:
    """Grafana's escaping of a value put into a regex matcher (=~) of a multi-value variable."""
    return re.sub(r"([\\^$*+?.()|{}\[\]/])", r"\\\1", value)


def variables(dash: dict[str, Any], prom: str, start: float, end: float) -> dict[str, str]:
    """The dashboard's query variables set to "All", as a first load of the dashboard does:
    allValue when it has one, else every value the label_values() query finds, as (a|b)."""
    out: dict[str, str] = {}
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue  # the datasource variable: not part of any expression
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else str(q or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q)
        if not m:
            raise ValueError(f"variable {var['name']}: unsupported query {q!r}")
        values: list[str] = _get(prom, f"/api/v1/label/{m.group(2)}/values",
                                 [("match[]", m.group(1)), ("start", str(start)),
                                  ("end", str(end))])
        if var.get("includeAll") and var.get("allValue"):
            out[var["name"]] = var["allValue"]
        elif len(values) == 1:
            out[var["name"]] = _regex_escape(values[0])
        else:
            out[var["name"]] = "(" + "|".join(_regex_escape(v) for v in values) + ")"
    return out


def _duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms" if seconds < 1 else f"{int(round(seconds))}s"


def panel_step(width_px: float, start: float, end: float, scrape: float) -> float:
    """Grafana's $__interval: the range over the panel's data points (one per pixel of its
    width, maxDataPoints), never below the data source's scrape interval; whole seconds."""
    return max(scrape, math.ceil((end - start) / max(width_px, 1)))


def substitute(expr: str, variables_: dict[str, str], step: float, start: float, end: float,
               scrape: float) -> str:
    """Grafana's substitutions in a Prometheus expression."""
    rng = end - start
    builtins = {
        # Grafana: max($__interval + scrape interval, 4 * scrape interval)
        "__rate_interval": _duration(max(step + scrape, 4 * scrape)),
        "__interval_ms": str(int(step * 1000)),
        "__interval": _duration(step),
        "__range_ms": str(int(rng * 1000)),
        "__range_s": str(int(rng)),
        "__range": _duration(rng),
    }
    values = {**builtins, **variables_}

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))

    # longest names first is implicit: \w+ is greedy, so $__interval_ms is never $__interval
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)


def legend(fmt: str | None, labels: dict[str, str], expr: str) -> str:
    if not fmt:
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
        return f"{labels.get('__name__', '')}{{{inner}}}" if inner or "__name__" in labels \
            else expr
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def evaluate(dash: dict[str, Any], prom: str, start: float, end: float,
             scrape: float) -> list[Panel]:
    """Every panel's every target through query_range; a refused query keeps its error."""
    vars_ = variables(dash, prom, start, end)
    panels: list[Panel] = []
    for p in dash["panels"]:
        grid = p["gridPos"]
        step = panel_step(grid["w"] * PAGE_WIDTH / 24, start, end, scrape)
        panel = Panel(p["id"], p["type"], p.get("title", ""),
                      p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short"),
                      grid, step)
        for t in p.get("targets", []):
            expr = substitute(t["expr"], vars_, step, start, end, scrape)
            target = Target(t.get("refId", ""), expr)
            try:
                data = _get(prom, "/api/v1/query_range",
                            [("query", expr), ("start", str(start)), ("end", str(end)),
                             ("step", str(step))])
                for s in data["result"]:
                    target.series.append(Series(
                        legend(t.get("legendFormat"), s["metric"], expr), s["metric"],
                        [(float(ts), float(v)) for ts, v in s["values"]]))
            except PromError as e:
                target.error = str(e)
            panel.targets.append(target)
        panels.append(panel)
    return panels


# --- drawing -------------------------------------------------------------------------------

def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    suffix = {"bps": "b/s", "pps": " p/s", "reqps": " req/s", "s": " s"}.get(unit, "")
    if unit == "s" and abs(value) < 1:
        return f"{value * 1000:.3g} ms"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{suffix.strip()}"
    return f"{value:.3g}{suffix}"


def _last(s: Series) -> float:
    return s.points[-1][1] if s.points else math.nan


def _timeseries_svg(panel: Panel, w: float, h: float, start: float, end: float) -> str:
    series = [s for t in panel.targets for s in t.series]
    timeline = panel.type == "state-timeline"
    left, right, top, bottom = 150 if timeline else 64, 8, 6, 18  # timeline: names at left
    pw, ph = w - left - right, h - top - bottom
    values = [v for s in series for _, v in s.points if math.isfinite(v)]
    lo = min([0.0, *values])
    hi = max(values) * 1.1 if values and max(values) > lo else lo + 1

    def x(ts: float) -> float:
        return left + (ts - start) / (end - start) * pw

    def y(v: float) -> float:
        return top + ph - (v - lo) / (hi - lo) * ph

    out = [f'<svg width="{w:.0f}" height="{h:.0f}" xmlns="http://www.w3.org/2000/svg">']
    for frac in () if timeline else (0, 0.5, 1):  # grid lines and y labels
        v = lo + (hi - lo) * frac
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   'stroke="#2c3235"/>')
        out.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">'
                   f'{html.escape(fmt(v, panel.unit))}</text>')
    for ts, anchor in ((start, "start"), ((start + end) / 2, "middle"), (end, "end")):
        out.append(f'<text x="{x(ts):.1f}" y="{h - 4:.0f}" text-anchor="{anchor}">'
                   f'{time.strftime("%H:%M:%S", time.gmtime(ts))}</text>')
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        if timeline:  # one band per series: green up, red down
            band = ph / max(len(series), 1)
            y0 = top + i * band
            for j, (ts, v) in enumerate(s.points):
                nxt = s.points[j + 1][0] if j + 1 < len(s.points) else ts + panel.step
                fill = "#73bf69" if v >= 1 else "#f2495c"
                out.append(f'<rect x="{x(ts):.1f}" y="{y0 + 1:.1f}" '
                           f'width="{max(x(nxt) - x(ts), 0.5):.1f}" height="{band - 2:.1f}" '
                           f'fill="{fill}"/>')
            out.append(f'<text x="{left - 4}" y="{y0 + band / 2 + 4:.1f}" text-anchor="end">'
                       f'{html.escape(s.legend)}</text>')
            continue
        pts = " ".join(f"{x(ts):.1f},{y(v):.1f}" for ts, v in s.points if math.isfinite(v))
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>')
    out.append("</svg>")
    return "".join(out)


def _legend_html(panel: Panel) -> str:
    rows = []
    for i, s in enumerate(s for t in panel.targets for s in t.series):
        color = PALETTE[i % len(PALETTE)]
        rows.append(f'<span class="key"><i style="background:{color}"></i>'
                    f'{html.escape(s.legend)} <b>{html.escape(fmt(_last(s), panel.unit))}</b>'
                    "</span>")
    return f'<div class="legend">{"".join(rows)}</div>'


def _body(panel: Panel, w: float, h: float, start: float, end: float) -> str:
    errors = [t.error for t in panel.targets if t.error]
    if errors:
        return f'<div class="error">{html.escape("; ".join(errors))}</div>'
    series = [s for t in panel.targets for s in t.series]
    if not series:
        return '<div class="nodata">No data</div>'
    if panel.type == "stat":
        values = " ".join(html.escape(fmt(_last(s), panel.unit)) for s in series)
        return f'<div class="stat">{values}</div>'
    if panel.type == "table":
        rows = "".join(f"<tr><td>{html.escape(s.legend)}</td>"
                       f"<td>{html.escape(fmt(_last(s), panel.unit))}</td></tr>" for s in series)
        return f'<table><tr><th>series</th><th>value</th></tr>{rows}</table>'
    legend_h = 18 * math.ceil(len(series) / 3) if panel.type != "state-timeline" else 0
    svg = _timeseries_svg(panel, w - 16, h - 40 - legend_h, start, end)
    return svg + (_legend_html(panel) if legend_h else "")


STYLE = """
body { margin: 0; background: #111217; color: #ccccdc; font: 12px sans-serif;
       overflow: hidden; }
header { padding: 8px 12px; font-size: 16px; }
header small { color: #8e8e8e; font-size: 12px; margin-left: 12px; }
.grid { position: relative; }
.panel { position: absolute; box-sizing: border-box; background: #181b1f;
         border: 1px solid #2c3235; border-radius: 2px; padding: 4px 8px; overflow: hidden; }
.panel h2 { font-size: 13px; font-weight: 500; margin: 0 0 4px; white-space: nowrap; }
.stat { font-size: 34px; font-weight: 500; color: #73bf69; text-align: center;
        margin-top: 14px; }
.nodata { color: #8e8e8e; text-align: center; margin-top: 40px; }
.error { color: #f2495c; }
svg text { fill: #8e8e8e; font: 10px sans-serif; }
.legend { line-height: 18px; }
.key { display: inline-block; width: 33%; overflow: hidden; white-space: nowrap;
       text-overflow: ellipsis; vertical-align: top; }
.key i { display: inline-block; width: 12px; height: 3px; margin: 0 4px 3px 0; }
table { border-collapse: collapse; width: 100%; }
td, th { border-bottom: 1px solid #2c3235; padding: 2px 4px; text-align: left; }
"""


def page_height(dash: dict[str, Any]) -> int:
    rows: int = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"])
    return 40 + rows * ROW_HEIGHT + MARGIN


def render(dash: dict[str, Any], panels: list[Panel], start: float, end: float,
           source: str) -> str:
    col = PAGE_WIDTH / 24
    boxes = []
    for p in panels:
        g = p.grid
        w, h = g["w"] * col - MARGIN, g["h"] * ROW_HEIGHT - MARGIN
        boxes.append(
            f'<div class="panel" data-panel="{p.id}" style="left:{g["x"] * col + MARGIN / 2:.0f}px;'
            f'top:{g["y"] * ROW_HEIGHT:.0f}px;width:{w:.0f}px;height:{h:.0f}px">'
            f"<h2>{html.escape(p.title)}</h2>{_body(p, w, h, start, end)}</div>")
    span = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(start))} to " \
           f"{time.strftime('%H:%M:%S', time.gmtime(end))} UTC"
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>'
            f'{html.escape(dash.get("title", ""))}</title><style>{STYLE}</style></head><body>'
            f'<header>{html.escape(dash.get("title", ""))} <small>{html.escape(span)}, '
            f'from {html.escape(source)}; drawn by scripts/render_dashboard.py</small></header>'
            f'<div class="grid" style="width:{PAGE_WIDTH}px;'
            f'height:{page_height(dash) - 40}px">{"".join(boxes)}</div></body></html>')


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090")
    ap.add_argument("--dashboard", type=Path, default=DASHBOARD)
    ap.add_argument("--minutes", type=float, default=15, help="the range drawn, up to now")
    ap.add_argument("--scrape-interval", type=float, default=15,
                    help="seconds; the data source's scrape interval (Grafana's minimum step)")
    ap.add_argument("--html", type=Path, help="write the page here")
    ap.add_argument("--json", type=Path, help="write every query's answer here")
    args = ap.parse_args(argv)
    dash = json.loads(args.dashboard.read_text())
    end = float(int(time.time()))
    start = end - args.minutes * 60
    panels = evaluate(dash, args.prometheus, start, end, args.scrape_interval)
    if args.json:
        args.json.write_text(json.dumps({"start": start, "end": end,
                                         "panels": [asdict(p) for p in panels]}))
    if args.html:
        args.html.write_text(render(dash, panels, start, end, args.prometheus))
    failed = [(p.title, t.expr, t.error) for p in panels for t in p.targets if t.error]
    for title, expr, error in failed:
        print(f"{title}: {expr}: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
