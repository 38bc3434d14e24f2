"""Hugging Face transformer models from a local folder: safetensors only, never unpickled, never
downloaded. `transformers` is imported lazily (inside functions) so the rest of the app does not
pay for it at start-up.

A loaded transformer is a `Model` (models.model) of origin 'hf': the torch module, its tokenizer,
its task ('encoder', 'classifier' or 'decoder') and a summary of its config. GPT-2's `Conv1D` layers are turned into
`nn.Linear` on load (the same numbers: the weight transposed), so every method sees plain
`nn.Linear` layers.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from compression.core.errors import ModelLoadError
from compression.core.modules import count_params, set_module
from compression.models.hf_archs import ARCHS, DECODER_TYPES, supported
from compression.models.hf_checks import (PICKLE_SUFFIXES, TOKENIZER_FILES, WEIGHT_INDEXES, check_config,
                                          check_weight_index, first_line)
from compression.models.model import Model

KINDS = ("encoder", "classifier", "decoder")
# what transformers raises on a bad file; each becomes a ModelLoadError
LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, AssertionError,
               ImportError, IndexError)


def import_transformers():
    """`transformers`, imported offline and quietly (no hub access, no progress bars)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def check_folder(path: str | Path) -> Path:
    """The folder, if it holds a config and safetensors weights; a ModelLoadError saying what is
    missing otherwise. Pickle checkpoints (.bin, .pt) are refused, never read, and so is a
    weight index that names one."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder: give the folder holding config.json and the weights.")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"No config.json in {folder}: save the model with save_pretrained() "
                             "or copy its config.json next to the weights.")
    names = [p.name for p in folder.iterdir() if p.is_file()]
    if any(n.endswith(".safetensors") or n == WEIGHT_INDEXES[0] for n in names):
        if WEIGHT_INDEXES[0] in names:
            check_weight_index(folder / WEIGHT_INDEXES[0])
        return folder
    if WEIGHT_INDEXES[1] in names:
        check_weight_index(folder / WEIGHT_INDEXES[1])
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


def _load_errors() -> tuple[type[Exception], ...]:
    """LOAD_ERRORS plus huggingface_hub's strict config checks (a str where a float belongs), where present."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:
        return LOAD_ERRORS
    return LOAD_ERRORS + (StrictDataclassError,)


def _read_config(folder: Path):
    tf = import_transformers()
    try:
        config = tf.AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except _load_errors() as exc:
        raise ModelLoadError(f"Cannot read {folder / 'config.json'}: {first_line(exc)}. "
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
        tokenizer = tf.AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except _load_errors() as exc:
        raise ModelLoadError(f"No usable tokenizer in {folder} ({first_line(exc, 160)}): save the "
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
                                                  local_files_only=True, trust_remote_code=False)
    except _load_errors() as exc:
        raise ModelLoadError(f"Cannot load the {kind} weights from {folder}: "
                             f"{first_line(exc, 240)}") from None
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


def load_hf_folder(path: str | Path, kind: str | None = None) -> Model:
    """Load a transformer saved with save_pretrained: config.json, safetensors weights, tokenizer.

    Args:
        kind: force 'encoder', 'classifier' or 'decoder'; default: from the config (`model_kind`).
    Nothing in the folder is ever run: a config asking for its own code (auto_map) is refused, and
    config.json is checked (size, nesting, sizes of the model) before transformers reads it.

    Raises:
        ModelLoadError: no config, no weights, pickle weights (or an index naming them), a config
            that is too large, too deep, asks for remote code or has bad or absurd sizes, an
            unsupported architecture, no tokenizer, or a tokenizer larger than the embedding table.
    """
    folder = check_folder(path)
    check_config(folder)
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
    return Model(model, "hf", folder.name, weights_fingerprint(model), task=kind, tokenizer=tokenizer,
                 summary=summarize(model, config, tokenizer), notes=tuple(notes))
