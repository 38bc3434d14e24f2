"""Measuring transformer methods: one method with fidelity, size and latency; per-layer sensitivity
sweeps of Linear layers grouped by block role; the int8 fidelity-target trade-off (keep the most
sensitive Linear layers in fp32, quantize the rest to real int8). Sweeps work on one private copy,
changing a layer in place and restoring it, and compare against the original's outputs computed once."""
from __future__ import annotations

import statistics
import warnings
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from compression.core.errors import ConfigError, StoppedError, UnsupportedLayerError
from compression.core.modules import copy_model, set_module
from compression.core.quant import compute_qparams, fake_quantize
from compression.core.registry import MethodConfig, compress
from compression.data.text import TextData
from compression.methods.heads_ffn import FFNPruneConfig, HeadPruneConfig
from compression.methods.hf import HFLowRankConfig, HFPruneConfig, HFQuantConfig, Int8Config, NMConfig
from compression.methods.int8 import int8_copy
from compression.methods.pruning import magnitude_mask
from compression.methods.training import StopFlag, is_stopped
from compression.metrics.text import Probe, cached_probe, make_probe, text_paired_latency
from compression.models.model import Model, embedding_names, linear_names

SweepCallback = Callable[[int, int, dict], None]   # (done, total, row)
# the transformer methods by their short names (the `hf` command's --method, the Transformers page)
METHOD_CONFIGS = {
    "prune": HFPruneConfig, "nm": NMConfig, "heads": HeadPruneConfig, "ffn": FFNPruneConfig,
    "quantize": HFQuantConfig, "int8": Int8Config, "lowrank": HFLowRankConfig,
}
METHOD_TITLES = {
    "prune": "unstructured magnitude pruning", "nm": "N:M (2:4) pruning", "heads": "attention-head pruning",
    "ffn": "FFN neuron pruning", "quantize": "simulated quantization", "int8": "real int8 (dynamic)",
    "lowrank": "low-rank (SVD)",
}
FIDELITY_KEYS = ("fidelity", "cosine", "neighbour_agreement", "agreement", "kl_divergence", "perplexity", "accuracy")


def latency_fields(hf: Model, model: nn.Module, batch_size: int = 8, seq_len: int = 32, repeats: int = 10,
                   rounds: int = 3) -> dict:
    """Measured latency of the original and of `model` at (batch_size, seq_len), paired
    (metrics.text.text_paired_latency: alternating rounds, so both see the same machine state).
    latency_before_ms / latency_after_ms are medians over the rounds, speedup their ratio,
    speedup_min / speedup_max the spread of the per-round ratios, and the setting."""
    p = text_paired_latency(hf, model, batch_size, seq_len, rounds, repeats)
    return {"latency_before_ms": p.original_ms, "latency_after_ms": p.compressed_ms, "speedup": 1 / p.ratio,
            "speedup_min": 1 / p.ratio_high, "speedup_max": 1 / p.ratio_low, "latency_rounds": rounds,
            "latency_before_min_ms": p.original_min_ms, "latency_after_min_ms": p.compressed_min_ms,
            "latency_batch": batch_size, "latency_seq_len": seq_len, "threads": p.threads,
            "latency_measurable": p.measurable}


def measure_method(hf: Model, cfg: MethodConfig, data: TextData, latency: bool = True, batch_size: int = 8,
                   seq_len: int = 32, repeats: int = 20, probe: Probe | None = None) -> tuple[Model, dict]:
    """Compress a copy of hf with `cfg`, then measure it against hf (on `probe`, by default the
    original's outputs on the texts, computed once per model and texts: `cached_probe`).

    Returns:
        (compressed Model, flat result: method, label, fidelity metrics, params_before/after,
        nonzero_before/after, measured latency before/after and speedup at (batch_size, seq_len),
        and the method's report under 'report').
    """
    compressed, report = compress(hf, cfg)
    probe = probe or cached_probe(hf, data)
    result = {"method": cfg.kind, "label": compressed.name.rsplit(" → ", 1)[-1], "kind": hf.task,
              **probe.fidelity(compressed.model)}
    result.update({k: report.metrics[k] for k in ("params_before", "params_after", "nonzero_before",
                                                   "nonzero_after") if k in report.metrics})
    if latency:
        result.update(latency_fields(hf, compressed.model, batch_size, seq_len, repeats))
    result["report"] = report.to_dict()
    return compressed, result


# ---- per-layer sensitivity ----------------------------------------------------------------------

def _weight_fn(method: str) -> Callable[[torch.Tensor, float], torch.Tensor]:
    if method == "prune":
        return lambda w, level: w * magnitude_mask(w.abs(), float(level)).to(w.dtype)
    if method == "quantize":
        return lambda w, level: fake_quantize(w, compute_qparams(w, int(level), True, axis=0))
    raise ConfigError(f"method must be 'prune' or 'quantize'; got {method!r}.")


def _check_levels(method: str, levels: Sequence[float]) -> list[float]:
    ok = (lambda v: 0 <= v < 1) if method == "prune" else (lambda v: float(v).is_integer() and 2 <= v <= 16)
    bad = [v for v in levels if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v)]
    if bad or not levels:
        what = "sparsities in [0, 1)" if method == "prune" else "integer bit-widths 2..16"
        raise ConfigError(f"levels must be {what}; got {list(levels)!r}.")
    return list(levels)


def sensitivity_sweep(hf: Model, data: TextData, method: str = "quantize", levels: Sequence[float] = (8, 4, 2),
                      layers: Sequence[str] | None = None, embeddings: bool = False, max_texts: int = 128,
                      callback: SweepCallback | None = None, stop: StopFlag = None) -> pd.DataFrame:
    """Compress one layer at a time (magnitude pruning at a sparsity or fake quantization at a
    bit-width) and measure the whole model's fidelity to the original.

    Returns:
        one row per (layer, level): layer, block, group (attention.q/k/v/qkv/o, ffn.in/out,
        embedding, head, other), method, level and the fidelity metrics. attrs: fidelity_metric, stopped.
    """
    levels = _check_levels(method, levels)
    fn = _weight_fn(method)
    names = list(layers) if layers is not None else linear_names(hf.model)
    names += embedding_names(hf.model) if embeddings and layers is None else []
    probe = make_probe(hf, data, max_texts=max_texts)
    work = copy_model(hf.model).eval()
    rows, total, stopped = [], len(names) * len(levels), False
    for name in names:
        layer = work.get_submodule(name)
        original = layer.weight.detach().clone()
        block, group = hf.group_of(name)
        for level in levels:
            if is_stopped(stop):
                stopped = True
                break
            with torch.no_grad():
                layer.weight.copy_(fn(original, level))
            metrics = probe.fidelity(work)
            rows.append({"layer": name, "block": block, "group": group, "method": method, "level": level,
                         **{k: metrics[k] for k in FIDELITY_KEYS if k in metrics}})
            if callback:
                callback(len(rows), total, rows[-1])
        with torch.no_grad():
            layer.weight.copy_(original)
        if stopped:
            break
    frame = pd.DataFrame(rows)
    frame.attrs.update(fidelity_metric="cosine" if hf.task == "encoder" else "top-1 agreement",
                       stopped=stopped, method=method)
    return frame


def sensitivity_by_group(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and worst fidelity per (group, level) of a sensitivity sweep."""
    return (frame.groupby(["group", "level"], sort=True)["fidelity"].agg(["mean", "min", "count"])
            .reset_index().rename(columns={"mean": "fidelity_mean", "min": "fidelity_min", "count": "layers"}))


# ---- int8 with a fidelity target ----------------------------------------------------------------

def _dynamic_int8(layer: nn.Linear) -> nn.Module:
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    layer.qconfig = torch.ao.quantization.default_dynamic_qconfig
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return DynLinear.from_float(layer)
    finally:
        del layer.qconfig


def int8_layer_sweep(hf: Model, probe: Probe, callback: SweepCallback | None = None,
                     stop: StopFlag = None) -> pd.DataFrame:
    """Fidelity with exactly one Linear layer in real int8, for every Linear layer; most sensitive first."""
    work = copy_model(hf.model).eval()
    names = linear_names(work, tied=True)
    rows = []
    for i, name in enumerate(names):
        if is_stopped(stop):
            break
        layer = work.get_submodule(name)
        set_module(work, name, _dynamic_int8(layer))
        metrics = probe.fidelity(work)
        set_module(work, name, layer)
        rows.append({"layer": name, "group": hf.group_of(name)[1],
                     **{k: metrics[k] for k in FIDELITY_KEYS if k in metrics}})
        if callback:
            callback(i + 1, len(names), rows[-1])
    frame = pd.DataFrame(rows, columns=["layer", "group", *FIDELITY_KEYS]).dropna(axis=1, how="all")
    return frame.sort_values("fidelity", kind="stable").reset_index(drop=True)


def _choices(n: int, ks: Sequence[int] | None) -> list[int]:
    if ks is not None:
        bad = [k for k in ks if not 0 <= int(k) <= n]
        if bad:
            raise ConfigError(f"k (layers kept in fp32) must be in 0..{n}; got {bad}.")
        return sorted({int(k) for k in ks})
    return list(range(n + 1)) if n <= 24 else sorted({round(i * n / 24) for i in range(25)})


def int8_tradeoff(hf: Model, data: TextData, ks: Sequence[int] | None = None, max_texts: int = 128,
                  batch_size: int = 8, seq_len: int = 32, repeats: int = 10,
                  callback: SweepCallback | None = None, stop: StopFlag = None) -> pd.DataFrame:
    """For k = 0..n: keep the k most int8-sensitive Linear layers in fp32, quantize the rest to real
    int8, and measure fidelity and latency (speed-up against the fp32 model).

    Returns:
        one row per k: k_kept, kept (layer names), int8_layers, the fidelity metrics, latency_ms,
        fp32_latency_ms (the original, timed just before: speedup is paired), speedup, params. attrs: sensitivity (per-layer sweep records, most sensitive first),
        fp32_latency_ms, latency_batch, latency_seq_len, stopped.
    """
    probe = make_probe(hf, data, max_texts=max_texts)
    sens = int8_layer_sweep(hf, probe, stop=stop)
    if sens.empty:
        raise StoppedError("Stopped before any layer was measured.") if is_stopped(stop) else \
            UnsupportedLayerError("No Linear layer to quantize to int8.")
    order = list(sens["layer"])
    rows, choices, fp32_times = [], _choices(len(order), ks), []
    for i, k in enumerate(choices):
        if is_stopped(stop):
            break
        model = int8_copy(hf.model, order[k:])
        metrics = probe.fidelity(model)
        # paired: the original is timed beside each choice, so each speed-up compares like with like
        paired = text_paired_latency(hf, model, batch_size, seq_len, rounds=1, repeats=repeats)
        fp32, latency = paired.original_ms, paired.compressed_ms
        fp32_times.append(fp32)
        rows.append({"k_kept": k, "kept": order[:k], "int8_layers": len(order) - k,
                     **{key: metrics[key] for key in FIDELITY_KEYS if key in metrics},
                     "latency_ms": latency, "fp32_latency_ms": fp32, "speedup": fp32 / latency})
        if callback:
            callback(i + 1, len(choices), rows[-1])
    frame = pd.DataFrame(rows)
    fp32 = statistics.median(fp32_times) if fp32_times else float("nan")
    frame.attrs.update(sensitivity=sens.to_dict("records"), fp32_latency_ms=fp32, latency_batch=batch_size,
                       latency_seq_len=seq_len, stopped=is_stopped(stop))
    return frame


def choose_int8(frame: pd.DataFrame, target: float) -> dict:
    """The fastest choice of an int8 trade-off whose fidelity reaches `target`; if none does, the
    most faithful one. The row as a dict, with 'meets_target'."""
    if frame.empty:
        raise ConfigError("The trade-off has no rows to choose from.")
    ok = frame[frame["fidelity"] >= target]
    row = ok.loc[ok["speedup"].idxmax()] if not ok.empty else frame.loc[frame["fidelity"].idxmax()]
    return {**row.to_dict(), "meets_target": not ok.empty, "target": target}
