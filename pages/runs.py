"""Runs: the experiment store's recorded runs as a filterable table; compare runs side by side,
delete runs, and see their trade-offs."""
import json

import pandas as pd
import streamlit as st

from compression.figures.analysis import store_frame, tradeoff_figure
from compression.io.store import Store, default_store_path
from ui.errors import show_error
from ui.widgets import filter_frame, intro

st.title("Runs")
intro("Every run recorded in the experiment store (a SQLite file; the CLI records runs with its store "
      "option, the app with its own). Filter the table, pick runs to compare their settings and numbers "
      "column by column, or delete runs you no longer need. The plots place the shown runs on accuracy "
      "against size and latency, with the Pareto front (the runs nothing else beats on both) dashed.")

try:
    store = Store(default_store_path())
    runs = store.dataframe()
except Exception as exc:
    show_error(exc, "Could not open the experiment store")
    st.stop()
st.caption(f"Store: `{default_store_path()}`")
if st.session_state.get("runs_deleted"):
    st.success(f"Deleted {st.session_state.pop('runs_deleted')} run(s).")
if runs is None or runs.empty:
    st.info("No runs recorded yet. Record runs from the CLI (e.g. `python -m compression prune … --store`) "
            "or from the compression pages; they appear here.")
    st.stop()

ID = next((c for c in ("id", "run_id") if c in runs.columns), runs.columns[0])
filters = [c for c in ("kind", "model", "data") if c in runs.columns]
shown = filter_frame(runs, "runs_filter", filters)

c1, c2, c3 = st.columns(3)
c1.metric("Runs in the store", len(runs))
c2.metric("Shown", len(shown))
acc = pd.to_numeric(store_frame(shown)["accuracy"], errors="coerce")
c3.metric("Best accuracy shown", f"{acc.max():.2%}" if acc.notna().any() else "–")

table = shown.drop(columns=[c for c in ("metrics", "model_fingerprint", "data_fingerprint") if c in shown])
first = [c for c in (ID, "kind", "model", "accuracy", "size_bytes", "latency_ms", "created") if c in table]
table = table[first + [c for c in table.columns if c not in first]]
for col in table.columns:  # dicts and lists as JSON text, so the table shows and filters them
    if table[col].map(lambda v: isinstance(v, (dict, list))).any():
        table[col] = table[col].map(lambda v: json.dumps(v, default=str) if isinstance(v, (dict, list)) else v)
st.dataframe(table, hide_index=True, width="stretch", key="runs_table")

ids = [str(v) for v in shown[ID]]
names = {str(r[ID]): " · ".join(str(r[c])[:12] for c in (ID, "kind", "model") if c in table)
         for _, r in table.iterrows()}
picked = st.multiselect("Runs to compare or delete", ids, key="runs_pick", format_func=lambda i: names.get(i, i),
                        help="pick two or more to see them side by side")
if picked:
    chosen = table[table[ID].astype(str).isin(picked)].set_index(ID)
    st.subheader("Side by side")
    st.dataframe(chosen.T.astype(str), width="stretch", key="runs_compare")
    with st.expander(f"Delete {len(picked)} run(s)"):
        sure = st.checkbox("Yes, delete them from the store for good", key="runs_confirm")
        if st.button("Delete", key="runs_delete", type="primary", disabled=not sure):
            try:
                keys = [r for r in runs[ID] if str(r) in picked]
                store.delete(keys)
            except Exception as exc:
                show_error(exc, "Could not delete the runs")
            else:
                st.session_state.pop("runs_pick", None)
                st.session_state.pop("runs_confirm", None)
                st.session_state["runs_deleted"] = len(keys)
                st.rerun()

points = store_frame(shown)
if pd.to_numeric(points["accuracy"], errors="coerce").notna().any():
    left, right = st.columns(2)
    left.plotly_chart(tradeoff_figure(points, "size_bytes"), key="runs_size_fig")
    if pd.to_numeric(points["latency_ms"], errors="coerce").notna().any():
        right.plotly_chart(tradeoff_figure(points, "latency_ms"), key="runs_latency_fig")
