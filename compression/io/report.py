"""Reports: the chosen runs as one self-contained HTML file (readable offline: plotly.js is
inlined once, nothing is fetched) and as CSV."""
from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import pandas as pd
import plotly.graph_objects as go

from compression.figures.analysis import store_frame, tradeoff_figure
from compression.io.store import Run, runs_frame

METRIC_COLUMNS = ("accuracy", "loss", "agreement", "kl_divergence", "params", "nonzero_params",
                  "size_bytes", "macs", "latency_ms")
PERCENT_COLUMNS = ("accuracy", "agreement")  # fractions, printed as the app's metrics print them
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #1f2933; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } .meta { color: #66788a; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #d9e2ec; padding: 0.3rem 0.6rem; text-align: right; vertical-align: top; }
th { background: #f0f4f8; } td.text, th.text { text-align: left; }
.config { font-family: ui-monospace, monospace; font-size: 0.75rem; min-width: 14rem; max-width: 28rem;
          white-space: pre-line; word-break: normal; overflow-wrap: anywhere; }
.figure { margin: 1rem 0 2rem; }
"""


def _runs(runs: Iterable[Run | dict] | pd.DataFrame) -> list[Run]:
    if isinstance(runs, pd.DataFrame):
        runs = runs.to_dict("records")
    return [r if isinstance(r, Run) else Run.from_dict(r) for r in runs]


def _short_json(value: Any, limit: int = 240) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit - 1] + "…"


def config_lines(config: Any, limit: int = 240) -> str:
    """A run's config as 'key: value' lines (sorted keys; nested values as compact JSON), cut at
    `limit` characters: what the report's config column shows, wrapping between entries."""
    if not isinstance(config, dict):
        return _short_json(config, limit)
    lines = [f"{k}: {v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)}"
             for k, v in sorted(config.items())]
    text = "\n".join(lines)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def runs_table(runs: Iterable[Run | dict]) -> pd.DataFrame:
    """One row per run: id, created, kind, model, data, config (JSON text) and the headline
    metrics that at least one run has (METRIC_COLUMNS, in that order)."""
    runs = _runs(runs)
    rows = []
    for run in runs:
        row = {"id": run.id, "created": run.created[:19].replace("T", " "), "kind": run.kind,
               "model": run.model, "data": run.data, "config": _short_json(run.config)}
        row.update({k: run.metrics.get(k) for k in METRIC_COLUMNS})
        rows.append(row)
    df = pd.DataFrame(rows, columns=["id", "created", "kind", "model", "data", "config", *METRIC_COLUMNS])
    return df[[c for c in df.columns if c not in METRIC_COLUMNS or df[c].notna().any()]]


def runs_csv(runs: Iterable[Run | dict]) -> str:
    """All fields of the runs as CSV: one row per run, metrics flattened into columns, config,
    artefacts and any list or dict values as JSON text."""
    frame = runs_frame(_runs(runs))
    for col in frame.columns:
        frame[col] = frame[col].map(lambda v: json.dumps(v, sort_keys=True, default=str)
                                    if isinstance(v, (dict, list)) else v)
    return frame.to_csv(index=False)


def tradeoff_figures(runs: Iterable[Run | dict]) -> list[go.Figure]:
    """Accuracy against size (whenever there are runs) and against latency (when any run has
    one), each with its Pareto front: `figures_analysis.tradeoff_figure`."""
    runs = _runs(runs)
    frame = runs_frame(runs)
    if frame.empty:
        return []
    frame["label"] = [f"{r.kind} {r.id[:8]}" for r in runs]
    points = store_frame(frame)
    figures = [tradeoff_figure(points, "size_bytes")]
    if pd.to_numeric(points["latency_ms"], errors="coerce").notna().any():
        figures.append(tradeoff_figure(points, "latency_ms"))
    return figures


def _table_html(df: pd.DataFrame, text_cols: Sequence[str] = ()) -> str:
    """An escaped HTML table; numbers with 4 significant digits, text columns left-aligned."""
    head = "".join(f'<th class="{"text" if c in text_cols else "num"}">{html.escape(str(c))}</th>' for c in df.columns)
    body = []
    for _, row in df.iterrows():
        cells = []
        for col, value in row.items():
            cls = "text config" if col == "config" else ("text" if col in text_cols else "num")
            cells.append(f'<td class="{cls}">{html.escape(_cell(value, col))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(value: Any, col: str = "") -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, float) and col in PERCENT_COLUMNS:
        return f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return _short_json(value)
    return str(value)


def figures_html(figures: Sequence[go.Figure]) -> str:
    """The figures as divs; plotly.js is inlined with the first one only (never a CDN)."""
    parts = []
    for i, fig in enumerate(figures):
        height = f"{fig.layout.height}px" if fig.layout.height else "450px"
        div = fig.to_html(full_html=False, include_plotlyjs=(i == 0), include_mathjax=False,
                          config=PLOTLY_CONFIG, default_height=height, div_id=f"figure-{i}")
        parts.append(f'<div class="figure">{div}</div>')
    return "\n".join(parts)


def html_report(runs: Iterable[Run | dict], model_summary: pd.DataFrame | None = None,
                figures: Sequence[go.Figure] = (), title: str = "Compression Studio report") -> str:
    """A self-contained HTML page: the model summary table (if given), the runs' metrics table,
    the runs' trade-off plots (`tradeoff_figures`) and then `figures`, all interactive offline.

    Returns:
        the HTML text (about 5 MB with figures: plotly.js is embedded once).
    """
    runs = _runs(runs)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [f"<h1>{html.escape(title)}</h1>",
                f'<p class="meta">Generated {stamp} · {len(runs)} run(s) · Compression Studio</p>']
    if model_summary is not None and not model_summary.empty:
        text_cols = [c for c in model_summary.columns if not pd.api.types.is_numeric_dtype(model_summary[c])]
        sections += ["<h2>Model</h2>", _table_html(model_summary, text_cols)]
    sections.append("<h2>Runs</h2>")
    if runs:
        table = runs_table(runs).assign(config=[config_lines(r.config) for r in runs])
        sections.append(_table_html(table, ("id", "created", "kind", "model", "data", "config")))
    else:
        sections.append("<p>No runs were chosen.</p>")
    all_figures = [*tradeoff_figures(runs), *figures]
    if all_figures:
        sections += ["<h2>Figures</h2>", figures_html(all_figures)]
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")
