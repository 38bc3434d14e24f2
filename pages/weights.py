"""Weights: per-layer weight and activation histograms, statistics, and quantization grids."""
import streamlit as st

from compression.curves import quant_grid
from compression.figures import quant_grid_figure
from compression.figures_compress import activation_grid_figure, grid_table, subsample, weight_stats
from compression.layers import is_frozen_code
from pages._common import current_base, show_error
from pages._compress_ui import intro, weights_and_inputs

CALIBRATIONS = ["minmax", "percentile", "mse"]
PERCENT = st.column_config.NumberColumn(format="percent")

st.title("Weights")
intro("How each layer's weights and inputs are distributed. Heavy tails and outliers (high kurtosis) make "
      "a layer hard to quantize: a min-max grid stretches its few levels to reach the largest values, while "
      "percentile or MSE clipping cuts the tails and spends the levels where most values are. On the "
      "histograms the dashed lines are each method's clipping range and the ticks along the bottom its "
      "quantization levels; the table below them says how much each grid clips and how far values move.",
      "What this page shows and how to read it")
try:
    weights, inputs = weights_and_inputs()
except Exception as exc:
    show_error(exc, "Could not read the model's layers")
    st.stop()
if not weights:
    st.info("This model has no Linear, Conv or Embedding layers to show.")
    st.stop()

st.subheader("Per-layer statistics")
st.dataframe(weight_stats(weights), hide_index=True, width="stretch",
             column_config={"zeros": PERCENT, "outliers > 3 std": PERCENT,
                            "kurtosis": st.column_config.NumberColumn(help="excess kurtosis: 0 for a Gaussian, "
                                                                      "large = heavy tails")})

c1, c2, c3, c4 = st.columns([2, 2, 3, 1])
layer = c1.selectbox("Layer", list(weights), key="weights_layer")
bits = c2.slider("Bit-width for the grid", 2, 8, 4, key="weights_bits")
methods = c3.multiselect("Calibration methods", CALIBRATIONS, default=CALIBRATIONS, key="weights_methods")
log_y = c4.toggle("Log y", value=True, key="weights_log_y")

values, acts = weights[layer], inputs.get(layer)
left, right = st.columns(2)
try:
    grids = {m: quant_grid(values, bits, m) for m in methods}
    left.plotly_chart(quant_grid_figure(subsample(values), grids, f"{layer} weights with {bits}-bit grids", log_y),
                      key="weights_hist")
    left.dataframe(grid_table(values, grids), hide_index=True, width="stretch", key="weights_grid_table",
                   column_config={"clipped": PERCENT})
    if acts is not None and acts.size:
        symmetric = bool((acts < 0).any())  # inputs after a ReLU are all >= 0: an unsigned grid fits them
        act_grids = {m: quant_grid(acts, bits, m, symmetric=symmetric) for m in methods}
        right.plotly_chart(activation_grid_figure(subsample(acts), act_grids, f"{layer} inputs (256 training "
                                                  f"samples), {'signed' if symmetric else 'unsigned'} grids", log_y),
                           key="weights_act_hist")
        right.dataframe(grid_table(acts, act_grids), hide_index=True, width="stretch", key="weights_act_table",
                        column_config={"clipped": PERCENT})
    else:
        right.info(f"No input was recorded for {layer}: " + (
            "TorchScript modules take no hooks (export with torch.export to see inputs)."
            if is_frozen_code(current_base().model) else "an Embedding takes indices, not values."))
except Exception as exc:
    show_error(exc, "Could not draw the quantization grids")
if len(values) > 50_000 or (acts is not None and acts.size > 50_000):
    st.caption("Histograms drawn from a random 50,000 values; grids and tables use all of them.")
