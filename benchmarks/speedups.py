"""Does compression make inference faster? At batch 256:
- channel pruning 50% (compression.methods.pruning.channel_prune, which times dense and pruned): pruned/dense;
- real int8 (compression.methods.int8.quantize_int8, dynamic int8 Linear): fp32/int8, on the MLP
  and on a Linear-heavy transformer block (hidden 384, FFN 1536, plain torch nn);
- unstructured sparsity (masks folded, zeros stored densely): dense kernels do not skip zeros.
Each measurement is repeated in rounds (dense and compressed timed back to back in each) and the
median ratio reported. With CUDA available the channel and sparsity rows are measured there too."""
from __future__ import annotations

import statistics
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import main, print_table
from compression.core.modules import fold_masks_
from compression.data import datasets as data_mod
from compression.methods.int8 import quantize_int8
from compression.methods.pruning import ChannelPruneConfig, PruneConfig, channel_prune, prune
from compression.metrics.latency import paired_latency
from compression.models import zoo

BATCH = 256
SEQ = 32


class Block(nn.Module):
    """A pre-norm transformer encoder block built from nn.Linear: attention + GELU FFN."""

    def __init__(self, hidden: int = 384, ffn: int = 1536, heads: int = 6):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.q, self.k, self.v, self.o = (nn.Linear(hidden, hidden) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H)
        B, T, H = x.shape
        h = self.ln1(x)
        q, k, v = (p(h).view(B, T, self.heads, H // self.heads).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, H/heads)
        x = x + self.o(a.transpose(1, 2).reshape(B, T, H))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def _median_ratio(fn, rounds: int) -> float:
    return statistics.median(fn() for _ in range(rounds))


def channel_ratio(name: str, data, rounds: int) -> float:
    model = zoo.load_pretrained(name).eval()
    cfg = ChannelPruneConfig(sparsity=0.5)
    return _median_ratio(lambda: channel_prune(model, cfg, data)[1].metrics["latency_ratio"], rounds)


def int8_speedup(model: nn.Module, rounds: int, input_shape=None) -> float:
    return _median_ratio(lambda: quantize_int8(model, input_shape=input_shape)[1].metrics["speedup"], rounds)


def _paired_ratio(a: nn.Module, b: nn.Module, x: torch.Tensor, rounds: int, repeats: int = 20) -> float:
    """latency(b) / latency(a), paired in alternating rounds (metrics.latency.paired_latency)."""
    return paired_latency(a, b, x, rounds=rounds, repeats=repeats).ratio


def sparse_ratio(name: str, data, sparsity: float, rounds: int, device: str = "cpu") -> float:
    model = zoo.load_pretrained(name).eval()
    pruned = fold_masks_(prune(model, PruneConfig(sparsity=sparsity), data)[0]).eval()
    x = torch.randn(BATCH, *data.input_shape)
    return _paired_ratio(model.to(device), pruned.to(device), x.to(device), rounds)


def cuda_channel_ratio(name: str, data, rounds: int) -> float:
    model = zoo.load_pretrained(name).eval()
    pruned, _ = channel_prune(model, ChannelPruneConfig(sparsity=0.5), data, measure_latency=False)
    x = torch.randn(BATCH, *data.input_shape, device="cuda")
    return _paired_ratio(model.cuda(), pruned.cuda(), x, rounds)


def run(quick: bool = False, channel_models: list[str] | None = None, block: bool = True,
        rounds: int | None = None) -> dict:
    torch.manual_seed(0)
    data = data_mod.load_digits()
    rounds = rounds or (1 if quick else 5)
    warnings.filterwarnings("ignore", category=UserWarning)
    channel = {n: channel_ratio(n, data, rounds) for n in (channel_models or ["resnet", "mobilenet"])}
    int8 = {"mlp": int8_speedup(zoo.load_pretrained("mlp").eval(), rounds)}
    if block:
        int8["transformer_block"] = int8_speedup(Block().eval(), rounds, input_shape=(SEQ, 384))
    sparse = {f"{n}@{s:.0%}": sparse_ratio(n, data, s, rounds) for n in ["mlp"] for s in (0.5, 0.9)}
    res = {"device": "cpu", "threads": torch.get_num_threads(), "latency_batch": BATCH,
           "channel_latency_ratio": channel, "int8_speedup": int8, "unstructured_latency_ratio": sparse}
    if torch.cuda.is_available():
        res["cuda"] = {"device": torch.cuda.get_device_name(0),
                       "channel_latency_ratio": {n: cuda_channel_ratio(n, data, rounds) for n in channel},
                       "unstructured_latency_ratio": {"mlp@90%": sparse_ratio("mlp", data, 0.9, rounds, "cuda")}}
    else:
        res["cuda"] = None  # torch.cuda.is_available() is False here: CPU only
    rows = [{"what": f"channel prune 50% latency pruned/dense: {n}", "value": v, "target": "<= 0.6"}
            for n, v in channel.items()]
    rows += [{"what": f"int8 speed-up fp32/int8: {n}", "value": v,
              "target": ">= 1.5" if n == "mlp" else ">= 3"} for n, v in int8.items()]
    rows += [{"what": f"unstructured {n} latency pruned/dense (dense kernels)", "value": v, "target": "~1 expected"}
             for n, v in sparse.items()]
    print_table(f"inference speed-ups at batch {BATCH} (CPU, {res['threads']} threads, median of {rounds})", rows)
    return res


if __name__ == "__main__":
    main(run)
