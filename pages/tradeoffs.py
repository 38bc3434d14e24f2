"""Trade-offs: accuracy against size and against latency for every result of this session (and the
experiment store), with the Pareto front of the results no other result beats on both."""
import pandas as pd
import streamlit as st

from compression.figures.analysis import (TRADEOFF_COLUMNS, pareto_front, results_frame, same_setup, store_frame,
                                         tradeoff_figure, unique_results)
from compression.io.store import Store, default_store_path
from ui.errors import show_error
from ui.state import baseline_or_none, current_base, current_data, session_results
from ui.widgets import intro, metric_delta

st.title("Trade-offs")
intro("Every compressed model you evaluated is one point: accuracy (up is better) against size or latency "
      "(left is better). The dashed red line joins the Pareto front: the results no other result beats on "
      "both axes at once; anything below it is dominated. Hover a point to see its method and settings.")


def store_rows(this_setup: bool) -> pd.DataFrame:
    """The experiment store's runs (of this model on this data, with `this_setup`), if the store
    exists and can be read; an empty frame otherwise."""
    try:
        runs = Store(default_store_path()).dataframe()
        if this_setup:
            runs = same_setup(runs, current_base().fingerprint, current_data().fingerprint)
        return store_frame(runs)
    except Exception as exc:
        show_error(exc, "Could not read the experiment store")
        return pd.DataFrame(columns=TRADEOFF_COLUMNS)


base_m = baseline_or_none()
frames = [results_frame(session_results(), source="session")]
if st.checkbox("Include runs from the experiment store", True, key="to_store"):
    frames.append(store_rows(st.checkbox("Only runs of this model on this data", True, key="to_same_setup",
                                         help="Runs of other models or data sets are not comparable with "
                                              "this baseline; untick to see every recorded run.")))
if base_m:
    frames.append(results_frame([{"label": f"baseline {current_base().name}", "config": {"kind": "baseline"},
                                  "metrics": base_m, "model": current_base().name}], source="baseline"))
rows = unique_results(pd.concat([f for f in frames if len(f)], ignore_index=True)) if any(len(f) for f in frames) \
    else pd.DataFrame(columns=TRADEOFF_COLUMNS)
compressed = rows[rows["source"] != "baseline"]
if compressed.empty:
    st.info("No results yet. Compress the model on the Pruning, Quantization, Low-rank or Distillation "
            "pages (or record runs in the store from the CLI); each result then appears here.")
    st.stop()

models = sorted(rows["model"].astype(str).unique())
if len(models) > 1:
    picked = st.multiselect("Models", models, default=models, key="to_models")
    rows = rows[rows["model"].astype(str).isin(picked)]
rows = rows.assign(pareto_size=pareto_front(rows, "size_bytes"), pareto_latency=pareto_front(rows, "latency_ms"))

ref_acc = base_m["accuracy"] if base_m else None
tolerance = st.slider("Accuracy you accept to lose (points)", 0.0, 10.0, 1.0, 0.5, key="to_tolerance")
ok = rows[(rows["source"] != "baseline") & pd.to_numeric(rows["accuracy"], errors="coerce").notna()]
if ref_acc is not None:
    ok = ok[ok["accuracy"] >= ref_acc - tolerance / 100]
smallest = ok.loc[pd.to_numeric(ok["size_bytes"], errors="coerce").idxmin()] if ok["size_bytes"].notna().any() else None
fastest = ok.loc[pd.to_numeric(ok["latency_ms"], errors="coerce").idxmin()] if ok["latency_ms"].notna().any() else None

c1, c2, c3, c4 = st.columns(4)
c1.metric("Results", len(rows[rows["source"] != "baseline"]))
c2.metric("On the size Pareto front", int(rows["pareto_size"][rows["source"] != "baseline"].sum()))
metric_delta(c3, "Smallest within tolerance", smallest["size_bytes"] / 1024 if smallest is not None else None,
             base_m["size_bytes"] / 1024 if base_m else None, pct=False, fmt="{:.1f}", unit=" KiB", inverse=True,
             help=f"{smallest['label']}" if smallest is not None else "no result within the tolerance")
metric_delta(c4, "Fastest within tolerance", fastest["latency_ms"] if fastest is not None else None,
             base_m.get("latency_ms") if base_m else None, pct=False, fmt="{:.3f}", unit=" ms", inverse=True,
             help=f"{fastest['label']}" if fastest is not None else "no result within the tolerance")

left, right = st.columns(2)
left.plotly_chart(tradeoff_figure(rows, "size_bytes"), key="to_size_fig")
if rows["latency_ms"].notna().any():
    right.plotly_chart(tradeoff_figure(rows, "latency_ms"), key="to_latency_fig")
else:
    right.info("No latency measured for these results.")

st.subheader("All results")
table = rows.assign(size_kib=pd.to_numeric(rows["size_bytes"], errors="coerce") / 1024)
st.dataframe(table[["label", "source", "model", "method", "accuracy", "size_kib", "latency_ms", "pareto_size",
                    "pareto_latency", "config"]], hide_index=True, width="stretch",
             column_config={"accuracy": st.column_config.NumberColumn(format="percent"),
                            "size_kib": st.column_config.NumberColumn("Size (KiB)", format="%.1f"),
                            "latency_ms": st.column_config.NumberColumn("Latency (ms)", format="%.3f"),
                            "pareto_size": st.column_config.CheckboxColumn("front (size)"),
                            "pareto_latency": st.column_config.CheckboxColumn("front (latency)")})
