"""The transformer benchmark on a tiny config returns its keys (no timing asserts), and the cached
probe it relies on (compression.metrics.text.cached_probe) gives the same numbers as a fresh one."""
import copy

import torch

from benchmarks import transformer
from compression.core.registry import compress
from compression.data.text import load_text_data
from compression.methods.hf import HFPruneConfig
from compression.metrics.text import cached_probe, make_probe
from compression.models.hf import load_hf_folder
from compression.models.model import linear_names


def test_transformer_quick():
    res = transformer.run(quick=True, repeats=1)
    assert res["transformer_params"] > 0
    assert set(res["transformer_slider_ms"]) == set(transformer.METHODS)
    assert all(v > 0 for v in res["transformer_slider_ms"].values())
    assert all(v > 0 for v in res["transformer_then_latency_ms"].values())
    assert res["transformer_sweep_s"] > 0 and res["transformer_sweep_layers"] > 0
    assert res["transformer_sweep_points"] == res["transformer_sweep_layers"] * len(transformer.SWEEP_LEVELS)
    assert isinstance(res["transformer_slider_meets"], bool)


def test_cached_probe_is_reused_and_refreshed_after_an_in_place_change(tmp_path):
    hf = load_hf_folder(transformer.make_folder(tmp_path, transformer.QUICK_SIZES))
    data = load_text_data(None)
    small, _ = compress(hf, HFPruneConfig(sparsity=0.5))
    first = cached_probe(hf, data, max_texts=32)
    assert cached_probe(hf, data, max_texts=32) is first
    assert first.fidelity(small.model) == make_probe(hf, data, max_texts=32).fidelity(small.model)
    assert cached_probe(hf, data, max_texts=16) is not first  # other settings: a new probe
    with torch.no_grad():
        hf.model.get_submodule(linear_names(hf.model)[0]).weight.mul_(0.5)
    again = cached_probe(hf, data, max_texts=32)
    assert again is not first
    assert again.fidelity(small.model) == make_probe(hf, data, max_texts=32).fidelity(small.model)
    other = hf.replace(copy.deepcopy(hf.model), "copy")  # another model: its own entry
    assert cached_probe(other, data, max_texts=32) is not again
