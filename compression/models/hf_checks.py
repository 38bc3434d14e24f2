"""What a Hugging Face folder must be before `transformers` opens it: no pickles, no remote code
(auto_map), JSON small and shallow, config fields of sane types and sizes within the memory budget.
Every problem is a ModelLoadError with one line saying what to fix."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from compression.core.errors import ModelLoadError
from compression.models.hf_archs import supported


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
        raise ModelLoadError(f"Cannot read {name}: {first_line(exc)}. "
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


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (with the next when it ends in ':'), cut to `limit`
    characters; its type when it has none."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return text[:limit]
