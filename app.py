"""Compression Studio: see what pruning, quantization, low-rank factorisation and distillation
do to a PyTorch model. Run with `streamlit run app.py`."""
import streamlit as st

st.set_page_config(page_title="Compression Studio", page_icon="🗜️", layout="wide")

PAGES = {
    "Model": [
        st.Page("pages/model.py", title="Model & data", icon="🧠", default=True),
        st.Page("pages/weights.py", title="Weights", icon="📊"),
    ],
    "Compress": [
        st.Page("pages/pruning.py", title="Pruning", icon="✂️"),
        st.Page("pages/quantization.py", title="Quantization", icon="🔢"),
        st.Page("pages/lowrank.py", title="Low-rank", icon="🧮"),
        st.Page("pages/distillation.py", title="Distillation", icon="🎓"),
    ],
    "Analyse": [
        st.Page("pages/sensitivity.py", title="Sensitivity", icon="🩺"),
        st.Page("pages/explain.py", title="Explain", icon="🔍"),
    ],
    "Results": [
        st.Page("pages/tradeoffs.py", title="Trade-offs", icon="⚖️"),
        st.Page("pages/runs.py", title="Runs", icon="🗂️"),
    ],
}

# Each page draws the shared sidebar (pages._common.sidebar) as its first step, so the sidebar
# is drawn once per run whichever way the page is reached.
st.navigation(PAGES).run()
