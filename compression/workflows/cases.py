"""Case studies: published compression results re-run end to end on the bundled digits data.

    python -m compression cases [NAME] --json [--quick] [--seeds N] [--store PATH | --no-store]

NAME is one of CASES (default: all of them, one JSON object keyed by name). Each case is seeded,
reports progress as progress(done, total, message), stops on a flag (a threading.Event or a
callable, as `training.fit`), never changes the bundled models (each is loaded fresh), and
returns a frozen result with `to_dict()` (JSON-safe), `table()` (the measured numbers), and
`holds` (the shape the case must show, each check True or False). The papers used MNIST or
ImageNet; the digits are 8x8 and 360 test images (one image = 0.28 points), so what must hold
is the shape of each published result, not its numbers. PUBLISHED holds the papers' numbers.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import pandas as pd
import torch
from torch import nn

from compression.analysis.allocation import plan_and_apply
from compression.analysis.proxies import measured_sensitivity
from compression.analysis.sensitivity import prune_sweep, quant_sweep, sweep_layers
from compression.core.errors import ConfigError
from compression.core.plain import to_json
from compression.data.datasets import Dataset, load_digits
from compression.methods.distillation import DistillConfig, distill
from compression.methods.pruning import PruneConfig, finetune, make_permanent, prune
from compression.methods.quantization import QuantConfig, quantize
from compression.methods.training import StopFlag, TrainConfig, is_stopped
from compression.metrics.evaluate import accuracy_and_loss, count_nonzero_params, count_params
from compression.models import zoo
from compression.models.compact import to_bytes

CASES = ("pruning-retraining", "deep-compression", "distillation", "quantization-granularity",
         "layer-sensitivity")
TEST_IMAGES = 360             # the digits' test split
ONE_SAMPLE = 1 / TEST_IMAGES  # one test image, as a fraction: the resolution of every accuracy here
COLLAPSE_DROP = 0.10          # a scheme has collapsed when it loses more than 10 points
Progress = Callable[[int, int, str], None] | None

PUBLISHED: dict[str, list[dict]] = {
    "pruning-retraining": [
        {"quantity": "parameters (LeNet-300-100, MNIST)", "published": "267K -> 22K (12x)"},
        {"quantity": "top-1 error before -> after", "published": "1.64% -> 1.59% (no loss)"},
        {"quantity": "method", "published": "iterative magnitude pruning + retraining"},
        {"source": "Han et al., Learning both Weights and Connections, NeurIPS 2015, Table 1"}],
    "deep-compression": [
        {"quantity": "LeNet-300-100 size", "published": "1070 KB -> 27 KB (40x), error 1.64% -> 1.58%"},
        {"quantity": "LeNet-5 size", "published": "1720 KB -> 44 KB (39x), error 0.80% -> 0.74%"},
        {"quantity": "method", "published": "pruning + trained quantization + Huffman coding"},
        {"source": "Han et al., Deep Compression, ICLR 2016, Table 1"}],
    "distillation": [
        {"quantity": "small net trained alone", "published": "146 test errors (MNIST, 10,000 images)"},
        {"quantity": "teacher", "published": "67 test errors"},
        {"quantity": "small net distilled (T = 20)", "published": "74 test errors"},
        {"source": "Hinton et al., Distilling the Knowledge in a Neural Network, 2015, section 3"}],
    "quantization-granularity": [
        {"quantity": "8-bit per-tensor", "published": "74.90 (ResNet-50 top-1, fp32 76.13)"},
        {"quantity": "8-bit per-channel", "published": "75.15"},
        {"quantity": "8-bit asymmetric per-channel, clipping", "published": "75.99"},
        {"quantity": "6-bit symmetric per-tensor", "published": "36.12 (collapses)"},
        {"quantity": "6-bit asymmetric per-channel", "published": "74.49 (holds)"},
        {"source": "Distiller, post-training quantization of ResNet-50 (weights and activations)"}],
    "layer-sensitivity": [
        {"quantity": "most sensitive layers", "published": "typically the first and the last"},
        {"quantity": "sensitivity-aware allocation", "published": "beats uniform compression at the same size"},
        {"source": "Han et al. 2015 (Fig. 6), HAQ (Wang et al. 2019), HAWQ (Dong et al. 2019)"}],
}


# ---- plumbing ----------------------------------------------------------------------------------

class _Ticker:
    """Counts finished steps for a progress(done, total, message) callback."""

    def __init__(self, total: int, progress: Progress):
        self.total, self.done, self.progress = max(total, 1), 0, progress

    def __call__(self, message: str) -> None:
        self.done += 1
        if self.progress:
            self.progress(min(self.done, self.total), self.total, message)


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _spread(values: list[float]) -> float:
    """Sample standard deviation (0 for a single value)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _test_accuracy(model: nn.Module, data: Dataset) -> float:
    return accuracy_and_loss(model, data.scored)[0]


@dataclass(frozen=True)
class CaseResult:
    """Fields every case has. `holds`: the case's stated shape, check by check."""

    case: str
    quick: bool
    seeds: tuple
    seconds: float
    stopped: bool

    @property
    def holds(self) -> dict[str, bool]:
        return {}

    def to_dict(self) -> dict:
        return {**json.loads(to_json(asdict(self))), "holds": self.holds}

    def table(self) -> pd.DataFrame:
        """The measured numbers, one row per quantity (as PUBLISHED)."""
        return pd.DataFrame()


# ---- 1. pruning with retraining (Han et al. 2015) ---------------------------------------------

def geometric_schedule(final: float, steps: int) -> list[float]:
    """Sparsities whose kept fraction shrinks by the same factor each step, ending at `final`."""
    return [1 - (1 - final) ** ((i + 1) / steps) for i in range(steps)]


def iterative_prune(model: nn.Module, data: Dataset, final: float, steps: int, train: TrainConfig,
                    tick: Callable[[str], None] = lambda _: None, stop: StopFlag = None) -> tuple[nn.Module, list[dict]]:
    """Han et al.'s loop on a copy of `model`: prune (global magnitude) to the next sparsity of a
    geometric schedule, retrain with the masks fixed, fold the masks, repeat. Weights pruned
    once stay zero (they are the smallest at the next step). Returns (model, one row per step)."""
    current, rows, params = model, [], count_params(model)
    for sparsity in geometric_schedule(final, steps):
        if is_stopped(stop):
            break
        pruned, _ = prune(current, PruneConfig(sparsity=sparsity, scope="global"))
        before = _test_accuracy(pruned, data)
        tuned, _ = finetune(pruned, data, train, stop=stop)
        current = make_permanent(tuned)
        rows.append({"sparsity": sparsity, "param_reduction": params / count_nonzero_params(current),
                     "pruned_accuracy": before, "retrained_accuracy": _test_accuracy(current, data)})
        tick(f"pruned to {sparsity:.1%}, retrained")
    return current, rows


@dataclass(frozen=True)
class PruningRetrainingResult(CaseResult):
    model: str
    baseline_accuracy: float
    sparsity: float
    param_reduction: float
    accuracy: float               # mean over seeds, after iterative pruning and retraining
    accuracy_spread: float
    accuracy_drop: float          # points
    oneshot_accuracy: float       # one-shot at the same sparsity, no retraining
    oneshot_accuracy_drop: float  # points
    per_seed: tuple               # {seed, accuracy, param_reduction}
    steps: tuple                  # seed 0's schedule: {sparsity, param_reduction, pruned/retrained/oneshot accuracy}

    @property
    def holds(self) -> dict[str, bool]:
        return {"at_least_12x": self.param_reduction >= 12.0,
                "drop_at_most_0.5_points": self.accuracy_drop <= 0.5,
                "oneshot_loses_much_more": self.oneshot_accuracy_drop >= max(5.0, 4 * self.accuracy_drop)}

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([
            {"quantity": f"parameters ({self.model}, digits)", "measured": f"{self.param_reduction:.1f}x fewer non-zeros"},
            {"quantity": "top-1 error before -> after",
             "measured": f"{1 - self.baseline_accuracy:.2%} -> {1 - self.accuracy:.2%} "
                         f"(drop {self.accuracy_drop:+.2f} pts, ±{self.accuracy_spread * 100:.2f} over {len(self.seeds)} seeds)"},
            {"quantity": "one-shot, same sparsity, no retraining",
             "measured": f"error {1 - self.oneshot_accuracy:.2%} (drop {self.oneshot_accuracy_drop:+.2f} pts)"}])


def pruning_retraining(quick: bool = False, seeds: int | None = None, progress: Progress = None,
                       stop: StopFlag = None, model: str = "mlp", final: float = 0.93,
                       steps: int | None = None, epochs: int | None = None) -> PruningRetrainingResult:
    """LeNet-300-100 -> the built-in MLP: iterative global magnitude pruning to `final` sparsity with
    retraining (Adam, weight decay 1e-4, masks fixed), against one-shot pruning without retraining."""
    start, data = time.perf_counter(), load_digits()
    seeds = seeds or (1 if quick else 3)
    steps, epochs = steps or (4 if quick else 8), epochs or (8 if quick else 30)
    base = zoo.load_pretrained(model)
    base_acc = _test_accuracy(base, data)
    tick = _Ticker(seeds * steps + 1, progress)
    runs, schedule = [], []
    for seed in range(seeds):
        if is_stopped(stop):
            break
        torch.manual_seed(seed)
        train = TrainConfig(epochs=epochs, lr=1e-3, batch_size=32, weight_decay=1e-4, seed=seed)
        pruned, rows = iterative_prune(base, data, final, steps, train, tick, stop)
        if len(rows) < steps:
            break
        runs.append({"seed": seed, "accuracy": _test_accuracy(pruned, data),
                     "param_reduction": count_params(pruned) / count_nonzero_params(pruned)})
        schedule = schedule or rows
    for row in schedule:   # one-shot at each step's sparsity, no retraining (deterministic)
        row["oneshot_accuracy"] = _test_accuracy(make_permanent(prune(base, PruneConfig(
            sparsity=row["sparsity"], scope="global"))[0]), data)
    oneshot = make_permanent(prune(base, PruneConfig(sparsity=final, scope="global"))[0])
    tick("one-shot pruning")
    accs = [r["accuracy"] for r in runs]
    acc = _mean(accs)
    oneshot_acc = _test_accuracy(oneshot, data)
    return PruningRetrainingResult(
        case="pruning-retraining", quick=quick, seeds=tuple(range(seeds)), seconds=time.perf_counter() - start,
        stopped=len(runs) < seeds, model=model, baseline_accuracy=base_acc, sparsity=final,
        param_reduction=min((r["param_reduction"] for r in runs), default=float("nan")),
        accuracy=acc, accuracy_spread=_spread(accs), accuracy_drop=(base_acc - acc) * 100,
        oneshot_accuracy=oneshot_acc, oneshot_accuracy_drop=(base_acc - oneshot_acc) * 100,
        per_seed=tuple(runs), steps=tuple(schedule))


# ---- 2. deep compression (Han et al. 2016) -----------------------------------------------------

@dataclass(frozen=True)
class DeepCompressionResult(CaseResult):
    models: tuple   # {model, fp32_bytes, compact_bytes, ratio, baseline/pruned/accuracy, accuracy_drop, bits, sparsity}
    stages: tuple   # {model, stage, bytes, accuracy}

    @property
    def holds(self) -> dict[str, bool]:
        return {"ratio_at_least_30x": bool(self.models) and all(m["ratio"] >= 30 for m in self.models),
                "drop_at_most_1_point": bool(self.models) and all(m["accuracy_drop"] <= 1.0 for m in self.models)}

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"quantity": f"{m['model']} size",
                              "measured": f"{m['fp32_bytes'] / 1000:.0f} KB -> {m['compact_bytes'] / 1000:.1f} KB "
                                          f"({m['ratio']:.0f}x), error {1 - m['baseline_accuracy']:.2%} -> "
                                          f"{1 - m['accuracy']:.2%}"} for m in self.models])


# Han et al. 2016 kept 8 bits for LeNet-5's convolutions and 5-6 bits for fully connected layers
DEEP_COMPRESSION = {"mlp": {"sparsity": 0.95, "bits": 5},
                    "lenet5": {"sparsity": 0.95, "bits": 5, "layer_bits": {"conv1": 8, "conv2": 8}}}


def deep_compression(quick: bool = False, seeds: int | None = None, progress: Progress = None,
                     stop: StopFlag = None, plans: dict | None = None) -> DeepCompressionResult:
    """Prune (iteratively, with retraining), quantize the survivors (symmetric, one scale per layer,
    as Han's per-layer codebooks), and write the compact file (positions + bit-packed codes + zlib,
    standing in for Huffman coding); the ratio is the fp32 model's bytes over the file's."""
    start, data = time.perf_counter(), load_digits()
    plans = plans or DEEP_COMPRESSION
    steps, epochs = (4, 8) if quick else (6, 20)
    tick = _Ticker(len(plans) * (steps + 1), progress)
    models, stages = [], []
    for name, plan in plans.items():
        if is_stopped(stop):
            break
        torch.manual_seed(0)
        base = zoo.load_pretrained(name)
        train = TrainConfig(epochs=epochs, lr=1e-3, batch_size=32, weight_decay=1e-4, seed=0)
        pruned, rows = iterative_prune(base, data, plan["sparsity"], steps, train, tick, stop)
        if len(rows) < steps:
            break
        quantized, _ = quantize(pruned, QuantConfig(bits=plan["bits"], granularity="tensor", symmetric=True,
                                                    layer_bits=plan.get("layer_bits", {})))
        fp32 = count_params(base) * 4
        sizes = {"fp32": fp32, "fp32 compact": len(to_bytes(base)), "pruned": len(to_bytes(pruned)),
                 "pruned + quantized": len(to_bytes(quantized))}
        accs = {"fp32": _test_accuracy(base, data), "pruned": _test_accuracy(pruned, data),
                "pruned + quantized": _test_accuracy(quantized, data)}
        accs["fp32 compact"] = accs["fp32"]
        stages += [{"model": name, "stage": s, "bytes": b, "accuracy": accs[s]} for s, b in sizes.items()]
        models.append({"model": name, "sparsity": plan["sparsity"], "bits": plan["bits"],
                       "layer_bits": plan.get("layer_bits", {}), "fp32_bytes": fp32,
                       "compact_bytes": sizes["pruned + quantized"], "ratio": fp32 / sizes["pruned + quantized"],
                       "baseline_accuracy": accs["fp32"], "pruned_accuracy": accs["pruned"],
                       "accuracy": accs["pruned + quantized"],
                       "accuracy_drop": (accs["fp32"] - accs["pruned + quantized"]) * 100})
        tick(f"{name}: quantized to {plan['bits']} bits and written")
    return DeepCompressionResult(case="deep-compression", quick=quick, seeds=(0,), seconds=time.perf_counter() - start,
                                 stopped=len(models) < len(plans), models=tuple(models), stages=tuple(stages))


# ---- 3. distillation (Hinton et al. 2015) ------------------------------------------------------

@dataclass(frozen=True)
class DistillationResult(CaseResult):
    teacher: float
    student_alone: float
    student_distilled: float
    student_alone_spread: float
    student_distilled_spread: float
    gap_closed: float             # (distilled - alone) / (teacher - alone)
    temperature: float
    alpha: float
    epochs: int
    per_seed: tuple               # {seed, student_alone, student_distilled}
    temperature_curve: tuple      # {temperature, accuracy, spread}

    @property
    def holds(self) -> dict[str, bool]:
        return {"distilled_beats_alone": self.student_distilled > self.student_alone,
                "closes_most_of_the_gap": self.gap_closed >= 0.5}

    def table(self) -> pd.DataFrame:
        n = TEST_IMAGES
        fmt = lambda a, s: f"{(1 - a) * n:.1f} test errors of {n} ({a:.2%} ± {s * 100:.2f} pts)"
        return pd.DataFrame([
            {"quantity": "small net trained alone", "measured": fmt(self.student_alone, self.student_alone_spread)},
            {"quantity": "teacher", "measured": fmt(self.teacher, 0.0)},
            {"quantity": f"small net distilled (T = {self.temperature:g})",
             "measured": fmt(self.student_distilled, self.student_distilled_spread)
                         + f"; {self.gap_closed:.0%} of the gap closed"}])


def distillation(quick: bool = False, seeds: int | None = None, progress: Progress = None,
                 stop: StopFlag = None, temperature: float = 4.0, alpha: float = 0.9,
                 temperatures: tuple = (1.0, 2.0, 4.0, 8.0, 20.0), epochs: int | None = None,
                 lr: float = 3e-3) -> DistillationResult:
    """The built-in student from random weights (same start per seed), trained on the labels alone
    and distilled from the built-in teacher at `temperature`; then the distilled accuracy over
    `temperatures` (same seeds)."""
    start, data = time.perf_counter(), load_digits()
    seeds = seeds or 3
    epochs = epochs or (8 if quick else 30)
    temperatures = (1.0, 4.0) if quick else tuple(temperatures)
    teacher = zoo.load_pretrained("teacher")
    teacher_acc = _test_accuracy(teacher, data)
    tick = _Ticker(seeds * (1 + len(temperatures)), progress)
    per_seed, curve = [], {t: [] for t in temperatures}
    for seed in range(seeds):
        if is_stopped(stop):
            break
        torch.manual_seed(seed)
        fresh = zoo.build("student")
        cfg = DistillConfig(temperature=temperature, alpha=alpha, epochs=epochs, lr=lr, seed=seed)
        _, report = distill(teacher, fresh, data, cfg, stop=stop, baseline=True)
        if report.metrics["stopped"] or "baseline_accuracy" not in report.metrics:
            break
        per_seed.append({"seed": seed, "student_alone": report.metrics["baseline_accuracy"],
                         "student_distilled": report.metrics["student_accuracy"]})
        tick(f"seed {seed}: alone and distilled at T={temperature:g}")
        for t in temperatures:
            if t == temperature:
                curve[t].append(report.metrics["student_accuracy"])
            else:
                _, rep = distill(teacher, fresh, data, DistillConfig(temperature=t, alpha=alpha, epochs=epochs,
                                                                     lr=lr, seed=seed), stop=stop)
                if not rep.metrics["stopped"]:
                    curve[t].append(rep.metrics["student_accuracy"])
            tick(f"seed {seed}: distilled at T={t:g}")
    alone = [r["student_alone"] for r in per_seed]
    distilled = [r["student_distilled"] for r in per_seed]
    gap = teacher_acc - _mean(alone)
    return DistillationResult(
        case="distillation", quick=quick, seeds=tuple(range(seeds)), seconds=time.perf_counter() - start,
        stopped=len(per_seed) < seeds, teacher=teacher_acc, student_alone=_mean(alone),
        student_distilled=_mean(distilled), student_alone_spread=_spread(alone),
        student_distilled_spread=_spread(distilled),
        gap_closed=(_mean(distilled) - _mean(alone)) / gap if gap > 0 else float("nan"),
        temperature=temperature, alpha=alpha, epochs=epochs, per_seed=tuple(per_seed),
        temperature_curve=tuple({"temperature": t, "accuracy": _mean(v), "spread": _spread(v), "runs": len(v)}
                                for t, v in curve.items() if v))


# ---- 4. post-training quantization granularity (Distiller) ------------------------------------

SCHEMES: dict[str, dict] = {
    "per-tensor symmetric": {"granularity": "tensor", "symmetric": True, "calibration": "minmax"},
    "per-tensor asymmetric": {"granularity": "tensor", "symmetric": False, "calibration": "minmax"},
    "per-channel symmetric": {"granularity": "channel", "symmetric": True, "calibration": "minmax"},
    "per-channel asymmetric": {"granularity": "channel", "symmetric": False, "calibration": "minmax"},
    "per-channel asymmetric, percentile clipping": {"granularity": "channel", "symmetric": False,
                                                    "calibration": "percentile", "percentile": 99.9},
    "per-channel asymmetric, MSE clipping": {"granularity": "channel", "symmetric": False, "calibration": "mse"},
}
# (better, worse): the better scheme should match or beat the worse one at every bit-width
ORDERINGS = {"per-channel >= per-tensor": [("per-channel symmetric", "per-tensor symmetric"),
                                          ("per-channel asymmetric", "per-tensor asymmetric")],
             "clipping >= min-max": [("per-channel asymmetric, percentile clipping", "per-channel asymmetric"),
                                     ("per-channel asymmetric, MSE clipping", "per-channel asymmetric")]}


@dataclass(frozen=True)
class GranularityResult(CaseResult):
    activations: bool
    baselines: dict               # model -> fp32 accuracy
    rows: tuple                   # {model, bits, scheme, accuracy, drop}
    orderings: tuple              # {ordering, model, bits, better, worse, difference (points), holds}
    collapse: tuple               # {model, scheme, collapse_bits}: highest bit-width losing > 10 points

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.rows), columns=["model", "bits", "scheme", "accuracy", "drop"])

    def ordering_share(self, ordering: str, bits: int | None = None) -> float:
        """Share of the comparisons of `ordering` (at `bits`, or all) that hold within one test image."""
        hits = [o["holds"] for o in self.orderings if o["ordering"] == ordering and bits in (None, o["bits"])]
        return sum(hits) / len(hits) if hits else float("nan")

    @property
    def holds(self) -> dict[str, bool]:
        low = {c["collapse_bits"] for c in self.collapse if c["collapse_bits"] is not None}
        at4 = {m: all(o["holds"] for o in self.orderings if o["model"] == m and o["bits"] == 4
                      and o["ordering"] == "per-channel >= per-tensor") for m in self.baselines}
        mean3 = self.frame().query("bits == 3").groupby("scheme")["accuracy"].mean()
        return {"per_channel_ge_per_tensor_mostly": self.ordering_share("per-channel >= per-tensor") >= 0.75,
                "per_channel_ge_per_tensor_at_4_bits_on_some_cnn": any(at4.values()),
                "clipping_ge_minmax_mostly": self.ordering_share("clipping >= min-max") >= 0.75,
                "clipping_best_at_3_bits": bool(len(mean3)) and "clipping" in str(mean3.idxmax()),
                "some_scheme_collapses": bool(low),
                "all_hold_at_8_bits": all(r["drop"] <= 1.0 for r in self.rows if r["bits"] == 8)}

    def table(self) -> pd.DataFrame:
        df = self.frame()
        if not len(df):
            return pd.DataFrame()
        out = df.pivot_table(index="scheme", columns="bits", values="accuracy", aggfunc="mean")
        out = out[sorted(out.columns, reverse=True)].reindex([s for s in SCHEMES if s in out.index])
        out.columns = [f"{b}-bit (mean of {df['model'].nunique()} CNNs)" for b in out.columns]
        return out.reset_index()


def _orderings(rows: list[dict]) -> list[dict]:
    acc = {(r["model"], r["bits"], r["scheme"]): r["accuracy"] for r in rows}
    out = []
    for name, pairs in ORDERINGS.items():
        for better, worse in pairs:
            for model, bits in sorted({(m, b) for m, b, _ in acc}):
                if (model, bits, better) in acc and (model, bits, worse) in acc:
                    diff = acc[model, bits, better] - acc[model, bits, worse]
                    out.append({"ordering": name, "model": model, "bits": bits, "better": better, "worse": worse,
                                "difference": diff * 100, "holds": diff >= -ONE_SAMPLE - 1e-9})
    return out


def _collapse(rows: list[dict]) -> list[dict]:
    out = []
    for model, scheme in dict.fromkeys((r["model"], r["scheme"]) for r in rows):
        fallen = [r["bits"] for r in rows if r["model"] == model and r["scheme"] == scheme
                  and r["drop"] > COLLAPSE_DROP * 100]
        out.append({"model": model, "scheme": scheme, "collapse_bits": max(fallen) if fallen else None})
    return out


def quantization_granularity(quick: bool = False, seeds: int | None = None, progress: Progress = None,
                             stop: StopFlag = None, models: tuple = ("lenet5", "mobilenet", "resnet"),
                             bits: tuple = (8, 6, 4, 3, 2), activations: bool = True) -> GranularityResult:
    """Post-training quantization of weights (and, as Distiller's table, each layer's input at the
    same bit-width, per tensor, calibrated on 256 training images) of each built-in CNN under every
    scheme in SCHEMES at each bit-width; accuracy on the test split."""
    start, data = time.perf_counter(), load_digits()
    models = ("resnet",) if quick else tuple(models)
    bits = (8, 4, 3, 2) if quick else tuple(bits)
    schemes = SCHEMES if not quick else {k: v for k, v in SCHEMES.items() if "percentile" not in k}
    tick = _Ticker(len(models) * len(bits) * len(schemes), progress)
    rows, baselines = [], {}
    for name in models:
        torch.manual_seed(0)
        model = zoo.load_pretrained(name)
        baselines[name] = _test_accuracy(model, data)
        for b in bits:
            for scheme, kw in schemes.items():
                if is_stopped(stop):
                    break
                q, _ = quantize(model, QuantConfig(bits=b, activations=activations, **kw), data)
                acc = _test_accuracy(q, data)
                rows.append({"model": name, "bits": b, "scheme": scheme, "accuracy": acc,
                             "drop": (baselines[name] - acc) * 100})
                tick(f"{name}: {scheme} at {b} bits")
    return GranularityResult(case="quantization-granularity", quick=quick, seeds=(0,),
                             seconds=time.perf_counter() - start, stopped=is_stopped(stop),
                             activations=activations, baselines=baselines, rows=tuple(rows),
                             orderings=tuple(_orderings(rows)), collapse=tuple(_collapse(rows)))


# ---- 5. layer sensitivity and allocation --------------------------------------------------------

@dataclass(frozen=True)
class SensitivityResult(CaseResult):
    layers: tuple                 # {model, kind, layer, position (0 = first), sensitivity (mean drop, points), rank}
    allocations: tuple            # {model, kind, target, allocated_accuracy, uniform_accuracy, achieved, uniform_achieved, plan}
    allocated_accuracy: float     # mean over models and kinds
    uniform_accuracy: float

    def first_or_last_share(self, top: int = 2) -> float:
        """Share of (model, kind) sweeps with the first or the last layer among the `top` most sensitive."""
        sweeps = {(r["model"], r["kind"]) for r in self.layers}
        hits = {(r["model"], r["kind"]) for r in self.layers if r["rank"] <= top and r["first_or_last"]}
        return len(hits) / len(sweeps) if sweeps else float("nan")

    @property
    def holds(self) -> dict[str, bool]:
        return {"allocated_ge_uniform": self.allocated_accuracy >= self.uniform_accuracy,
                "allocated_ge_uniform_each": all(a["allocated_accuracy"] >= a["uniform_accuracy"] - ONE_SAMPLE - 1e-9
                                                 for a in self.allocations),
                "first_or_last_in_top_2_mostly": self.first_or_last_share(2) > 0.5}

    def table(self) -> pd.DataFrame:
        rows = []
        for a in self.allocations:
            top = [r["layer"] for r in self.layers if r["model"] == a["model"] and r["kind"] == a["kind"]
                   and r["rank"] <= 2]
            rows.append({"model": a["model"], "kind": a["kind"], "most sensitive": ", ".join(top),
                         "target": a["target"], "allocated": a["allocated_accuracy"], "uniform": a["uniform_accuracy"]})
        return pd.DataFrame(rows)


SENSITIVITY_TARGETS = {"prune": 0.8, "quantize": 3}


def layer_sensitivity(quick: bool = False, seeds: int | None = None, progress: Progress = None,
                      stop: StopFlag = None, models: tuple = ("lenet5", "mobilenet", "resnet"),
                      targets: dict | None = None) -> SensitivityResult:
    """Per-layer pruning and quantization sweeps (validation split) of each built-in CNN, the layers
    ranked by mean accuracy drop, then `allocation.plan_and_apply` at each target (overall sparsity;
    mean bits) against a uniform plan of the same size, measured on the test split."""
    start, data = time.perf_counter(), load_digits()
    models = ("lenet5",) if quick else tuple(models)
    targets = targets or SENSITIVITY_TARGETS
    levels = {"prune": (0.5, 0.8, 0.9, 0.95) if quick else (0.3, 0.5, 0.7, 0.8, 0.9, 0.95),
              "quantize": (2, 3, 4) if quick else (2, 3, 4, 5, 6, 8)}
    tick = _Ticker(len(models) * len(targets) * 2, progress)
    layers, allocations = [], []
    for name in models:
        torch.manual_seed(0)
        model = zoo.load_pretrained(name)
        order = list(sweep_layers(model))
        for kind, target in targets.items():
            if is_stopped(stop):
                break
            sweep = (prune_sweep(model, data, levels[kind], stop=stop) if kind == "prune"
                     else quant_sweep(model, data, levels[kind], stop=stop))
            tick(f"{name}: {kind} sweep")
            scores = measured_sensitivity(sweep).sort_values(ascending=False)
            for rank, (layer, score) in enumerate(scores.items(), 1):
                pos = order.index(layer)
                layers.append({"model": name, "kind": kind, "layer": layer, "position": pos, "rank": rank,
                               "sensitivity": float(score) * 100, "first_or_last": pos in (0, len(order) - 1)})
            res = plan_and_apply(model, data, sweep, target, kind)
            allocations.append({"model": name, "kind": kind, "target": target,
                                "allocated_accuracy": res.measured_accuracy, "uniform_accuracy": res.uniform_accuracy,
                                "baseline_accuracy": res.baseline_accuracy, "achieved": res.achieved,
                                "uniform_achieved": res.uniform_achieved, "plan": res.plan})
            tick(f"{name}: {kind} plan against uniform")
    return SensitivityResult(
        case="layer-sensitivity", quick=quick, seeds=(0,), seconds=time.perf_counter() - start,
        stopped=is_stopped(stop), layers=tuple(layers), allocations=tuple(allocations),
        allocated_accuracy=_mean([a["allocated_accuracy"] for a in allocations]),
        uniform_accuracy=_mean([a["uniform_accuracy"] for a in allocations]))


# ---- running, recording, command line ----------------------------------------------------------

RUNNERS: dict[str, Callable[..., CaseResult]] = {
    "pruning-retraining": pruning_retraining, "deep-compression": deep_compression,
    "distillation": distillation, "quantization-granularity": quantization_granularity,
    "layer-sensitivity": layer_sensitivity}


def run_case(name: str, quick: bool = False, seeds: int | None = None, progress: Progress = None,
             stop: StopFlag = None) -> CaseResult:
    """Run one case by name (see CASES)."""
    if name not in RUNNERS:
        raise ConfigError(f"Unknown case {name!r}. Choose one of: {', '.join(CASES)}.")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ConfigError(f"seeds must be a positive integer; got {seeds!r}.")
    return RUNNERS[name](quick=quick, seeds=seeds, progress=progress, stop=stop)


def published_table(name: str) -> pd.DataFrame:
    """The paper's numbers for a case (quantity, published), without the source row."""
    return pd.DataFrame([r for r in PUBLISHED[name] if "quantity" in r])


def source(name: str) -> str:
    return next(r["source"] for r in PUBLISHED[name] if "source" in r)


def summary(result: CaseResult) -> dict:
    """The keys the command line promises for each case, then the full result."""
    d = result.to_dict()
    keys = {"pruning-retraining": ("param_reduction", "accuracy_drop", "oneshot_accuracy_drop"),
            "deep-compression": ("models",), "distillation": ("teacher", "student_alone", "student_distilled",
                                                              "temperature_curve"),
            "quantization-granularity": ("rows",), "layer-sensitivity": ("allocated_accuracy", "uniform_accuracy")}
    return {k: d[k] for k in keys[result.case]} | d
