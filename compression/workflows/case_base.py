"""What every case study shares: the result base class, progress counting, and the resolution of
the digits' test split (one image = 0.28 points), against which every accuracy here is compared.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from typing import Callable

import pandas as pd
from torch import nn

from compression.core.plain import to_json
from compression.data.datasets import Dataset
from compression.metrics.evaluate import accuracy_and_loss

TEST_IMAGES = 360             # the digits' test split
ONE_SAMPLE = 1 / TEST_IMAGES  # one test image, as a fraction: the resolution of every accuracy here
Progress = Callable[[int, int, str], None] | None


class Ticker:
    """Counts finished steps for a progress(done, total, message) callback."""

    def __init__(self, total: int, progress: Progress):
        self.total, self.done, self.progress = max(total, 1), 0, progress

    def __call__(self, message: str) -> None:
        self.done += 1
        if self.progress:
            self.progress(min(self.done, self.total), self.total, message)


def mean_or_nan(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def spread(values: list[float]) -> float:
    """Sample standard deviation (0 for a single value)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def scored_accuracy(model: nn.Module, data: Dataset) -> float:
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
        """The measured numbers, one row per quantity (as cases.PUBLISHED)."""
        return pd.DataFrame()
