"""Loading a model safely: built-in models, TorchScript, torch.export programs (.pt2), state dicts
(safetensors, or .pt read with weights_only=True) paired with a built-in architecture, and the
project's compact format. Formats are recognised by content, never by file name. Nothing is
ever unpickled beyond tensors and plain containers."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import torch
from torch import nn

from compression.core.devices import available_memory_bytes
from compression.core.errors import ModelDataMismatch, ModelLoadError
from compression.core.modules import lift_graph_layers, set_training
from compression.core.quant import attach_act_quant
from compression.data.datasets import Dataset
from compression.models import compact, sandbox, zoo
from compression.models.hf import KINDS, load_hf_folder
from compression.models.hf_demo import load_demo_text_model
from compression.models.model import Model
from compression.models.safety import (check_export_archive, check_torchscript_module, check_torchscript_source,
                                       run_with_time_limit)

MAX_MODEL_BYTES = 1 << 30
CHECK_SAMPLES = 8        # validation samples the load check runs the model on
_EXPORT_LOCK = threading.Lock()


def file_fingerprint(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


def sniff_format(head: bytes, names: list[str] | None) -> str:
    """'compact', 'safetensors', 'torchscript', 'exported', 'torch_zip', 'torch_legacy' or 'unknown'."""
    if compact.is_compact(head):
        return "compact"
    if len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 28):
        return "safetensors"
    if names is not None:
        if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("/archive_format") for n in names) or any(n.endswith("/models/model.json") for n in names):
            return "exported"
        if any(n.endswith("/data.pkl") for n in names):
            return "torch_zip"
        return "zip"
    if head[:1] == b"\x80":
        return "torch_legacy"
    return "unknown"


@contextlib.contextmanager
def _no_unpickling():
    """While torch.export.load runs, force every torch.load to weights_only=True and refuse
    plain pickle.loads (torch.export would otherwise fall back to full unpickling)."""
    from torch.export.pt2_archive import _package

    real_load, real_pickle = torch.load, _package.pickle

    def safe_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    class _NoPickle:
        @staticmethod
        def loads(*_a, **_k):
            raise ModelLoadError("Refused: the program holds pickled Python objects, which could run code.")

    with _EXPORT_LOCK:
        torch.load, _package.pickle = safe_load, _NoPickle
        try:
            yield
        finally:
            torch.load, _package.pickle = real_load, real_pickle


def short_reason(exc: BaseException, limit: int = 200) -> str:
    """One line saying why: the first line of the message, or for TorchScript's multi-line
    interpreter errors the last line (where the original exception is named)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    line = lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]
    return line[:limit]


def _unsafe_message(exc: Exception) -> str:
    return ("Refused: this file needs unpickling of arbitrary Python objects, which could run code "
            f"({str(exc).splitlines()[0][:160]}). Save only the weights: "
            "`torch.save(model.state_dict(), path)` or safetensors, and pick the architecture.")


def _load_state_dict_file(path: Path, fmt: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, the input-quantization record from a safetensors file's metadata or {})."""
    if fmt == "safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            return load_file(str(path)), _act_record(meta.get("act_quant"))
        except ModelLoadError:
            raise
        except Exception as exc:  # safetensors raises its own error types
            raise ModelLoadError(f"The safetensors file is damaged or truncated: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = str(exc)
        if "Weights only load failed" in msg or "Unsupported global" in msg or "UnpicklingError" in type(exc).__name__:
            raise ModelLoadError(_unsafe_message(exc)) from None
        raise ModelLoadError(f"The file could not be read as a PyTorch file ({msg.splitlines()[0][:160]}); "
                             "it may be truncated or damaged.") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError("The .pt file holds no state dict (a dict of tensor names to tensors). "
                             "Save `model.state_dict()` or use TorchScript / torch.export.")
    return obj, {}


def _act_record(text: str | None) -> dict:
    """The `act_quant` metadata ({layer: {"bits", "symmetric"}}), checked."""
    if text is None:
        return {}
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        record = None
    ok = isinstance(record, dict) and all(
        isinstance(v, dict) and isinstance(v.get("bits"), int) and 2 <= v["bits"] <= 16
        and isinstance(v.get("symmetric"), bool) for v in record.values())
    if not ok:
        raise ModelLoadError("The safetensors file's act_quant metadata is malformed.")
    return record


def _attach_inputs(model: nn.Module, state: dict[str, torch.Tensor], acts: dict) -> None:
    """Input quantizers for the state dict's LAYER.act_scale / act_zero_point, with bit-widths
    from the file's act_quant metadata; without that record they are refused, not dropped."""
    layers = sorted({k.rsplit(".", 1)[0] for k in state if k.endswith((".act_scale", ".act_zero_point"))})
    if not layers:
        return
    missing = [n for n in layers if n not in acts]
    if missing:
        raise ModelLoadError(f"The state dict quantizes the inputs of {', '.join(missing[:6])} (act_scale, "
                             "act_zero_point) but does not say at how many bits: load the compact file, "
                             "TorchScript or torch.export export of the model instead, or a safetensors file "
                             "written by this project (its metadata carries act_quant).")
    for name in layers:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise ModelLoadError(f"The state dict quantizes the input of {name!r}, a layer this "
                                 "architecture does not have.") from None
        attach_act_quant(layer, acts[name]["bits"], acts[name]["symmetric"], state[f"{name}.act_scale"],
                         state[f"{name}.act_zero_point"])


def build_with_state_dict(arch: str, state: dict[str, torch.Tensor], data: Dataset | None,
                          acts: dict | None = None) -> nn.Module:
    """A built-in architecture shaped for `data`, loaded strictly; mismatches are listed. `acts`
    ({layer: {"bits", "symmetric"}}) restores quantized inputs the state dict holds."""
    kwargs = {}
    if data is not None and len(data.input_shape) == 3 and data.input_shape[1] == data.input_shape[2]:
        kwargs = {"in_channels": data.input_shape[0], "image_size": data.input_shape[1],
                  "num_classes": data.num_classes}
    model = zoo.build(arch, **kwargs)
    _attach_inputs(model, state, acts or {})
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
        if misshaped:
            parts.append("mis-shaped: " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in misshaped[:8]))
        raise ModelLoadError(f"The state dict does not fit the built-in '{zoo.parse_demo_name(arch)}' "
                             f"architecture ({'; '.join(parts)}). Pick the architecture it was saved from.")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


def _check_archive(fmt: str, payload: bytes) -> None:
    """What the archive holds, before anything in it is opened (compression.models.safety)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(payload))
    except (zipfile.BadZipFile, OSError):
        raise ModelLoadError("The file looks like a zip archive but is damaged or truncated.") from None
    with zf:
        (check_torchscript_source if fmt == "torchscript" else check_export_archive)(zf)


def load_program(fmt: str, payload: bytes, sample: torch.Tensor | None = None, isolate: bool = True) -> nn.Module:
    """A TorchScript module or a torch.export program (its layer ops lifted into real modules)
    from a file's bytes; also the architecture inside a compact file of a user's model. Its
    archive is checked first (compression.models.safety); then, with `isolate`, it is opened and run on
    `sample` in a child process under a time limit and a memory cap (compression.models.sandbox) before
    it is opened here. Raises ModelLoadError."""
    _check_archive(fmt, payload)
    if isolate:
        sandbox.check_program(fmt, payload, sample)
    if fmt == "torchscript":
        try:
            module = torch.jit.load(io.BytesIO(payload), map_location="cpu").eval()
        except Exception as exc:
            raise ModelLoadError(f"The TorchScript file could not be loaded: {str(exc).splitlines()[0][:200]}") from None
        check_torchscript_module(module)
        return module
    try:
        with _no_unpickling():
            program = torch.export.load(io.BytesIO(payload)).module()  # eval mode as exported
        lift_graph_layers(program)  # its layer ops become real modules every method can find
        return program
    except ModelLoadError:
        raise
    except Exception as exc:
        if "Weights only load failed" in str(exc):
            raise ModelLoadError(_unsafe_message(exc)) from None
        raise ModelLoadError(f"The torch.export program could not be loaded: {str(exc).splitlines()[0][:200]}") from None


def _load_path(path: Path, arch: str | None, data: Dataset | None) -> tuple[nn.Module, str]:
    sample = data.val.X[:CHECK_SAMPLES] if data is not None else None
    payload_head = path.open("rb").read(64)
    names = None
    if zipfile.is_zipfile(path):
        try:
            names = zipfile.ZipFile(path).namelist()
        except (zipfile.BadZipFile, OSError):
            raise ModelLoadError("The file looks like a zip archive but is damaged or truncated.") from None
    fmt = sniff_format(payload_head, names)
    if fmt == "compact":
        return compact.load_compact(path, program_loader=functools.partial(load_program, sample=sample)), "compact"
    if fmt in ("torchscript", "exported"):
        return load_program(fmt, path.read_bytes(), sample), fmt
    if fmt in ("safetensors", "torch_zip", "torch_legacy"):
        state, acts = _load_state_dict_file(path, fmt)
        if arch is None:
            raise ModelLoadError("This file is a bare state dict (weights only). Choose the built-in architecture "
                                 "it belongs to (CLI: --arch demo:NAME).")
        return build_with_state_dict(arch, state, data, acts), "state_dict"
    if fmt == "zip":
        raise ModelLoadError("The file is a zip archive but not a model (no TorchScript code, torch.export "
                             "program or state dict inside).")
    raise ModelLoadError("Unknown model format. Accepted: TorchScript (torch.jit.save), torch.export (.pt2), "
                         "a state dict (.safetensors or .pt) with a built-in architecture, or this project's compact file.")


def is_text_model(spec: str | Path) -> bool:
    """True for what loads as a transformer: a folder (a Hugging Face model folder) or demo:KIND
    for the tiny demo transformers (demo:encoder, demo:classifier, demo:decoder)."""
    spec_s = str(spec)
    return spec_s in {f"demo:{kind}" for kind in KINDS} or Path(spec_s).is_dir()


def load_model(spec: str | Path, arch: str | None = None, data: Dataset | None = None,
               max_bytes: int = MAX_MODEL_BYTES) -> Model:
    """Load 'demo:NAME', a model file or a Hugging Face model folder, then check it runs on `data`
    (when given: an image or tabular Dataset; a transformer takes texts, so `data` must be None).

    Raises:
        ModelLoadError: unreadable, unsafe or unknown file; ModelDataMismatch: does not fit the data.
    """
    spec_s = str(spec)
    if is_text_model(spec_s):
        hf = load_demo_text_model(spec_s[5:]) if spec_s.startswith("demo:") else load_hf_folder(spec_s)
        if data is not None:
            raise ModelDataMismatch(f"{hf.name} is a transformer ({hf.task}): it takes texts (a .txt with one text "
                                    f"per line, or a .csv with a text column), not the data set {data.name!r}.")
        return hf
    if spec_s.startswith("demo:"):
        name = zoo.parse_demo_name(spec_s)
        model = zoo.load_pretrained(name)
        if data is not None:
            model = check_model(model, data)
        return Model(model, "demo", f"demo:{name}", f"demo:{name}", name)
    path = Path(spec)
    if not path.is_file():
        raise ModelLoadError(f"No model file or Hugging Face folder at {spec_s!r}, and it is not a built-in "
                             f"('demo:NAME'; built-ins: {', '.join(zoo.ZOO)}).")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError("The model file is empty (0 bytes).")
    if size > max_bytes:
        raise ModelLoadError(f"The model file is {size / 2**20:.1f} MiB, over the limit of {max_bytes / 2**20:.0f} MiB.")
    free = available_memory_bytes()
    if free is not None and size * 3 > free:
        raise ModelLoadError(f"Not enough memory to load a {size / 2**20:.0f} MiB model safely "
                             f"({free / 2**20:.0f} MiB available).")
    model, kind = _load_path(path, arch, data)
    if data is not None:
        model = check_model(model, data)
    fingerprint = file_fingerprint(path.read_bytes())
    return Model(model, kind, path.name, fingerprint, zoo.parse_demo_name(arch) if arch else None)


def load_model_bytes(filename: str, payload: bytes, arch: str | None = None, data: Dataset | None = None,
                     max_bytes: int = MAX_MODEL_BYTES) -> Model:
    """Load an uploaded model from bytes, via a private temporary file removed afterwards.
    The user's file name is only a display name, never part of a path."""
    if len(payload) > max_bytes:
        raise ModelLoadError(f"The upload is {len(payload) / 2**20:.1f} MiB, over the limit of {max_bytes / 2**20:.0f} MiB.")
    with tempfile.TemporaryDirectory(prefix="cstudio-") as tmp:
        path = Path(tmp) / "upload.bin"
        path.write_bytes(payload)
        os.chmod(path, 0o600)
        loaded = load_model(path, arch, data, max_bytes)
    return dataclasses.replace(loaded, name=Path(filename).name[:80] or "upload")


class LogitsOf(nn.Module):
    """Wraps a model whose output is a dict or tuple, returning its logits tensor."""

    def __init__(self, model: nn.Module, key):
        super().__init__()
        self.inner = model
        self.key = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[self.key]


def _find_logits_key(out, batch: int, num_classes: int):
    if isinstance(out, dict):
        if "logits" in out and isinstance(out["logits"], torch.Tensor):
            return "logits"
        candidates = [k for k, v in out.items() if isinstance(v, torch.Tensor) and tuple(v.shape) == (batch, num_classes)]
    elif isinstance(out, (tuple, list)):
        candidates = [i for i, v in enumerate(out) if isinstance(v, torch.Tensor) and tuple(v.shape) == (batch, num_classes)]
    else:
        return None
    return candidates[0] if len(candidates) == 1 else None


def _timed_forward(model: nn.Module, x: torch.Tensor):
    """model(x) in eval mode, refused when it takes longer than the forward limit."""
    def forward():
        with torch.inference_mode():
            set_training(model, False)
            return model(x)

    return run_with_time_limit(forward, sandbox.forward_limit_s(), f"the model on {len(x)} samples")


def _fixed_batch_hint(model: nn.Module, x: torch.Tensor) -> str:
    """When a batch fails but one sample runs, the model was traced or exported for one sample."""
    try:
        _timed_forward(model, x[:1])
    except Exception:
        return ""
    return (" It runs on one sample but not on a batch: it was traced or exported for a fixed batch size. "
            "Trace it with a batch of 2 or more (or export with a dynamic batch dimension) and load it again.")


def check_model(model: nn.Module, data: Dataset, n: int = CHECK_SAMPLES) -> nn.Module:
    """Run the model on a few validation samples: it must run, give (n, classes) finite logits,
    and have finite parameters. Returns the model, wrapped when its logits sit in a dict/tuple."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ModelLoadError(f"The model has NaN or Inf weights in: {', '.join(bad[:6])}. Retrain or re-export it.")
    x = data.val.X[:n]
    try:
        out = _timed_forward(model, x)
    except ModelLoadError:
        raise
    except Exception as exc:
        hint = " It was exported with a fixed batch size: export with a dynamic batch dimension " \
               "(dynamic_shapes={0: Dim.DYNAMIC})." if "Guard failed" in str(exc) else _fixed_batch_hint(model, x)
        raise ModelDataMismatch(f"The model does not run on this data (input shape {tuple(x.shape[1:])} per "
                                f"sample): {short_reason(exc)}.{hint}") from None
    if not isinstance(out, torch.Tensor):
        key = _find_logits_key(out, x.shape[0], data.num_classes)
        if key is None:
            raise ModelDataMismatch(f"The model returns a {type(out).__name__} with no unambiguous logits "
                                    f"(a 'logits' field or a single ({n}, {data.num_classes}) tensor).")
        model = LogitsOf(model, key)
        with torch.inference_mode():
            out = model(x)
    if out.dim() != 2 or out.shape != (x.shape[0], data.num_classes):
        raise ModelDataMismatch(f"The model outputs shape {tuple(out.shape)} but the data has "
                                f"{data.num_classes} classes: expected ({x.shape[0]}, {data.num_classes}).")
    if not torch.isfinite(out).all():
        raise ModelDataMismatch("The model's outputs hold NaN or Inf on this data.")
    return model


if __name__ == "__main__" and sys.argv[1:2] == ["--sandbox"]:  # the child of compression.models.sandbox
    sys.exit(sandbox.serve(sys.argv[2:], functools.partial(load_program, isolate=False)))
