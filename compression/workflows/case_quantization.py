"""Case study 4: post-training quantization granularity (Distiller's ResNet-50 table): every scheme
in SCHEMES at each bit-width on each built-in CNN; per-channel should match or beat per-tensor,
clipping should match or beat min-max, and some scheme should collapse at low bit-widths.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch

from compression.data.datasets import load_digits
from compression.methods.quantization import QuantConfig, quantize
from compression.methods.training import StopFlag, is_stopped
from compression.models import zoo
from compression.workflows.case_base import ONE_SAMPLE, CaseResult, Progress, Ticker, scored_accuracy

COLLAPSE_DROP = 0.10          # a scheme has collapsed when it loses more than 10 points

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
    tick = Ticker(len(models) * len(bits) * len(schemes), progress)
    rows, baselines = [], {}
    for name in models:
        torch.manual_seed(0)
        model = zoo.load_pretrained(name)
        baselines[name] = scored_accuracy(model, data)
        for b in bits:
            for scheme, kw in schemes.items():
                if is_stopped(stop):
                    break
                q, _ = quantize(model, QuantConfig(bits=b, activations=activations, **kw), data)
                acc = scored_accuracy(q, data)
                rows.append({"model": name, "bits": b, "scheme": scheme, "accuracy": acc,
                             "drop": (baselines[name] - acc) * 100})
                tick(f"{name}: {scheme} at {b} bits")
    return GranularityResult(case="quantization-granularity", quick=quick, seeds=(0,),
                             seconds=time.perf_counter() - start, stopped=is_stopped(stop),
                             activations=activations, baselines=baselines, rows=tuple(rows),
                             orderings=tuple(_orderings(rows)), collapse=tuple(_collapse(rows)))
