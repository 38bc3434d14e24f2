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
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compression.core.errors import ModelLoadError
from compression.core.modules import set_module
from compression.metrics.evaluate import count_params

KINDS = ("encoder", "classifier", "decoder")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")
JSON_MAX_BYTES = 1 << 20  # config.json, tokenizer_config.json, a weight index: read whole, so kept small
JSON_MAX_DEPTH = 64
PARAM_BUDGET_BYTES = 4 << 30  # fp32 bytes of the parameters a config.json may describe
MAX_LABELS = 100_000
REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines")  # what makes transformers import a folder's own .py
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# config.json keys that size the model, by what they size (BERT / RoBERTa, DistilBERT, GPT-2 names)
SIZE_FIELDS = {
    "hidden": ("hidden_size", "n_embd", "dim"),
    "layers": ("num_hidden_layers", "n_layer", "n_layers"),
    "heads": ("num_attention_heads", "n_head", "n_heads"),
    "vocab": ("vocab_size",),
    "ffn": ("intermediate_size", "n_inner", "hidden_dim"),
    "positions": ("max_position_embeddings", "n_positions", "n_ctx"),
    "types": ("type_vocab_size",),
    "labels": ("num_labels",),
}
SIZE_DEFAULTS = {"hidden": 768, "layers": 12, "heads": 12, "vocab": 30522, "positions": 512, "types": 0, "labels": 0}
NULLABLE_FIELDS = ("n_inner",)  # GPT-2: null means 4 * n_embd
DTYPES = ("float32", "float16", "bfloat16", "float64", "auto")
# what transformers raises on a bad file; each becomes a ModelLoadError
LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, AssertionError,
               ImportError, IndexError)


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


def _reason(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (with the next when it ends in ':'), cut to `limit`
    characters; its type when it has none."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return text[:limit]


def _check_json_depth(text: str, name: str) -> None:
    """ModelLoadError when the JSON text nests deeper than JSON_MAX_DEPTH, found in one linear pass
    over quotes, backslashes and brackets (strings skipped), without recursion."""
    depth, in_string, escaped = 0, False, -1
    for match in re.finditer(r'[\\"\[\]{}]', text):
        pos, char = match.start(), match.group()
        if pos == escaped:
            continue
        if in_string:
            escaped = pos + 1 if char == "\\" else escaped
            in_string = char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > JSON_MAX_DEPTH:
                raise ModelLoadError(f"{name} nests deeper than {JSON_MAX_DEPTH} levels, which no model config "
                                     "needs: it is refused unread. Save the model again with save_pretrained().")
        elif char in "]}":
            depth -= 1


def read_json_file(path: Path) -> dict:
    """A small JSON object file (config.json, tokenizer_config.json, a weight index), checked for
    size and nesting depth before it is parsed. Raises ModelLoadError."""
    name = f"{path.parent.name}/{path.name}"
    size = path.stat().st_size
    if size > JSON_MAX_BYTES:
        raise ModelLoadError(f"{name} is {size:,} bytes, over the {JSON_MAX_BYTES:,} a model's "
                             "JSON file may have here: it is refused unread.")
    try:
        text = path.read_text(encoding="utf-8")
        _check_json_depth(text, name)
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelLoadError(f"Cannot read {name}: {_reason(exc)}. "
                             "Save the model again with save_pretrained().") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{name} must hold a JSON object; got {type(data).__name__}.")
    return data


def check_weight_index(path: Path) -> None:
    """ModelLoadError unless the weight index maps every tensor to a safetensors file in the folder."""
    weight_map = read_json_file(path).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelLoadError(f"{path.name} has no 'weight_map' of tensor names to file names.")
    files = sorted(set(weight_map.values()))
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ModelLoadError(f"{path.name} points at pickle weights ({', '.join(pickles[:3])}), which can run code "
                             "when loaded and are refused: only safetensors are read. Convert the checkpoint with "
                             "model.save_pretrained(folder, safe_serialization=True) where you trust the file.")
    odd = [f for f in files if not f.endswith(".safetensors") or Path(f).name != f]
    if odd:
        raise ModelLoadError(f"{path.name} names {odd[0][:80]!r}: a weight index may only name .safetensors "
                             "files inside the model's folder.")


def check_no_remote_code(folder: Path, config: dict) -> None:
    """ModelLoadError when config.json or tokenizer_config.json asks transformers to import the
    folder's own Python modules (auto_map): that code is never run."""
    tokenizer_config = folder / "tokenizer_config.json"
    sources = [("config.json", config)]
    if tokenizer_config.is_file():
        sources.append(("tokenizer_config.json", read_json_file(tokenizer_config)))
    for name, data in sources:
        key = next((k for k in REMOTE_CODE_KEYS if data.get(k)), None)
        if key is None:
            continue
        modules = sorted({v.split("--")[-1].split(".")[0] + ".py" for v in _strings(data[key])})
        raise ModelLoadError(f"This folder asks to run its own Python code ({key} in {name}), which is never "
                             f"run: {folder.name} names {', '.join(modules[:3]) or 'custom modules'}. Only the "
                             f"built-in architectures are loaded ({supported()}); remove {key!r} if the "
                             "model is one of them.")


def _strings(value: Any) -> list[str]:
    """The strings in a small JSON value (auto_map's class references), flattened."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _size_field(config: dict, what: str) -> tuple[str, int | None]:
    """(the key used, its value) for one SIZE_FIELDS entry; a bad value raises ModelLoadError."""
    names = SIZE_FIELDS[what]
    key = next((k for k in names if k in config), names[0])
    value = config.get(key)
    if value is None and (key not in config or key in NULLABLE_FIELDS):
        return key, None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelLoadError(f"config.json: {key} must be a positive integer; got {str(value)[:40]!r} "
                             f"({type(value).__name__}). Fix the field or save the model again.")
    return key, value


def _check_meta_fields(config: dict) -> None:
    """The non-size fields our code reads: model_type, architectures, id2label."""
    if not isinstance(config.get("model_type", ""), str):
        raise ModelLoadError(f"config.json: model_type must be a string, e.g. \"bert\"; got "
                             f"{type(config['model_type']).__name__}.")
    archs = config.get("architectures")
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        raise ModelLoadError("config.json: architectures must be a list of class names, e.g. [\"BertModel\"].")
    labels = config.get("id2label")
    if labels is not None and not isinstance(labels, dict):
        raise ModelLoadError("config.json: id2label must map label ids to names, e.g. {\"0\": \"negative\"}.")


def _check_load_fields(config: dict, vocab: int) -> None:
    """Fields that make transformers fail badly (an import error, an assertion) while building the model."""
    quant = config.get("quantization_config")
    if quant:
        method = str(quant.get("quant_method", "?") if isinstance(quant, dict) else "?")[:40]
        raise ModelLoadError(f"config.json has a quantization_config ({method}): pre-quantized checkpoints are "
                             "not loaded here. Give the fp32 / fp16 model and quantize it in the app.")
    for key in ("dtype", "torch_dtype"):
        if config.get(key) is not None and config[key] not in DTYPES:
            raise ModelLoadError(f"config.json: {key} must be one of {', '.join(DTYPES)}; "
                                 f"got {str(config[key])[:40]!r}.")
    pad = config.get("pad_token_id")
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < vocab):
        raise ModelLoadError(f"config.json: pad_token_id must be a token id below vocab_size = {vocab:,}; "
                             f"got {str(pad)[:40]!r}.")


def check_config_fields(config: dict) -> None:
    """ModelLoadError naming the field when config.json holds a size that is not a positive integer,
    heads that do not divide the hidden size, too many labels, a pad id outside the vocabulary, an
    unknown dtype, a quantization_config, or sizes that imply more than
    PARAM_BUDGET_BYTES of fp32 parameters: all found before anything is allocated."""
    _check_meta_fields(config)
    fields = {what: _size_field(config, what) for what in SIZE_FIELDS}
    size = {what: SIZE_DEFAULTS.get(what) if v is None else v for what, (_, v) in fields.items()}
    size["ffn"] = size["ffn"] or 4 * size["hidden"]
    size["labels"] = max(size["labels"], len(config.get("id2label") or {}))
    name = {what: key for what, (key, _) in fields.items()}
    if size["labels"] > MAX_LABELS:
        raise ModelLoadError(f"config.json: {name['labels']} = {size['labels']:,} is over the {MAX_LABELS:,} "
                             "labels a classifier may have here.")
    _check_load_fields(config, size["vocab"])
    if size["hidden"] % size["heads"]:
        raise ModelLoadError(f"config.json: {name['hidden']} = {size['hidden']} is not a multiple of "
                             f"{name['heads']} = {size['heads']}.")
    h = size["hidden"]
    params = ((size["vocab"] + size["positions"] + size["types"] + size["labels"]) * h
              + size["layers"] * (4 * h * h + 2 * h * size["ffn"]))
    if 4 * params > PARAM_BUDGET_BYTES:
        shown = ", ".join(f"{name[w]}={size[w]:,}" for w in ("vocab", "hidden", "layers", "ffn", "positions"))
        raise ModelLoadError(f"config.json describes about {params / 1e9:,.1f} billion parameters ({shown}), "
                             f"{4 * params / 2**30:,.0f} GiB in fp32, over the {PARAM_BUDGET_BYTES >> 30} GiB "
                             "budget of this app: refused before anything is allocated.")


def check_config(folder: Path) -> dict:
    """config.json, read safely and checked (no remote code, sane fields) before transformers sees it."""
    config = read_json_file(folder / "config.json")
    check_no_remote_code(folder, config)
    check_config_fields(config)
    return config


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
        raise ModelLoadError(f"Cannot read {folder / 'config.json'}: {_reason(exc)}. "
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
        raise ModelLoadError(f"No usable tokenizer in {folder} ({_reason(exc, 160)}): save the "
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
                             f"{_reason(exc, 240)}") from None
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


def load_hf_folder(path: str | Path, kind: str | None = None) -> HFModel:
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
    return HFModel(model, tokenizer, kind, summarize(model, config, tokenizer), folder.name,
                   weights_fingerprint(model), tuple(notes))
