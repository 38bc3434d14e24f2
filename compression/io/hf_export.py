"""Save a (compressed) transformer as a Hugging Face folder, zipped: `save_pretrained` with
safetensors weights and the tokenizer files, checked by loading it back the way the app loads a
folder and comparing its outputs with the model's. A compressed model whose structure the folder
cannot describe (low-rank factors, real int8 kernels, per-block FFN widths) is refused with the
reason, never written half-right."""
from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from compression.core.errors import UnsupportedLayerError
from compression.data.text import TextData
from compression.metrics.text import make_probe
from compression.models.hf import load_hf_folder
from compression.models.model import Model

ROUND_TRIP_COSINE = 0.9999  # the reloaded model's outputs against the model's, on the texts


def save_hf_folder(hf: Model, folder: str | Path, check: TextData | None = None) -> Path:
    """Write hf's model (safetensors) and tokenizer into `folder`; with `check`, reload it and
    require the same outputs on those texts (cosine >= ROUND_TRIP_COSINE).

    Raises:
        UnsupportedLayerError: the model cannot be saved, or does not load back the same.
    """
    folder = Path(folder)
    try:
        hf.model.save_pretrained(folder, safe_serialization=True, state_dict=_hf_layout(hf.model))
        hf.tokenizer.save_pretrained(folder)
    except Exception as exc:  # e.g. packed int8 weights: not tensors safetensors can hold
        raise UnsupportedLayerError(f"This model cannot be saved as a Hugging Face folder ({type(exc).__name__}: "
                                    f"{exc}); real int8 models are measured in the app, not exported.") from exc
    if check is not None:
        try:
            back = load_hf_folder(folder, kind=hf.task)
            cosine = make_probe(hf, check, max_texts=32).fidelity(back.model)["cosine"]
        except Exception as exc:
            raise UnsupportedLayerError(f"The saved folder does not load back as this model ({exc}); its structure "
                                        "(e.g. low-rank factors or per-block FFN widths) is not one the "
                                        "architecture's config can describe.") from exc
        if cosine < ROUND_TRIP_COSINE:
            raise UnsupportedLayerError(f"The saved folder loads back as a different model (output cosine "
                                        f"{cosine:.4f}); its structure is not one the config can describe.")
    return folder


def _hf_layout(model) -> dict:
    """The state dict in the layout the architecture's own classes expect: GPT-2's Conv1D
    layers, loaded as nn.Linear (compression.models.hf), get their (in, out) weights back."""
    import torch

    state = model.state_dict()
    with torch.device("meta"):  # the architecture as transformers builds it, without memory
        reference = type(model)(model.config)
    for name, module in reference.named_modules():
        key = f"{name}.weight"
        if type(module).__name__ == "Conv1D" and key in state and state[key].dim() == 2:
            state[key] = state[key].t().contiguous()
    return state


def hf_zip_bytes(hf: Model, check: TextData | None = None) -> bytes:
    """save_hf_folder into a temporary folder, zipped (files at the archive's top level)."""
    with tempfile.TemporaryDirectory(prefix="hf-export-") as tmp:
        folder = save_hf_folder(hf, Path(tmp) / "model", check)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(folder).as_posix())
        return buf.getvalue()
