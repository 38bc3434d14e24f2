"""Knowledge distillation (Hinton et al., 2015): a student trained on the teacher's softened
outputs plus the hard labels, or on the teacher's argmax ("hard-label" distillation).

The student may be any model that runs on the data: a built-in student, any built-in model, or a
pruned / low-rank copy of the teacher. It is fine-tuned from the weights it is given; for a fresh
student pass `zoo.build(name)` (random weights; seed with `torch.manual_seed` first for a
reproducible start).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

from torch import nn

from compression.core.registry import MethodConfig, Result, register_config, register_handler
from compression.data.datasets import Dataset
from compression.core.errors import ConfigError
from compression.metrics.evaluate import accuracy_and_loss
from compression.methods.training import Progress, StopFlag, TrainConfig, fit


@register_config
@dataclass(frozen=True)
class DistillConfig(MethodConfig):
    """loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y);
    with hard_labels, CE(s, argmax t) instead. T = temperature."""

    kind: ClassVar[str] = "distill"
    temperature: float = 4.0
    alpha: float = 0.9
    epochs: int = 5
    lr: float = 1e-2
    batch_size: int = 64
    seed: int = 0
    hard_labels: bool = False

    def __post_init__(self):
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer; got {self.seed!r}.")
        if not isinstance(self.hard_labels, bool):
            raise ConfigError(f"hard_labels must be true or false; got {self.hard_labels!r}.")
        self.train_config()  # validates every other field

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
                           temperature=self.temperature, alpha=self.alpha, hard_labels=self.hard_labels)


def distill(teacher: nn.Module, student: nn.Module, data: Dataset, cfg: DistillConfig,
            callback: Callable[[Progress], None] | None = None, stop: StopFlag = None,
            baseline: bool = False, device: str | None = None) -> tuple[nn.Module, Result]:
    """Train a copy of `student` from `teacher` with `training.fit` (neither input is changed).

    Args:
        callback: receives fit's Progress events ('batch' and 'epoch') of the distillation run.
        stop: a threading.Event or callable; when set, training ends within the current epoch
            and the best model seen so far (by validation accuracy) is returned.
        baseline: also train the same student without the teacher, same budget and seed (not
            run when the distillation was stopped).
        device: train there (the teacher's logits are computed where the teacher is); the
            student comes back to the CPU.
    Returns:
        (distilled student in eval mode, Result with metrics teacher_accuracy, student_accuracy,
        initial_accuracy (on data.eval_split), history (one row per epoch), stopped, and with baseline
        baseline_accuracy and baseline_history).
    """
    train_cfg = cfg.train_config()
    trained, history = fit(student, data, train_cfg, teacher=teacher, callback=callback, stop=stop, device=device)
    stopped = len(history) < cfg.epochs or not all(h["complete"] for h in history)
    metrics = {"teacher_accuracy": accuracy_and_loss(teacher, data.scored)[0],
               "student_accuracy": accuracy_and_loss(trained, data.scored)[0],
               "initial_accuracy": accuracy_and_loss(student, data.scored)[0],
               "history": history, "stopped": stopped}
    if baseline and not stopped:
        alone, alone_history = fit(student, data, train_cfg, stop=stop, device=device)
        metrics["baseline_accuracy"] = accuracy_and_loss(alone, data.scored)[0]
        metrics["baseline_history"] = alone_history
    return trained, Result("distill", cfg.to_dict(), metrics=metrics)


@register_handler(DistillConfig)
def _distill_handler(model: nn.Module, cfg: DistillConfig, data: Dataset | None = None,
                     student: nn.Module | None = None, **kw) -> tuple[nn.Module, Result]:
    """compress(teacher, cfg, data, student=...): the model being compressed is the teacher."""
    if student is None or data is None:
        raise ConfigError("Distillation needs a student model and data: distill(teacher, student, data, cfg).")
    return distill(model, student, data, cfg, **kw)
