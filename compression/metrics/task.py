"""One evaluation for every `Model`: its task's numbers on its data, whatever the model is.

An image or tabular classifier (any origin: built-in, TorchScript, torch.export, state dict,
compact) is scored on a `Dataset` by `metrics.evaluate.evaluate` (accuracy, loss, confusion,
size, MACs, latency); a transformer on a `TextData` by `metrics.text` (perplexity for a decoder,
accuracy on labelled texts for a classifier, the embedding size for an encoder; its parameters and
latency). With a `reference` (usually the original) the comparison comes too: agreement and KL for
a classifier; cosine and neighbour agreement for an encoder; agreement, KL and both perplexities
for a decoder. The CLI's `evaluate` and the public `compression.evaluate` are this function.
"""
from __future__ import annotations

from compression.core.errors import ConfigError, ModelDataMismatch
from compression.core.modules import count_params
from compression.data.datasets import Dataset
from compression.data.text import TextData
from compression.metrics.evaluate import evaluate
from compression.metrics.text import fidelity, text_latency, text_scores
from compression.models.model import Model

TEXT_LATENCY_SEQ_LEN = 32
TEXT_SIZE_METHOD = "parameters x 4 bytes (fp32), each shared tensor once"


def evaluate_model(model: Model, data: Dataset | TextData, reference: Model | None = None, latency: bool = True,
                   device: str | None = None) -> dict:
    """The task's numbers of `model` on `data` as a JSON-ready dict (the keys of the CLI's `evaluate`).

    Args:
        model: any loaded or compressed Model.
        data: a Dataset for an image/tabular model, a TextData for a transformer.
        reference: a model to compare with (the original); same kind as `model`.
        latency: measure latency (image models at LATENCY_BATCH; transformers at 8 x 32 tokens).
        device: image models only; transformers are evaluated on the CPU.
    Raises:
        ModelDataMismatch: a transformer with a Dataset, or an image model with texts.
        ConfigError: a device for a transformer.
    """
    if model.is_text != isinstance(data, TextData):
        kind = "a transformer: it takes texts (.txt or .csv)" if model.is_text else \
            "an image/tabular model: it takes a data set, not texts"
        raise ModelDataMismatch(f"{model.name} is {kind}.")
    if not model.is_text:
        return evaluate(model.model, data, reference=reference.model if reference else None, latency=latency,
                        device=device).to_dict()
    if device not in (None, "cpu"):
        raise ConfigError("Transformers are evaluated on the CPU so far: drop --device.")
    return _evaluate_text(model, data, reference, latency)


def _evaluate_text(model: Model, data: TextData, reference: Model | None, latency: bool) -> dict:
    params = count_params(model.model)
    row = {**text_scores(model, data), "params": params, "fp32_bytes": params * 4, "size_method": TEXT_SIZE_METHOD}
    if reference is not None:
        row.update(fidelity(reference, model, data))
    if latency:
        lat = text_latency(model, seq_len=TEXT_LATENCY_SEQ_LEN)
        row.update({"latency_ms": lat.median_ms, "latency_iqr_ms": lat.iqr_ms, "batch_size": lat.batch_size,
                    "latency_seq_len": TEXT_LATENCY_SEQ_LEN, "threads": lat.threads})
    return row
