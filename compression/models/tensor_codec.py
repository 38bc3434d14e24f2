"""How the compact format (compression.models.compact) encodes one tensor: sparse positions,
bit-packed low-bit codes with their QuantInfo, byte-shuffled floats; and the checked decoding,
where every declared size is verified against the bytes really present."""
from __future__ import annotations

import math

import numpy as np
import torch

from compression.core.errors import CompressionError, ModelLoadError
from compression.core.quant import QuantInfo


DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "int64": torch.int64,
          "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}


DELTA_DTYPES = ("uint8", "uint16", "uint32")


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
            raise bad(f"bitmask of {entry['name']} has the wrong size")
        mask = np.unpackbits(np.frombuffer(buf, np.uint8), bitorder="little")[:n].astype(bool)
        if int(mask.sum()) != count:
            raise bad(f"bitmask of {entry['name']} does not match its count")
        return mask
    dtype = entry.get("gap_dtype")
    if entry.get("positions") != "gaps" or dtype not in DELTA_DTYPES or len(buf) != count * np.dtype(dtype).itemsize:
        raise bad(f"positions of {entry['name']} are malformed")
    idx = np.cumsum(np.frombuffer(buf, np.dtype(dtype).newbyteorder("<")).astype(np.int64) + 1) - 1
    if count and idx[-1] >= n:
        raise bad(f"positions of {entry['name']} run past its end")
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
        raise bad("a value buffer has the wrong size")
    planes = np.frombuffer(buf, np.uint8).reshape(dtype.itemsize, count)      # (itemsize, N)
    return planes.T.copy().view(dtype).reshape(-1).astype(dtype.newbyteorder("="))


def _np_dtype(dtype: torch.dtype) -> np.dtype:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise CompressionError(f"The compact format cannot store {name} tensors; export as safetensors instead.")
    return torch.empty(0, dtype=dtype).numpy().dtype


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


def tensor_entry(name: str, t: torch.Tensor, info: QuantInfo | None, chunks: list[bytes]) -> dict:
    t = t.detach().cpu().contiguous()
    _np_dtype(t.dtype)
    encoded = _encode_quant(t, info) if info is not None else None
    entry, parts = encoded if encoded is not None else _encode_plain(t)
    chunks.extend(parts)
    return {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
            **entry, "sizes": [len(p) for p in parts]}


def is_int(v, lo: int = 0, hi: int = 2 ** 62) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def decode_tensor(entry: dict, parts: list[bytes]) -> torch.Tensor:
    shape, enc = tuple(entry["shape"]), entry.get("enc")
    n = math.prod(shape)
    dtype = _np_dtype(DTYPES[entry["dtype"]])
    expected = {"raw": 1, "sparse": 2, "quant": 4 if "positions" in entry else 3}.get(enc)
    if len(parts) != expected:
        raise bad(f"tensor {entry['name']} has {len(parts)} buffers, expected {expected}")
    if enc == "raw":
        return torch.from_numpy(_unshuffle(parts[0], dtype, n)).reshape(shape)
    count = entry.get("count")
    if not is_int(count, 0, n):
        raise bad(f"count of {entry['name']} is out of range")
    if enc == "sparse":
        mask = _decode_positions(entry, parts[0], n, count)
        out = np.zeros(n, dtype=dtype)
        out[mask] = _unshuffle(parts[1], dtype, count)
        return torch.from_numpy(out).reshape(shape)
    return _decode_quant(entry, parts, shape, count)


def _decode_quant(entry: dict, parts: list[bytes], shape: tuple[int, ...], count: int) -> torch.Tensor:
    bits, axis, n = entry.get("bits"), entry.get("axis"), math.prod(shape)
    if not is_int(bits, 2, 16) or not (axis is None or is_int(axis, 0, len(shape) - 1)):
        raise bad(f"quantization of {entry['name']} is malformed")
    if not isinstance(entry.get("symmetric"), bool) or not DTYPES[entry["dtype"]].is_floating_point:
        raise bad(f"quantization of {entry['name']} is malformed")
    channels = shape[axis] if axis is not None else 1
    if len(parts[0]) != 4 * channels or len(parts[1]) != 4 * channels or len(parts[-1]) != math.ceil(count * bits / 8):
        raise bad(f"quantization buffers of {entry['name']} have the wrong size")
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


def bad(what: str) -> ModelLoadError:
    return ModelLoadError(f"The compact file is damaged or was not written by this program: {what}.")
