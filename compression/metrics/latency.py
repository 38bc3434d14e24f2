"""Paired latency: an original and a compressed model timed in alternating rounds at one batch
size, and the decision whether their ratio is a change or measurement noise."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.utils.benchmark as benchmark
from torch import nn

from compression.core.devices import model_device
from compression.core.modules import set_training

LATENCY_BATCH = 64  # the one batch size every latency in the app and the CLI is measured at
LATENCY_ROUNDS = 3
MIN_CHANGE = 0.05  # a latency ratio within 5% of 1 is not claimed from a few rounds


@dataclass(frozen=True)
class Latency:
    """One model's latency at one batch size: median and inter-quartile range over the timed blocks
    (each block's time per run), the fastest block, and how it was measured."""

    median_ms: float
    iqr_ms: float
    min_ms: float
    repeats: int         # timed runs in all (blocks x runs per block)
    batch_size: int
    threads: int
    device: str = "cpu"
    blocks: int = 1


@torch.inference_mode()
def measure_latency(model: nn.Module, example: torch.Tensor, repeats: int = 30, warmup: int = 5,
                    threads: int | None = None, min_time_s: float = 0.0) -> Latency:
    """Latency of model(example) on the model's device, with torch.utils.benchmark.Timer (which sets
    the thread count and synchronises an accelerator): `warmup` untimed runs, then
    `Timer.blocked_autorange` for at least `min_time_s` and about `repeats` runs' worth of time, in
    blocks sized so the timer's own overhead is negligible; median and IQR over the blocks in ms."""
    example = example.to(model_device(model))
    threads = threads or torch.get_num_threads()
    timer = benchmark.Timer("model(example)", globals={"model": model, "example": example}, num_threads=threads)
    was_training = model.training
    set_training(model, False)
    try:
        warm = timer.timeit(max(warmup - 2, 1))  # timeit adds two warm-up runs of its own
        m = timer.blocked_autorange(min_run_time=max(min_time_s, repeats * warm.mean))
    finally:
        set_training(model, was_training)
    return Latency(m.median * 1e3, m.iqr * 1e3, min(m.times) * 1e3, len(m.times) * m.number_per_run,
                   int(example.shape[0]), threads, str(example.device), len(m.times))


def latency_batch(X: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The first `batch_size` samples of X, repeated if X holds fewer."""
    batch = X[:batch_size]
    if batch.shape[0] < batch_size:
        batch = batch.repeat(-(-batch_size // batch.shape[0]), *([1] * (batch.dim() - 1)))[:batch_size]
    return batch


def no_measurable_change(ratios: Sequence[float], ratio: float | None = None, min_change: float = MIN_CHANGE) -> bool:
    """Whether per-round latency ratios (compressed / original, one per paired round) show no
    change: true when their range includes 1.0, when the ratio (default: their median) is within
    `min_change` of 1, or when its distance from 1 is below the rounds' relative spread ((max - min)
    / ratio: the rounds disagree by more than the change they claim). No rounds: no change."""
    if not ratios:
        return True
    ratio = statistics.median(ratios) if ratio is None else ratio
    low, high = min(ratios), max(ratios)
    if low <= 1.0 <= high or abs(ratio - 1.0) < min_change:
        return True
    return abs(ratio - 1.0) <= (high - low) / ratio


@dataclass(frozen=True)
class PairedLatency:
    """Medians over `rounds` alternating rounds of each round's median, and the per-round ratios."""

    original_ms: float
    compressed_ms: float
    compressed_iqr_ms: float  # median over the rounds of the compressed model's IQR
    ratios: tuple[float, ...]  # per round: compressed / original
    batch_size: int
    threads: int
    repeats: int
    device: str = "cpu"
    original_min_ms: float | None = None    # the fastest block of each model over all rounds
    compressed_min_ms: float | None = None

    @property
    def ratio(self) -> float:
        """compressed / original latency (below 1: faster)."""
        return self.compressed_ms / self.original_ms

    @property
    def ratio_low(self) -> float:
        return min(self.ratios)

    @property
    def ratio_high(self) -> float:
        return max(self.ratios)

    @property
    def measurable(self) -> bool:
        return not no_measurable_change(self.ratios, self.ratio)

    def to_dict(self) -> dict:
        """The flat fields a result row carries: EvalResult's latency keys plus the pairing."""
        return {"latency_ms": self.compressed_ms, "latency_iqr_ms": self.compressed_iqr_ms,
                "baseline_latency_ms": self.original_ms, "batch_size": self.batch_size, "threads": self.threads,
                "latency_ratio": self.ratio, "latency_ratio_low": self.ratio_low,
                "latency_ratio_high": self.ratio_high, "latency_ratios": list(self.ratios),
                "latency_rounds": len(self.ratios), "latency_repeats": self.repeats,
                "latency_measurable": self.measurable, "latency_device": self.device,
                "baseline_latency_min_ms": self.original_min_ms, "latency_min_ms": self.compressed_min_ms}

    @classmethod
    def from_dict(cls, d: dict) -> PairedLatency:
        """Back from `to_dict`."""
        return cls(d["baseline_latency_ms"], d["latency_ms"], d["latency_iqr_ms"], tuple(d["latency_ratios"]),
                   d["batch_size"], d["threads"], d["latency_repeats"], d["latency_device"],
                   d.get("baseline_latency_min_ms"), d.get("latency_min_ms"))


def paired_latency(original: nn.Module, compressed: nn.Module, batch: torch.Tensor, rounds: int = LATENCY_ROUNDS,
                   repeats: int = 10) -> PairedLatency:
    """Time `original` and `compressed` on the same `batch` (B, ...) in `rounds` rounds, alternating
    which goes first, so both see the same machine state (a baseline timed minutes earlier, cold,
    is not comparable). Each on its own device (the batch is moved)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    ours, base = [], []
    for i in range(rounds):
        if i % 2:
            ours.append(measure_latency(compressed, batch, repeats=repeats))
            base.append(measure_latency(original, batch, repeats=repeats))
        else:
            base.append(measure_latency(original, batch, repeats=repeats))
            ours.append(measure_latency(compressed, batch, repeats=repeats))
    return PairedLatency(original_ms=statistics.median(t.median_ms for t in base),
                         compressed_ms=statistics.median(t.median_ms for t in ours),
                         compressed_iqr_ms=statistics.median(t.iqr_ms for t in ours),
                         ratios=tuple(c.median_ms / b.median_ms for b, c in zip(base, ours)),
                         batch_size=int(batch.shape[0]), threads=ours[0].threads, repeats=repeats,
                         device=ours[0].device, original_min_ms=min(t.min_ms for t in base),
                         compressed_min_ms=min(t.min_ms for t in ours))


def paired_on_data(original: nn.Module, compressed: nn.Module, X: torch.Tensor, batch_size: int = LATENCY_BATCH,
                   rounds: int = LATENCY_ROUNDS, repeats: int = 10) -> PairedLatency:
    """`paired_latency` on the first `batch_size` samples of X (repeated if X holds fewer)."""
    return paired_latency(original, compressed, latency_batch(X, batch_size), rounds=rounds, repeats=repeats)


def ratio_text(p: PairedLatency) -> str:
    """'0.62x original (0.60x-0.65x)': the median ratio and its range over the rounds, or 'no
    measurable change (0.98x-1.03x)' when `no_measurable_change` holds."""
    spread = f"{p.ratio_low:.2f}x-{p.ratio_high:.2f}x"
    if not p.measurable:
        return f"no measurable change ({spread})"
    return f"{p.ratio:.2f}x original ({spread})"


def setting_text(p: PairedLatency) -> str:
    """'batch 64, 2 threads, cpu, 3 paired rounds': the setting a paired latency holds for."""
    return f"batch {p.batch_size}, {p.threads} threads, {p.device}, {len(p.ratios)} paired rounds"

