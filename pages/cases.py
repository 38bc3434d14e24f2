"""Case studies: five published compression results re-run on the bundled digits, each in the
background with progress and Stop, its figures, the measured table beside the published one,
and every finished run recorded in the experiment store."""
import pandas as pd
import streamlit as st

from compression.figures.cases import case_figures
from compression.io.records import record_case
from compression.workflows import cases
from ui.errors import show_error
from ui.jobs import finished_result, job_panel, start_background
from ui.widgets import intro

TITLES = {"pruning-retraining": "Pruning + retraining", "deep-compression": "Deep Compression",
          "distillation": "Distillation", "quantization-granularity": "Quantization granularity",
          "layer-sensitivity": "Layer sensitivity"}
EXPLAIN = {
    "pruning-retraining": "Han et al. (2015) removed 92% of LeNet-300-100's weights without losing accuracy by "
                          "pruning the smallest weights a little at a time and **retraining** in between. Here the "
                          "built-in MLP is pruned to 93% sparsity in steps, retrained with the masks fixed, and "
                          "compared with pruning to the same sparsity in **one shot without retraining**.",
    "deep-compression": "Deep Compression (Han et al., 2016) stacks pruning, quantization of the surviving weights "
                        "and entropy coding: LeNet shrank about 40x. Here: iterative pruning to 95%, 5-bit weights "
                        "(8-bit convolutions, as the paper), and the project's compact file (positions + bit-packed "
                        "codes + zlib, standing in for Huffman coding), **measured by writing it**.",
    "distillation": "Hinton et al. (2015) trained a small net on a big net's softened outputs (temperature T) and "
                    "it made almost as few errors as the big net. Here the built-in student starts from the same "
                    "random weights per seed and is trained on the labels alone, then distilled from the teacher; "
                    "the curve shows how the result moves with T.",
    "quantization-granularity": "Distiller's ResNet-50 table: per-channel scales beat one scale per tensor, "
                                "asymmetric ranges with clipping do best, and symmetric per-tensor collapses first "
                                "as bits drop. Here weights and layer inputs of each built-in CNN are quantized "
                                "after training under six schemes at 8 to 2 bits. 'Collapsed' = more than 10 "
                                "points lost.",
    "layer-sensitivity": "Layers differ in how much compression they take (often the first and the last are the "
                         "most fragile). Each layer of each built-in CNN is pruned or quantized alone; then a "
                         "sensitivity-aware plan spends the same budget (80% sparsity; 3 bits on average) unevenly "
                         "and is measured against a uniform plan.",
}

st.title("Case studies")
intro("Each tab re-runs a published result end to end on the bundled 8x8 digits, seeded. The data set and "
      "models are far smaller than the papers', so the numbers differ: what should hold is the **shape** of each "
      "result, listed under 'Shape' with ✓ or ✗. One test image is 0.28 points of accuracy.")
c1, c2 = st.columns(2)
quick = c1.checkbox("Quick budget (seconds; rougher numbers)", False, key="cases_quick")
seeds = int(c2.number_input("Seeds (pruning, distillation)", 1, 10, 3, key="cases_seeds"))


def case_work(name: str, quick: bool, seeds: int):
    """The body of a case's background job."""
    def work(job):
        return cases.run_case(name, quick=quick, seeds=seeds, stop=job.stop,
                              progress=lambda done, total, msg: job.update(done / total, msg))
    return work


def record_once(key: str, result) -> None:
    """Record a finished case in the experiment store once per job."""
    job = st.session_state[key]
    if st.session_state.get(f"{key}_recorded") == job.started:
        return
    st.session_state[f"{key}_recorded"] = job.started
    try:
        st.session_state[f"{key}_run_id"] = record_case(result)
    except Exception as exc:  # the store is a convenience: the page keeps the result anyway
        st.caption(f"Not recorded in the experiment store: {exc}")


def shape_ui(holds: dict) -> None:
    marks = (f"{'✓' if ok else '✗'} {k.replace('_', ' ')}" for k, ok in holds.items())
    st.markdown("**Shape:** " + " · ".join(marks))


def table_ui(table: pd.DataFrame) -> None:
    """A case table across the page, never clipped: text columns as wide as their longest entry,
    fractions (accuracies) as percentages under short headers (the full header on hover)."""
    config = {}
    for col in table.columns:
        values = table[col]
        if pd.api.types.is_numeric_dtype(values):
            fraction = bool(values.dropna().between(0, 1).all())
            config[col] = st.column_config.NumberColumn(str(col).split(" (")[0], help=str(col),
                                                        format="percent" if fraction else "%g")
        else:
            longest = max([len(str(col)), *(len(str(v)) for v in values)])
            config[col] = st.column_config.TextColumn(width=min(900, 24 + 7 * longest))
    st.dataframe(table, hide_index=True, width="stretch", column_config=config)


def case_ui(name: str) -> None:
    st.markdown(EXPLAIN[name])
    key = f"case_job_{name}"
    if st.button("Run", key=f"case_run_{name}", type="primary"):
        try:
            start_background(key, TITLES[name], case_work(name, quick, seeds))
        except Exception as exc:
            show_error(exc, "Could not start the case")
    job_panel(key, TITLES[name])
    result = finished_result(key)
    st.markdown("**Measured** (digits)")  # the tables one above the other, each as wide as the page
    if result is None:
        st.caption("Press Run to measure.")
    else:
        table_ui(result.table())
        st.caption(f"{'quick' if result.quick else 'full'} budget, {len(result.seeds)} seed(s), "
                   f"{result.seconds:.1f} s")
    st.markdown("**Published**")
    table_ui(cases.published_table(name))
    st.caption(cases.source(name))
    if result is None:
        return
    if result.stopped:
        st.warning("Stopped early: these numbers cover only what finished before the stop.")
    shape_ui(result.holds)
    for i, fig in enumerate(case_figures(name, result.to_dict())):
        st.plotly_chart(fig, key=f"case_fig_{name}_{i}")
    record_once(key, result)
    if st.session_state.get(f"{key}_run_id"):
        st.caption(f"Recorded in the experiment store as run {st.session_state[f'{key}_run_id'][:8]} (Runs page).")


for tab, name in zip(st.tabs([TITLES[n] for n in cases.CASES]), cases.CASES):
    with tab:
        case_ui(name)
