"""Plain JSON values of configs, metrics and results: how runs are stored and compared."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def plain(value: Any) -> Any:
    """JSON-safe copy: tensors/arrays as lists, numpy scalars as numbers, NaN/inf as None,
    configs and results through their to_dict(), tuples as lists, other objects as text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    for attr in ("to_dict", "tolist", "item"):
        if hasattr(value, attr):
            return plain(getattr(value, attr)())
    return str(value)


def to_json(value: Any) -> str:
    """Strict JSON text (no NaN) of a config, metrics or artefacts value."""
    return json.dumps(plain(value), sort_keys=True, allow_nan=False)
