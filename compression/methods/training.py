"""The one training loop: fine-tuning, recovery after pruning, quantization-aware training and
distillation all use `fit`. It reports progress through a callback, stops on a flag, and returns
the best model seen on the validation split (never the caller's model, which is not changed)."""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from compression.core.devices import model_device, resolve
from compression.core.errors import ConfigError, UnsupportedLayerError
from compression.core.modules import copy_model, is_frozen_code
from compression.core.registry import check_range
from compression.data.datasets import Dataset, load_digits
from compression.metrics.evaluate import accuracy_and_loss, predict_logits
from compression.models.zoo import ZOO, build


@dataclass(frozen=True)
class TrainConfig:
    """Args:
        alpha: weight of the distillation term (used only with a teacher); 0 = plain cross-entropy.
        temperature: softmax temperature T of the distillation term.
        hard_labels: with a teacher, train on the teacher's argmax instead of its soft outputs.
    """

    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    weight_decay: float = 0.0
    temperature: float = 4.0
    alpha: float = 0.9
    hard_labels: bool = False

    def __post_init__(self):
        if not isinstance(self.epochs, int) or not 0 <= self.epochs <= 1000:
            raise ConfigError(f"epochs must be an integer in [0, 1000]; got {self.epochs!r}.")
        check_range("lr", self.lr, 0, 10, lo_open=True)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer; got {self.batch_size!r}.")
        check_range("temperature", self.temperature, 0, 100, lo_open=True)
        check_range("alpha", self.alpha, 0, 1)


@dataclass
class Progress:
    """One progress event. phase is 'batch' or 'epoch'; accuracies are 0-1."""

    phase: str
    epoch: int
    epochs: int
    batch: int
    batches: int
    loss: float
    train_accuracy: float | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, (self.epoch + self.batch / max(self.batches, 1)) / max(self.epochs, 1))


StopFlag = Optional[threading.Event | Callable[[], bool]]


def is_stopped(stop: StopFlag) -> bool:
    if stop is None:
        return False
    return stop.is_set() if isinstance(stop, threading.Event) else bool(stop())


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)."""
    T = temperature
    soft = F.kl_div(F.log_softmax(student_logits / T, 1), F.log_softmax(teacher_logits / T, 1),
                    log_target=True, reduction="batchmean")
    return alpha * T * T * soft + (1 - alpha) * F.cross_entropy(student_logits, y)


def fit(model: nn.Module, data: Dataset, cfg: TrainConfig, teacher: nn.Module | None = None,
        callback: Callable[[Progress], None] | None = None, stop: StopFlag = None,
        private: bool = True, device: str | None = None) -> tuple[nn.Module, list[dict]]:
    """Train (a copy of) `model` on data.train, selecting the best epoch on data.val.

    Pruning masks (torch.nn.utils.prune) stay fixed because only `weight_orig` is trained.
    Batches go to the model's device; with `device` the model is trained there (a copy moved
    there, or the model itself when private is False) and the best model comes back to the CPU.
    Returns:
        (best model in eval mode, history: one dict per finished epoch).
    """
    if is_frozen_code(model):
        raise UnsupportedLayerError("Training a TorchScript model (fine-tuning, distillation into it) is not "
                                    "supported: its parameters are frozen into compiled code. Export your model with "
                                    "torch.export (a .pt2 file) to train it.")
    torch.manual_seed(cfg.seed)
    model = copy_model(model) if private else model
    if device is not None:
        model.to(resolve(device))
    on = model_device(model)
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    teacher_logits = predict_logits(teacher, data.train.X) if teacher is not None else None
    best_acc, _ = accuracy_and_loss(model, data.val)
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict] = []
    n = len(data.train)
    batches = -(-n // cfg.batch_size)
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        correct = seen = 0
        for b, start in enumerate(range(0, n, cfg.batch_size)):
            if is_stopped(stop):
                break
            idx = order[start:start + cfg.batch_size]
            x, y = data.train.X[idx].to(on), data.train.y[idx].to(on)
            logits = model(x)
            if teacher_logits is None:
                loss = F.cross_entropy(logits, y)
            elif cfg.hard_labels:
                loss = F.cross_entropy(logits, teacher_logits[idx].argmax(1).to(on))
            else:
                loss = kd_loss(logits, teacher_logits[idx].to(on), y, cfg.temperature, cfg.alpha)
            opt.zero_grad()
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
            if callback:
                callback(Progress("batch", epoch, cfg.epochs, b + 1, batches, loss.item()))
        if seen == 0:
            break
        val_acc, val_loss = accuracy_and_loss(model, data.val)
        row = {"epoch": epoch + 1, "loss": loss.item(), "train_accuracy": correct / seen,
               "val_accuracy": val_acc, "val_loss": val_loss, "complete": seen == n}
        history.append(row)
        if val_acc > best_acc:
            best_acc, best_state = val_acc, copy.deepcopy(model.state_dict())
        if callback:
            callback(Progress("epoch", epoch, cfg.epochs, batches, batches, row["loss"],
                              row["train_accuracy"], val_acc, val_loss))
        if is_stopped(stop):
            break
    model.load_state_dict(best_state)
    if device is not None:
        model.cpu()
    return model.eval(), history


def train_model(name: str, epochs: int | None = None, seed: int = 0, lr: float = 2e-3,
                batch_size: int = 64) -> tuple[nn.Module, dict]:
    """Train a built-in model on the digits train split (Adam, cosine schedule, light shift
    augmentation); keep the weights with the best validation accuracy. Seeded."""
    torch.manual_seed(seed)
    data = load_digits()
    model = build(name)
    epochs = epochs or ZOO[name].epochs
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    best = (-1.0, None)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(data.train), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x, y = data.train.X[idx], data.train.y[idx]
            shifts = torch.randint(-1, 2, (2,), generator=gen).tolist()
            x = torch.roll(x, shifts=shifts, dims=(2, 3))  # (B, 1, 8, 8), one-pixel shift
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        val_acc, _ = accuracy_and_loss(model, data.val)
        if val_acc > best[0]:
            best = (val_acc, {k: v.detach().clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[1])
    model.eval()
    test_acc, test_loss = accuracy_and_loss(model, data.test)
    params = sum(p.numel() for p in model.parameters())
    return model, {"params": params, "val_accuracy": round(best[0], 4),
                   "test_accuracy": round(test_acc, 4), "test_loss": round(test_loss, 4),
                   "epochs": epochs, "seed": seed}
