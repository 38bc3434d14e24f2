"""Figure builders for the case studies: pure functions from a case's result (its `to_dict()`) or
DataFrames to plotly figures. No streamlit import: the Case studies page only draws what these return."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from compression.figures.common import PCT_HOVER, PCT_TICKS, log_ticks

MARGIN = dict(l=50, r=10, t=40, b=50)


def _layout(fig: go.Figure, title: str, x: str, y: str, pct: bool = True) -> go.Figure:
    fig.update_layout(title=title, yaxis_title=y, margin=MARGIN, legend_title_text="")
    fig.update_xaxes(title_text=x)  # every facet's x axis (px titles each with the raw column name)
    if pct:
        fig.update_yaxes(tickformat=PCT_TICKS, hoverformat=PCT_HOVER)
    return fig


def pruning_figure(steps: pd.DataFrame, baseline: float | None = None) -> go.Figure:
    """Test accuracy against the parameter reduction: iterative pruning with retraining, the same
    sparsity before retraining, and one-shot pruning without retraining."""
    fig = go.Figure()
    for col, name, dash in (("retrained_accuracy", "iterative, retrained", "solid"),
                            ("pruned_accuracy", "just pruned (before retraining)", "dot"),
                            ("oneshot_accuracy", "one-shot, no retraining", "dash")):
        if col in steps:
            fig.add_scatter(x=steps["param_reduction"], y=steps[col], name=name, mode="lines+markers",
                            line=dict(dash=dash))
    if baseline is not None:
        fig.add_hline(y=baseline, line_dash="dot", line_color="grey", annotation_text="dense")
    log_ticks(fig, "x", decades=False)
    return _layout(fig, "Accuracy against fewer parameters", "Parameter reduction (× fewer, log scale)",
                   "Test accuracy (%)")


def deep_compression_figure(stages: pd.DataFrame) -> go.Figure:
    """Bytes of each stage per model (log scale), labelled with the ratio to the fp32 model."""
    df = stages.copy()
    fp32 = df[df["stage"] == "fp32"].set_index("model")["bytes"]
    df["ratio"] = [fp32.get(m, float("nan")) / b for m, b in zip(df["model"], df["bytes"])]
    df["KB"] = df["bytes"] / 1000
    fig = px.bar(df, x="model", y="KB", color="stage", barmode="group", log_y=True,
                 text=df["ratio"].map(lambda r: f"{r:.0f}x" if r == r else ""))
    log_ticks(fig)
    return _layout(fig, "File size at each stage", "Model", "Size (KB, log scale)", pct=False)


def distillation_figure(result: dict) -> go.Figure:
    """Teacher, student alone and distilled student: mean test accuracy with the spread over seeds."""
    names = ["student alone", "student distilled", "teacher"]
    means = [result["student_alone"], result["student_distilled"], result["teacher"]]
    spreads = [result["student_alone_spread"], result["student_distilled_spread"], 0.0]
    fig = go.Figure(go.Bar(x=names, y=means, error_y=dict(type="data", array=spreads),
                           text=[f"{m:.2%}" for m in means], marker_color=["#999", "#1f77b4", "#2ca02c"]))
    lo = min(means) - max(spreads) - 0.02
    fig.update_yaxes(range=[max(lo, 0.0), 1.0])
    return _layout(fig, f"Mean over {len(result.get('per_seed', []))} seeds (bars: ± standard deviation)", "",
                   "Test accuracy (%)")


def temperature_figure(curve: pd.DataFrame, alone: float | None = None, teacher: float | None = None) -> go.Figure:
    """Distilled student's accuracy over the temperature T (mean ± spread over seeds)."""
    fig = go.Figure(go.Scatter(x=curve["temperature"], y=curve["accuracy"], mode="lines+markers",
                               error_y=dict(type="data", array=curve["spread"]), name="distilled"))
    for y, text in ((alone, "student alone"), (teacher, "teacher")):
        if y is not None:
            fig.add_hline(y=y, line_dash="dot", line_color="grey", annotation_text=text)
    log_ticks(fig, "x", decades=False)
    return _layout(fig, "Distilled accuracy against temperature", "Temperature T (log scale)", "Test accuracy (%)")


def granularity_figure(rows: pd.DataFrame) -> go.Figure:
    """Accuracy against bit-width, one line per scheme, one panel per model."""
    fig = px.line(rows.sort_values("bits"), x="bits", y="accuracy", color="scheme", facet_col="model",
                  markers=True)
    fig.update_xaxes(autorange="reversed", dtick=1)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return _layout(fig, "Post-training quantization (weights and inputs) by scheme", "Bit-width (bits)",
                   "Test accuracy (%)")


def sensitivity_figure(layers: pd.DataFrame) -> go.Figure:
    """Mean accuracy drop (points) per layer, layers in network order, one panel per model and
    method."""
    df = layers.sort_values(["model", "kind", "position"])
    fig = px.bar(df, x="layer", y="sensitivity", color="kind", facet_col="model", barmode="group",
                 category_orders={"layer": list(dict.fromkeys(df["layer"]))})
    fig.update_xaxes(matches=None, tickangle=-45, automargin=True)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return _layout(fig, "Layer sensitivity (mean drop over the swept levels)", "Layer (network order)",
                   "Accuracy drop (points)", pct=False)


def allocation_figure(allocations: pd.DataFrame) -> go.Figure:
    """Sensitivity-aware plan against the uniform plan of the same size, per model and method."""
    df = allocations.assign(case=allocations["model"] + " · " + allocations["kind"])
    long = df.melt(id_vars=["case"], value_vars=["allocated_accuracy", "uniform_accuracy"],
                   var_name="plan", value_name="accuracy")
    long["plan"] = long["plan"].str.replace("_accuracy", "")
    fig = px.bar(long, x="case", y="accuracy", color="plan", barmode="group")
    return _layout(fig, "Allocated against uniform at the same size", "", "Test accuracy (%)")


EVIDENCE = {"pruning-retraining": "steps", "deep-compression": "stages", "distillation": "per_seed",
            "quantization-granularity": "rows", "layer-sensitivity": "layers"}


def case_figures(case: str, result: dict) -> list[go.Figure]:
    """Every figure of one case, from its result's to_dict(); none when a stop left nothing measured."""
    if case in EVIDENCE and not result.get(EVIDENCE[case]):
        return []
    if case == "pruning-retraining":
        return [pruning_figure(pd.DataFrame(result["steps"]), result["baseline_accuracy"])]
    if case == "deep-compression":
        return [deep_compression_figure(pd.DataFrame(result["stages"]))]
    if case == "distillation":
        figs = [distillation_figure(result)]
        if result["temperature_curve"]:
            figs.append(temperature_figure(pd.DataFrame(result["temperature_curve"]), result["student_alone"],
                                           result["teacher"]))
        return figs
    if case == "quantization-granularity":
        return [granularity_figure(pd.DataFrame(result["rows"]))]
    if case == "layer-sensitivity":
        return [sensitivity_figure(pd.DataFrame(result["layers"])),
                allocation_figure(pd.DataFrame(result["allocations"]))]
    raise ValueError(f"Unknown case {case!r}.")
