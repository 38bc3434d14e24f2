"""Transformer models (Hugging Face format, local folders only): the public API in one place.

    from compression.workflows.transformers import load_hf_folder, load_text_data, HFPruneConfig, measure_method
    hf = load_hf_folder("path/to/folder")          # config.json + safetensors + tokenizer files
    data = load_text_data(None)                    # the bundled sample sentences
    small, result = measure_method(hf, HFPruneConfig(sparsity=0.5), data)
    result["fidelity"], result["speedup"]

The code lives in the packages: loading (models.hf, models.hf_demo, models.hf_layers), text data
(data.text), metrics (metrics.text), methods (methods.hf, methods.heads_ffn, methods.hf_distill; applied
with core.registry.compress like every method), sweeps and the int8 trade-off (analysis.hf).
`transformers` is imported only when a function needs it.
"""
from compression.analysis.hf import (choose_int8, int8_layer_sweep, int8_tradeoff, latency_fields, measure_method,
                                     sensitivity_by_group, sensitivity_sweep)
from compression.data.text import Encoded, SAMPLE_PATH, TextData, encode, load_text_bytes, load_text_data
from compression.methods.heads_ffn import FFNPruneConfig, HeadPruneConfig, head_importance
from compression.methods.hf import HFLowRankConfig, HFPruneConfig, HFQuantConfig, Int8Config, NMConfig, nm_mask
from compression.methods.hf_distill import HFDistillConfig, distill_hf, make_student
from compression.metrics.text import compare, fidelity, make_probe, model_outputs, neighbour_agreement, text_latency
from compression.models.hf import KINDS, load_hf_folder, model_kind
from compression.models.hf_archs import ARCHS
from compression.models.hf_demo import build_tokenizer, make_demo_folder
from compression.models.hf_layers import hf_layer_table, weight_values
from compression.models.model import Model, linear_names, tied_heads

METHOD_CONFIGS = {
    "prune": HFPruneConfig, "nm": NMConfig, "heads": HeadPruneConfig, "ffn": FFNPruneConfig,
    "quantize": HFQuantConfig, "int8": Int8Config, "lowrank": HFLowRankConfig,
}
METHOD_TITLES = {
    "prune": "unstructured magnitude pruning", "nm": "N:M (2:4) pruning", "heads": "attention-head pruning",
    "ffn": "FFN neuron pruning", "quantize": "simulated quantization", "int8": "real int8 (dynamic)",
    "lowrank": "low-rank (SVD)",
}

__all__ = [
    "ARCHS", "KINDS", "Model", "load_hf_folder", "model_kind", "make_demo_folder", "build_tokenizer",
    "TextData", "Encoded", "SAMPLE_PATH", "load_text_data", "load_text_bytes", "encode",
    "linear_names", "tied_heads", "hf_layer_table", "weight_values",
    "fidelity", "make_probe", "model_outputs", "compare", "neighbour_agreement", "text_latency",
    "HFPruneConfig", "NMConfig", "HeadPruneConfig", "FFNPruneConfig", "HFQuantConfig", "Int8Config",
    "HFLowRankConfig", "METHOD_CONFIGS", "METHOD_TITLES", "nm_mask",
    "head_importance",
    "measure_method", "latency_fields", "sensitivity_sweep", "sensitivity_by_group", "int8_layer_sweep", "int8_tradeoff",
    "choose_int8", "HFDistillConfig", "distill_hf", "make_student",
]
