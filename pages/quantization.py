"""Quantization: bit-width slider with live accuracy and per-layer SQNR; real int8 kernels beside it."""
import pandas as pd
import streamlit as st

from compression.core.modules import weight_layers
from compression.figures.common import curve_figure
from compression.figures.compress import sim_vs_real_figure, sqnr_figure
from compression.methods.quantization import QuantConfig, qat_finetune
from compression.methods.training import TrainConfig
from compression.metrics.summary import int8_size_note, size_change
from compression.workflows.slider import speed_note
from ui.errors import show_error
from ui.jobs import epoch_callback, tune_ui
from ui.state import (add_result, base_metrics, compressed_copy, compressed_result, current_base, current_data, curve,
                      keep_as_working, real_int8)
from ui.widgets import accuracy_label, intro, latency_metric, metric_row, record_button

st.title("Quantization")
intro("Quantization stores each weight as a small integer code (2-16 bits) plus a scale. The slider results "
      "are **simulated (fake quantization)**: weights (and optionally each layer's inputs) are rounded to "
      "the grid but computed in fp32, so they show the accuracy you would get, not the speed. The **real "
      "int8 kernels** panel runs PyTorch's dynamic int8 kernels and measures them: that is the speed and "
      "size you would deploy. SQNR (dB) says how much quantization noise each layer gets: higher is "
      "better, about 6 dB per bit; the dotted line is what a layer with no outliers would get.",
      "What quantization does and how to read this page", expanded=True)

c1, c2, c3 = st.columns(3)
bits = c1.slider("Bit-width", 2, 16, 8, key="quant_bits")
granularity = c2.radio("Granularity", ["channel", "tensor"], key="quant_granularity", horizontal=True,
                       help="channel: one scale per output channel; tensor: one scale for the whole layer")
calibration = c3.selectbox("Calibration (clipping)", ["minmax", "percentile", "mse"], key="quant_calibration",
                           help="how the range is chosen: full range, 99.99th percentile, or least squared error")
d1, d2, d3 = st.columns(3)
symmetric = d1.toggle("Symmetric", value=True, key="quant_symmetric", help="off: asymmetric (a zero point)")
activations = d2.toggle("Quantize activations too", value=False, key="quant_activations",
                        help="also round each layer's input, calibrated on training batches")
act_bits = d3.selectbox("Activation bits", [None, 2, 3, 4, 5, 6, 8, 10, 12, 16], key="quant_act_bits",
                        format_func=lambda b: "same as weights" if b is None else str(b), disabled=not activations)


def make_config(b: int) -> QuantConfig:
    return QuantConfig(bits=b, granularity=granularity, symmetric=symmetric, activations=activations,
                       act_bits=act_bits if activations else None, calibration=calibration)


try:
    cfg = make_config(bits)
    result = compressed_result(cfg)
    base_m = base_metrics()
except Exception as exc:
    show_error(exc, "Quantization failed")
    st.stop()
try:
    real = real_int8()
    add_result("quantize: real int8 kernels", real["report"]["config"], real["metrics"])
except Exception as exc:
    real = None
    show_error(exc, "Real int8 is not available for this model")
m = result["metrics"]
label = (f"{bits}-bit {granularity} {'sym' if symmetric else 'asym'} {calibration}"
         + (f" +act{act_bits or bits}" if activations else ""))
st.subheader("Simulated (fake quantization)")
m = metric_row(m, base_m, "Simulated: this is the fp32 model with rounded weights; its speed is not int8 speed.", cfg,
               result["report"])
add_result(f"quantize (simulated): {label}", cfg.to_dict(), m)  # last: the sidebar follows the slider
record_button(f"quantize (simulated): {label}", cfg.to_dict(), m, key="q_record")
st.subheader("Real int8 kernels")
if real is not None:
    rm = real["metrics"]
    k1, k2, k3, k4 = st.columns(4)
    k1.metric("int8 accuracy", f"{rm['accuracy']:.2%}", delta=f"{(rm['accuracy'] - base_m['accuracy']) * 100:+.2f} pts")
    k2.metric("int8 size", f"{rm['size_bytes'] / 1024:.1f} KiB", help=rm["size_method"], delta_color="off",
              delta=size_change(base_m["size_bytes"], rm["size_bytes"]))
    latency_metric(k3, rm, label=f"int8 latency (batch {rm['batch_size']})",
                   note="Real int8 kernels against the fp32 original, timed together on the scored samples.")
    k4.metric("Layers on int8 kernels", f"{real['report']['metrics']['int8_layers']}",
              help="; ".join(f"{s['layer']}: {s['reason']}" for s in real["report"]["skipped"]) or "all")
    size_note = int8_size_note(base_m["size_bytes"], rm["size_bytes"], int(real["report"]["metrics"]["int8_layers"]),
                               len(weight_layers(current_base().model)[0]))
    if size_note:
        st.warning(size_note)
    st.caption("Fixed settings: 8-bit weights per tensor, inputs quantized on the fly by PyTorch's dynamic int8 "
               "kernels (Linear layers only); independent of the controls above.")

left, right = st.columns(2)
rows = pd.DataFrame(result["report"]["layers"])
if not rows.empty:
    left.plotly_chart(sqnr_figure(rows, bits), key="quant_sqnr")
try:
    df = curve({b: make_config(b) for b in (2, 3, 4, 5, 6, 8, 10, 12, 16)}, "bits")
    title = f"{accuracy_label(current_data())} vs bit-width (simulated)"
    right.plotly_chart(curve_figure(df, "bits", "accuracy", title, marker_x=bits, baseline=base_m["accuracy"]),
                       key="quant_curve")
except Exception as exc:
    show_error(exc, "Could not compute the curve")
if real is not None:
    left.plotly_chart(sim_vs_real_figure(base_m, m, real["metrics"], speed_note(result["report"])),
                      key="quant_sim_vs_real")

st.subheader("Recover low-bit accuracy, keep the result")
if bits > 6:
    st.caption("Quantization-aware training matters most at 2-4 bits; at this bit-width the simulated "
               "accuracy is usually already close to the baseline.")
model, data = current_base().model, current_data()
tune_ui("quant_job", "QAT", "Quantization-aware fine-tune", cfg, f"quantize (simulated): {label}",
        lambda epochs, job: qat_finetune(model, data, cfg, TrainConfig(epochs=epochs),
                                         callback=epoch_callback(job, epochs), stop=job.stop))
if st.button("Keep the simulated model as the working model", key="quant_keep"):
    try:
        keep_as_working(compressed_copy(cfg), f"quantize {label}")
    except Exception as exc:
        show_error(exc, "Could not keep the model")
        st.stop()
    st.rerun()
