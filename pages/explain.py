"""Explain: which input pixels drive the prediction, for the original and the compressed model
side by side (captum attributions), and how similar the two explanations are."""
import streamlit as st

from compression.analysis.attribution import METHODS, compare_attributions, predicted_class
from compression.figures.analysis import attribution_figure
from compression.methods.pruning import PruneConfig
from ui.errors import show_error
from ui.state import compressed_model, current_base, current_data, original_model
from ui.widgets import intro

st.title("Explain")
intro("An attribution method scores every input pixel by how much it pushes the model towards its "
      "prediction (red: towards, blue: against; the colour bar beside each row gives its scale). If compression "
      "kept the model's reasoning, the compressed model's map looks like the original's; the similarity score "
      "(1 = same map, 0 = unrelated) says how much. Each row is one test image: the image, then the original's "
      "map, then the compressed model's, both for the class the original predicts and on one colour scale per row.")

data, base = current_data(), current_base()
n = len(data.scored)
c1, c2 = st.columns([3, 1])
indices = c1.multiselect(f"Samples ({data.eval_split} split)", list(range(n)), default=[i for i in (0, 1, 2) if i < n],
                         key="ex_indices", max_selections=6,
                         format_func=lambda i: f"#{i} ({data.class_names[int(data.scored.y[i])]})")
method = c2.selectbox("Method", list(METHODS), key="ex_method", format_func=lambda m: m.replace("_", " "))

original = original_model()  # set when a compressed model was kept: that model is now `base`
QUICK = "a quick magnitude prune of the current model"
if original is None:
    source = "prune"
    st.markdown(f"**Compared:** {QUICK} ({base.name}). Keep a compressed model on a method page (Pruning, "
                "Quantization, Low-rank, Distillation) to compare it with the original here.")
else:
    if st.session_state.get("ex_source_for") != base.fingerprint:  # a model kept since the last visit: show it
        st.session_state["ex_source"], st.session_state["ex_source_for"] = "working", base.fingerprint
    sources = {"working": f"the kept model ({base.name}) against the original ({original.name})", "prune": QUICK}
    source = st.radio("Compare", list(sources), key="ex_source", horizontal=True, format_func=sources.get)
if source == "prune":
    sparsity = st.slider("Sparsity", 0.0, 0.99, 0.8, 0.01, key="ex_sparsity",
                         help="fraction of each layer's smallest-magnitude weights set to zero")
try:
    if source == "working":
        reference, compressed, what = original.model, base.model, base.name
    else:
        reference, what = base.model, f"magnitude prune {sparsity:.0%}"
        compressed = compressed_model(PruneConfig(method="magnitude", sparsity=sparsity))
except Exception as exc:
    show_error(exc, "Could not build the compressed model")
    st.stop()
if not indices:
    st.info("Pick at least one test image.")
    st.stop()

x = data.scored.X[indices]  # (B, C, H, W)
try:
    with st.spinner("Computing attributions…"):
        res = compare_attributions(reference, compressed, x, method)
        pred_o, pred_c = predicted_class(reference, x), predicted_class(compressed, x)
except Exception as exc:
    show_error(exc, "Could not compute the attributions")
    st.stop()

sims, ranks = [float(s) for s in res["similarity"]], [float(s) for s in res["spearman"]]
c1, c2, c3, c4 = st.columns(4)
c1.metric("Mean similarity", f"{sum(sims) / len(sims):.3f}",
          help="cosine similarity of the absolute maps: 1 = the same explanation, 0 = unrelated")
c2.metric("Mean rank correlation", f"{sum(ranks) / len(ranks):+.3f}",
          help="Spearman correlation of the pixels' ranks by |attribution| (-1..1); NaN for a flat map")
c3.metric("Least similar image", f"#{indices[sims.index(min(sims))]}", delta=f"similarity {min(sims):.3f}",
          delta_color="off", delta_arrow="off")
agree = int((pred_o == pred_c).sum())
c4.metric("Same prediction", f"{agree}/{len(indices)}",
          delta=f"{agree - len(indices)}" if agree < len(indices) else None)
names = data.class_names
rows = [f"#{i} true {names[int(data.scored.y[i])]}, pred {names[int(po)]}→{names[int(pc)]}, sim {s:.2f}"
        for i, po, pc, s in zip(indices, pred_o, pred_c, sims)]
st.plotly_chart(attribution_figure(list(x), {"original": list(res["original"]), what: list(res["compressed"])},
                                   row_titles=rows), key="ex_fig")
