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
import itertools
import json
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from compression.core.devices import available_memory_bytes
from compression.core.errors import CompressionError, ModelLoadError
from compression.core.modules import effective_weights, get_module, is_frozen_code, set_module
from compression.core.quant import attach_act_quant
from compression.models import zoo
from compression.models.programs import USER_FORMATS, user_program
from compression.models.tensor_codec import DTYPES, bad, decode_tensor, is_int, quant_info, tensor_entry

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
            raise bad(f"module {entry['path']!r} has no parent")
        set_module(model, entry["path"], _build(entry))
    return model


def _meta_build(arch: dict, entries: list[dict]) -> nn.Module:
    """The rebuilt architecture without memory (meta device): for checking shapes first."""
    with torch.device("meta"):
        return _rebuild(arch, entries)


# ---- header ---------------------------------------------------------------------------------------

def _check_header(header) -> None:
    """Types and ranges of every header field (sizes against the payload are checked later)."""
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    if header.get("version") != VERSION:
        raise ModelLoadError(f"This compact file has format version {header.get('version')!r}; this program "
                             f"reads version {VERSION}. Save the model again with this version.")
    arch = header.get("arch")
    if _is_user(header):
        if arch.get("format") not in USER_FORMATS or header.get("structure") != [] \
                or not is_int(header.get("program_size"), 1, MAX_PAYLOAD):
            raise bad("the record of its own architecture is malformed")
    elif not (isinstance(arch, dict) and isinstance(arch.get("name"), str)
              and all(is_int(arch.get(k), 1, 1 << 16) for k in ("in_channels", "image_size", "num_classes"))):
        raise bad("the architecture record is malformed")
    for entry in _list(header, "structure"):
        ok = isinstance(entry, dict) and isinstance(entry.get("path"), str) and entry["path"]
        if ok and entry.get("type") == "Sequential":
            ok = is_int(entry.get("n"), 0, 1 << 16)
        elif ok:
            cls = TYPES.get(entry.get("type"))
            ok = cls is not None and isinstance(entry.get("args"), dict) and set(entry["args"]) == set(SPECS[cls])
        if not ok:
            raise bad(f"module record {str(entry)[:80]} is malformed")
    if len(_list(header, "tensors")) > MAX_TENSORS:
        raise bad(f"it lists more than {MAX_TENSORS:,} tensors")
    for entry in _list(header, "tensors"):
        ok = (isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry.get("dtype") in DTYPES
              and entry.get("enc") in ("raw", "sparse", "quant") and isinstance(entry.get("shape"), list)
              and len(entry["shape"]) <= 8 and all(is_int(d) for d in entry["shape"])
              and isinstance(entry.get("sizes"), list) and len(entry["sizes"]) <= 4
              and all(is_int(z) for z in entry["sizes"]))
        if not ok:
            raise bad(f"tensor record {str(entry)[:80]} is malformed")
    acts = header.get("act_quant")
    if not isinstance(acts, dict) or not all(isinstance(v, dict) and is_int(v.get("bits"), 2, 16)
                                             and isinstance(v.get("symmetric"), bool) for v in acts.values()):
        raise bad("the activation quantization record is malformed")


def _list(header: dict, key: str) -> list:
    if not isinstance(header.get(key), list):
        raise bad(f"the header has no {key} list")
    return header[key]


def _check_shapes(header: dict) -> None:
    """The tensors must be exactly those of the rebuilt architecture (built without memory)."""
    expected = _expected_tensors(*(json.dumps(header[k], sort_keys=True) for k in ("arch", "structure", "act_quant")))
    stored = {e["name"]: (tuple(e["shape"]), e["dtype"]) for e in header["tensors"]}
    if expected != stored:
        diff = sorted(k for k in set(expected) | set(stored) if expected.get(k) != stored.get(k))[:5]
        raise bad(f"its tensors do not fit its architecture (first differences: {', '.join(diff)})")


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
        raise bad(f"its architecture cannot be built ({str(exc).splitlines()[0][:160]})") from None
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}


# ---- a user's own architecture ------------------------------------------------------------------

USER = "user"


def _is_user(header: dict) -> bool:
    return isinstance(header.get("arch"), dict) and header["arch"].get("name") == USER


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
        raise bad(f"its tensors do not fit its architecture (first differences: {', '.join(diff)})")
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
    tensors = [tensor_entry(k, v, qinfos.get(k), chunks) for k, v in state.items()]
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
        raise bad("its compressed body is corrupt") from None
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
        raise bad("it is truncated")
    (hlen,) = struct.unpack("<I", head[:4])
    if hlen > MAX_HEADER or hlen > len(head) - 4:
        raise bad("its header length is out of range" if hlen > MAX_HEADER or inflater.eof else "it is truncated")
    try:
        header = json.loads(head[4:4 + hlen])
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad("its header is not valid JSON (or nested too deeply)") from None
    _check_header(header)
    stored, decoded = _declared_bytes(header)
    if max(stored, decoded) > _budget():
        raise bad(f"it declares {max(stored, decoded) / 2**30:.1f} GiB of tensors, over the "
                   f"{_budget() / 2**30:.1f} GiB this machine allows")
    payload = head + _more(inflater, inflater.unconsumed_tail, 4 + hlen + stored - len(head) + 1)
    if not inflater.eof:
        raise bad("it is truncated" if len(payload) <= 4 + hlen + stored else "it has extra bytes after its end")
    if inflater.unused_data:
        raise bad("it has extra bytes after its end")
    if len(payload) != 4 + hlen + stored:
        raise bad("its buffers do not add up to its header's sizes")
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
        state = {e["name"]: decode_tensor(e, parts) for e, parts in zip(header["tensors"], blobs)}
        model.load_state_dict(state, strict=True)
    except (TypeError, ValueError, RuntimeError, AttributeError, KeyError) as exc:
        raise bad(f"it does not describe a valid model ({str(exc).splitlines()[0][:160]})") from None
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


