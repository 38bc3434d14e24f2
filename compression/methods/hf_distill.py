"""Distillation of a smaller transformer: a student with fewer blocks, initialised from the
teacher's (every `keep_every`-th block, as DistilBERT was), trained on the texts to match the
teacher: cosine / MSE of the sentence embeddings for an encoder, KD on the logits (Hinton et al.,
2015) for a classifier or decoder. Progress through a callback; stops on a flag."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from compression.core.errors import ConfigError
from compression.core.modules import copy_model, count_params, set_module
from compression.core.registry import MethodConfig, Result, check_range
from compression.data.text import TextData, encode
from compression.methods.training import Progress, StopFlag, is_stopped, kd_loss
from compression.metrics.text import TextForward, make_probe, mean_pool
from compression.models.model import Model, base_prefix

LOSSES = ("auto", "cosine", "mse", "kd")


@dataclass(frozen=True)
class HFDistillConfig(MethodConfig):
    """Args:
        keep_every: the student keeps blocks 0, keep_every, 2 * keep_every, ... of the teacher.
        loss: 'cosine' or 'mse' of embeddings (logits for classifier/decoder), 'kd' on logits;
            'auto' = cosine for an encoder, kd otherwise.
    """

    kind: ClassVar[str] = "hf_distill"
    keep_every: int = 2
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 16
    loss: str = "auto"
    temperature: float = 2.0
    max_length: int = 64
    seed: int = 0

    def __post_init__(self):
        for name in ("keep_every", "epochs", "batch_size", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "epochs" else 1):
                raise ConfigError(f"{name} must be a positive integer; got {value!r}.")
        check_range("lr", self.lr, 0, 1, lo_open=True)
        check_range("temperature", self.temperature, 0, 100, lo_open=True)
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}.")


def make_student(teacher: Model, keep_every: int = 2) -> Model:
    """A copy of the teacher keeping every `keep_every`-th block (at least one)."""
    student = copy_model(teacher.model)
    path = ".".join(p for p in (base_prefix(student), teacher.spec.blocks) if p)
    kept = list(student.get_submodule(path))[::keep_every]
    set_module(student, path, nn.ModuleList(kept))
    for index, block in enumerate(kept):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = index
    student.config.num_hidden_layers = len(kept)
    return teacher.replace(student.eval(), f"student({len(kept)} of {teacher.summary['layers']} blocks)")


def distill_loss(kind: str, loss: str, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """Loss between student and teacher outputs of one batch (hidden states (B, T, H) for an
    encoder, logits (B, C) or (B, T, V) otherwise)."""
    if kind == "encoder":
        if loss == "kd":
            raise ConfigError("KD on logits needs a classifier or decoder; use 'cosine' or 'mse' for an encoder.")
        student, teacher = mean_pool(student, mask), mean_pool(teacher, mask)  # (B, H)
    elif kind == "decoder":
        student, teacher = student[mask.bool()], teacher[mask.bool()]  # (P, V) real tokens
    loss = {"auto": "cosine" if kind == "encoder" else "kd"}.get(loss, loss)
    if loss == "cosine":
        return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    if loss == "mse":
        return F.mse_loss(student, teacher)
    return kd_loss(student, teacher, teacher.argmax(-1), temperature, alpha=1.0)


def _epoch(student: nn.Module, teacher: nn.Module, kind: str, enc, cfg: HFDistillConfig, opt, gen, epoch: int,
           callback: Callable[[Progress], None] | None, stop: StopFlag) -> tuple[float, int]:
    """One pass over the texts in a seeded order; (mean loss, batches done)."""
    fs, ft = TextForward(student, kind), TextForward(teacher, kind)
    order = torch.randperm(len(enc), generator=gen)
    batches, total, done = -(-len(enc) // cfg.batch_size), 0.0, 0
    for b, start in enumerate(range(0, len(enc), cfg.batch_size)):
        if is_stopped(stop):
            break
        idx = order[start:start + cfg.batch_size]
        ids, mask = enc.input_ids[idx], enc.attention_mask[idx]
        with torch.inference_mode():
            target = ft(ids, mask)
        loss = distill_loss(kind, cfg.loss, fs(ids, mask), target.clone(), mask, cfg.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total, done = total + loss.item(), done + 1
        if callback:
            callback(Progress("batch", epoch, cfg.epochs, b + 1, batches, loss.item()))
    return total / max(done, 1), done


def distill_hf(teacher: Model, data: TextData, cfg: HFDistillConfig | None = None,
               callback: Callable[[Progress], None] | None = None, stop: StopFlag = None) -> tuple[Model, Result]:
    """Train a smaller student (see `make_student`) to match the teacher on the texts.

    Returns:
        (student in eval mode, Result with fidelity before and after training, params of both,
        per-epoch history and whether it was stopped). A stopped run keeps what it learned so far.
    """
    cfg = cfg or HFDistillConfig()
    torch.manual_seed(cfg.seed)
    student = make_student(teacher, cfg.keep_every)
    enc = encode(teacher.tokenizer, data, cfg.max_length, max_texts=None)
    probe = make_probe(teacher, data, cfg.max_length)
    before = probe.fidelity(student.model)
    model = student.model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    gen, history, stopped = torch.Generator().manual_seed(cfg.seed), [], False
    teacher.model.eval()
    for epoch in range(cfg.epochs):
        loss, done = _epoch(model, teacher.model, teacher.task, enc, cfg, opt, gen, epoch, callback, stop)
        stopped = is_stopped(stop)
        if done:
            history.append({"epoch": epoch + 1, "loss": loss, "complete": not stopped})
            if callback:
                callback(Progress("epoch", epoch, cfg.epochs, done, done, loss))
        if stopped:
            break
    model.eval()
    after = probe.fidelity(model)
    metrics = {"fidelity_before": before["fidelity"], "fidelity_after": after["fidelity"],
               "fidelity_metric": after["fidelity_metric"], "after": after,
               "params_teacher": count_params(teacher.model),
               "params_student": count_params(model), "history": history, "stopped": stopped}
    return student, Result(cfg.kind, cfg.to_dict(), metrics=metrics)
