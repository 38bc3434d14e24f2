"""Start: what the app does in three sentences, and a guided two-minute tour through one model."""
import streamlit as st

from compression.models import zoo
from ui.state import choose_model, current_base

PITCH = ("Compression Studio shows what pruning, quantization, low-rank factorisation and distillation do to a "
         "PyTorch model: how much smaller and faster it gets, and how much accuracy that costs. Every setting is "
         "measured on real data beside the original model, so you see the price of a choice instead of guessing "
         "it. It also finds which layers are fragile and says why, and exports the compressed model you settle on.")
TOUR_MODEL = "demo:resnet"

# (page, title, icon, what to try and what to look for)
TOUR = [
    ("pages/model.py", "Pick a model", ":material/memory:",
     "Choose a model in the sidebar (the tour uses the Residual CNN) and look at its layer table: which layers "
     "hold most of the parameters, and how accurate it is before anything is removed."),
    ("pages/pruning.py", "Prune it", ":material/content_cut:",
     "Drag the sparsity slider to 90%: the non-zero parameters fall tenfold. Watch where accuracy starts to "
     "drop, then try the channel method, which really removes channels and changes the latency."),
    ("pages/quantization.py", "Quantize it", ":material/pin:",
     "Lower the bit-width from 8 to 4 to 2: accuracy holds at 8 bits and breaks at some point below; the SQNR "
     "bars show which layers get the most rounding noise."),
    ("pages/sensitivity.py", "See which layers are fragile", ":material/monitor_heart:",
     "Run the sweep (seconds on the built-in models): each layer is compressed alone, the most and least "
     "sensitive layers are named, and the page says why (size, position, shortcuts)."),
    ("pages/export.py", "Export the result", ":material/download:",
     "Press Keep on a result you like first; then download the compressed model and an offline HTML report "
     "of what was done."),
]


def use_tour_model() -> None:
    """Button callback: pick the tour's model in the sidebar's Model picker (before the rerun draws it)."""
    choose_model(TOUR_MODEL)


st.title("Compression Studio")
st.write(PITCH)

st.subheader("A two-minute tour")
base = current_base()
c1, c2 = st.columns([3, 1])
c1.caption(f"Model in use: **{base.name}**. Each step opens a page; the sidebar's model and data stay the same "
           "on every page.")
if st.session_state.get("model_source") != TOUR_MODEL:
    c2.button(f"Use the {zoo.ZOO[TOUR_MODEL[5:]].title}", key="start_tour_model", on_click=use_tour_model)
for number, (page, title, icon, hint) in enumerate(TOUR, start=1):
    with st.container(border=True):
        st.page_link(page, label=f"{number}. {title}", icon=icon)
        st.write(hint)

st.page_link("pages/glossary.py", label="Glossary: every term in plain words", icon=":material/menu_book:")
st.caption("The ⓘ next to a number explains it and links to the Glossary.")
