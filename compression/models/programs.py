"""A user's own architecture (TorchScript or torch.export) as the compact format stores it: the
program with every tensor zeroed, cached by structure; its real values go in the compact payload."""
from __future__ import annotations

import io
import json

import torch
from torch import nn

from compression.core.errors import CompressionError
from compression.core.modules import copy_model, is_frozen_code
from compression.core.quant import remove_act_quant


USER_FORMATS = ("torchscript", "exported")


def _is_exported(model: nn.Module) -> bool:
    """A torch.export program's module: a GraphModule whose inputs carry export's example values."""
    return isinstance(model, torch.fx.GraphModule) and any(
        n.op == "placeholder" and isinstance(n.meta.get("val"), torch.Tensor) for n in model.graph.nodes)


def _example_input(model: nn.Module) -> torch.Tensor:
    """Zeros shaped like a torch.export module's input, with a batch of 2 (its batch dimension is
    dynamic), read from the graph's placeholder."""
    for node in model.graph.nodes:
        val = node.meta.get("val") if node.op == "placeholder" else None
        if isinstance(val, torch.Tensor):
            try:
                return torch.zeros((2, *(int(d) for d in val.shape[1:])), dtype=val.dtype)
            except (TypeError, RuntimeError):
                break
    raise CompressionError("The compact format cannot store this program: its input shape is not known "
                           "beyond the batch dimension. Save it as a torch.export program instead.")


_PROGRAMS: dict[str, bytes] = {}  # zeroed programs by structure signature (a few, kept small)


def user_program(model: nn.Module) -> tuple[str, bytes]:
    """(format, bytes) of a user model's architecture: a TorchScript module or a re-exported
    torch.export program with every tensor zeroed (they compress to nearly nothing; the real values
    are stored beside it, compressed), pruning masks folded and no activation-quantization hooks
    (restored from the header on load). Cached per structure: a slider move does not re-export."""
    if is_frozen_code(model):
        fmt, code = "torchscript", str(model.inlined_graph)
    elif _is_exported(model):
        fmt, code = "exported", str(model.code) + repr([type(m).__name__ for m in model.modules()])
    else:
        raise CompressionError("The compact format stores built-in architectures, TorchScript modules and "
                               "torch.export programs; this model is none of them. Export it as TorchScript, "
                               "torch.export or safetensors instead.")
    shapes = [(k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items() if not k.endswith("_mask")]

    def build() -> bytes:
        buf = io.BytesIO()
        if fmt == "torchscript":
            torch.jit.save(model, buf)
            copy = torch.jit.load(io.BytesIO(buf.getvalue()), map_location="cpu")
        else:
            copy = copy_model(model, fold=True).eval()
            for module in copy.modules():
                remove_act_quant(module)
        with torch.no_grad():
            for t in copy.state_dict().values():
                t.zero_()
        buf = io.BytesIO()
        if fmt == "torchscript":
            torch.jit.save(copy, buf)
        else:
            dynamic = ({0: torch.export.Dim.DYNAMIC},)
            program = torch.export.export(copy, (_example_input(model),), dynamic_shapes=dynamic)
            torch.export.save(program, buf)
        return buf.getvalue()

    key = fmt + json.dumps([code, shapes])
    if key not in _PROGRAMS:
        try:
            program = build()
        except CompressionError:
            raise
        except Exception as exc:
            raise CompressionError(f"The compact format cannot store this {fmt} model: writing its architecture "
                                   f"failed ({str(exc).splitlines()[0][:160]}).") from None
        if len(_PROGRAMS) >= 8:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        _PROGRAMS[key] = program
    return fmt, _PROGRAMS[key]
