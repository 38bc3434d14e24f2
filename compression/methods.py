"""Importing this module registers every method's config and handler."""
from __future__ import annotations

import importlib

METHOD_MODULES = ("compression.pruning", "compression.quantization", "compression.lowrank",
                  "compression.distillation")

for _name in METHOD_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a method not written yet must not break the others
        if exc.name != _name:
            raise
