"""The pages' background jobs (compression.workflows.background): progress, events, Stop."""
from __future__ import annotations

import threading

import torch

from compression.methods.distillation import DistillConfig
from compression.models import zoo
from compression.workflows.background import distill_work, sweep_work


class FakeJob:
    def __init__(self):
        self.stop = threading.Event()
        self.reports: list = []

    def update(self, fraction, message="", event=None):
        self.reports.append((fraction, message, event))


def test_sweep_work_reports_every_point(digits):
    job = FakeJob()
    out = sweep_work(zoo.load_pretrained("mlp"), digits, "prune", [0.5, 0.9], proxies=False)(job)
    sweep = out["sweep"]
    assert len(sweep) == 6 and out["proxies"] is None          # 3 layers x 2 levels
    events = [e for _, _, e in job.reports if e is not None]
    assert [(e["layer"], e["level"]) for e in events] == list(zip(sweep["layer"], sweep["level"]))
    fractions = [f for f, _, _ in job.reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_sweep_work_stops_and_skips_proxies(digits):
    job = FakeJob()
    job.stop.set()
    out = sweep_work(zoo.load_pretrained("mlp"), digits, "quantize", [2, 8], proxies=True)(job)
    assert len(out["sweep"]) == 0 and out["proxies"] is None


def test_distill_work_events_and_both_runs(tiny_data):
    teacher, student = zoo.build("mlp", num_classes=4), zoo.build("student", num_classes=4)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = DistillConfig(temperature=4.0, alpha=0.9, epochs=2, lr=1e-3, batch_size=32, seed=0,
                                     hard_labels=False)
    job = FakeJob()
    out = distill_work(teacher, student, tiny_data, cfg, with_baseline=True, evaluate_latency=False)(job)
    events = [e for _, _, e in job.reports if e is not None]
    assert [(e["run"], e["epoch"]) for e in events] == [("distilled", 1), ("distilled", 2),
                                                        ("baseline", 1), ("baseline", 2)]
    assert all(0.0 <= e["val_accuracy"] <= 1.0 for e in events)
    for run in ("distilled", "baseline"):
        assert 0.0 <= out[run]["metrics"]["accuracy"] <= 1.0
        assert out[run]["metrics"]["agreement"] is not None            # measured against the teacher
    assert out["teacher"]["params"] > 0
    fractions = [f for f, _, _ in job.reports]
    assert fractions == sorted(fractions)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())  # caller's student unchanged
