"""Reports: CSV of runs, and an HTML file that is self-contained, needs no network and renders
its plotly graphs in a headless Chromium."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from compression.io.report import CSS, config_lines, html_report, runs_csv, runs_table
from compression.io.store import Store

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REMOTE_REF = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", re.I)


@pytest.fixture
def runs(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    for kind, acc, size, lat in [("prune", 0.95, 40_000, 0.20), ("quantize", 0.97, 20_000, 0.25),
                                 ("lowrank", 0.90, 30_000, None), ("evaluate", 0.98, 200_000, 0.30)]:
        store.record(kind, ("demo:mlp", "demo:mlp"), ("digits", "abc"),
                     {"kind": kind, "note": "<script>alert(1)</script>"},
                     {"accuracy": acc, "size_bytes": size, "latency_ms": lat, "loss": 0.1,
                      "baseline": {"accuracy": 0.98}, "layers": [{"name": "fc1"}]})
    return store.list()


def test_runs_csv_has_every_run_and_metric(runs):
    rows = list(csv.DictReader(io.StringIO(runs_csv(runs))))
    assert [r["id"] for r in rows] == [r.id for r in runs]
    assert float(rows[0]["accuracy"]) == runs[0].metrics["accuracy"]
    assert rows[0]["baseline.accuracy"] == "0.98"
    assert json.loads(rows[0]["config"])["kind"] == runs[0].kind
    assert json.loads(rows[0]["layers"]) == [{"name": "fc1"}]


def test_runs_table_keeps_present_metrics_only(runs):
    table = runs_table(runs)
    assert {"accuracy", "size_bytes", "latency_ms", "loss"} <= set(table.columns)
    assert "macs" not in table.columns and len(table) == 4


def test_html_is_self_contained(runs):
    summary = pd.DataFrame({"layer": ["fc1", "fc2"], "params": [19500, 30100]})
    extra = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    page = html_report(runs, summary, [extra])
    assert not REMOTE_REF.findall(page)
    assert "@import" not in page
    assert page.count("plotly.js v") == 1  # the library inlined once
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)" in page
    assert page.count('class="plotly-graph-div"') == 3  # size and latency trade-offs, and the bar
    assert "fc2" in page and "30100" in page
    empty = html_report([], None, [])
    assert "No runs" in empty and "<script" not in empty


def test_config_column_wraps_between_entries_not_inside_words(runs):
    rule = re.search(r"\.config \{([^}]*)\}", CSS).group(1)
    assert "break-all" not in rule and "word-break: normal" in rule and "overflow-wrap: anywhere" in rule
    assert "white-space: pre-line" in rule
    assert config_lines({"sparsity": 0.5, "kind": "prune", "layers": ["fc1"]}) == \
        'kind: prune\nlayers: ["fc1"]\nsparsity: 0.5'
    page = html_report(runs, None, [])
    assert "kind: prune\nnote: &lt;script&gt;" in page                     # one entry a line, escaped
    assert ">95.00%<" in page and ">0.95<" not in page                    # accuracy as the app prints it


@pytest.mark.browser
def test_html_renders_offline_in_chromium(runs, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    path = tmp_path / "report.html"
    path.write_text(html_report(runs, None, [go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))]), encoding="utf-8")
    attempted: list[str] = []

    def guard(route) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            route.continue_()
        else:
            attempted.append(url)
            route.abort()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", guard)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3",
                                   timeout=30_000)
            plots = page.locator(".js-plotly-plot").count()
            points = page.locator(".js-plotly-plot .scatterlayer .point").count()
        finally:
            browser.close()
    assert plots == 3 and points >= 4 + 2
    assert attempted == [] and errors == []


def test_cli_report_writes_html_and_csv(runs, tmp_path, capsys):
    import compression.cli.runs  # noqa: F401  (registers runs, report, run)
    from compression.cli import main

    store = str(tmp_path / "runs.sqlite")  # the `runs` fixture's store
    out, table = tmp_path / "out" / "report.html", tmp_path / "runs.csv"
    chosen = f"{runs[0].id},{runs[2].id[:8]}"
    assert main(["report", "--store", store, "--runs", chosen, "--out", str(out), "--csv", str(table),
                 "--model", "demo:mlp", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runs"] == 2 and result["bytes"] == out.stat().st_size
    page = out.read_text()
    assert runs[0].id in page and runs[1].id not in page and "fc3" in page  # the model summary
    assert not REMOTE_REF.findall(page)
    assert [r["id"] for r in csv.DictReader(io.StringIO(table.read_text()))] == [runs[0].id, runs[2].id]
    assert main(["report", "--store", store, "--runs", "feedbeef", "--out", str(out)]) == 2
    assert "not in the store" in capsys.readouterr().err
