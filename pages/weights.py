"""Weights: per-layer weight and activation histograms, statistics, and quantization grids."""
import numpy as np
import pandas as pd
import streamlit as st

from compression.curves import layer_inputs, quant_grid, weight_arrays
from compression.figures import histogram_figure, quant_grid_figure
from pages._common import current_base, current_data, show_error, sidebar

sidebar()
st.title("Weights")
with st.expander("What this page shows", expanded=True):
    st.write("How each layer's weights and inputs are distributed. Heavy tails and outliers make a layer hard "
             "to quantize: a min-max grid wastes its levels on the few large values, while percentile or "
             "MSE clipping spends them where most values are. The dashed lines are each method's clipping "
             "range, the ticks its quantization levels.")
base, data = current_base(), current_data()
try:
    weights = weight_arrays(base.model)
    inputs = layer_inputs(base.model, data.train.X[:256])
except Exception as exc:
    show_error(exc, "Could not read the model's layers")
    st.stop()
if not weights:
    st.info("This model has no Linear, Conv or Embedding layers to show.")
    st.stop()


def stats(values: np.ndarray) -> dict:
    std = float(values.std()) or 1.0
    z = (values - values.mean()) / std
    return {"mean |w|": float(np.abs(values).mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max()), "kurtosis": float((z ** 4).mean() - 3),
            "outliers > 3 std": float((np.abs(z) > 3).mean())}


table = pd.DataFrame([{"layer": n, "count": v.size, **stats(v)} for n, v in weights.items()])
st.dataframe(table, hide_index=True, width="stretch")
c1, c2, c3 = st.columns(3)
layer = c1.selectbox("Layer", list(weights), key="weights_layer")
bits = c2.slider("Bit-width for the grid", 2, 8, 4, key="weights_bits")
log_y = c3.toggle("Log y", value=True, key="weights_log_y")
methods = st.multiselect("Calibration methods", ["minmax", "percentile", "mse"], default=["minmax", "mse"],
                         key="weights_methods")
values = weights[layer]
grids = {m: quant_grid(values, bits, m) for m in methods}
left, right = st.columns(2)
left.plotly_chart(quant_grid_figure(values, grids, f"{layer} weights with {bits}-bit grids", log_y),
                  key="weights_hist")
if layer in inputs:
    right.plotly_chart(histogram_figure({"input": inputs[layer]}, f"{layer} input activations (256 training samples)",
                                        log_y), key="weights_act_hist")
