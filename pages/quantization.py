"""Quantization: bit-width slider with live accuracy and per-layer SQNR; real int8 beside it."""
import pandas as pd
import streamlit as st

from compression.figures import bar_figure, curve_figure
from compression.quantization import QuantConfig, qat_finetune, quantize_int8
from compression.training import TrainConfig
from pages._common import (add_result, base_metrics, compressed_model, compressed_result, current_base,
                           current_data, curve, epoch_callback, keep_as_working, metric_row, show_error, sidebar,
                           training_controls)

sidebar()
st.title("Quantization")
with st.expander("What quantization does and how to read this page", expanded=True):
    st.write("Quantization stores each weight as a small integer code (2-16 bits) plus a scale. The slider "
             "results are a **simulation** (fake quantization: weights rounded to the grid, computed in fp32): "
             "they show the accuracy you would get, not the speed. The **real int8** panel runs PyTorch's int8 "
             "kernels and measures them. SQNR (dB) says how much quantization noise each layer gets: higher is "
             "better, about 6 dB per bit.")

c1, c2, c3 = st.columns(3)
bits = c1.slider("Bit-width", 2, 16, 8, key="quant_bits")
granularity = c2.radio("Granularity", ["channel", "tensor"], key="quant_granularity", horizontal=True)
calibration = c3.selectbox("Calibration (clipping)", ["minmax", "percentile", "mse"], key="quant_calibration")
d1, d2 = st.columns(2)
symmetric = d1.toggle("Symmetric", value=True, key="quant_symmetric")
activations = d2.toggle("Quantize activations too", value=False, key="quant_activations")


def make_config(b: int) -> QuantConfig:
    return QuantConfig(bits=b, granularity=granularity, symmetric=symmetric, activations=activations,
                       calibration=calibration)


try:
    cfg = make_config(bits)
    result = compressed_result(cfg)
    base_m = base_metrics()
except Exception as exc:
    show_error(exc, "Quantization failed")
    st.stop()
m = result["metrics"]
label = f"{bits}-bit {granularity} {'sym' if symmetric else 'asym'} {calibration}" + (" +act" if activations else "")
add_result(f"quantize (simulated): {label}", cfg.to_dict(), m)
st.subheader("Simulated (fake quantization)")
metric_row(m, base_m, "Simulated: the latency is that of the fp32 model with rounded weights.")
rows = pd.DataFrame(result["report"]["layers"])
left, right = st.columns(2)
if not rows.empty:
    left.plotly_chart(bar_figure(rows, "layer", "sqnr_db", "SQNR per layer (dB)", hover="type"), key="quant_sqnr")
try:
    df = curve({b: make_config(b) for b in (2, 3, 4, 5, 6, 8, 10, 12, 16)}, "bits")
    right.plotly_chart(curve_figure(df, "bits", "accuracy", "Test accuracy vs bit-width", marker_x=bits,
                                    baseline=base_m["accuracy"]), key="quant_curve")
except Exception as exc:
    show_error(exc, "Could not compute the curve")

st.subheader("Real int8 (dynamic quantization kernels)")
if st.button("Measure real int8", key="quant_int8"):
    try:
        with st.spinner("Quantizing and measuring latency at batch 256…"):
            _, report = quantize_int8(current_base().model, input_shape=current_data().input_shape)
        st.session_state["quant_int8_result"] = (current_base().fingerprint, report.to_dict())
    except Exception as exc:
        show_error(exc, "Real int8 failed")
saved = st.session_state.get("quant_int8_result")
if saved and saved[0] == current_base().fingerprint:
    r = saved[1]["metrics"]
    k1, k2, k3 = st.columns(3)
    k1.metric("fp32 latency (batch 256)", f"{r['fp32_latency_ms']:.2f} ms")
    k2.metric("int8 latency (batch 256)", f"{r['int8_latency_ms']:.2f} ms", delta=f"{r['speedup']:.2f}x speed-up",
              delta_color="off")
    k3.metric("int8 size", f"{r['int8_bytes'] / 1024:.1f} KiB", delta=f"fp32 {r['fp32_bytes'] / 1024:.1f} KiB",
              delta_color="off", help=r["bytes_how"])
    if saved[1]["skipped"]:
        st.caption("Kept fp32: " + ", ".join(s["layer"] for s in saved[1]["skipped"]) +
                   " (PyTorch has dynamic int8 kernels only for Linear layers).")

st.subheader("Recover low-bit accuracy")
q1, q2, q3 = st.columns(3)
model, data = current_base().model, current_data()
finished = training_controls(
    "quant_job", "QAT", "Quantization-aware fine-tune", q1, q2,
    lambda epochs, job: qat_finetune(model, data, cfg, TrainConfig(epochs=epochs), callback=epoch_callback(job, epochs),
                                     stop=job.stop))
if finished is not None:
    tuned, report = finished
    st.success(f"QAT at {bits} bits: validation accuracy {report.metrics['accuracy_before']:.2%} (post-training) → "
               f"{report.metrics['accuracy_after']:.2%}.")
    if st.button("Keep the QAT model as the working model", key="quant_keep_qat"):
        keep_as_working(tuned, f"QAT {label}")
        st.rerun()
if q3.button("Keep as working model", key="quant_keep"):
    keep_as_working(compressed_model(cfg), f"quantize {label}")
    st.rerun()
