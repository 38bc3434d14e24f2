"""The compact format: a compressed model stored with only what it needs.

Layout: b"CSTUDIO1", then zlib( 4-byte header length | JSON header | raw little-endian buffers ).
Each tensor of the effective state dict (pruning masks folded in) is stored as:
- "quant" when its layer has a `weight_qinfo` and the weights lie on that grid: integer codes
  bit-packed at the layer's bit-width plus float32 scales and zero points; with many zeros, only
  the codes of the non-zeros plus their positions;
- otherwise "sparse" (positions of the non-zeros plus their values) or "raw" (the dense tensor),
  whichever is smaller.
Positions are a bitmask (np.packbits) or the gaps between non-zeros as uint8/16/32, whichever is
smaller. Values are byte-shuffled (all first bytes, then all second bytes, ...), which lets zlib
find the repeated exponent bytes (7% smaller files). The compressor is zlib because
`compact_size` runs on every slider move: on the ~210K-parameter teacher lzma saves 1-10% but
takes 3-8x as long (80-200 ms on the dense model); zlib level 6 is used for payloads up to
256 KiB, level 1 above (0.6% larger, 3x faster on the near-incompressible dense floats).

The header also holds the architecture: the built-in model it started from (`zoo_arch`) and the
type and constructor arguments of every Sequential and every standard layer (Linear, Conv,
norms, ...), so structurally pruned widths and low-rank factors are rebuilt; any other module
must sit where the built-in architecture has it. Loading never unpickles: JSON and numpy
buffers only, every size and shape checked against the header and the rebuilt architecture
(built on the meta device first, so a hostile header cannot allocate memory).
"""
from __future__ import annotations

import functools
import io
import itertools
import json
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import nn

from compression.core.devices import available_memory_bytes
from compression.core.errors import CompressionError, ModelLoadError
from compression.core.modules import effective_weights, folded_copy, get_module, is_frozen_code, set_module
from compression.core.quant import QuantInfo, attach_act_quant, remove_act_quant
from compression.models import zoo

MAGIC = b"CSTUDIO1"
VERSION = 2
SMALL_PAYLOAD = 256 * 1024      # zlib level 6 up to this many bytes, level 1 above
MAX_PAYLOAD = 1 << 31           # refuse to inflate more than 2 GiB (a damaged or hostile file)
MAX_DECODED = 1 << 31           # tensors a file may decode to (and at most half the memory available)
MAX_HEADER = 16 << 20           # bytes of JSON header
MAX_TENSORS = 100_000
HOW = ("compact format (sparse positions + values, bit-packed low-bit codes, byte-shuffled floats, "
       "zlib), bytes written")

SPECS: dict[type, tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features", "bias"),
    nn.Conv1d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                "bias", "padding_mode"),
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                "bias", "padding_mode"),
    nn.BatchNorm1d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.BatchNorm2d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.LayerNorm: ("normalized_shape", "eps", "elementwise_affine", "bias"),
    nn.Embedding: ("num_embeddings", "embedding_dim", "padding_idx"),
    nn.ReLU: ("inplace",),
    nn.Identity: (),
    nn.Flatten: ("start_dim", "end_dim"),
}
TYPES = {cls.__name__: cls for cls in SPECS}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "int64": torch.int64,
          "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
DELTA_DTYPES = ("uint8", "uint16", "uint32")
ARCH_KEYS = ("name", "in_channels", "image_size", "num_classes")


def is_compact(source: str | Path | bytes | bytearray | memoryview | BinaryIO) -> bool:
    """True when the bytes, the file at a path, or a seekable binary file start with the magic."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[: len(MAGIC)]) == MAGIC
    if hasattr(source, "read"):
        pos = source.tell()
        head = source.read(len(MAGIC))
        source.seek(pos)
        return head == MAGIC
    try:
        with open(source, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _bad(what: str) -> ModelLoadError:
    return ModelLoadError(f"The compact file is damaged or was not written by this program: {what}.")


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
    """Every Sequential container and every supported module, parents before children.
    Any other module must be where the built-in architecture has the same type."""
    entries = []
    for path, module in model.named_modules():
        if not path:
            continue
        if type(module) is nn.Sequential:
            entries.append({"path": path, "type": "Sequential", "n": len(module)})
        elif type(module) in SPECS:
            entries.append({"path": path, "type": type(module).__name__, "args": _args(module)})
        elif type(_get(_reference(json.dumps(model.zoo_arch, sort_keys=True)), path)) is not type(module):
            raise CompressionError(f"The compact format cannot store module {path!r} of type "
                                   f"{type(module).__name__}; export it as TorchScript or safetensors instead.")
    return entries


@functools.lru_cache(maxsize=16)
def _reference(arch: str) -> nn.Module:
    """The built-in architecture on the meta device (never modified; arch as JSON)."""
    return _meta_build(json.loads(arch), [])


def _get(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _build(entry: dict) -> nn.Module:
    if entry["type"] == "Sequential":
        return nn.Sequential(*[nn.Identity() for _ in range(entry["n"])])
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in entry["args"].items()}
    return TYPES[entry["type"]](**args)


def _rebuild(arch: dict, entries: list[dict]) -> nn.Module:
    """zoo.build(**arch), then every recorded module that differs replaced by a fresh one."""
    model = zoo.build(arch["name"], arch["in_channels"], arch["image_size"], arch["num_classes"])
    for entry in entries:
        current = _get(model, entry["path"])
        if entry["type"] == "Sequential":
            if type(current) is nn.Sequential and len(current) == entry["n"]:
                continue
        elif type(current).__name__ == entry["type"] and _args(current) == entry["args"]:
            continue
        if current is None and _get(model, entry["path"].rpartition(".")[0]) is None:
            raise _bad(f"module {entry['path']!r} has no parent")
        set_module(model, entry["path"], _build(entry))
    return model


def _meta_build(arch: dict, entries: list[dict]) -> nn.Module:
    """The rebuilt architecture without memory (meta device): for checking shapes first."""
    with torch.device("meta"):
        return _rebuild(arch, entries)


# ---- positions, codes, floats -------------------------------------------------------------------

def _pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Unsigned codes < 2**bits packed into bytes, `bits` bits each (little-endian bit order)."""
    planes = (codes.astype(np.uint16)[:, None] >> np.arange(bits, dtype=np.uint16)) & 1  # (N, bits)
    return np.packbits(planes.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def _unpack_codes(buf: bytes, bits: int, n: int) -> np.ndarray:
    flat = np.unpackbits(np.frombuffer(buf, np.uint8), bitorder="little")[: n * bits]
    planes = flat.reshape(n, bits).astype(np.uint32)                                    # (N, bits)
    return (planes << np.arange(bits, dtype=np.uint32)).sum(1, dtype=np.uint32)


def _encode_positions(nonzero: np.ndarray) -> tuple[dict, bytes]:
    """The non-zero positions of a flat bool array: bitmask or gaps, whichever is smaller."""
    idx = np.flatnonzero(nonzero)
    gaps = np.diff(idx, prepend=-1) - 1                       # zeros skipped before each non-zero
    widest = int(gaps.max()) if idx.size else 0
    name = next(d for d in DELTA_DTYPES if widest < 2 ** (8 * np.dtype(d).itemsize))
    if idx.size * np.dtype(name).itemsize < math.ceil(nonzero.size / 8):
        return {"positions": "gaps", "gap_dtype": name}, gaps.astype(name).tobytes()
    return {"positions": "bitmask"}, np.packbits(nonzero, bitorder="little").tobytes()


def _decode_positions(entry: dict, buf: bytes, n: int, count: int) -> np.ndarray:
    if entry.get("positions") == "bitmask":
        if len(buf) != math.ceil(n / 8):
            raise _bad(f"bitmask of {entry['name']} has the wrong size")
        mask = np.unpackbits(np.frombuffer(buf, np.uint8), bitorder="little")[:n].astype(bool)
        if int(mask.sum()) != count:
            raise _bad(f"bitmask of {entry['name']} does not match its count")
        return mask
    dtype = entry.get("gap_dtype")
    if entry.get("positions") != "gaps" or dtype not in DELTA_DTYPES or len(buf) != count * np.dtype(dtype).itemsize:
        raise _bad(f"positions of {entry['name']} are malformed")
    idx = np.cumsum(np.frombuffer(buf, np.dtype(dtype).newbyteorder("<")).astype(np.int64) + 1) - 1
    if count and idx[-1] >= n:
        raise _bad(f"positions of {entry['name']} run past its end")
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return mask


def _shuffle(a: np.ndarray) -> bytes:
    """Byte planes of a flat array: byte 0 of every element, then byte 1, ..."""
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return a.tobytes() if a.itemsize == 1 else a.view(np.uint8).reshape(-1, a.itemsize).T.tobytes()


def _unshuffle(buf: bytes, dtype: np.dtype, count: int) -> np.ndarray:
    dtype = dtype.newbyteorder("<")
    if len(buf) != count * dtype.itemsize:
        raise _bad("a value buffer has the wrong size")
    planes = np.frombuffer(buf, np.uint8).reshape(dtype.itemsize, count)      # (itemsize, N)
    return planes.T.copy().view(dtype).reshape(-1).astype(dtype.newbyteorder("="))


def _np_dtype(dtype: torch.dtype) -> np.dtype:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise CompressionError(f"The compact format cannot store {name} tensors; export as safetensors instead.")
    return torch.empty(0, dtype=dtype).numpy().dtype


# ---- encoding -------------------------------------------------------------------------------------

def _encode_quant(t: torch.Tensor, info: QuantInfo) -> tuple[dict, list[bytes]] | None:
    """Codes of a weight on its quantization grid; None when it is off the grid (e.g. fine-tuned)."""
    axis_ok = info.axis is None or -t.dim() <= info.axis < t.dim()
    if not t.is_floating_point() or not 2 <= info.bits <= 16 or not axis_ok:
        return None
    axis = None if info.axis is None else info.axis % t.dim()
    scale, zero = info.scale.detach().float().cpu().reshape(-1), info.zero_point.detach().float().cpu().reshape(-1)
    if not scale.numel() == zero.numel() == (t.shape[axis] if axis is not None else 1):
        return None
    if axis is None:
        scale, zero = scale.reshape(()), zero.reshape(())
    info = QuantInfo(int(info.bits), scale, zero, axis, bool(info.symmetric))  # exactly what is stored
    codes = info.codes(t)
    if not torch.equal(info.dequantize(codes).to(t.dtype), t):
        return None
    flat = (codes.flatten() - info.qmin).numpy()
    nonzero = (t != 0).flatten().numpy()
    head = {"enc": "quant", "bits": info.bits, "axis": info.axis, "symmetric": info.symmetric}
    parts = [info.scale.numpy().tobytes(), info.zero_point.numpy().tobytes()]
    zeros = nonzero.size - int(nonzero.sum())
    if zeros * info.bits > nonzero.size:  # the codes saved can pay for a bitmask
        where, positions = _encode_positions(nonzero)
        nnz = nonzero.size - zeros
        if len(positions) + math.ceil(nnz * info.bits / 8) < math.ceil(flat.size * info.bits / 8):
            return {**head, **where, "count": nnz}, parts + [positions, _pack_codes(flat[nonzero], info.bits)]
    return {**head, "count": int(flat.size)}, parts + [_pack_codes(flat, info.bits)]


def _encode_plain(t: torch.Tensor) -> tuple[dict, list[bytes]]:
    """Sparse (positions + values) when smaller than the dense tensor, else raw."""
    flat = t.flatten().numpy()
    n, item = flat.size, flat.itemsize
    if t.is_floating_point() and n >= 16:
        nonzero = flat != 0
        nnz = int(nonzero.sum())
        if nnz * item + min(nnz, math.ceil(n / 8)) < n * item:  # can sparse storage win at all?
            where, positions = _encode_positions(nonzero)
            if len(positions) + nnz * item < n * item:
                return {"enc": "sparse", **where, "count": nnz}, [positions, _shuffle(flat[nonzero])]
    return {"enc": "raw"}, [_shuffle(flat)]


def _tensor_entry(name: str, t: torch.Tensor, info: QuantInfo | None, chunks: list[bytes]) -> dict:
    t = t.detach().cpu().contiguous()
    _np_dtype(t.dtype)
    encoded = _encode_quant(t, info) if info is not None else None
    entry, parts = encoded if encoded is not None else _encode_plain(t)
    chunks.extend(parts)
    return {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
            **entry, "sizes": [len(p) for p in parts]}


# ---- decoding (every size checked) ----------------------------------------------------------------

def _is_int(v, lo: int = 0, hi: int = 2 ** 62) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _decode(entry: dict, parts: list[bytes]) -> torch.Tensor:
    shape, enc = tuple(entry["shape"]), entry.get("enc")
    n = math.prod(shape)
    dtype = _np_dtype(DTYPES[entry["dtype"]])
    expected = {"raw": 1, "sparse": 2, "quant": 4 if "positions" in entry else 3}.get(enc)
    if len(parts) != expected:
        raise _bad(f"tensor {entry['name']} has {len(parts)} buffers, expected {expected}")
    if enc == "raw":
        return torch.from_numpy(_unshuffle(parts[0], dtype, n)).reshape(shape)
    count = entry.get("count")
    if not _is_int(count, 0, n):
        raise _bad(f"count of {entry['name']} is out of range")
    if enc == "sparse":
        mask = _decode_positions(entry, parts[0], n, count)
        out = np.zeros(n, dtype=dtype)
        out[mask] = _unshuffle(parts[1], dtype, count)
        return torch.from_numpy(out).reshape(shape)
    return _decode_quant(entry, parts, shape, count)


def _decode_quant(entry: dict, parts: list[bytes], shape: tuple[int, ...], count: int) -> torch.Tensor:
    bits, axis, n = entry.get("bits"), entry.get("axis"), math.prod(shape)
    if not _is_int(bits, 2, 16) or not (axis is None or _is_int(axis, 0, len(shape) - 1)):
        raise _bad(f"quantization of {entry['name']} is malformed")
    if not isinstance(entry.get("symmetric"), bool) or not DTYPES[entry["dtype"]].is_floating_point:
        raise _bad(f"quantization of {entry['name']} is malformed")
    channels = shape[axis] if axis is not None else 1
    if len(parts[0]) != 4 * channels or len(parts[1]) != 4 * channels or len(parts[-1]) != math.ceil(count * bits / 8):
        raise _bad(f"quantization buffers of {entry['name']} have the wrong size")
    info = quant_info(entry, parts)
    codes = torch.from_numpy(_unpack_codes(parts[-1], bits, count).astype(np.int64)) + info.qmin
    if len(parts) == 4:  # only the non-zeros were stored; zeros are the zero point's code
        mask = torch.from_numpy(_decode_positions(entry, parts[2], n, count))
        full = info._shape(info.zero_point, torch.empty(shape)).expand(shape).reshape(-1).clone()
        full[mask] = codes.float()
        codes = full
    return info.dequantize(codes.reshape(shape)).to(DTYPES[entry["dtype"]])


def quant_info(entry: dict, parts: list[bytes]) -> QuantInfo:
    """The QuantInfo of a 'quant' tensor entry and its buffers."""
    scale = torch.from_numpy(np.frombuffer(parts[0], "<f4").astype(np.float32))
    zero = torch.from_numpy(np.frombuffer(parts[1], "<f4").astype(np.float32))
    if entry["axis"] is None:
        scale, zero = scale.reshape(()), zero.reshape(())
    return QuantInfo(entry["bits"], scale, zero, entry["axis"], entry["symmetric"])


# ---- header ---------------------------------------------------------------------------------------

def _check_header(header) -> None:
    """Types and ranges of every header field (sizes against the payload are checked later)."""
    if not isinstance(header, dict):
        raise _bad("the header is not a JSON object")
    if header.get("version") != VERSION:
        raise ModelLoadError(f"This compact file has format version {header.get('version')!r}; this program "
                             f"reads version {VERSION}. Save the model again with this version.")
    arch = header.get("arch")
    if _is_user(header):
        if arch.get("format") not in USER_FORMATS or header.get("structure") != [] \
                or not _is_int(header.get("program_size"), 1, MAX_PAYLOAD):
            raise _bad("the record of its own architecture is malformed")
    elif not (isinstance(arch, dict) and isinstance(arch.get("name"), str)
              and all(_is_int(arch.get(k), 1, 1 << 16) for k in ("in_channels", "image_size", "num_classes"))):
        raise _bad("the architecture record is malformed")
    for entry in _list(header, "structure"):
        ok = isinstance(entry, dict) and isinstance(entry.get("path"), str) and entry["path"]
        if ok and entry.get("type") == "Sequential":
            ok = _is_int(entry.get("n"), 0, 1 << 16)
        elif ok:
            cls = TYPES.get(entry.get("type"))
            ok = cls is not None and isinstance(entry.get("args"), dict) and set(entry["args"]) == set(SPECS[cls])
        if not ok:
            raise _bad(f"module record {str(entry)[:80]} is malformed")
    if len(_list(header, "tensors")) > MAX_TENSORS:
        raise _bad(f"it lists more than {MAX_TENSORS:,} tensors")
    for entry in _list(header, "tensors"):
        ok = (isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry.get("dtype") in DTYPES
              and entry.get("enc") in ("raw", "sparse", "quant") and isinstance(entry.get("shape"), list)
              and len(entry["shape"]) <= 8 and all(_is_int(d) for d in entry["shape"])
              and isinstance(entry.get("sizes"), list) and len(entry["sizes"]) <= 4
              and all(_is_int(z) for z in entry["sizes"]))
        if not ok:
            raise _bad(f"tensor record {str(entry)[:80]} is malformed")
    acts = header.get("act_quant")
    if not isinstance(acts, dict) or not all(isinstance(v, dict) and _is_int(v.get("bits"), 2, 16)
                                             and isinstance(v.get("symmetric"), bool) for v in acts.values()):
        raise _bad("the activation quantization record is malformed")


def _list(header: dict, key: str) -> list:
    if not isinstance(header.get(key), list):
        raise _bad(f"the header has no {key} list")
    return header[key]


def _check_shapes(header: dict) -> None:
    """The tensors must be exactly those of the rebuilt architecture (built without memory)."""
    expected = _expected_tensors(*(json.dumps(header[k], sort_keys=True) for k in ("arch", "structure", "act_quant")))
    stored = {e["name"]: (tuple(e["shape"]), e["dtype"]) for e in header["tensors"]}
    if expected != stored:
        diff = sorted(k for k in set(expected) | set(stored) if expected.get(k) != stored.get(k))[:5]
        raise _bad(f"its tensors do not fit its architecture (first differences: {', '.join(diff)})")


@functools.lru_cache(maxsize=64)
def _expected_tensors(arch: str, structure: str, acts: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Names, shapes and dtypes of the state dict of a rebuilt architecture (arguments as JSON, so
    that a slider moving over one structure rebuilds it once)."""
    try:
        model = _meta_build(json.loads(arch), json.loads(structure))
        _attach_act_quant(model, json.loads(acts))
    except CompressionError:
        raise
    except Exception as exc:  # anything a hostile or damaged record makes a constructor raise
        raise _bad(f"its architecture cannot be built ({str(exc).splitlines()[0][:160]})") from None
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}


# ---- a user's own architecture ------------------------------------------------------------------

USER = "user"
USER_FORMATS = ("torchscript", "exported")


def _is_user(header: dict) -> bool:
    return isinstance(header.get("arch"), dict) and header["arch"].get("name") == USER


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
            copy = folded_copy(model)
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


def _user_model(header: dict, program: bytes, program_loader) -> nn.Module:
    """The user's architecture from its program, activation quantization attached, its tensors
    checked against the header's before anything is decoded."""
    if program_loader is None:
        raise ModelLoadError("This compact file holds its own architecture: load it with "
                             "compression.models.loading.load_model.")
    model = program_loader(header["arch"]["format"], program)
    if not is_frozen_code(model):
        _attach_act_quant(model, header["act_quant"])
    expected = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    stored = {e["name"]: (tuple(e["shape"]), e["dtype"]) for e in header["tensors"]}
    if expected != stored:
        diff = sorted(k for k in set(expected) | set(stored) if expected.get(k) != stored.get(k))[:5]
        raise _bad(f"its tensors do not fit its architecture (first differences: {', '.join(diff)})")
    return model


# ---- files ----------------------------------------------------------------------------------------

def _payload(model: nn.Module) -> bytes:
    state = effective_weights(model)
    if any(not isinstance(v, torch.Tensor) or v.is_quantized for v in state.values()):
        raise CompressionError("This model holds real int8 (packed) weights, which the compact format does not "
                               "store; save it as TorchScript instead.")
    arch, program = getattr(model, "zoo_arch", None), b""
    if isinstance(arch, dict) and set(ARCH_KEYS) <= set(arch):
        arch, structure = {k: arch[k] for k in ARCH_KEYS}, _structure(model)
    else:  # a user's own architecture: its program, every tensor zeroed, travels in the file
        fmt, program = user_program(model)
        arch, structure = {"name": USER, "format": fmt}, []
    qinfos = {f"{n}.weight": m.weight_qinfo for n, m in model.named_modules() if hasattr(m, "weight_qinfo")}
    acts = {n: {"bits": int(m.act_bits), "symmetric": bool(m.act_symmetric)}
            for n, m in model.named_modules() if hasattr(m, "act_bits")}
    chunks: list[bytes] = []
    tensors = [_tensor_entry(k, v, qinfos.get(k), chunks) for k, v in state.items()]
    header = {"version": VERSION, "arch": arch, "structure": structure, "tensors": tensors, "act_quant": acts}
    if program:
        header["program_size"] = len(program)
    else:
        _check_shapes(header)  # what is written can be read back, or we say so now
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<I", len(text)) + text + b"".join(chunks) + program


def to_bytes(model: nn.Module) -> bytes:
    """The compact file of `model` as bytes. Raises CompressionError for models it cannot store."""
    try:
        payload = _payload(model)
    except ModelLoadError as exc:  # the self-check failed: the model is unsupported, not a file damaged
        raise CompressionError(f"The compact format cannot store this model: {exc}") from None
    return MAGIC + zlib.compress(payload, 6 if len(payload) <= SMALL_PAYLOAD else 1)


def save_compact(model: nn.Module, file: str | Path | BinaryIO) -> int:
    """Write `model` in the compact format to a path or a binary file; returns the bytes written."""
    data = to_bytes(model)
    if isinstance(file, (str, Path)):
        Path(file).write_bytes(data)
    else:
        file.write(data)
    return len(data)


def _more(inflater, data: bytes, limit: int) -> bytes:
    """Up to `limit` more inflated bytes (zlib keeps the unread input in unconsumed_tail)."""
    out = bytearray()
    try:
        while len(out) < limit and not inflater.eof:
            chunk = inflater.decompress(data, limit - len(out))
            data = inflater.unconsumed_tail
            out += chunk
            if not chunk and not data:
                break
    except zlib.error:
        raise _bad("its compressed body is corrupt") from None
    return bytes(out)


def _declared_bytes(header: dict) -> tuple[int, int]:
    """(payload bytes the header declares, bytes its tensors take once decoded)."""
    stored = sum(sum(e["sizes"]) for e in header["tensors"]) + (header["program_size"] if _is_user(header) else 0)
    decoded = sum(math.prod(e["shape"]) * DTYPES[e["dtype"]].itemsize for e in header["tensors"])
    return stored, decoded


def _budget() -> int:
    """Bytes a compact file may decode to: MAX_DECODED, or half the memory available if less."""
    free = available_memory_bytes()
    return min(MAX_DECODED, free // 2) if free else MAX_DECODED


def _parse(data: bytes) -> tuple[dict, list[list[bytes]], bytes]:
    """Header, each tensor's buffers and (a user's architecture) the program, checked against each
    other and, for a built-in architecture, against the rebuilt architecture. Inflates the header
    first and then exactly the bytes it declares, after checking them against the memory budget."""
    if not is_compact(data):
        raise ModelLoadError("Not a compact model file: it does not start with the CSTUDIO1 magic bytes.")
    body, inflater = data[len(MAGIC):], zlib.decompressobj()
    head = _more(inflater, body, 4 + MAX_HEADER)
    if len(head) < 4:
        raise _bad("it is truncated")
    (hlen,) = struct.unpack("<I", head[:4])
    if hlen > MAX_HEADER or hlen > len(head) - 4:
        raise _bad("its header length is out of range" if hlen > MAX_HEADER or inflater.eof else "it is truncated")
    try:
        header = json.loads(head[4:4 + hlen])
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _bad("its header is not valid JSON (or nested too deeply)") from None
    _check_header(header)
    stored, decoded = _declared_bytes(header)
    if max(stored, decoded) > _budget():
        raise _bad(f"it declares {max(stored, decoded) / 2**30:.1f} GiB of tensors, over the "
                   f"{_budget() / 2**30:.1f} GiB this machine allows")
    payload = head + _more(inflater, inflater.unconsumed_tail, 4 + hlen + stored - len(head) + 1)
    if not inflater.eof:
        raise _bad("it is truncated" if len(payload) <= 4 + hlen + stored else "it has extra bytes after its end")
    if inflater.unused_data:
        raise _bad("it has extra bytes after its end")
    if len(payload) != 4 + hlen + stored:
        raise _bad("its buffers do not add up to its header's sizes")
    pos, blobs = 4 + hlen, []
    for entry in header["tensors"]:
        bounds = list(itertools.accumulate(entry["sizes"], initial=pos))
        blobs.append([payload[a:b] for a, b in zip(bounds, bounds[1:])])
        pos = bounds[-1]
    program = payload[pos:] if _is_user(header) else b""
    if not _is_user(header):
        _check_shapes(header)
    return header, blobs, program


def _read(file: str | Path | BinaryIO | bytes) -> bytes:
    if isinstance(file, (bytes, bytearray, memoryview)):
        return bytes(file)
    if isinstance(file, (str, Path)):
        try:
            return Path(file).read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"Cannot read {file}: {exc.strerror or exc}.") from None
    data = file.read()
    if not isinstance(data, bytes):
        raise ModelLoadError("Open the compact file in binary mode ('rb').")
    return data


def load_compact(file: str | Path | BinaryIO | bytes, program_loader=None) -> nn.Module:
    """Rebuild a model written by save_compact, in eval mode, with its weight_qinfo and activation
    quantization. A file of a user's own architecture needs `program_loader(format, bytes)`
    (compression.models.loading.load_program, which load_model passes); its tensors are checked against
    the loaded program's before any is decoded. Raises ModelLoadError for unreadable, truncated
    or damaged files."""
    header, blobs, program = _parse(_read(file))
    if _is_user(header):
        model = _user_model(header, program, program_loader)
    try:
        if not _is_user(header):
            model = _rebuild(header["arch"], header["structure"])
            _attach_act_quant(model, header["act_quant"])
        state = {e["name"]: _decode(e, parts) for e, parts in zip(header["tensors"], blobs)}
        model.load_state_dict(state, strict=True)
    except (TypeError, ValueError, RuntimeError, AttributeError, KeyError) as exc:
        raise _bad(f"it does not describe a valid model ({str(exc).splitlines()[0][:160]})") from None
    for entry, parts in zip(header["tensors"], blobs):
        if entry["enc"] == "quant" and entry["name"].endswith(".weight") and not is_frozen_code(model):
            get_module(model, entry["name"].removesuffix(".weight")).weight_qinfo = quant_info(entry, parts)
    if is_frozen_code(model):
        return model.eval()
    try:
        return model.eval()
    except NotImplementedError:  # a torch.export module runs as exported
        return model


def describe_compact(file: str | Path | BinaryIO | bytes) -> list[dict]:
    """One row per stored tensor: how it is stored and its bytes before zlib vs dense fp32."""
    header, _, _ = _parse(_read(file))
    return [{"tensor": e["name"], "shape": tuple(e["shape"]), "encoding": e["enc"], "positions": e.get("positions"),
             "bits": e.get("bits"), "stored_bytes": sum(e["sizes"]), "fp32_bytes": 4 * math.prod(e["shape"])}
            for e in header["tensors"]]


def _attach_act_quant(model: nn.Module, acts: dict) -> None:
    """Activation fake-quant on the named layers; their scale and zero point come with the state dict."""
    if not acts:
        return
    for name, spec in acts.items():
        attach_act_quant(model.get_submodule(name), spec["bits"], spec["symmetric"], torch.ones(()), torch.zeros(()))


