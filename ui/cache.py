"""Caches: st.cache_resource for immutable shared things (the digits, demo weights), st.cache_data
for pure computations keyed by the model's and data's fingerprints (results, latency, curves)."""
from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from compression.core.registry import config_from_dict, config_from_json
from compression.data.datasets import Dataset, load_digits
from compression.metrics.evaluate import evaluate, plausibility_warning, predict_logits
from compression.models import zoo
from compression.workflows.curves import layer_inputs, sweep_configs, weight_arrays
from compression.workflows.slider import compress_and_evaluate, compressed_latency as measure, real_int8 as make


@st.cache_resource(show_spinner=False)
def shared_digits() -> Dataset:
    """The bundled data set: immutable, shared by every session."""
    return load_digits()


@st.cache_resource(show_spinner=False)
def shared_demo_weights(name: str) -> dict[str, torch.Tensor]:
    """A built-in model's weights: immutable, shared; each session copies them into its own model."""
    return {k: v.clone() for k, v in zoo.load_pretrained(name).state_dict().items()}


def own_demo_model(name: str) -> torch.nn.Module:
    """A new model object for this session, filled from the shared weights (copied)."""
    model = zoo.build(name)
    model.load_state_dict(shared_demo_weights(name))
    return model.eval()


@st.cache_data(show_spinner="Measuring the baseline…", max_entries=64)
def baseline_metrics(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str,
                     device: str = "cpu") -> dict:
    """Full evaluation of a model on `device`, computed once per (model, data, device)."""
    return evaluate(_model, _data, macs=False, device=device).to_dict(full=True)


@st.cache_data(max_entries=64, show_spinner=False)
def cached_plausibility(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str) -> str | None:
    return plausibility_warning(_model, _data)


@st.cache_data(max_entries=16, show_spinner=False)
def cached_reference_logits(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str) -> torch.Tensor:
    return predict_logits(_model, _data.scored.X)


@st.cache_data(max_entries=512, show_spinner=False)
def cached_compressed(_model: torch.nn.Module, model_id: str, cfg_json: str, _data: Dataset, data_id: str,
                device: str) -> dict:
    ref = cached_reference_logits(_model, model_id, _data, data_id)
    return compress_and_evaluate(_model, config_from_json(cfg_json), _data, latency=False, reference_logits=ref,
                                 device=device)


@st.cache_data(max_entries=512, show_spinner=False)
def cached_latency(_model: torch.nn.Module, model_id: str, cfg_json: str, _data: Dataset, data_id: str,
             device: str) -> dict:
    return measure(_model, config_from_json(cfg_json), _data, device=device)


@st.cache_data(max_entries=64, show_spinner="Computing the curve…")
def cached_curve(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str, configs_json: str,
                 x: str) -> pd.DataFrame:
    """A curve of accuracy against one config value, once per (model, data, configs)."""
    import json

    configs = {float(k): config_from_dict(v) for k, v in json.loads(configs_json).items()}
    return sweep_configs(_model, _data, configs, x)


@st.cache_data(max_entries=16, show_spinner="Reading weights and activations…")
def cached_weights_inputs(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str,
                    n: int) -> tuple[dict, dict]:
    return weight_arrays(_model), layer_inputs(_model, _data.train.X[:n])


@st.cache_data(max_entries=16, show_spinner="Real int8: quantizing and measuring the kernels…")
def cached_real_int8(_model: torch.nn.Module, model_id: str, _data: Dataset, data_id: str) -> dict:
    return make(_model, _data)
