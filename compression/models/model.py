"""The one model type. Every loaded model is a `Model`, whatever its origin: a built-in model, a
TorchScript or torch.export program, a state dict, a compact file or a Hugging Face folder, and
every compressed result of one of them.

A Model holds the torch module and what the rest of the library needs to know about it:
    origin       where it came from: demo | torchscript | exported | state_dict | compact | hf | compressed
    task         what it computes: 'classifier' (logits over classes, image or text), 'encoder'
                 (sentence embeddings) or 'decoder' (next-token logits); it picks the task's metrics
    tokenizer    the tokenizer of a text model (None for a model of feature or image tensors)
    summary      a transformer's config facts (model_type, hidden_size, layers, heads, vocab_size, params)
    fingerprint  identifies the weights; a compressed result appends its method label
`layers()` lists the layers a method can work on, each with its group (for a transformer the
block and role: attention q/k/v/o, FFN in/out), so methods, sweeps and pages never branch on
where a model came from. A Model is frozen: `replace` makes the next one around a new module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from compression.core.errors import ConfigError
from compression.core.modules import count_params, layer_type, weight_layers
from compression.models.hf_archs import ARCHS, ArchSpec

ORIGINS = ("demo", "torchscript", "exported", "state_dict", "compact", "hf", "compressed")
TASKS = ("classifier", "encoder", "decoder")
ROLES = ("attention.q", "attention.k", "attention.v", "attention.qkv", "attention.o", "ffn.in", "ffn.out")


@dataclass(frozen=True)
class Layer:
    """A layer a method can work on: qualified name, type ('Linear', 'Conv2d', 'Embedding'),
    weight shape, and group: for a transformer its block index and role ('attention.q', 'ffn.in',
    'embedding', 'head', 'other'); for other models block None and the role 'layer'."""

    name: str
    type: str
    shape: tuple[int, ...]
    block: int | None = None
    role: str = "layer"


@dataclass(frozen=True, eq=False)
class Model:
    """A model ready for evaluation and the methods, with where it came from (see the module doc)."""

    model: nn.Module
    origin: str
    name: str
    fingerprint: str
    arch: str | None = None          # the built-in architecture it is (or was loaded into), if any
    task: str = "classifier"
    tokenizer: Any = None
    summary: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def is_text(self) -> bool:
        """True for a model that takes token ids (a transformer with its tokenizer)."""
        return self.tokenizer is not None

    @property
    def model_type(self) -> str:
        self._need_text("model_type")
        return self.summary["model_type"]

    @property
    def spec(self) -> ArchSpec:
        """Where a transformer's blocks and projections are (see models.hf_archs)."""
        return ARCHS[self.model_type]

    def _need_text(self, what: str) -> None:
        if not self.is_text:
            raise ConfigError(f"{self.name} is not a transformer: it has no {what}.")

    def replace(self, model: nn.Module, label: str, origin: str | None = None) -> "Model":
        """The same task, tokenizer and architecture around a new (compressed) module."""
        summary = {**self.summary, "params": count_params(model)} if self.summary else {}
        return Model(model, origin or self.origin, f"{self.name} → {label}", f"{self.fingerprint}|{label}",
                     self.arch, self.task, self.tokenizer, summary, self.notes)

    def layers(self) -> list[Layer]:
        """The weight layers (Linear, Conv, Embedding) in definition order, each with its group."""
        found, _ = weight_layers(self.model)
        groups = ((self.group_of(n) if self.is_text else (None, "layer")) for n in found)
        return [Layer(n, layer_type(m), tuple(m.weight.shape), *g) for (n, m), g in zip(found.items(), groups)]

    # ---- a transformer's blocks and the roles of its layers ----------------------------------

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """(qualified name, module) of each transformer block, in order."""
        path = _join(base_prefix(self.model), self.spec.blocks)
        container = self.model.get_submodule(path)
        return [(_join(path, str(i)), block) for i, block in enumerate(container)]

    def block_roles(self) -> dict[str, tuple[int, str]]:
        """{qualified Linear name: (block index, role)} for the attention and FFN projections."""
        spec = self.spec
        rel = dict(zip(ROLES, (spec.q, spec.k, spec.v, spec.qkv, spec.o, spec.ffn_in, spec.ffn_out)))
        return {_join(prefix, path): (index, role) for index, (prefix, _) in enumerate(self.blocks())
                for role, path in rel.items() if path}

    def group_of(self, name: str) -> tuple[int | None, str]:
        """(block index or None, role) of a layer: its block role, or 'embedding' / 'head' / 'other'."""
        roles = self.block_roles()
        if name in roles:
            return roles[name]
        if isinstance(self.model.get_submodule(name), nn.Embedding):
            return None, "embedding"
        head = name in tied_heads(self.model) or not name.startswith(base_prefix(self.model))
        return None, "head" if head else "other"


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def base_prefix(model: nn.Module) -> str:
    """Qualified name of the base model inside a model with a head ('' for a bare base model)."""
    base = getattr(model, "base_model", model)
    return next(n for n, m in model.named_modules() if m is base)


def embedding_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]


def tied_heads(model: nn.Module) -> list[str]:
    """Linear layers whose weight is an embedding's weight (GPT-2's lm_head): changing one changes both."""
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m.weight) in embedding_weights]


def linear_names(model: nn.Module, tied: bool = False) -> list[str]:
    """Every nn.Linear, in definition order; heads tied to the embeddings only with `tied`."""
    skip = set() if tied else set(tied_heads(model))
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in skip]
