"""Method configs: frozen, validated dataclasses that round-trip to JSON, and a registry
from config type to the handler that applies it (as torchao's quantize handlers do)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TypeVar

from torch import nn

from compression.core.errors import ConfigError

CONFIGS: dict[str, type["MethodConfig"]] = {}
HANDLERS: dict[type, Callable[..., tuple[Any, "Result"]]] = {}
WHOLE_MODEL: set[type] = set()   # configs whose handler needs the Model (a transformer's blocks), not its module
C = TypeVar("C", bound="MethodConfig")


def register_config(cls: type[C]) -> type[C]:
    """Class decorator: make a config reachable by its `kind` for `config_from_dict`."""
    CONFIGS[cls.kind] = cls
    return cls


def register_handler(config_type: type, needs_model: bool = False) -> Callable:
    """Decorator: `handler(module, cfg, data=None, **kw) -> (new_module, Result)` for a config type.

    With `needs_model` the handler takes and returns the whole models.Model instead (structured
    transformer methods need its architecture spec and blocks)."""
    def wrap(fn: Callable) -> Callable:
        HANDLERS[config_type] = fn
        if needs_model:
            WHOLE_MODEL.add(config_type)
        return fn
    return wrap


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method config. Subclasses set `kind` and validate in __post_init__."""

    kind: ClassVar[str] = "base"
    # field names of earlier versions, read from stored runs and recipes: {old: new}
    renamed: ClassVar[dict[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        d = {cls.renamed.get(k, k): v for k, v in d.items()}
        d.pop("kind", None)
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(names)
        if unknown:
            raise ConfigError(f"Unknown field(s) for {cls.kind}: {', '.join(sorted(unknown))}. "
                              f"Valid fields: {', '.join(names)}.")
        for key, value in list(d.items()):
            if isinstance(value, list):
                d[key] = tuple(value)
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"Bad {cls.kind} config: {exc}") from None


def config_from_dict(d: dict[str, Any]) -> MethodConfig:
    """Rebuild any registered config from its dict (as stored in runs and recipes)."""
    if not isinstance(d, dict) or "kind" not in d:
        raise ConfigError("A config must be a JSON object with a 'kind' field.")
    if d["kind"] not in CONFIGS:
        raise ConfigError(f"Unknown method kind {d['kind']!r}; known: {', '.join(sorted(CONFIGS))}.")
    return CONFIGS[d["kind"]].from_dict(d)


def config_from_json(text: str) -> MethodConfig:
    try:
        return config_from_dict(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"Config is not valid JSON: {exc}") from None


def name_pairs(value, cast, what: str, example: str) -> tuple[tuple[str, Any], ...]:
    """Normalise {name: x} or [[name, x], ...] to a sorted tuple of (name, cast(x)) pairs, so a
    per-layer setting stays hashable and JSON round-trips; ConfigError on anything else."""
    try:
        items = value.items() if isinstance(value, dict) else value
        return tuple(sorted((str(k), cast(v)) for k, v in items))
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must map layer names to values, e.g. {example}.") from None


def layer_patterns(value, what: str) -> tuple[str, ...]:
    """Normalise an `include` / `exclude` list of layer names or fnmatch patterns ('layers.*.conv1')
    to a tuple of strings; ConfigError for a bare string or a non-list."""
    if isinstance(value, str) or not isinstance(value, (tuple, list, set, frozenset)):
        raise ConfigError(f"{what} must be a list of layer names or patterns, e.g. ['fc3'] or ['layers.*']; "
                          f"got {value!r}.")
    return tuple(str(v) for v in value)


def check_range(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False,
                hi_open: bool = False) -> None:
    """Raise ConfigError unless lo <= value <= hi (with optional open ends)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = number and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:  # NaN fails both comparisons
        lb, hb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ConfigError(f"{name} must be a number in {lb}{lo}, {hi}{hb}; got {value!r}.")


@dataclass
class Result:
    """What a method did: per-layer rows, skipped layers with reasons, and its own metrics.

    `layers` rows are flat dicts (one per layer) ready for a DataFrame; `metrics` holds the
    method's summary numbers (achieved sparsity, bits, mean SQNR, ...) for JSON output.
    `simulated` says whether the result is a simulation (fake quantization) or real.
    """

    method: str
    config: dict
    layers: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    simulated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "config": self.config, "layers": self.layers,
                "skipped": [{"layer": n, "reason": r} for n, r in self.skipped],
                "metrics": self.metrics, "simulated": self.simulated}


def method_label(cfg: MethodConfig) -> str:
    """A short label of a config with its non-empty fields: 'hf_prune(sparsity=0.5, embeddings=False)'."""
    fields = {k: v for k, v in cfg.to_dict().items() if k != "kind" and v not in ((), [], None)}
    return f"{cfg.kind}({', '.join(f'{k}={v}' for k, v in fields.items())})"


def compress(model, cfg: MethodConfig, data=None, **kwargs) -> tuple[Any, Result]:
    """Apply any registered method to a copy of `model`; the input model is never changed.

    `model` is a bare nn.Module (a module comes back) or a models.Model (a Model comes back, around
    the new module, its name labelled with the method)."""
    handler = HANDLERS.get(type(cfg))
    if handler is None:
        raise ConfigError(f"No handler registered for {type(cfg).__name__}.")
    if type(cfg) in WHOLE_MODEL:
        if isinstance(model, nn.Module):
            raise ConfigError(f"{cfg.kind} needs a transformer loaded with its architecture "
                              "(compression.models.loading), not a bare module.")
        return handler(model, cfg, data, **kwargs)
    if isinstance(model, nn.Module):
        return handler(model, cfg, data, **kwargs)
    module, report = handler(model.model, cfg, data, **kwargs)
    return model.replace(module, method_label(cfg)), report
