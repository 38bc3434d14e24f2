"""Export: download the working model, a self-contained report, the runs as CSV, and a recipe."""
import streamlit as st

from compression.io.export import available_formats, export_bytes
from compression.io.report import html_report, runs_csv
from compression.io.store import Store
from compression.metrics.summary import layer_table
from compression.workflows.recipes import dumps_recipe, recipe_from_data
from ui.errors import show_error
from ui.state import current_base, current_data, kept_steps

st.title("Export")
with st.expander("What you can take away", expanded=True):
    st.write("The working model (the last one you kept, or the original) in a format of your choice; "
             "a report that opens offline in any browser with the interactive figures; the recorded runs "
             "as CSV; and a recipe of the steps you kept, which `python -m compression run` replays.")

base, data = current_base(), current_data()
st.subheader(f"Model: {base.name}")
FORMAT_HELP = {"compact": "this project's compact format (smallest; `--model` reads it back)",
               "safetensors": "standard state dict, masks folded", "torchscript": "loads with plain torch.jit.load",
               "exported": "torch.export program (.pt2), dynamic batch", "onnx": "ONNX (optional package)"}
fmt = st.selectbox("Format", available_formats(), key="export_format", format_func=lambda f: f"{f}: {FORMAT_HELP[f]}")
if st.button("Prepare the file", key="export_prepare"):
    try:
        st.session_state["export_file"] = export_bytes(base.model, fmt, data.test.X[:2], stem="model")
    except Exception as exc:
        show_error(exc, f"Could not export as {fmt}")
prepared = st.session_state.get("export_file")
if prepared:
    payload, name, note = prepared
    st.download_button(f"Download {name} ({len(payload) / 1024:.1f} KiB)", payload, file_name=name,
                       key="export_download")
    if note:
        st.caption(note)

st.subheader("Report and runs")
store = Store()
runs = store.list(limit=200)
st.caption(f"{len(runs)} run(s) in the experiment store ({store.path}).")
chosen = st.multiselect("Runs in the report (none = the 50 newest)", [r.id for r in runs], key="export_runs",
                        format_func=lambda i: next(f"{r.kind} · {r.metrics.get('label', '')} · {r.created[:19]}"
                                                   for r in runs if r.id == i))
picked = [r for r in runs if r.id in chosen] or runs[:50]
if st.button("Build the report", key="export_report", disabled=not picked):
    try:
        st.session_state["export_report_html"] = html_report(picked, layer_table(base.model, data.test.X[:1]))
    except Exception as exc:
        show_error(exc, "Could not build the report")
if st.session_state.get("export_report_html"):
    st.download_button("Download report.html", st.session_state["export_report_html"], file_name="report.html",
                       mime="text/html", key="export_report_download")
if picked:
    st.download_button("Download runs.csv", runs_csv(picked), file_name="runs.csv", mime="text/csv",
                       key="export_csv")

st.subheader("Recipe of the kept steps")
steps = kept_steps()
if not steps:
    st.info("Keep a compressed model as the working model (on a method page) to build a recipe.")
else:
    try:
        text = dumps_recipe(recipe_from_data(steps), "yaml")
        st.code(text, language="yaml")
        st.download_button("Download recipe.yaml", text, file_name="recipe.yaml", key="export_recipe")
    except Exception as exc:
        show_error(exc, "Could not build the recipe")
