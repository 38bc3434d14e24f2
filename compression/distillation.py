"""Knowledge distillation (Hinton et al., 2015): a student trained on the teacher's softened
outputs plus the hard labels, or on the teacher's argmax ("hard-label" distillation)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from compression.config import MethodConfig, Report, register_config, register_handler
from compression.data import Dataset
from compression.errors import ConfigError
from compression.evaluate import accuracy_and_loss
from compression.training import TrainConfig, fit


@register_config
@dataclass(frozen=True)
class DistillConfig(MethodConfig):
    """loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)."""

    kind: ClassVar[str] = "distill"
    temperature: float = 4.0
    alpha: float = 0.9
    epochs: int = 5
    lr: float = 1e-2
    batch_size: int = 64
    seed: int = 0
    hard_labels: bool = False

    def __post_init__(self):
        self.train_config()  # validates every field

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
                           temperature=self.temperature, alpha=self.alpha, hard_labels=self.hard_labels)


def distill(teacher: nn.Module, student: nn.Module, data: Dataset, cfg: DistillConfig, callback=None,
            stop=None, baseline: bool = False) -> tuple[nn.Module, Report]:
    """Train a copy of `student` from the teacher (the student's given weights are the start:
    use `zoo.build(name)` for a fresh one). With baseline=True the same student is also
    trained alone on the same budget and seed. Stops cleanly on `stop`, keeping the best model."""
    trained, history = fit(student, data, cfg.train_config(), teacher=teacher, callback=callback, stop=stop)
    stopped = len(history) < cfg.epochs or not all(h["complete"] for h in history)
    metrics = {"teacher_accuracy": accuracy_and_loss(teacher, data.test)[0],
               "student_accuracy": accuracy_and_loss(trained, data.test)[0],
               "history": history, "stopped": stopped}
    if baseline and not stopped:
        alone, alone_history = fit(student, data, cfg.train_config(), stop=stop)
        metrics["baseline_accuracy"] = accuracy_and_loss(alone, data.test)[0]
        metrics["baseline_history"] = alone_history
    return trained, Report("distill", cfg.to_dict(), metrics=metrics)


@register_handler(DistillConfig)
def _distill_handler(model: nn.Module, cfg: DistillConfig, data: Dataset | None = None, student=None, **kw):
    if student is None or data is None:
        raise ConfigError("Distillation needs a student model and data: distill(teacher, student, data, cfg).")
    return distill(model, student, data, cfg, **kw)
