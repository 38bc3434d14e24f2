"""Low-rank: replace layers by two thin factors (truncated SVD) and watch size, accuracy, latency."""
import pandas as pd
import streamlit as st

from compression.figures import bar_figure, curve_figure
from compression.lowrank import LowRankConfig
from pages._common import (add_result, base_metrics, compressed_model, compressed_result, curve, keep_as_working,
                           metric_row, show_error, sidebar)

sidebar()
st.title("Low-rank factorisation")
with st.expander("What low-rank factorisation does and how to read this page", expanded=True):
    st.write("A weight matrix is replaced by the product of two thin matrices from its truncated SVD, keeping "
             "only the strongest directions. Fewer parameters and MACs when the kept rank is small; accuracy "
             "falls when directions the model needs are dropped. 'Energy kept' is the share of the squared "
             "singular values retained.")
c1, c2 = st.columns(2)
ratio = c1.slider("Rank ratio (kept rank / full rank)", 0.05, 1.0, 0.5, 0.05, key="lowrank_ratio")
include_conv = c2.toggle("Also factorise convolutions", value=False, key="lowrank_conv")


def make_config(r: float) -> LowRankConfig:
    return LowRankConfig(rank_ratio=round(r, 3), include_conv=include_conv)


try:
    cfg = make_config(ratio)
    result = compressed_result(cfg)
    base_m = base_metrics()
except Exception as exc:
    show_error(exc, "Low-rank factorisation failed")
    st.stop()
m = result["metrics"]
add_result(f"lowrank: ratio {ratio:.2f}" + (" +conv" if include_conv else ""), cfg.to_dict(), m)
metric_row(m, base_m)
st.metric("Parameters", f"{m['params']:,}", delta=f"{m['params'] - base_m['params']:+,}", delta_color="inverse")
rows = pd.DataFrame(result["report"]["layers"])
left, right = st.columns(2)
if not rows.empty:
    left.plotly_chart(bar_figure(rows, "layer", "energy_kept", "Energy kept per factorised layer", hover="rank"),
                      key="lowrank_energy")
if result["report"]["skipped"]:
    left.caption("Not factorised: " + "; ".join(f"{s['layer']} ({s['reason']})" for s in result["report"]["skipped"]))
try:
    df = curve({r: make_config(r) for r in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)}, "rank_ratio")
    right.plotly_chart(curve_figure(df, "rank_ratio", "accuracy", "Test accuracy vs rank ratio",
                                    marker_x=ratio, baseline=base_m["accuracy"]), key="lowrank_curve")
except Exception as exc:
    show_error(exc, "Could not compute the curve")
if st.button("Keep as working model", key="lowrank_keep"):
    keep_as_working(compressed_model(cfg), f"low-rank {ratio:.2f}")
    st.rerun()
