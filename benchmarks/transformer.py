"""A larger transformer: a random-initialised BERT encoder of about 23M parameters (hidden 512, 6 blocks,
8 heads, FFN 2048, vocabulary 8192; the size of a small sentence-embedding model), saved into a temporary
folder and loaded the way the app loads one (compression.models.hf.load_hf_folder).

Slider feedback: what pages/transformer_models.py computes on "Apply and measure" before it draws
fidelity and size, transformers_support.measure_method(hf, METHOD_CONFIGS[method](), data,
latency=False) with the page's default settings (prune 50%, quantize 8 bits with embeddings, real
int8) on the bundled sample sentences; then, separately, the latency the page measures after
them (latency_fields: the original and the compressed model timed back to back). Median ms after
one warm-up.
Sweep: the page's "Sweep 8, 4 and 2 bits", sensitivity_sweep(hf, data, "quantize", (8, 4, 2)) over
every Linear layer."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.common import main, print_table, timed
from compression.analysis.hf import METHOD_CONFIGS, latency_fields, measure_method, sensitivity_sweep
from compression.data.text import SAMPLE_PATH, TextData, load_text_data, read_lines
from compression.models.hf import load_hf_folder
from compression.models.hf_demo import build_tokenizer, demo_model
from compression.models.model import Model, linear_names

TARGET_MS = 2000.0
SIZES = {"vocab_size": 8192, "hidden": 512, "layers": 6, "heads": 8, "intermediate": 2048}
QUICK_SIZES = {"vocab_size": 512, "hidden": 32, "layers": 2, "heads": 4, "intermediate": 64}
METHODS = ("prune", "quantize", "int8")
SWEEP_LEVELS = (8, 4, 2)


def make_folder(folder: str | Path, sizes: dict) -> Path:
    """A random BERT encoder of `sizes` and the demo's word-level tokenizer, saved into `folder`
    (the embedding table has vocab_size rows; the tokenizer uses the first of them)."""
    folder = Path(folder)
    tokenizer = build_tokenizer(read_lines(SAMPLE_PATH))
    sizes = {**sizes, "vocab_size": max(sizes["vocab_size"], len(tokenizer))}
    model = demo_model("encoder", **sizes)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def run(quick: bool = False, sizes: dict | None = None, methods: tuple[str, ...] = METHODS,
        repeats: int | None = None) -> dict:
    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    repeats = repeats or (1 if quick else 3)
    data = load_text_data(None)
    with tempfile.TemporaryDirectory(prefix="bench-hf-") as tmp:  # kept while the weights are in use
        hf = load_hf_folder(make_folder(tmp, sizes))
        return _measure(hf, data, sizes, methods, repeats)


def _measure(hf: Model, data: TextData, sizes: dict, methods: tuple[str, ...], repeats: int) -> dict:
    params = int(hf.summary["params"])
    slider, then_latency = {}, {}
    for m in methods:
        cfg = METHOD_CONFIGS[m]()  # the page's defaults: sparsity 0.5, 8 bits with embeddings, ...
        slider[m] = timed(lambda: measure_method(hf, cfg, data, latency=False), repeats) * 1e3
        small, _ = measure_method(hf, cfg, data, latency=False)
        then_latency[m] = timed(lambda: latency_fields(hf, small.model), repeats) * 1e3
    layers = linear_names(hf.model)
    t0 = time.perf_counter()
    frame = sensitivity_sweep(hf, data, "quantize", SWEEP_LEVELS)
    sweep_s = time.perf_counter() - t0
    worst = max(slider.values())
    res = {"transformer_params": params, "transformer_sizes": sizes, "transformer_texts": min(len(data), 256),
           "transformer_slider_ms": slider, "transformer_then_latency_ms": then_latency,
           "transformer_slider_target_ms": TARGET_MS, "transformer_slider_meets": worst <= TARGET_MS,
           "transformer_sweep_s": sweep_s, "transformer_sweep_layers": len(layers),
           "transformer_sweep_levels": list(SWEEP_LEVELS), "transformer_sweep_points": len(frame),
           "transformer_sweep_ms_per_point": sweep_s * 1e3 / max(len(frame), 1)}
    print_table(f"transformer slider move: measure_method on a {params / 1e6:.1f}M-param BERT, {len(data)} texts "
                f"(median of {repeats}, target <= {TARGET_MS:.0f} ms)",
                [{"method": m, "ms": slider[m], "meets": slider[m] <= TARGET_MS, "then latency ms": then_latency[m]}
                 for m in methods])
    print_table("transformer sensitivity sweep: one Linear layer quantized at a time",
                [{"layers": len(layers), "levels": str(list(SWEEP_LEVELS)), "points": len(frame),
                  "sweep_s": sweep_s, "ms_per_point": res["transformer_sweep_ms_per_point"]}])
    return res


if __name__ == "__main__":
    main(run)
