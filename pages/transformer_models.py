"""Transformers: compress a Hugging Face model from a local folder (or a tiny random demo) and measure
how close it stays to the original on texts, how much smaller it is and how fast it runs."""
import tempfile

import pandas as pd
import streamlit as st

from compression.analysis.hf import METHOD_CONFIGS, METHOD_TITLES, choose_int8, int8_tradeoff, latency_fields, measure_method, sensitivity_by_group, sensitivity_sweep
from compression.data.text import load_text_bytes, load_text_data
from compression.figures.common import bar_figure, histogram_figure
from compression.io.hf_export import hf_zip_bytes
from compression.io.store import Store
from compression.methods.hf_distill import HFDistillConfig, distill_hf
from compression.models.hf import KINDS, load_hf_folder
from compression.models.hf_demo import make_demo_folder
from compression.models.hf_layers import hf_layer_table, weight_values
from compression.models.model import Model
from ui.errors import show_error
from ui.jobs import job_panel, start_background

DISTILL_JOB = "hf_distill_job"
SAMPLE, UPLOAD = "sample sentences (bundled)", "upload .txt / .csv"


def record_hf_run(hf, data, result: dict) -> None:
    """Record a result in the experiment store (the Runs page lists it); never breaks the page."""
    report = result["report"]
    metrics = {k: v for k, v in result.items() if k != "report" and not isinstance(v, (dict, list))}
    try:
        Store().record(report["method"], (hf.name, hf.fingerprint), (data.name, data.fingerprint),
                       report["config"], metrics)
    except Exception as exc:
        st.caption(f"Not recorded in the experiment store: {exc}")


st.title("Transformers")
with st.expander("What this page does", expanded=False):
    st.write("A BERT, RoBERTa, DistilBERT or GPT-2 folder from `save_pretrained` (safetensors only), or a tiny "
             "random demo. Each method compresses a copy, measured against the original on the texts: an encoder by "
             "the cosine of its mean-pooled sentence embeddings and top-5 neighbour agreement, a classifier or "
             "decoder by top-1 agreement and KL divergence. Latency is measured (median after warm-up).")


def load(make) -> None:
    """Replace this session's transformer; earlier results go with the old one."""
    try:
        st.session_state["hf_model"] = make()
        for key in ("hf_result", "hf_tradeoff", "hf_sweep", DISTILL_JOB):
            st.session_state.pop(key, None)
    except Exception as exc:
        show_error(exc, "Could not load the model")


def make_demo(kind: str) -> Model:
    tmp = tempfile.TemporaryDirectory(prefix="hf-demo-")  # removed when the session ends
    st.session_state["hf_tmp"] = tmp
    return load_hf_folder(make_demo_folder(tmp.name, kind))


c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
folder = c1.text_input("Model folder on this machine", key="hf_folder", placeholder="/path/to/model")
if c2.button("Load folder", key="hf_load", disabled=not folder):
    load(lambda: load_hf_folder(folder))
demo_kind = c3.selectbox("Demo kind", KINDS, key="hf_demo_kind")
if c3.button("Create tiny demo", key="hf_demo"):
    load(lambda: make_demo(demo_kind))
hf = st.session_state.get("hf_model")
if hf is None:
    st.info("Give a model folder, or create a tiny random demo transformer to try the methods offline.")
    st.stop()

source = st.radio("Texts", [SAMPLE, UPLOAD], key="hf_text_source", horizontal=True)
data = load_text_data(None)
if source == UPLOAD:
    upload = st.file_uploader("One text per line (.txt) or a 'text' column and optional integer 'label' (.csv)",
                              type=["txt", "csv"], key="hf_text_upload")
    try:
        data = load_text_bytes(upload.name, upload.getvalue()) if upload is not None else data
    except Exception as exc:
        show_error(exc, "Could not use those texts; using the sample sentences")
s = hf.summary
st.caption(f"**{hf.name}**: {hf.task}, {s['architecture']} ({s['layers']} blocks, {s['heads']} heads, hidden "
           f"{s['hidden_size']}), {s['params']:,} parameters · texts: {data.name} ({len(data)})"
           + "".join(f" · {n}" for n in hf.notes))

table = hf_layer_table(hf)
with st.expander("Layers", expanded=False):
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"params_share": st.column_config.ProgressColumn("share of params", format="percent")})

st.subheader("Compress")
method = st.selectbox("Method", list(METHOD_CONFIGS), key="hf_method", format_func=METHOD_TITLES.get)
with st.form("hf_form"):
    if method == "prune":
        cfg_kw = {"sparsity": st.slider("Sparsity", 0.0, 0.95, 0.5, 0.05, key="hf_sparsity"),
                  "embeddings": st.checkbox("Embeddings too", key="hf_prune_emb")}
    elif method in ("heads", "ffn"):
        cfg_kw = {"fraction": st.slider("Fraction removed per block", 0.0, 0.9, 0.25, 0.05, key="hf_fraction")}
    elif method == "quantize":
        cfg_kw = {"bits": st.slider("Bit-width", 2, 16, 8, key="hf_bits"),
                  "embeddings": st.checkbox("Embeddings too", True, key="hf_quant_emb")}
    elif method == "lowrank":
        cfg_kw = {"rank_ratio": st.slider("Rank kept (fraction of full rank)", 0.05, 1.0, 0.5, 0.05, key="hf_rank")}
    else:
        cfg_kw = {}
    apply = st.form_submit_button("Apply and measure", type="primary")
if apply:
    try:
        with st.spinner("Compressing and measuring fidelity…"):  # latency below, once these show
            small, result = measure_method(hf, METHOD_CONFIGS[method](**cfg_kw), data, latency=False)
        st.session_state["hf_result"] = (hf.fingerprint, data.fingerprint, small, result)
        st.session_state.pop("hf_zip", None)
        record_hf_run(hf, data, result)
    except Exception as exc:
        show_error(exc, "The method failed")

saved = st.session_state.get("hf_result")
if saved and saved[:2] == (hf.fingerprint, data.fingerprint):
    small, r = saved[2], saved[3]
    st.caption(f"**{r['label']}** on {min(len(data), 256)} texts")
    k1, k2, k3, k4 = st.columns(4)
    k1.metric(f"Fidelity ({r['fidelity_metric']})", f"{r['fidelity']:.4f}", delta=f"{r['fidelity'] - 1:+.4f}")
    if hf.task == "encoder":
        k2.metric("Top-5 neighbour agreement", f"{r['neighbour_agreement']:.2%}",
                  delta=f"{(r['neighbour_agreement'] - 1) * 100:+.1f} pts")
    else:
        k2.metric("KL divergence", f"{r['kl_divergence']:.5f}", delta=f"{r['kl_divergence']:+.5f}",
                  delta_color="inverse")
    k3.metric("Non-zero params", f"{r['nonzero_after']:,}", delta=f"{r['nonzero_after'] - r['nonzero_before']:+,}",
              delta_color="inverse", help=f"stored parameters: {r['params_before']:,} → {r['params_after']:,}")
    if "latency_after_ms" not in r:
        with k4, st.spinner("Measuring latency…"):
            try:
                r.update(latency_fields(hf, small.model))  # both timed now, back to back
            except Exception as exc:
                st.caption(f"Latency not measured: {exc}")
    if "latency_after_ms" in r:
        k4.metric("Latency", f"{r['latency_after_ms']:.2f} ms", delta=f"{r['speedup']:.2f}x speed-up",
                  delta_color="off", help=f"measured after fidelity and size: median after warm-up, batch "
                  f"{r['latency_batch']} × {r['latency_seq_len']} tokens, {r['threads']} threads; original "
                  f"{r['latency_before_ms']:.2f} ms, timed just before it")
    if "perplexity" in r:
        st.caption(f"Perplexity {r['perplexity']:.2f} (original {r['perplexity_original']:.2f})")
    layer = st.selectbox("Weights of layer", list(table["layer"]), key="hf_hist_layer")
    series = {"original": weight_values(hf.model, layer), "compressed": weight_values(small.model, layer)}
    st.plotly_chart(histogram_figure({k: v for k, v in series.items() if v is not None}, f"Weights of {layer}",
                                     log_y=True), key="hf_hist")
    skipped = "; ".join(f"{x['layer']} ({x['reason']})" for x in r["report"]["skipped"])
    st.caption(" · ".join(filter(None, [skipped and f"Skipped: {skipped}", r["report"]["metrics"].get("note")])))
    if st.button("Prepare a download (Hugging Face folder, zipped)", key="hf_export",
                 help="save_pretrained with safetensors and the tokenizer, checked by loading it back"):
        try:
            with st.spinner("Saving and loading it back…"):
                st.session_state["hf_zip"] = (small.fingerprint, hf_zip_bytes(small, data))
        except Exception as exc:
            show_error(exc, "Cannot export this model")
    ready = st.session_state.get("hf_zip")
    if ready and ready[0] == small.fingerprint:
        st.download_button(f"Download model.zip ({len(ready[1]) / 2**20:.1f} MiB)", ready[1], file_name="model.zip",
                           mime="application/zip", key="hf_download")

with st.expander("Sensitivity by block: one Linear layer quantized at a time", expanded=False):
    if st.button("Sweep 8, 4 and 2 bits", key="hf_sens"):
        try:
            with st.spinner("Quantizing one layer at a time…"):
                st.session_state["hf_sweep"] = (hf.fingerprint, sensitivity_sweep(hf, data, "quantize", (8, 4, 2)))
        except Exception as exc:
            show_error(exc, "The sweep failed")
    sweep = st.session_state.get("hf_sweep")
    if sweep and sweep[0] == hf.fingerprint:
        groups = sensitivity_by_group(sweep[1]).assign(where=lambda d: d["group"] + " @" + d["level"].astype(str))
        st.plotly_chart(bar_figure(groups, "where", "fidelity_mean", "Mean fidelity by block role and bit-width",
                                   hover="layers"), key="hf_sens_fig")

st.subheader("Real int8 with a fidelity target")
t1, t2 = st.columns([3, 1], vertical_alignment="bottom")
target = t1.slider("Fidelity target", 0.90, 1.0, 0.99, 0.005, key="hf_target", format="%.3f")
if t2.button("Sweep the layers", key="hf_sweep_int8"):
    try:
        with st.spinner("Quantizing one layer at a time, then keeping the most sensitive in fp32…"):
            st.session_state["hf_tradeoff"] = (hf.fingerprint, int8_tradeoff(hf, data))
    except Exception as exc:
        show_error(exc, "The int8 sweep failed")
trade = st.session_state.get("hf_tradeoff")
if trade and trade[0] == hf.fingerprint:
    frame = trade[1]
    choice = choose_int8(frame, target)
    (st.success if choice["meets_target"] else st.warning)(
        f"Keep {choice['k_kept']} layer(s) in fp32, {choice['int8_layers']} in int8: "
        f"fidelity {choice['fidelity']:.4f}, {choice['speedup']:.2f}x measured speed-up"
        + ("" if choice["meets_target"] else " (target not reached)"))
    st.plotly_chart(bar_figure(frame.assign(k=frame["k_kept"].astype(str)), "k", "fidelity",
                               "Fidelity by number of layers kept in fp32", hover="speedup"), key="hf_trade_fig")
    st.dataframe(frame.drop(columns=["kept"]), hide_index=True, width="stretch")

st.subheader("Distil a smaller student")
d1, d2, d3 = st.columns(3, vertical_alignment="bottom")
keep_every = d1.number_input("Keep every n-th block", 2, 4, 2, key="hf_keep_every")
epochs = d2.number_input("Epochs", 1, 50, 3, key="hf_epochs")
if d3.button("Distil", key="hf_distill"):
    cfg = HFDistillConfig(keep_every=int(keep_every), epochs=int(epochs))
    start_background(DISTILL_JOB, "Distillation", lambda job: distill_hf(
        hf, data, cfg, stop=job.stop,
        callback=lambda p: job.update(p.fraction, f"epoch {p.epoch + 1}/{p.epochs}, loss {p.loss:.4f}")))
job = job_panel(DISTILL_JOB, "Distillation")
if job is not None and job.done and job.result is not None:
    m = job.result[1].metrics
    e1, e2 = st.columns(2)
    e1.metric(f"Student fidelity ({m['fidelity_metric']})", f"{m['fidelity_after']:.4f}",
              delta=f"{m['fidelity_after'] - m['fidelity_before']:+.4f} from training")
    e2.metric("Student params", f"{m['params_student']:,}", delta=f"{m['params_student'] - m['params_teacher']:+,}",
              delta_color="inverse")
    st.dataframe(pd.DataFrame(m["history"]), hide_index=True)
