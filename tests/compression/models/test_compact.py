"""The compact format: exact round trips, real savings, and damaged files refused.

Most models here are pruned, quantized or shrunk by hand (torch.nn.utils.prune, a QuantInfo set
by hand, weights sliced), so that these tests check the format and nothing else."""
from __future__ import annotations

import io
import json
import random
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from compression.core.errors import CompressionError, ModelLoadError
from compression.core.modules import effective_weights
from compression.core.quant import QuantInfo, attach_act_quant
from compression.methods.lowrank import LowRankConfig, lowrank
from compression.methods.pruning import ChannelPruneConfig, PruneConfig, channel_prune, prune
from compression.methods.quantization import QuantConfig, quantize
from compression.metrics.evaluate import compact_size, safetensors_size
from compression.models import compact, tensor_codec
from compression.models.loading import load_model


def _round_trip(model: nn.Module) -> nn.Module:
    return compact.load_compact(compact.to_bytes(model))


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    """Identical outputs and identical effective weights (values; a pruned -0.0 loads as 0.0)."""
    wa, wb = effective_weights(a), effective_weights(b)
    with torch.inference_mode():
        outputs = torch.equal(a.eval()(x), b.eval()(x))
    return outputs and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _hand_prune(model: nn.Module, amount: float) -> nn.Module:
    """Global magnitude pruning with torch.nn.utils.prune (masks left in place)."""
    tprune.global_unstructured([(m, "weight") for m in _weight_layers(model)], tprune.L1Unstructured, amount=amount)
    return model


def _hand_quantize(model: nn.Module, bits: int) -> nn.Module:
    """Per-channel symmetric fake quantization written by hand in the QuantInfo convention."""
    for layer in _weight_layers(model):
        for hook in list(layer._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                tprune.remove(layer, "weight")
        w = layer.weight.detach()
        qmax = 2 ** (bits - 1) - 1
        scale = (w.abs().reshape(w.shape[0], -1).amax(1) / qmax).clamp_min(1e-8)  # (C,)
        info = QuantInfo(bits, scale, torch.zeros_like(scale), 0, True)
        layer.weight.data = info.dequantize(info.codes(w))
        layer.weight_qinfo = info
    return model


def test_round_trip_every_builtin(any_builtin, digits):
    name, model = any_builtin
    back = _round_trip(model)
    assert back.zoo_arch == model.zoo_arch and not back.training
    assert _same(model, back, digits.test.X[:32])


def test_ninety_percent_pruned_file_is_much_smaller(pretrained, digits):
    teacher = pretrained("teacher")
    pruned = _hand_prune(pretrained("teacher"), 0.9)
    dense_compact, _ = compact_size(teacher)
    size, how = compact_size(pruned)
    assert safetensors_size(teacher) / size > 5 and dense_compact / size > 5
    assert "compact format" in how
    back = _round_trip(pruned)
    assert _same(pruned, back, digits.test.X[:32])
    assert not any(k.endswith("_mask") for k in back.state_dict())  # masks folded, not stored


def test_four_bit_codes_pack_eightfold(pretrained, digits):
    q4 = _hand_quantize(pretrained("teacher"), 4)
    data = compact.to_bytes(q4)
    rows = [r for r in compact.describe_compact(data) if r["tensor"].endswith("weight")]
    assert all(r["encoding"] == "quant" and r["bits"] == 4 for r in rows)
    # codes at 4 bits plus two float32 per channel: ~8x on the weights before zlib
    assert sum(r["fp32_bytes"] for r in rows) / sum(r["stored_bytes"] for r in rows) > 7.5
    assert 4 * sum(p.numel() for p in q4.parameters()) / len(data) > 6
    back = compact.load_compact(data)
    assert _same(q4, back, digits.test.X[:32])
    for a, b in zip(_weight_layers(q4), _weight_layers(back)):
        assert b.weight_qinfo.bits == 4 and torch.equal(a.weight_qinfo.codes(a.weight), b.weight_qinfo.codes(b.weight))


def test_pruned_and_quantized_compose(pretrained, digits):
    pruned = _hand_prune(pretrained("teacher"), 0.9)
    both = _hand_quantize(_hand_prune(pretrained("teacher"), 0.9), 4)
    data = compact.to_bytes(both)
    rows = {r["tensor"]: r for r in compact.describe_compact(data)}
    assert rows["fcs.0.weight"]["encoding"] == "quant" and rows["fcs.0.weight"]["positions"] is not None
    assert len(data) < compact_size(pruned)[0] / 2
    assert len(data) < compact_size(_hand_quantize(pretrained("teacher"), 4))[0] / 2
    assert _same(both, compact.load_compact(data), digits.test.X[:32])


def test_weights_moved_off_their_grid_are_stored_as_floats(pretrained, digits):
    model = _hand_quantize(pretrained("mlp"), 4)
    with torch.no_grad():
        model.fc2.weight[0, 0] += 1e-3  # e.g. fine-tuned after quantization
    rows = {r["tensor"]: r for r in compact.describe_compact(compact.to_bytes(model))}
    assert rows["fc2.weight"]["encoding"] in ("raw", "sparse") and rows["fc1.weight"]["encoding"] == "quant"
    back = _round_trip(model)
    assert _same(model, back, digits.test.X[:32]) and not hasattr(back.fc2, "weight_qinfo")


def test_activation_quantization_survives(pretrained, digits):
    model = pretrained("mlp")
    attach_act_quant(model.fc2, 6, True, torch.tensor(0.05), torch.tensor(0.0))
    back = _round_trip(model)
    assert back.fc2.act_bits == 6 and back.fc2.act_symmetric and torch.equal(back.fc2.act_scale, torch.tensor(0.05))
    assert _same(model, back, digits.test.X[:32])
    assert not torch.equal(back(digits.test.X[:32]), pretrained("mlp")(digits.test.X[:32]))


def _shrink_mlp(model: nn.Module, keep: int) -> nn.Module:
    fc1, fc2 = nn.Linear(64, keep), nn.Linear(keep, model.fc2.out_features)
    with torch.no_grad():
        fc1.weight.copy_(model.fc1.weight[:keep]), fc1.bias.copy_(model.fc1.bias[:keep])
        fc2.weight.copy_(model.fc2.weight[:, :keep]), fc2.bias.copy_(model.fc2.bias)
    model.fc1, model.fc2 = fc1, fc2
    return model


def _shrink_lenet(model: nn.Module, keep: int) -> nn.Module:
    conv1 = nn.Conv2d(1, keep, 3, padding=1)
    conv2 = nn.Conv2d(keep, model.conv2.out_channels, 3, padding=1)
    with torch.no_grad():
        conv1.weight.copy_(model.conv1.weight[:keep]), conv1.bias.copy_(model.conv1.bias[:keep])
        conv2.weight.copy_(model.conv2.weight[:, :keep]), conv2.bias.copy_(model.conv2.bias)
    model.conv1, model.conv2 = conv1, conv2
    return model


def test_structural_changes_round_trip(pretrained, digits):
    shrunk = [_shrink_mlp(pretrained("mlp"), 200), _shrink_lenet(pretrained("lenet5"), 4),
              lowrank(pretrained("mlp"), LowRankConfig(rank_ratio=0.2), measure_latency=False)[0],
              lowrank(pretrained("resnet"), LowRankConfig(rank_ratio=0.5, include_conv=True), measure_latency=False)[0]]
    for model in shrunk:
        back = _round_trip(model)
        assert _same(model, back, digits.test.X[:32])
        assert [type(m) for m in back.modules()] == [type(m) for m in model.modules()]
    assert isinstance(_round_trip(shrunk[2]).fc1, nn.Sequential)


def test_library_methods_round_trip(pretrained, digits):
    """The pruning and quantization modules' own outputs, through the format."""
    models = [prune(pretrained("teacher"), PruneConfig(sparsity=0.9))[0],
              quantize(pretrained("teacher"), QuantConfig(bits=4))[0],
              quantize(pretrained("mlp"), QuantConfig(bits=6, activations=True), digits)[0],
              channel_prune(pretrained("resnet"), ChannelPruneConfig(0.5), digits, measure_latency=False)[0]]
    for model in models:
        assert _same(model, _round_trip(model), digits.test.X[:32])


def test_save_and_load_paths_and_file_objects(tmp_path, pretrained, digits):
    model = _hand_prune(pretrained("lenet5"), 0.5)
    path = tmp_path / "model.anything"
    written = compact.save_compact(model, path)
    buf = io.BytesIO()
    assert compact.save_compact(model, buf) == written == path.stat().st_size == compact_size(model)[0]
    buf.seek(0)
    assert compact.is_compact(path) and compact.is_compact(buf) and buf.tell() == 0
    for source in (path, str(path), buf, path.read_bytes()):
        assert _same(model, compact.load_compact(source), digits.test.X[:8])


def test_recognised_by_content_only(tmp_path, pretrained):
    from safetensors.torch import save

    assert compact.is_compact(compact.to_bytes(pretrained("mlp")))
    assert not compact.is_compact(save({"w": torch.zeros(2)}))
    assert not compact.is_compact(b"PK\x03\x04") and not compact.is_compact(tmp_path / "missing")
    with pytest.raises(ModelLoadError, match="magic"):
        compact.load_compact(b"PK\x03\x04" * 10)
    with pytest.raises(ModelLoadError, match="Cannot read"):
        compact.load_compact(tmp_path / "missing")


def test_loader_opens_compact_files(tmp_path, pretrained, digits):
    model = _hand_prune(pretrained("lenet5"), 0.5)
    path = tmp_path / "weights.bin"
    compact.save_compact(model, path)
    loaded = load_model(path, data=digits)
    assert loaded.origin == "compact" and _same(model, loaded.model, digits.test.X[:8])


# ---- damaged files --------------------------------------------------------------------------------

def _split(data: bytes) -> tuple[dict, bytes]:
    payload = zlib.decompress(data[len(compact.MAGIC):])
    (hlen,) = struct.unpack("<I", payload[:4])
    return json.loads(payload[4:4 + hlen]), payload[4 + hlen:]


def _join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return compact.MAGIC + zlib.compress(struct.pack("<I", len(text)) + text + body)


def _tampered(data: bytes, change) -> bytes:
    header, body = _split(data)
    change(header)
    return _join(header, body)


def _entry(header: dict, name: str) -> dict:
    return next(e for e in header["tensors"] if e["name"] == name)


TAMPERINGS = {
    "version": lambda h: h.update(version=99),
    "unknown model": lambda h: h["arch"].update(name="gpt"),
    "huge image": lambda h: h["arch"].update(image_size=10 ** 9),
    "shape": lambda h: _entry(h, "fc1.weight").update(shape=[301, 64]),
    "huge shape": lambda h: _entry(h, "fc1.weight").update(shape=[2 ** 40, 2 ** 20]),
    "negative size": lambda h: _entry(h, "fc1.bias").update(sizes=[-4]),
    "sizes": lambda h: _entry(h, "fc1.bias").update(sizes=[1196]),
    "dtype": lambda h: _entry(h, "fc1.bias").update(dtype="complex64"),
    "encoding": lambda h: _entry(h, "fc1.bias").update(enc="pickle"),
    "layer type": lambda h: h["structure"].append({"path": "fc1", "type": "Eval", "args": {}}),
    "layer args": lambda h: h["structure"].append(
        {"path": "fc1", "type": "Linear", "args": {"in_features": "os.system", "out_features": 1, "bias": True}}),
    "missing tensor": lambda h: h["tensors"].pop(),
    "act quant": lambda h: h.update(act_quant={"fc9": {"bits": 8, "symmetric": True}}),
    "not an object": lambda h: h.clear(),
}


@pytest.mark.parametrize("what", TAMPERINGS)
def test_tampered_headers_are_refused(pretrained, what):
    data = compact.to_bytes(pretrained("mlp"))
    with pytest.raises(ModelLoadError):
        compact.load_compact(_tampered(data, TAMPERINGS[what]))


def test_tampered_sparse_and_quant_records_are_refused(pretrained):
    sparse = compact.to_bytes(_hand_prune(pretrained("mlp"), 0.97))
    quant = compact.to_bytes(_hand_quantize(_hand_prune(pretrained("mlp"), 0.9), 4))
    changes = [(sparse, lambda h: _entry(h, "fc1.weight").update(count=10 ** 6)),
               (sparse, lambda h: _entry(h, "fc1.weight").update(positions="runs")),
               (quant, lambda h: _entry(h, "fc1.weight").update(bits=64)),
               (quant, lambda h: _entry(h, "fc1.weight").update(axis=5)),
               (quant, lambda h: _entry(h, "fc1.weight").update(bits=3))]
    for data, change in changes:
        with pytest.raises(ModelLoadError):
            compact.load_compact(_tampered(data, change))


def test_truncated_and_corrupted_files_are_refused(pretrained):
    data = compact.to_bytes(_hand_quantize(_hand_prune(pretrained("lenet5"), 0.8), 4))
    for cut in (9, 20, len(data) // 3, len(data) // 2, len(data) - 1):
        with pytest.raises(ModelLoadError, match="damaged"):
            compact.load_compact(data[:cut])
    with pytest.raises(ModelLoadError):
        compact.load_compact(data + b"extra")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    with pytest.raises(ModelLoadError):
        compact.load_compact(bytes(flipped))


def test_random_damage_inside_the_payload_never_escapes_as_another_error(pretrained):
    header, body = _split(compact.to_bytes(_hand_quantize(_hand_prune(pretrained("mlp"), 0.9), 4)))
    payload = bytearray(struct.pack("<I", 0) + json.dumps(header).encode() + body)
    rng = random.Random(0)
    for _ in range(60):
        damaged = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(4, len(damaged))] = rng.randrange(256)
        text_len = len(json.dumps(header).encode())
        damaged[:4] = struct.pack("<I", text_len)
        try:
            model = compact.load_compact(compact.MAGIC + zlib.compress(bytes(damaged)))
        except ModelLoadError:
            continue
        assert isinstance(model, nn.Module)  # damage to float values still loads: they are just numbers


# ---- encodings and unsupported models -------------------------------------------------------------

@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8, 11, 16])
def test_code_packing_round_trips(bits):
    codes = np.random.default_rng(bits).integers(0, 2 ** bits, size=1001)
    packed = tensor_codec._pack_codes(codes, bits)
    assert len(packed) == -(-1001 * bits // 8)
    assert np.array_equal(tensor_codec._unpack_codes(packed, bits, 1001), codes)
    if bits == 8:
        assert packed == codes.astype(np.uint8).tobytes()
    if bits == 4:  # two codes a byte, the first in the low nibble
        pairs = codes[:1000].reshape(-1, 2)
        assert packed[:500] == (pairs[:, 0] | pairs[:, 1] << 4).astype(np.uint8).tobytes()


def test_positions_take_the_smaller_form():
    rng = np.random.default_rng(0)
    for density, expected in ((0.01, "gaps"), (0.5, "bitmask")):
        nonzero = rng.random(20_000) < density
        where, buf = tensor_codec._encode_positions(nonzero)
        assert where["positions"] == expected
        entry = {"name": "t", **where}
        assert np.array_equal(tensor_codec._decode_positions(entry, buf, nonzero.size, int(nonzero.sum())), nonzero)


def test_models_the_format_cannot_store(pretrained):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(CompressionError, match="built-in architecture") as err:
        compact.to_bytes(plain)
    assert not isinstance(err.value, ModelLoadError)
    size, how = compact_size(plain)
    assert size > 64 * 10 * 4 and "safetensors" in how
    odd = pretrained("mlp")
    odd.fc2 = nn.Sequential(odd.fc2, nn.GELU())  # GELU: a module the format cannot rebuild
    with pytest.raises(CompressionError, match="GELU"):
        compact.to_bytes(odd)
    assert "safetensors" in compact_size(odd)[1]


def test_compact_size_is_the_bytes_written_and_timed(pretrained, record_property):
    """compact_size runs on every slider move; its time is recorded here, not asserted."""
    for name, model in (("dense", pretrained("teacher")), ("pruned", _hand_prune(pretrained("teacher"), 0.9))):
        compact_size(model)  # warm the architecture cache, as a slider's second move would
        start = time.perf_counter()
        size, _ = compact_size(model)
        record_property(f"compact_size_ms_{name}", round((time.perf_counter() - start) * 1e3, 2))
        assert size == len(compact.to_bytes(model)) == compact.save_compact(model, io.BytesIO())
