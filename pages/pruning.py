"""Pruning: drag the sparsity slider and watch accuracy, size and measured latency move."""
import streamlit as st

from compression.curves import weight_arrays
from compression.figures import curve_figure, histogram_figure
from compression.pruning import ChannelPruneConfig, PruneConfig, finetune
from compression.training import TrainConfig
from pages._common import (add_result, base_metrics, compressed_model, compressed_result, current_base,
                           current_data, curve, epoch_callback, keep_as_working, metric_row, show_error, sidebar,
                           training_controls)

sidebar()
st.title("Pruning")
with st.expander("What pruning does and how to read this page", expanded=True):
    st.write("Pruning sets the least important weights to zero (unstructured) or removes whole channels "
             "(structured). Unstructured sparsity shrinks the stored file but not the latency with dense "
             "kernels; removing channels makes the network really smaller and faster. The curve shows "
             "accuracy against sparsity for the chosen method; the histograms show which weights went.")

left, mid, right = st.columns(3)
sparsity = left.slider("Sparsity (%)", 0, 99, 50, key="prune_sparsity") / 100
method = mid.selectbox("Method", ["magnitude", "random", "taylor", "channel"], key="prune_method",
                       help="channel = structured: whole output channels / neurons removed")
scope = right.radio("Scope", ["layer", "global"], key="prune_scope", horizontal=True,
                    disabled=method == "channel", help="global: one threshold across all layers")
base = current_base()
layer_names = [n for n, m in base.model.named_modules() if hasattr(m, "weight") and not list(m.children())]
with st.expander("Per-layer overrides"):
    overrides = {}
    for name in st.multiselect("Layers with their own sparsity", layer_names, key="prune_override_layers"):
        overrides[name] = st.slider(f"{name} sparsity (%)", 0, 99, int(sparsity * 100), key=f"prune_ovr_{name}") / 100


def make_config(s: float):
    if method == "channel":
        return ChannelPruneConfig(sparsity=min(s, 0.95))
    return PruneConfig(method=method, sparsity=s, scope=scope, overrides=overrides)


try:
    cfg = make_config(sparsity)
    result = compressed_result(cfg)
    base_m = base_metrics()
except Exception as exc:
    show_error(exc, "Pruning failed")
    st.stop()

m = result["metrics"]
label = f"{method} {sparsity:.0%}" + (f" {scope}" if method != "channel" else "")
add_result(f"prune: {label}", cfg.to_dict(), m)
metric_row(m, base_m, "Unstructured zeros do not speed up dense kernels; channel pruning does.")
if method != "channel":
    st.caption(f"Achieved sparsity of the pruned layers: {result['report']['metrics']['sparsity']:.2%} "
               "(measured fraction of zeros).")
if result["report"]["skipped"]:
    st.caption("Skipped: " + "; ".join(f"{s['layer']} ({s['reason']})" for s in result["report"]["skipped"]))

levels = [0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95] if method == "channel" else [
    0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
c1, c2 = st.columns(2)
try:
    df = curve({s: make_config(s) for s in levels}, "sparsity")
    c1.plotly_chart(curve_figure(df, "sparsity", "accuracy", f"Test accuracy vs sparsity ({method})",
                                 marker_x=sparsity, baseline=base_m["accuracy"]), key="prune_curve")
except Exception as exc:
    show_error(exc, "Could not compute the curve")
pruned = compressed_model(cfg)
before, after = weight_arrays(base.model), weight_arrays(pruned)
layer = c2.selectbox("Layer", list(after), key="prune_hist_layer")
log_y = c2.toggle("Log y", key="prune_log_y", value=True)
if layer in before and before[layer].shape == after[layer].shape:
    c2.plotly_chart(histogram_figure({"before": before[layer], "after": after[layer]}, f"{layer} weights",
                                     log_y), key="prune_hist")

b1, b2, b3 = st.columns(3)
data = current_data()
finished = training_controls(
    "prune_job", "Fine-tune", "Fine-tune (masks fixed)", b1, b2,
    lambda epochs, job: finetune(pruned, data, TrainConfig(epochs=epochs), callback=epoch_callback(job, epochs),
                                 stop=job.stop))
if finished is not None:
    tuned, report = finished
    st.success(f"Fine-tuned: validation accuracy {report.metrics['accuracy_before']:.2%} → "
               f"{report.metrics['accuracy_after']:.2%} (sparsity unchanged).")
    if st.button("Keep the fine-tuned model as the working model", key="prune_keep_tuned"):
        keep_as_working(tuned, f"{label} + fine-tune")
        st.rerun()
if b3.button("Keep as working model", key="prune_keep"):
    keep_as_working(pruned, f"prune {label}")
    st.rerun()
