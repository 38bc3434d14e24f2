"""Hugging Face transformer models from a local folder: safetensors only, never unpickled, never
downloaded. `transformers` is imported lazily (inside functions) so the rest of the app does not
pay for it at start-up.

A loaded model is held as an `HFModel`: the torch module, its tokenizer, its kind ('encoder',
'classifier' or 'decoder') and a summary of its config. GPT-2's `Conv1D` layers are turned into
`nn.Linear` on load (the same numbers: the weight transposed), so every method sees plain
`nn.Linear` layers.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compression.errors import ModelLoadError
from compression.evaluate import count_params

KINDS = ("encoder", "classifier", "decoder")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")


@dataclass(frozen=True)
class ArchSpec:
    """Where an architecture keeps its blocks and, inside a block, its attention and FFN layers.

    Paths are relative: `blocks` to the base model, the others to one block. `qkv` names one fused
    projection (GPT-2) instead of separate `q`, `k`, `v`. `head_attrs` are the attention module's
    attributes that count heads; `size_attrs` those that hold heads * head_dim.
    """

    blocks: str
    attention: str
    o: str
    ffn_in: str
    ffn_out: str
    q: str = ""
    k: str = ""
    v: str = ""
    qkv: str = ""
    head_attrs: tuple[str, ...] = ()
    size_attrs: tuple[str, ...] = ()


_BERT = ArchSpec(blocks="encoder.layer", attention="attention.self", q="attention.self.query",
                 k="attention.self.key", v="attention.self.value", o="attention.output.dense",
                 ffn_in="intermediate.dense", ffn_out="output.dense",
                 head_attrs=("num_attention_heads",), size_attrs=("all_head_size",))
ARCHS: dict[str, ArchSpec] = {
    "bert": _BERT,
    "roberta": _BERT,
    "distilbert": ArchSpec(blocks="transformer.layer", attention="attention", q="attention.q_lin",
                           k="attention.k_lin", v="attention.v_lin", o="attention.out_lin",
                           ffn_in="ffn.lin1", ffn_out="ffn.lin2", head_attrs=("n_heads",)),
    "gpt2": ArchSpec(blocks="h", attention="attn", qkv="attn.c_attn", o="attn.c_proj", ffn_in="mlp.c_fc",
                     ffn_out="mlp.c_proj", head_attrs=("num_heads",), size_attrs=("split_size",)),
}
DECODER_TYPES = ("gpt2",)


@dataclass(frozen=True, eq=False)
class HFModel:
    """A transformer ready for the methods: the model (eval mode), its tokenizer and what it is.

    `summary` holds model_type, architecture, hidden_size, layers, heads, vocab_size, params.
    `fingerprint` identifies the weights (changes whenever a method changes the model).
    """

    model: nn.Module
    tokenizer: Any
    kind: str
    summary: dict
    name: str = "model"
    fingerprint: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def model_type(self) -> str:
        return self.summary["model_type"]

    @property
    def spec(self) -> ArchSpec:
        return ARCHS[self.model_type]

    def replace(self, model: nn.Module, label: str) -> "HFModel":
        """The same tokenizer and kind around a new (compressed) model."""
        summary = {**self.summary, "params": count_params(model)}
        return HFModel(model, self.tokenizer, self.kind, summary, f"{self.name} → {label}",
                       f"{self.fingerprint}|{label}", self.notes)


def import_transformers():
    """`transformers`, imported offline and quietly (no hub access, no progress bars)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def supported() -> str:
    return ", ".join(sorted(ARCHS))


def check_folder(path: str | Path) -> Path:
    """The folder, if it holds a config and safetensors weights; a ModelLoadError saying what is
    missing otherwise. Pickle checkpoints (.bin, .pt) are refused, never read."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder: give the folder holding config.json and the weights.")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"No config.json in {folder}: save the model with save_pretrained() "
                             "or copy its config.json next to the weights.")
    names = [p.name for p in folder.iterdir() if p.is_file()]
    if any(n.endswith(".safetensors") or n == "model.safetensors.index.json" for n in names):
        return folder
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ModelLoadError(f"{folder} holds only pickle weights ({', '.join(sorted(pickles))}), which can "
                             "run code when loaded and are refused. Convert them to safetensors first, e.g. "
                             "model.save_pretrained(folder, safe_serialization=True) where you trust the file.")
    raise ModelLoadError(f"No weights in {folder}: expected model.safetensors (or a sharded "
                         "model.safetensors.index.json).")


def model_kind(config) -> str:
    """'classifier' for a sequence-classification head (by architecture, or labels of its own),
    'decoder' for a causal LM (by architecture, or a decoder-only model type), else 'encoder'."""
    archs = list(getattr(config, "architectures", None) or [])
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "classifier"
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "decoder"
    id2label = dict(getattr(config, "id2label", None) or {})
    if id2label and any(str(v) != f"LABEL_{k}" for k, v in id2label.items()):
        return "classifier"
    if not archs and config.model_type in DECODER_TYPES:
        return "decoder"
    return "encoder"


def _read_config(folder: Path):
    tf = import_transformers()
    try:
        config = tf.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (ValueError, KeyError, OSError) as exc:
        raise ModelLoadError(f"Cannot read {folder / 'config.json'}: {str(exc).splitlines()[0][:200]}. "
                             f"Supported model types: {supported()}.") from None
    if config.model_type not in ARCHS:
        raise ModelLoadError(f"Unsupported architecture {config.model_type!r} "
                             f"({', '.join(config.architectures or []) or 'no architectures listed'}). "
                             f"Supported model types: {supported()}.")
    return config


def _load_tokenizer(folder: Path):
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"No tokenizer files in {folder} (looked for {', '.join(TOKENIZER_FILES)}): save the "
                             "tokenizer with tokenizer.save_pretrained() into the model's folder.")
    tf = import_transformers()
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"No usable tokenizer in {folder} ({str(exc).splitlines()[0][:160]}): save the "
                             "tokenizer with tokenizer.save_pretrained() into the same folder.") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError("The tokenizer has neither a pad nor an end-of-text token to pad batches with.")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _auto_class(kind: str):
    tf = import_transformers()
    return {"encoder": tf.AutoModel, "classifier": tf.AutoModelForSequenceClassification,
            "decoder": tf.AutoModelForCausalLM}[kind]


def _load_model(folder: Path, config, kind: str) -> nn.Module:
    try:
        model = _auto_class(kind).from_pretrained(folder, config=config, use_safetensors=True,
                                                  local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"Cannot load the {kind} weights from {folder}: "
                             f"{str(exc).splitlines()[0][:240]}") from None
    return model.eval()


def check_vocab(model: nn.Module, tokenizer) -> None:
    """Raise ModelLoadError when the tokenizer can produce ids the embedding table does not have."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ModelLoadError(f"Tokenizer mismatch: the tokenizer has {len(tokenizer):,} tokens but the model's "
                             f"embedding table has {rows:,} rows. Use the tokenizer saved with this model.")


def linearize_(model: nn.Module) -> list[str]:
    """Replace HF `Conv1D` layers (y = x @ W + b, W of shape (in, out)) with `nn.Linear`
    holding W transposed, in place. Returns the names replaced."""
    from compression.layers import set_module

    names = [n for n, m in model.named_modules() if type(m).__name__ == "Conv1D" and hasattr(m, "nf")]
    for name in names:
        conv = model.get_submodule(name)
        linear = nn.Linear(conv.nx, conv.nf, bias=conv.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(conv.weight.t())  # (out, in)
            if conv.bias is not None:
                linear.bias.copy_(conv.bias)
        set_module(model, name, linear)
    return names


def weights_fingerprint(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        if isinstance(value, torch.Tensor) and not value.is_quantized:
            digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def summarize(model: nn.Module, config, tokenizer) -> dict:
    return {"model_type": config.model_type, "architecture": type(model).__name__,
            "hidden_size": config.hidden_size, "layers": config.num_hidden_layers,
            "heads": config.num_attention_heads, "vocab_size": model.get_input_embeddings().num_embeddings,
            "tokenizer_size": len(tokenizer), "params": count_params(model)}


def load_hf_folder(path: str | Path, kind: str | None = None) -> HFModel:
    """Load a transformer saved with save_pretrained: config.json, safetensors weights, tokenizer.

    Args:
        kind: force 'encoder', 'classifier' or 'decoder'; default: from the config (`model_kind`).
    Raises:
        ModelLoadError: no config, no weights, pickle-only weights, an unsupported architecture,
            no tokenizer, or a tokenizer larger than the embedding table.
    """
    folder = check_folder(path)
    config = _read_config(folder)
    kind = kind or model_kind(config)
    if kind not in KINDS:
        raise ModelLoadError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}.")
    tokenizer = _load_tokenizer(folder)
    model = _load_model(folder, config, kind)
    check_vocab(model, tokenizer)
    notes = []
    converted = linearize_(model)
    if converted:
        notes.append(f"{len(converted)} GPT-2 Conv1D layers turned into nn.Linear (same numbers, weight transposed)")
    return HFModel(model, tokenizer, kind, summarize(model, config, tokenizer), folder.name,
                   weights_fingerprint(model), tuple(notes))
