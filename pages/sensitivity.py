"""Sensitivity: compress one layer at a time over a range of levels (a background job), compare cheap
proxies with what the sweep measured, and let a budget allocator spend a compression target where
it hurts least."""
import pandas as pd
import streamlit as st

from compression.analysis.layer_notes import why_sensitive
from compression.analysis.proxies import measured_sensitivity
from compression.core.glossary import help_for
from compression.core.modules import weight_layers
from compression.figures.analysis import (allocation_figure, correlation_figure, proxy_figure, sweep_heatmap_figure,
                                          sweep_lines_figure)
from compression.metrics.summary import ranking_note
from compression.workflows.background import sweep_work
from ui.errors import show_error
from ui.jobs import finished_result, job_panel, live_events, start_background
from ui.state import current_base, current_data, current_device
from ui.widgets import intro, metric_delta

JOB = "sens_job"
LEVELS = {"prune": ("sparsity", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95], [0.3, 0.5, 0.7, 0.9]),
          "quantize": ("bits", [2, 3, 4, 5, 6, 8], [2, 3, 4, 8])}
LEVEL_TERMS = {"prune": "sparsity", "quantize": "bit-width"}
PROXY_TERMS = {"sensitivity": "sensitivity", "kurtosis": "kurtosis", "outlier_frac": "outlier fraction",
               "hessian_trace": "Hessian trace", "hessian_per_param": "Hessian per parameter",
               "obd_saliency": "OBD saliency", "gradxact": "gradient x activation", "conductance": "conductance"}


@st.cache_data(max_entries=64, show_spinner=False)
def layer_why(_model, model_id: str, layer: str, measured: str, kind: str) -> str:
    """compression.analysis.layer_notes.why_sensitive, once per (model, layer, verdict, method)."""
    return why_sensitive(_model, layer, measured, kind)


def why_panel(model, model_id: str, scores: pd.Series, kind: str) -> None:
    """Why the most and the least sensitive layers are so, each with a link to its weights."""
    most, least = str(scores.idxmax()), str(scores.idxmin())
    picks = dict.fromkeys([(most, "most"), (least, "least")])
    panel = st.expander(f"Why {most}" + (f" and {least}?" if least != most else "?"), expanded=True)
    panel.caption("What the layers' size, place and shape say: rules of thumb that explain the sweep, not replace it.")
    for col, (layer, measured) in zip(panel.columns(len(picks)), picks):
        try:
            col.markdown(layer_why(model, model_id, layer, measured, kind))
        except Exception as exc:  # an unusual layer: the sweep's numbers above still stand
            col.caption(f"No explanation for {layer}: {exc}")
        col.page_link("pages/weights.py", label=f"See {layer}'s weights", icon=":material/bar_chart:",
                      query_params={"layer": layer},
                      help=f"The Weights page: pick {layer} in its Layer list for the histogram and the "
                           "quantization grids.")


st.title("Sensitivity")
intro("Each layer is compressed on its own, at each level, while the rest of the model stays intact; the "
      "drop in validation accuracy shows how much that layer can take. Steep lines and red cells are "
      "sensitive layers. Proxies (weight statistics, Hessian trace, importance) guess sensitivity without "
      "the sweep; a Spearman ρ near 1 means a proxy ranks the layers as the sweep does. The allocator then "
      "spends a whole-model target unevenly, sparing sensitive layers, and is measured against a uniform plan.")

base, data = current_base(), current_data()
c1, c2, c3 = st.columns([1, 3, 1])
kind = c1.radio("Method", list(LEVELS), key="sens_kind", format_func=lambda k: k.capitalize())
level_title, options, default = LEVELS[kind]
levels = c2.multiselect(f"Levels ({level_title})", options, default=default, key=f"sens_levels_{kind}",
                        help=help_for(LEVEL_TERMS[kind]))
proxies_on = c3.checkbox("Proxies", True, key="sens_proxies",
                         help=help_for("proxy", note="Also compute the proxies after the sweep."))
if st.button("Run the sweep", key="sens_run", type="primary"):
    if not levels:
        st.error("Pick at least one level.")
    else:
        previous = st.session_state.get(JOB)
        try:
            start_background(JOB, "Sensitivity sweep", sweep_work(base.model, data, kind, sorted(levels), proxies_on,
                                                                        current_device()))
            if st.session_state.get(JOB) is not previous:  # started (not refused: one job at a time)
                st.session_state["sens_setup"] = {"kind": kind, "levels": sorted(levels),
                                                  "model": base.fingerprint, "data": data.fingerprint}
        except Exception as exc:
            show_error(exc, "Could not start the sweep")

job_panel(JOB, "Sensitivity sweep")
result, setup = finished_result(JOB), st.session_state.get("sens_setup", {})


def draw_partial(events: list) -> None:
    """While the sweep runs: the lines measured so far."""
    if events and not st.session_state[JOB].done:
        st.plotly_chart(sweep_lines_figure(pd.DataFrame(events), level_title=LEVELS[setup.get("kind", kind)][0]),
                        key="sens_live_fig")


live_events(JOB, draw_partial)
if result is None or result.get("sweep") is None or not len(result["sweep"]):
    st.stop()
if setup.get("model") != base.fingerprint or setup.get("data") != data.fingerprint:
    st.info("The model or data changed since the last sweep: run it again.")
    st.stop()

sweep: pd.DataFrame = result["sweep"]
kind, level_title = setup["kind"], LEVELS[setup["kind"]][0]
base_acc = sweep.attrs.get("baseline_accuracy")
scores = measured_sensitivity(sweep)  # mean accuracy drop over the swept levels, per layer
if sweep.attrs.get("stopped"):
    st.warning(f"Stopped early: the figures show the {len(sweep)} points measured before the stop.")
note = ranking_note(scores, len(weight_layers(base.model)[0]))
if note:
    st.warning(note)
    st.stop()
c1, c2, c3 = st.columns(3)
c1.metric("Most sensitive layer", str(scores.idxmax()), delta=f"-{scores.max() * 100:.2f} pts on average",
          help=help_for("sensitivity"))
c2.metric("Least sensitive layer", str(scores.idxmin()), delta=f"-{scores.min() * 100:.2f} pts on average",
          help=help_for("sensitivity"))
worst = sweep.loc[sweep["accuracy"].idxmin()]
metric_delta(c3, "Worst point", worst["accuracy"], base_acc, help=f"{worst['layer']} at {level_title} {worst['level']}")
why_panel(base.model, base.fingerprint, scores, kind)
left, right = st.columns(2)
left.plotly_chart(sweep_lines_figure(sweep, level_title=level_title, baseline=base_acc), key="sens_lines_fig")
right.plotly_chart(sweep_heatmap_figure(sweep, level_title=level_title), key="sens_heat_fig")

table, corr = result.get("proxies"), result.get("correlations") or {}
if table is not None and len(table):
    st.subheader("Proxies against the sweep")
    ranked = sorted((k for k in corr if corr[k] == corr[k]), key=lambda k: -corr[k])  # NaN left out
    if ranked:
        c1, c2 = st.columns([1, 3])
        c1.metric("Best proxy", ranked[0], delta=f"Spearman ρ = {corr[ranked[0]]:+.2f}", delta_arrow="off",
                  help=help_for("Spearman rho", note="Read 'larger = more sensitive': a good proxy ranks the layers "
                                                     "as the sweep did (ρ near +1)."))
        if len(table) < 5:
            c2.caption(f"With {len(table)} layers a rank correlation can take only a few values: "
                       "treat it as a hint, not a verdict.")
    picked = st.multiselect("Proxies to draw", list(corr), default=ranked[:3], key="sens_proxy_pick")
    left, right = st.columns(2)
    left.plotly_chart(proxy_figure(table, ["sensitivity", *picked]), key="sens_proxy_fig")
    right.plotly_chart(correlation_figure(corr), key="sens_corr_fig")
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c: st.column_config.Column(help=help_for(t)) for c, t in PROXY_TERMS.items()
                                if c in table})

st.subheader("Budget allocator")
st.caption("Plans per-layer levels that meet the whole-model target with the least predicted damage (the sum of "
           "the single-layer drops above), applies the plan and a uniform plan of the same size, and measures both.")
if kind == "prune":
    target = st.slider("Target sparsity (whole model)", 0.1, 0.95, 0.7, 0.05, key="sens_target")
else:
    target = st.select_slider("Target mean bits", [2, 3, 4, 5, 6, 8], 4, key="sens_target_bits")
sweep_id = st.session_state[JOB].started
if st.button("Plan and measure", key="sens_allocate"):
    try:
        from compression.analysis.allocation import plan_and_apply

        with st.spinner("Planning and measuring…"):
            st.session_state["sens_alloc"] = (sweep_id, target, plan_and_apply(base.model, data, sweep, target, kind))
    except Exception as exc:
        show_error(exc, "Could not allocate the budget")
alloc = st.session_state.get("sens_alloc")
if alloc is not None and alloc[0] == sweep_id:
    _, target_done, res = alloc
    c1, c2, c3, c4 = st.columns(4)
    metric_delta(c1, "Plan: predicted", res.predicted_accuracy, res.baseline_accuracy,
                 help="delta: against the baseline")
    metric_delta(c2, "Plan: measured", res.measured_accuracy, res.uniform_accuracy,
                 help="delta: against the uniform plan, measured")
    metric_delta(c3, "Uniform: predicted", res.uniform_predicted_accuracy, res.baseline_accuracy)
    metric_delta(c4, "Uniform: measured", res.uniform_accuracy, res.baseline_accuracy,
                 help="delta: against the baseline")
    unit = "overall sparsity" if kind == "prune" else "mean bits"
    st.caption(f"Target {target_done}; achieved {unit} {res.achieved:.3g} (uniform {res.uniform_achieved:.3g}); "
               f"accuracies on the {res.split} split, baseline {res.baseline_accuracy:.2%}.")
    st.plotly_chart(allocation_figure(res.layers_frame(), level_title), key="sens_alloc_fig")
