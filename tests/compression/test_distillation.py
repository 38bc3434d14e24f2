"""Distillation: the stop flag, progress events, and a distilled student beating one trained alone."""
from __future__ import annotations

import threading

import torch

from compression import zoo
from compression.distillation import DistillConfig, distill
from compression.evaluate import accuracy_and_loss


def test_stop_flag_stops_and_keeps_a_usable_model(pretrained, digits):
    teacher = pretrained("teacher")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    stop, events = threading.Event(), []

    def callback(p):
        events.append(p.phase)
        stop.set()

    student, report = distill(teacher, zoo.build("student"), digits, DistillConfig(epochs=5), callback, stop)
    assert report.metrics["stopped"] and events.count("batch") == 1
    assert student(digits.test.X[:2]).shape == (2, 10)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_callback_gets_batch_and_epoch_events(pretrained, digits):
    events = []
    distill(pretrained("teacher"), zoo.build("student"), digits, DistillConfig(epochs=1), events.append)
    assert {e.phase for e in events} == {"batch", "epoch"}
    assert events[-1].phase == "epoch" and events[-1].val_accuracy is not None


def test_distilled_student_beats_student_alone(pretrained, digits):
    teacher = pretrained("teacher")
    distilled, alone = [], []
    for seed in range(3):
        cfg = DistillConfig(temperature=3.0, alpha=0.7, epochs=5, lr=1e-2, seed=seed)
        _, report = distill(teacher, zoo.build("student"), digits, cfg, baseline=True)
        distilled.append(report.metrics["student_accuracy"])
        alone.append(report.metrics["baseline_accuracy"])
    assert sum(distilled) / 3 > sum(alone) / 3 + 0.005
    assert report.metrics["teacher_accuracy"] == accuracy_and_loss(teacher, digits.test)[0]
