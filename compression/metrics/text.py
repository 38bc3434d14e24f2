"""How close a compressed transformer stays to the original on a set of texts, and how fast it runs.

- encoder (feature extractor): sentence embeddings by mean pooling over the attention mask; mean
  cosine similarity between original and compressed embeddings, and top-k neighbour agreement
  (overlap of each text's k nearest neighbours in both embedding spaces).
- classifier: top-1 agreement and KL(original || compressed) of the class probabilities;
  accuracy of both when the texts have labels.
- decoder: the same per next-token prediction over every real (non-padding) position, and
  perplexity of both models on the texts.

`fidelity` is the headline number: cosine for an encoder, top-1 agreement otherwise. An identical
copy scores exactly 1.0 (and KL 0.0).
"""
from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compression.core.errors import ModelDataMismatch
from compression.core.modules import set_training
from compression.data.text import Encoded, TextData, encode
from compression.metrics.latency import Latency, PairedLatency, measure_latency, paired_latency
from compression.models.model import Model

EVAL_BATCH = 32


class TextForward(nn.Module):
    """model(input_ids, attention_mask) -> the tensor the metrics use: the last hidden state
    (B, T, H) of an encoder, otherwise the logits ((B, C) or (B, T, V))."""

    def __init__(self, model: nn.Module, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {"use_cache": False} if self.kind == "decoder" else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)
        return out.last_hidden_state if self.kind == "encoder" else out.logits


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H), (B, T) -> (B, H): the mean of the real tokens' hidden states."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


@dataclass(eq=False)
class Outputs:
    """What one model produced on encoded texts, batch by batch.

    values: per batch, pooled embeddings (B, H), class logits (B, C) or next-token logits (B, T, V).
    masks: per batch attention masks (B, T). nll, tokens: decoder next-token NLL sum and count.
    """

    kind: str
    values: list[torch.Tensor]
    masks: list[torch.Tensor]
    nll: float = 0.0
    tokens: int = 0


def _next_token_nll(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Summed NLL of ids[:, 1:] under logits[:, :-1] at real positions, and their count."""
    valid = (mask[:, 1:] * mask[:, :-1]).bool()  # (B, T-1)
    nll = F.cross_entropy(logits[:, :-1][valid].float(), ids[:, 1:][valid], reduction="sum")
    return float(nll), int(valid.sum())


@torch.inference_mode()
def model_outputs(model: nn.Module, kind: str, enc: Encoded, batch_size: int = EVAL_BATCH) -> Outputs:
    """Run `model` (in eval mode; its train flag is restored) over the encoded texts."""
    forward = TextForward(model, kind)
    was_training = model.training
    set_training(model, False)
    out = Outputs(kind, [], [])
    try:
        for ids, mask in enc.batches(batch_size):
            y = forward(ids, mask).float()
            if kind == "encoder":
                y = mean_pool(y, mask)
            elif kind == "decoder":
                nll, count = _next_token_nll(y, ids, mask)
                out.nll, out.tokens = out.nll + nll, out.tokens + count
            out.values.append(y)
            out.masks.append(mask)
    finally:
        set_training(model, was_training)
    return out


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of matching rows (float64); exactly 1.0 where the rows are equal."""
    cos = F.cosine_similarity(a.double(), b.double(), dim=-1)
    return torch.where((a == b).all(-1), torch.ones_like(cos), cos)


def neighbour_agreement(a: torch.Tensor, b: torch.Tensor, k: int = 5) -> float | None:
    """Mean overlap (0-1) of each row's k nearest neighbours (cosine) in embeddings a and b (N, H)."""
    k = min(k, a.shape[0] - 1)
    if k < 1:
        return None

    def knn(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.double(), dim=1)
        sim = x @ x.T  # (N, N)
        sim.fill_diagonal_(float("-inf"))
        return sim.topk(k, dim=1).indices  # (N, k)

    ia, ib = knn(a), knn(b)
    overlap = (ia[:, :, None] == ib[:, None, :]).any(2).sum(1)  # (N,)
    return float(overlap.double().mean() / k)


def _kl_rows(ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """KL(softmax(ref) || softmax(out)) per row, >= 0."""
    lp_ref, lp_out = F.log_softmax(ref.double(), -1), F.log_softmax(out.double(), -1)
    return (lp_ref.exp() * (lp_ref - lp_out)).sum(-1).clamp(min=0.0)


def _flat(outputs: Outputs) -> torch.Tensor:
    """All rows compared: embeddings / class logits (N, D), or logits at real tokens (P, V)."""
    if outputs.kind != "decoder":
        return torch.cat(outputs.values)
    return torch.cat([v[m.bool()] for v, m in zip(outputs.values, outputs.masks)])


def compare(ref: Outputs, out: Outputs, labels: torch.Tensor | None = None, k: int = 5) -> dict:
    """Fidelity metrics of `out` against the reference outputs `ref` (see the module docstring)."""
    a, b = _flat(ref), _flat(out)
    cos = cosine_rows(a, b)
    result = {"cosine": float(cos.mean()), "cosine_min": float(cos.min())}
    if ref.kind == "encoder":
        result["neighbour_agreement"] = neighbour_agreement(a, b, k)
        result["mse"] = float((a.double() - b.double()).pow(2).mean())
        result.update(fidelity=result["cosine"], fidelity_metric="cosine")
        return result
    result["agreement"] = float((a.argmax(-1) == b.argmax(-1)).double().mean())
    result["kl_divergence"] = float(_kl_rows(a, b).mean())
    result.update(fidelity=result["agreement"], fidelity_metric="top-1 agreement")
    if ref.kind == "decoder":
        result["perplexity_original"] = math.exp(ref.nll / max(ref.tokens, 1))
        result["perplexity"] = math.exp(out.nll / max(out.tokens, 1))
    elif labels is not None:
        if int(labels.max()) >= a.shape[-1]:
            raise ModelDataMismatch(f"Labels go up to {int(labels.max())} but the classifier has {a.shape[-1]} "
                                    "classes: use labels 0 .. classes-1, or a model with more classes.")
        result["accuracy_original"] = float((a.argmax(-1) == labels).double().mean())
        result["accuracy"] = float((b.argmax(-1) == labels).double().mean())
    return result


@dataclass(frozen=True, eq=False)
class Probe:
    """Encoded texts and the original model's outputs on them: computed once, compared many times."""

    enc: Encoded
    ref: Outputs
    kind: str
    batch_size: int = EVAL_BATCH

    def fidelity(self, model: nn.Module, k: int = 5) -> dict:
        return compare(self.ref, model_outputs(model, self.kind, self.enc, self.batch_size), self.enc.labels, k)

    @property
    def nbytes(self) -> int:
        tensors = [self.enc.input_ids, self.enc.attention_mask, *self.ref.values, *self.ref.masks]
        return sum(t.numel() * t.element_size() for t in tensors)


def make_probe(original: Model, data: TextData, max_length: int = 64, max_texts: int | None = 256,
               batch_size: int = EVAL_BATCH) -> Probe:
    enc = encode(original.tokenizer, data, max_length, max_texts)
    return Probe(enc, model_outputs(original.model, original.task, enc, batch_size), original.task, batch_size)


PROBE_CACHE_BYTES = 64 * 2**20
_PROBES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()
_PROBES_LOCK = threading.Lock()


def _weights_version(model: nn.Module) -> tuple[int, ...] | None:
    """The in-place version counters of the model's parameters and buffers (any in-place change,
    e.g. `weight.copy_`, bumps one); None where a tensor keeps no counter (inference tensors)."""
    try:
        return tuple(t._version for t in (*model.parameters(), *model.buffers()))
    except RuntimeError:
        return None


def cached_probe(original: Model, data: TextData, max_length: int = 64, max_texts: int | None = 256,
                 batch_size: int = EVAL_BATCH) -> Probe:
    """`make_probe`, remembered for the last texts and settings asked of each model, so repeated
    measurements (one per slider move) run the original once. Held weakly (dropped with the model),
    recomputed when any of its parameters or buffers changed in place since, and not kept when its
    tensors exceed PROBE_CACHE_BYTES (e.g. a decoder's logits over a large vocabulary)."""
    version = _weights_version(original.model)
    key = (original.task, data, max_length, max_texts, batch_size, version)
    with _PROBES_LOCK:
        hit = _PROBES.get(original.model)
    if version is not None and hit is not None and hit[0] == key and hit[1] is original.tokenizer:
        return hit[2]
    probe = make_probe(original, data, max_length, max_texts, batch_size)
    if version is not None and probe.nbytes <= PROBE_CACHE_BYTES:
        with _PROBES_LOCK:
            _PROBES[original.model] = (key, original.tokenizer, probe)
    return probe


def fidelity(original: Model, compressed: Model | nn.Module, data: TextData, max_length: int = 64,
             max_texts: int | None = 256, k: int = 5) -> dict:
    """Fidelity of `compressed` to `original` on the texts (at most `max_texts`, `max_length` tokens).

    Returns:
        cosine, cosine_min and fidelity (the headline), plus neighbour_agreement and mse (encoder),
        agreement and kl_divergence (classifier, decoder), perplexity(_original) (decoder),
        accuracy(_original) (classifier with labels).
    """
    model = compressed.model if isinstance(compressed, Model) else compressed
    return make_probe(original, data, max_length, max_texts).fidelity(model, k)


def random_ids(hf: Model, batch_size: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """(B, T) token ids drawn uniformly from the tokenizer's vocabulary (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    vocab = min(len(hf.tokenizer), hf.model.get_input_embeddings().num_embeddings)
    return torch.randint(0, vocab, (batch_size, seq_len), generator=gen)


def text_scores(hf: Model, data: TextData, max_length: int = 64, max_texts: int | None = 256) -> dict:
    """What one text model scores on its own, by task: perplexity (decoder), accuracy when the texts
    are labelled (classifier), the embedding size (encoder). Fidelity needs a second model: `compare`.

    Returns:
        {task, texts, max_length, plus: perplexity, tokens (decoder); classes, accuracy when labelled
        (classifier); embedding_dim (encoder)}.
    """
    enc = encode(hf.tokenizer, data, max_length, max_texts)
    out = model_outputs(hf.model, hf.task, enc)
    row = {"task": hf.task, "texts": len(enc), "max_length": max_length}
    width = int(out.values[0].shape[-1]) if out.values else 0
    if hf.task == "decoder":
        row.update({"perplexity": math.exp(out.nll / max(out.tokens, 1)), "tokens": out.tokens})
    elif hf.task == "classifier":
        row["classes"] = width
        if enc.labels is not None:
            if int(enc.labels.max()) >= width:
                raise ModelDataMismatch(f"Labels go up to {int(enc.labels.max())} but the classifier has {width} "
                                        "classes: use labels 0 .. classes-1, or a model with more classes.")
            row["accuracy"] = float((torch.cat(out.values).argmax(-1) == enc.labels).double().mean())
    else:
        row["embedding_dim"] = width
    return row


def max_positions(hf: Model) -> int:
    return int(getattr(hf.model.config, "max_position_embeddings", None) or 512)


def text_latency(hf: Model, model: nn.Module | None = None, batch_size: int = 8, seq_len: int = 32,
                 repeats: int = 20, threads: int | None = None) -> Latency:
    """Measured latency of one forward pass (median after warm-up) on a (batch_size, seq_len) batch
    of token ids; `model` defaults to hf.model (pass a compressed one with the same tokenizer)."""
    ids = random_ids(hf, batch_size, min(seq_len, max_positions(hf)))
    model = model if model is not None else hf.model
    return measure_latency(TextForward(model, hf.task), ids, repeats=repeats, threads=threads)


def text_paired_latency(hf: Model, model: nn.Module, batch_size: int = 8, seq_len: int = 32, rounds: int = 3,
                        repeats: int = 10) -> PairedLatency:
    """`paired_latency` of hf.model and `model` (same tokenizer) on one (batch_size, seq_len) batch of
    token ids, in `rounds` alternating rounds."""
    ids = random_ids(hf, batch_size, min(seq_len, max_positions(hf)))
    return paired_latency(TextForward(hf.model, hf.task), TextForward(model, hf.task), ids, rounds, repeats)
