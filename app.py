"""Compression Studio: see what pruning, quantization, low-rank factorisation and distillation
do to a PyTorch model. Run with `streamlit run app.py`."""
from pathlib import Path

import streamlit as st

from ui.sidebar import last_result, sidebar

ICON = Path(__file__).resolve().parent / "assets" / "icon.png"  # bundled: a Material icon here is fetched from a CDN

st.set_page_config(page_title="Compression Studio", page_icon=str(ICON), layout="wide")

PAGES = {
    "Start": [
        st.Page("pages/start.py", title="Start here", icon=":material/flag:", default=True),
        st.Page("pages/glossary.py", title="Glossary", icon=":material/menu_book:"),
    ],
    "Model": [
        st.Page("pages/model.py", title="Model & data", icon=":material/memory:"),
        st.Page("pages/weights.py", title="Weights", icon=":material/bar_chart:"),
    ],
    "Compress": [
        st.Page("pages/pruning.py", title="Pruning", icon=":material/content_cut:"),
        st.Page("pages/quantization.py", title="Quantization", icon=":material/pin:"),
        st.Page("pages/lowrank.py", title="Low-rank", icon=":material/view_column:"),
        st.Page("pages/distillation.py", title="Distillation", icon=":material/school:"),
        st.Page("pages/transformer_models.py", title="Transformers", icon=":material/translate:"),
    ],
    "Analyse": [
        st.Page("pages/sensitivity.py", title="Sensitivity", icon=":material/monitor_heart:"),
        st.Page("pages/explain.py", title="Explain", icon=":material/search:"),
    ],
    "Results": [
        st.Page("pages/tradeoffs.py", title="Trade-offs", icon=":material/balance:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/folder_open:"),
        st.Page("pages/export.py", title="Export", icon=":material/download:"),
        st.Page("pages/cases.py", title="Case studies", icon=":material/science:"),
    ],
}

# The shared sidebar is drawn here, once per run and before the page: its widgets are then the
# same widgets on every page, so the model, data and device chosen survive a page change.
pg = st.navigation(PAGES, expanded=True)  # every page listed: no "View N more"
slot = sidebar()
pg.run()
last_result(slot)  # after the page: the sidebar shows this run's result, not the previous one's
