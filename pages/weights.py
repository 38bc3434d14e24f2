"""Weights: per-layer weight and activation histograms, statistics, and quantization grids."""
import streamlit as st

from compression.core.modules import is_frozen_code
from compression.figures.common import quant_grid_figure
from compression.figures.compress import activation_grid_figure, grid_table, same_grid_note, subsample, weight_stats
from compression.workflows.curves import quant_grid
from ui.errors import show_error
from ui.state import current_base, weights_and_inputs
from ui.widgets import intro

CALIBRATIONS = ["minmax", "percentile", "mse"]
PERCENT = st.column_config.NumberColumn(format="percent")
GRID_COLUMNS = {"clipped": st.column_config.NumberColumn(format="percent", help="share of the values beyond the "
                                                         "clipping range: clamped to an end level"),
                "low": st.column_config.NumberColumn(help="where clipping starts below: half a step under the "
                                                     "lowest level"),
                "high": st.column_config.NumberColumn(help="where clipping starts above: half a step over the "
                                                      "highest level")}


def grid_table_ui(col, values, grids: dict, key: str) -> None:
    """What each grid does to `values`, and why the grids coincide when they do."""
    col.dataframe(grid_table(values, grids), hide_index=True, width="stretch", key=key, column_config=GRID_COLUMNS)
    note = same_grid_note(values, grids)
    if note:
        col.caption(note)


st.title("Weights")
intro("How each layer's weights and inputs are distributed. Heavy tails and outliers (high kurtosis) make "
      "a layer hard to quantize: a min-max grid stretches its few levels to reach the largest values, while "
      "percentile or MSE clipping cuts the tails and spends the levels where most values are. On the "
      "histograms the dashed lines are each method's clipping range (values beyond it are clamped) and the "
      "ticks in the strip below, one row per method, its quantization levels; the table says how much each "
      "grid clips and how far values move.",
      "What this page shows and how to read it", expanded=True)
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
    grid_table_ui(left, values, grids, "weights_grid_table")
    if acts is not None and acts.size:
        symmetric = bool((acts < 0).any())  # inputs after a ReLU are all >= 0: an unsigned grid fits them
        act_grids = {m: quant_grid(acts, bits, m, symmetric=symmetric) for m in methods}
        right.plotly_chart(activation_grid_figure(subsample(acts), act_grids, f"{layer} inputs (256 training "
                                                  f"samples), {'signed' if symmetric else 'unsigned'} grids", log_y),
                           key="weights_act_hist")
        grid_table_ui(right, acts, act_grids, "weights_act_table")
    else:
        right.info(f"No input was recorded for {layer}: " + (
            "TorchScript modules take no hooks (export with torch.export to see inputs)."
            if is_frozen_code(current_base().model) else "an Embedding takes indices, not values."))
except Exception as exc:
    show_error(exc, "Could not draw the quantization grids")
if len(values) > 50_000 or (acts is not None and acts.size > 50_000):
    st.caption("Histograms drawn from a random 50,000 values; grids and tables use all of them.")
