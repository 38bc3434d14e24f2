"""Export a (compressed) model to files other tools can read.

Formats:
    compact      this project's compact format (`compression.models.compact.save_compact`);
    safetensors  the state dict with pruning masks folded in (`effective_weights`);
    torchscript  `torch.jit.trace`, loadable with plain `torch.jit.load` (no project code);
    exported     `torch.export.save` with a dynamic batch dimension (plain `torch.export.load`);
    onnx         ONNX with a dynamic batch dimension; needs the optional `onnx` package.

Pruning masks are folded into the weights first (`torch.nn.utils.prune.remove` on a deep copy),
so the written model computes exactly what the masked one does; the caller's model is unchanged.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compression.core.errors import CompressionError, ConfigError
from compression.core.modules import copy_model, effective_weights
from compression.models.compact import save_compact

FORMATS = ("compact", "safetensors", "torchscript", "exported", "onnx")
SUFFIXES = {"compact": ".cstudio", "safetensors": ".safetensors", "torchscript": ".pt",
            "exported": ".pt2", "onnx": ".onnx"}


class ExportError(CompressionError):
    """The model cannot be written in the requested format (the message says why)."""


@dataclass(frozen=True)
class ExportResult:
    """Where a model was written, in which format, and how many bytes the file has."""

    format: str
    path: Path
    size_bytes: int
    note: str = ""

    def to_dict(self) -> dict:
        return {"format": self.format, "path": str(self.path), "size_bytes": self.size_bytes, "note": self.note}


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def available_formats() -> list[str]:
    """FORMATS less the optional ones whose package is not installed."""
    return [f for f in FORMATS if f != "onnx" or onnx_available()]


def batch_example(example: torch.Tensor, batch: int = 2) -> torch.Tensor:
    """`example` with at least `batch` rows (a batch of 1 would fix the exported batch size)."""
    if example.shape[0] >= batch:
        return example
    reps = -(-batch // max(example.shape[0], 1))
    return example.repeat(reps, *([1] * (example.dim() - 1)))[:batch]


ACT_QUANT_KEY = "act_quant"  # safetensors metadata: {layer: {"bits", "symmetric"}} of quantized inputs


def act_quant_record(model: nn.Module) -> dict[str, dict]:
    """{layer: {"bits", "symmetric"}} of every layer whose input is fake-quantized (its scale and
    zero point are the state dict's `LAYER.act_scale` / `LAYER.act_zero_point`)."""
    return {n: {"bits": int(m.act_bits), "symmetric": bool(m.act_symmetric)}
            for n, m in model.named_modules() if hasattr(m, "act_bits")}


def _save_safetensors(model: nn.Module, path: Path, example: torch.Tensor) -> str:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().clone() for k, v in effective_weights(model).items()}
    metadata = {"format": "pt", "producer": "compression-studio"}
    arch = getattr(model, "zoo_arch", None)
    if arch:
        metadata["zoo_arch"] = json.dumps(arch, sort_keys=True)
    acts = act_quant_record(model)
    if acts:
        metadata[ACT_QUANT_KEY] = json.dumps(acts, sort_keys=True)
    save_file(tensors, str(path), metadata=metadata)
    note = "state dict, masks folded" + ("; input quantization in the metadata (act_quant)" if acts else "")
    return f"{note}; load with its architecture (--arch demo:{arch['name']})" if arch else note


def _save_torchscript(model: nn.Module, path: Path, example: torch.Tensor) -> str:
    if isinstance(model, torch.jit.ScriptModule):
        torch.jit.save(model, str(path))
        return "already TorchScript; saved as is"
    with torch.no_grad():
        traced = torch.jit.trace(copy_model(model, fold=True).eval(), batch_example(example), check_trace=False)
    torch.jit.save(traced, str(path))
    return "traced (control flow fixed to the example's path)"


def _save_exported(model: nn.Module, path: Path, example: torch.Tensor) -> str:
    dynamic = ({0: torch.export.Dim.DYNAMIC},)
    program = torch.export.export(copy_model(model, fold=True).eval(), (batch_example(example),), dynamic_shapes=dynamic)
    buffer = io.BytesIO()  # (a path not ending in .pt2 would draw a warning)
    torch.export.save(program, buffer)
    path.write_bytes(buffer.getvalue())
    return "torch.export program, dynamic batch dimension"


def _save_onnx(model: nn.Module, path: Path, example: torch.Tensor) -> str:
    if not onnx_available():
        raise ExportError("ONNX export needs the optional 'onnx' package: pip install onnx.")
    import onnx

    torch.onnx.export(copy_model(model, fold=True).eval(), (batch_example(example),), str(path), dynamo=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    onnx.checker.check_model(onnx.load(str(path)))
    return "ONNX (TorchScript-based exporter), dynamic batch dimension; input 'input', output 'logits'"


def _save_compact(model: nn.Module, path: Path, example: torch.Tensor) -> str:
    save_compact(model, path)
    return "compact format; load with compression.models.loading.load_model"


WRITERS = {"compact": _save_compact, "safetensors": _save_safetensors, "torchscript": _save_torchscript,
           "exported": _save_exported, "onnx": _save_onnx}


def export_model(model: nn.Module, fmt: str, path: str | Path, example: torch.Tensor) -> ExportResult:
    """Write `model` to `path` in format `fmt` (one of FORMATS).

    Args:
        example: a real input batch (B, ...) used to trace / export; one row is enough.
    Raises:
        ConfigError: unknown format; ExportError: the model cannot be written in that format
            (no partial file is left behind).
    """
    if fmt not in WRITERS:
        raise ConfigError(f"Unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        note = WRITERS[fmt](model, path, example)
    except CompressionError:
        path.unlink(missing_ok=True)
        raise
    except Exception as exc:
        path.unlink(missing_ok=True)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ExportError(f"The model could not be exported as {fmt}: {reason}. Try another format "
                          "(compact and safetensors work for every model this project makes).") from None
    return ExportResult(fmt, path, path.stat().st_size, note)


def export_bytes(model: nn.Module, fmt: str, example: torch.Tensor, stem: str = "model") -> tuple[bytes, str, str]:
    """The file `export_model` would write, as (bytes, file name, note), via a private temporary
    directory that is removed afterwards (for downloads)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cstudio-export-") as tmp:
        result = export_model(model, fmt, Path(tmp) / f"{stem}{SUFFIXES[fmt]}", example)
        return result.path.read_bytes(), result.path.name, result.note
