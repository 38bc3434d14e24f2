"""The compact format: a compressed model stored with only what it needs.

Layout: b"CSTUDIO1", then zlib( 4-byte header length | JSON header | raw little-endian buffers ).
Each tensor of the effective state dict (pruning masks folded in) is stored as one of:
- "quant": integer codes bit-packed at the layer's bit-width, plus scales and zero points (from
  `weight_qinfo`), with a bitmask of the non-zero weights when that is smaller;
- "sparse": a bitmask of the non-zeros plus their float32 values;
- "raw": the dense tensor.
The header also holds the architecture: the built-in model it started from (`zoo_arch`) and the
type and constructor arguments of every layer, so structurally pruned widths and low-rank
factors are rebuilt. Loading never unpickles: JSON and numpy buffers only.
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import nn

from compression.errors import CompressionError, ModelLoadError
from compression.qinfo import QuantInfo

MAGIC = b"CSTUDIO1"
VERSION = 1
ZLIB_LEVEL = 6
HOW = "compact format (bitmask-sparse weights, bit-packed low-bit codes, zlib), bytes written"

SPECS: dict[type, tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features", "bias"),
    nn.Conv1d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias"),
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias"),
    nn.BatchNorm1d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.BatchNorm2d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.LayerNorm: ("normalized_shape", "eps", "elementwise_affine"),
    nn.Embedding: ("num_embeddings", "embedding_dim", "padding_idx"),
    nn.ReLU: ("inplace",),
    nn.Identity: (),
    nn.Flatten: (),
}
TYPES = {cls.__name__: cls for cls in SPECS}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "int32": torch.int32,
          "float16": torch.float16, "bool": torch.bool, "uint8": torch.uint8}


def is_compact(source) -> bool:
    """True when the bytes (or the file at a path) start with the compact format's magic."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[: len(MAGIC)]) == MAGIC
    try:
        with open(source, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


# ---- architecture -----------------------------------------------------------------------------

def _args(module: nn.Module) -> dict:
    out = {}
    for name in SPECS[type(module)]:
        value = getattr(module, name)
        if name == "bias" and not isinstance(value, bool):
            value = value is not None
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _structure(model: nn.Module) -> list[dict]:
    """Every Sequential container and every supported module, parents before children."""
    entries = []
    for path, module in model.named_modules():
        if not path:
            continue
        if type(module) is nn.Sequential:
            entries.append({"path": path, "type": "Sequential", "n": len(module)})
        elif type(module) in SPECS:
            entries.append({"path": path, "type": type(module).__name__, "args": _args(module)})
        elif not list(module.children()) and (list(module.parameters(recurse=False)) or list(module.buffers(recurse=False))):
            raise CompressionError(f"The compact format cannot store layer {path!r} of type "
                                   f"{type(module).__name__}; export it as TorchScript or safetensors instead.")
    return entries


def _build(entry: dict) -> nn.Module:
    if entry["type"] == "Sequential":
        return nn.Sequential(*[nn.Identity() for _ in range(entry["n"])])
    cls = TYPES.get(entry["type"])
    if cls is None:
        raise ModelLoadError(f"Unknown layer type {entry['type']!r} in the compact file.")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in entry["args"].items()}
    return cls(**args)


def _rebuild(arch: dict, entries: list[dict]) -> nn.Module:
    from compression import zoo
    from compression.layers import set_module

    model = zoo.build(arch["name"], arch["in_channels"], arch["image_size"], arch["num_classes"])
    for entry in entries:
        try:
            current = model.get_submodule(entry["path"])
        except AttributeError:
            current = None
        if entry["type"] == "Sequential":
            if type(current) is nn.Sequential and len(current) == entry["n"]:
                continue
        elif type(current).__name__ == entry["type"] and _args(current) == entry["args"]:
            continue
        set_module(model, entry["path"], _build(entry))
    return model


# ---- tensors ------------------------------------------------------------------------------------

def _pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Unsigned codes < 2**bits packed into bytes, `bits` bits each (little-endian bit order)."""
    bitplanes = (codes.astype(np.uint32)[:, None] >> np.arange(bits, dtype=np.uint32)) & 1  # (N, bits)
    return np.packbits(bitplanes.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def _unpack_codes(buf: bytes, bits: int, n: int) -> np.ndarray:
    flat = np.unpackbits(np.frombuffer(buf, np.uint8), bitorder="little")[: n * bits]
    planes = flat.reshape(n, bits).astype(np.uint32)
    return (planes << np.arange(bits, dtype=np.uint32)).sum(1)


def _quant_entry(t: torch.Tensor, info: QuantInfo, chunks: list) -> dict | None:
    codes = info.codes(t)
    if not torch.equal(info.dequantize(codes).to(t.dtype), t):
        return None  # weights moved off the grid (e.g. fine-tuned): store them as floats
    nonzero = (t != 0).flatten()
    use_mask = nonzero.float().mean() < 0.9
    kept = codes.flatten()[nonzero] if use_mask else codes.flatten()
    entry = {"enc": "quant", "bits": info.bits, "axis": info.axis, "symmetric": info.symmetric,
             "scale": info.scale.flatten().tolist(), "zero_point": info.zero_point.flatten().tolist(),
             "masked": bool(use_mask), "count": int(kept.numel())}
    if use_mask:
        chunks.append(np.packbits(nonzero.numpy(), bitorder="little").tobytes())
    chunks.append(_pack_codes((kept - info.qmin).numpy(), info.bits))
    return entry


def _tensor_entry(name: str, t: torch.Tensor, info: QuantInfo | None, chunks: list) -> dict:
    t = t.detach().cpu().contiguous()
    head = {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    start = len(chunks)
    entry = _quant_entry(t, info, chunks) if info is not None else None
    if entry is None and t.is_floating_point() and t.numel() >= 64 and float((t == 0).float().mean()) > 0.1:
        nonzero = (t != 0).flatten()
        chunks.append(np.packbits(nonzero.numpy(), bitorder="little").tobytes())
        chunks.append(t.flatten()[nonzero].numpy().tobytes())
        entry = {"enc": "sparse", "count": int(nonzero.sum())}
    if entry is None:
        chunks.append(t.numpy().tobytes())
        entry = {"enc": "raw"}
    entry["sizes"] = [len(c) for c in chunks[start:]]
    return {**head, **entry}


def _decode(entry: dict, blobs: list[bytes]) -> torch.Tensor:
    shape, dtype = tuple(entry["shape"]), DTYPES[entry["dtype"]]
    n = int(np.prod(shape)) if shape else 1
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    if entry["enc"] == "raw":
        return torch.from_numpy(np.frombuffer(blobs[0], np_dtype).copy()).reshape(shape)
    mask = None
    if entry["enc"] == "sparse" or entry.get("masked"):
        mask = torch.from_numpy(np.unpackbits(np.frombuffer(blobs[0], np.uint8), bitorder="little")[:n].astype(bool))
    if entry["enc"] == "sparse":
        out = torch.zeros(n, dtype=dtype)
        out[mask] = torch.from_numpy(np.frombuffer(blobs[1], np_dtype).copy())
        return out.reshape(shape)
    info = qinfo_from(entry)
    codes = torch.from_numpy(_unpack_codes(blobs[-1], entry["bits"], entry["count"]).astype(np.int64)) + info.qmin
    full = torch.zeros(shape, dtype=torch.int64)
    if mask is not None:
        full = info._shape(info.zero_point, full).expand(shape).clone().long().reshape(-1)
        full[mask] = codes
        full = full.reshape(shape)
    else:
        full = codes.reshape(shape)
    return info.dequantize(full).to(dtype)


def qinfo_from(entry: dict) -> QuantInfo:
    axis = entry["axis"]
    scale, zp = torch.tensor(entry["scale"], dtype=torch.float32), torch.tensor(entry["zero_point"], dtype=torch.float32)
    if axis is None:
        scale, zp = scale.reshape(()), zp.reshape(())
    return QuantInfo(entry["bits"], scale, zp, axis, entry["symmetric"])


# ---- files ----------------------------------------------------------------------------------------

def _payload(model: nn.Module) -> bytes:
    from compression.evaluate import effective_weights

    arch = getattr(model, "zoo_arch", None)
    if not arch:
        raise CompressionError("The compact format stores models built on a built-in architecture; this model "
                               "has none. Export it as TorchScript, torch.export or safetensors instead.")
    state = effective_weights(model)
    if any(not isinstance(v, torch.Tensor) or v.is_quantized for v in state.values()):
        raise CompressionError("This model holds real int8 (packed) weights, which the compact format does not "
                               "store; save it as TorchScript instead.")
    structure = _structure(model)
    qinfos = {f"{n}.weight": m.weight_qinfo for n, m in model.named_modules() if hasattr(m, "weight_qinfo")}
    acts = {n: {"bits": m.act_bits, "symmetric": m.act_symmetric}
            for n, m in model.named_modules() if hasattr(m, "act_bits")}
    chunks: list[bytes] = []
    tensors = [_tensor_entry(k, v, qinfos.get(k), chunks) for k, v in state.items()]
    header = json.dumps({"version": VERSION, "arch": arch, "structure": structure, "tensors": tensors,
                         "act_quant": acts}).encode()
    return struct.pack("<I", len(header)) + header + b"".join(chunks)


def to_bytes(model: nn.Module) -> bytes:
    return MAGIC + zlib.compress(_payload(model), ZLIB_LEVEL)


def save_compact(model: nn.Module, file: str | Path | BinaryIO) -> int:
    """Write `model` in the compact format; returns the bytes written."""
    data = to_bytes(model)
    if isinstance(file, (str, Path)):
        Path(file).write_bytes(data)
    else:
        file.write(data)
    return len(data)


def _parse(data: bytes) -> tuple[dict, list[list[bytes]]]:
    if not is_compact(data):
        raise ModelLoadError("Not a compact model file (wrong magic bytes).")
    try:
        payload = zlib.decompress(data[len(MAGIC):])
        (hlen,) = struct.unpack("<I", payload[:4])
        header = json.loads(payload[4:4 + hlen])
    except (zlib.error, struct.error, ValueError, UnicodeDecodeError):
        raise ModelLoadError("The compact file is truncated or damaged.") from None
    if not isinstance(header, dict) or header.get("version") != VERSION:
        raise ModelLoadError("Unsupported compact file version.")
    pos, blobs = 4 + hlen, []
    for entry in header["tensors"]:
        parts = []
        for size in entry["sizes"]:
            parts.append(payload[pos:pos + size])
            pos += size
        blobs.append(parts)
    if pos != len(payload):
        raise ModelLoadError("The compact file's contents do not match its header (damaged).")
    return header, blobs


def load_compact(file: str | Path | BinaryIO | bytes) -> nn.Module:
    """Rebuild a model written by save_compact (eval mode)."""
    if isinstance(file, (bytes, bytearray)):
        data = bytes(file)
    elif isinstance(file, (str, Path)):
        data = Path(file).read_bytes()
    else:
        data = file.read()
    header, blobs = _parse(data)
    try:
        model = _rebuild(header["arch"], header["structure"])
        state = {e["name"]: _decode(e, b) for e, b in zip(header["tensors"], blobs)}
        _attach_quant(model, header)
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise ModelLoadError(f"The compact file does not describe a valid model: {str(exc).splitlines()[0][:200]}") from None
    for entry in header["tensors"]:
        if entry["enc"] == "quant" and entry["name"].endswith(".weight"):
            model.get_submodule(entry["name"][: -len(".weight")]).weight_qinfo = qinfo_from(entry)
    return model.eval()


def _attach_quant(model: nn.Module, header: dict) -> None:
    if not header.get("act_quant"):
        return
    from compression.quantization import attach_act_quant

    for name, spec in header["act_quant"].items():
        attach_act_quant(model.get_submodule(name), spec["bits"], spec["symmetric"], torch.ones(()), torch.zeros(()))


def compact_size(model: nn.Module) -> tuple[int, str]:
    """Bytes of the model written in the compact format, and how they were counted. Models the
    format cannot store fall back to a dense safetensors file, and say so."""
    try:
        return len(to_bytes(model)), HOW
    except CompressionError:
        from compression.evaluate import safetensors_size

        try:
            return safetensors_size(model), ("safetensors (dense state dict; no compact form for this model), "
                                              "bytes written")
        except (TypeError, AttributeError, ValueError, RuntimeError):
            buf = io.BytesIO()
            torch.save(model.state_dict(), buf)
            return len(buf.getvalue()), "torch.save of the state dict (real int8 packed weights), bytes written"
