"""Pruning: drag the sparsity slider and watch accuracy, size and measured latency move."""
import pandas as pd
import streamlit as st

from compression.core.modules import weight_layers
from compression.figures.common import curve_figure, histogram_figure
from compression.figures.compress import layer_pruning_figure
from compression.methods.pruning import ChannelPruneConfig, PruneConfig, finetune
from compression.methods.training import TrainConfig
from compression.workflows.curves import weight_arrays
from ui.errors import show_error
from ui.jobs import epoch_callback, tune_ui
from ui.state import (add_result, base_metrics, compressed_copy, compressed_result, current_base, current_data,
                      current_device, curve, keep_as_working)
from ui.widgets import accuracy_label, intro, metric_row, record_button

CHANNEL_MAX = 0.95  # structured pruning keeps at least 5% of each layer's channels

st.title("Pruning")
intro("Pruning sets the least important weights to zero (unstructured: magnitude, random or Taylor "
      "scores) or removes whole channels (structured). Unstructured zeros shrink the stored file but not the "
      "latency, because dense kernels still multiply them; removing channels makes the network really "
      "smaller and faster. The numbers below follow the slider; the curve shows accuracy against sparsity "
      "for the chosen method (the grey line is where you are), the bars what each layer got, and the "
      "histograms which weights went.", "What pruning does and how to read this page", expanded=True)

left, mid, right = st.columns(3)
sparsity = left.slider("Sparsity (%)", 0, 99, 50, key="prune_sparsity") / 100
method = mid.selectbox("Method", ["magnitude", "random", "taylor", "channel"], key="prune_method",
                       help="channel = structured: whole output channels / neurons removed (torch-pruning)")
base = current_base()
overrides: dict[str, float] = {}
if method == "channel":
    importance = right.radio("Channel importance", ["l1", "taylor"], key="prune_importance", horizontal=True)
else:
    scope = right.radio("Scope", ["layer", "global"], key="prune_scope", horizontal=True,
                        help="layer: every layer at the same sparsity; global: one threshold across all layers")
    with st.expander("Per-layer overrides"):
        chosen = st.multiselect("Layers with their own sparsity", list(weight_layers(base.model)[0]),
                                key="prune_override_layers")
        for name in chosen:
            overrides[name] = st.slider(f"{name} sparsity (%)", 0, 99, int(sparsity * 100),
                                        key=f"prune_ovr_{name}") / 100


def make_config(s: float):
    if method == "channel":
        return ChannelPruneConfig(sparsity=min(s, CHANNEL_MAX), importance=importance)
    return PruneConfig(method=method, sparsity=s, scope=scope, overrides=overrides)


try:
    cfg = make_config(sparsity)
    result = compressed_result(cfg)
    base_m = base_metrics()
except Exception as exc:
    show_error(exc, "Pruning failed")
    st.stop()

m, report = result["metrics"], result["report"]
label = f"{method} {cfg.sparsity:.0%}" + (f" {scope}" if method != "channel" else f" ({importance})")
label += "".join(f" {n}={s:.0%}" for n, s in overrides.items())
m = metric_row(m, base_m, "Unstructured zeros do not speed up dense kernels; channel pruning does.", cfg, report)
add_result(f"prune: {label}", cfg.to_dict(), m)
record_button(f"prune: {label}", cfg.to_dict(), m, key="pr_record")
if method == "channel":
    r = report["metrics"]
    paired = (f"paired measurement at batch {m['batch_size']}, {m['threads']} threads: "
              f"{m['baseline_latency_ms']:.3f} → {m['latency_ms']:.3f} ms" if m.get("latency_ratios") else
              "latency not measured")
    st.caption(f"Channels really removed: the network is smaller, so its latency change is real "
               f"({paired}). Parameters {r['params_before']:,} → {r['params_after']:,}, "
               f"MACs {r['macs_before']:,} → {r['macs_after']:,}."
               + (f" Capped at {CHANNEL_MAX:.0%}." if sparsity > CHANNEL_MAX else ""))
else:
    st.caption(f"Achieved sparsity of the pruned layers: {report['metrics']['sparsity']:.2%}. Unstructured zeros "
               "are still stored in the dense tensors and multiplied by dense kernels, so no latency is shown: "
               "any measured change would be noise. Only the stored size shrinks, because the file format "
               "encodes zeros compactly.")
if report["skipped"]:
    st.caption("Skipped: " + "; ".join(f"{s['layer']} ({s['reason']})" for s in report["skipped"]))

levels = [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95] + ([] if method == "channel" else [0.99])
c1, c2 = st.columns(2)
try:
    df = curve({s: make_config(s) for s in levels}, "sparsity")
    c1.plotly_chart(curve_figure(df, "sparsity", "accuracy", f"{accuracy_label(current_data())} vs sparsity ({method})",
                                 marker_x=cfg.sparsity, baseline=base_m["accuracy"]), key="prune_curve")
except Exception as exc:
    show_error(exc, "Could not compute the curve")
if report["layers"]:
    c2.plotly_chart(layer_pruning_figure(pd.DataFrame(report["layers"]), "Per layer"), key="prune_layers")

try:
    pruned = compressed_copy(cfg)
except Exception as exc:
    show_error(exc, "Pruning failed")
    st.stop()
before, after = weight_arrays(base.model), weight_arrays(pruned)
h1, h2 = st.columns([3, 1])
layer = h2.selectbox("Layer", [n for n in after if n in before], key="prune_hist_layer")
log_y = h2.toggle("Log y", key="prune_log_y", value=True)
if layer is not None:
    h1.plotly_chart(histogram_figure({"before": before[layer], "after": after[layer]}, f"{layer} weights",
                                     log_y), key="prune_hist")

st.subheader("Recover accuracy, keep the result")
data, device = current_data(), current_device()  # read here: the job runs in another thread
tune_ui("prune_job", "Fine-tune", "Fine-tune (masks fixed)", cfg, f"prune: {label}",
        lambda epochs, job: finetune(pruned, data, TrainConfig(epochs=epochs), callback=epoch_callback(job, epochs),
                                     stop=job.stop, device=device))
if st.button("Keep the pruned model as the working model", key="prune_keep"):
    keep_as_working(pruned, f"prune {label}")
    st.rerun()
