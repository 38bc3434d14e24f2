"""Compression Studio: see what pruning, quantization, low-rank factorisation and distillation
do to a PyTorch model. Run with `streamlit run app.py`."""
import streamlit as st

st.set_page_config(page_title="Compression Studio", page_icon="🗜️", layout="wide")

PAGES = {
    "Model": [st.Page("pages/model.py", title="Model & data", icon="🧠", default=True)],
}

# Each page draws the shared sidebar (pages._common.sidebar) as its first step, so the sidebar
# is drawn once per run whichever way the page is reached.
st.navigation(PAGES).run()
