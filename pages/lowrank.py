"""Low-rank: replace layers by two thin factors (truncated SVD) and watch size, accuracy, latency."""
import pandas as pd
import streamlit as st

from compression.figures.common import bar_figure, curve_figure
from compression.methods.lowrank import LowRankConfig
from ui.errors import show_error
from ui.state import (add_result, base_metrics, compressed_copy, compressed_latency, compressed_result, current_data,
                      curve, keep_as_working)
from ui.widgets import accuracy_label, intro, metric_row, record_button

st.title("Low-rank factorisation")
intro("A weight matrix is replaced by the product of two thin matrices from its truncated SVD, keeping only "
      "the strongest directions. Fewer parameters and multiply-accumulates when the kept rank is small; "
      "accuracy falls when directions the model needs are dropped. The bars show the share of each layer's "
      "'energy' (squared singular values) that is kept; the curve shows accuracy against the rank ratio.",
      "What low-rank factorisation does and how to read this page", expanded=True)
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
label = f"lowrank: ratio {ratio:.2f}" + (" +conv" if include_conv else "")
m = metric_row(m, base_m, "Factorised layers are really smaller: fewer multiply-accumulates.", cfg)
add_result(label, cfg.to_dict(), m)
record_button(label, cfg.to_dict(), m, key="lr_record")
r = {**result["report"]["metrics"], **compressed_latency(cfg)["report"]}
p1, p2, _ = st.columns([1, 1, 2])
p1.metric("Parameters", f"{m['params']:,}", delta=f"{m['params'] - base_m['params']:+,}", delta_color="inverse")
p2.metric("MACs per sample", f"{r['macs_after']:,}", delta=f"{r['macs_after'] - r['macs_before']:+,}",
          delta_color="inverse")
if r.get("latency_after_ms") is not None:
    st.caption(f"Paired latency measurement at batch {r['latency_batch']}: {r['latency_before_ms']:.3f} ms → "
               f"{r['latency_after_ms']:.3f} ms. Two thin layers can be slower than one wide one when the "
               "rank is high: the saving needs rank × (in + out) well below in × out.")
rows = pd.DataFrame(result["report"]["layers"])
left, right = st.columns(2)
if not rows.empty:
    left.plotly_chart(bar_figure(rows, "layer", "energy_kept", "Energy kept per factorised layer", hover="rank"),
                      key="lowrank_energy")
if result["report"]["skipped"]:
    left.caption("Not factorised: " + "; ".join(f"{s['layer']} ({s['reason']})" for s in result["report"]["skipped"]))
try:
    df = curve({x: make_config(x) for x in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)}, "rank_ratio")
    right.plotly_chart(curve_figure(df, "rank_ratio", "accuracy", f"{accuracy_label(current_data())} vs rank ratio",
                                    marker_x=ratio, baseline=base_m["accuracy"]), key="lowrank_curve")
except Exception as exc:
    show_error(exc, "Could not compute the curve")
if st.button("Keep as working model", key="lowrank_keep"):
    try:
        keep_as_working(compressed_copy(cfg), f"low-rank {ratio:.2f}")
    except Exception as exc:
        show_error(exc, "Could not keep the model")
        st.stop()
    st.rerun()
