"""One slider move, through the code path the pages use (ui/state.py on a cache miss):
compression.workflows.slider.compress_and_evaluate(model, cfg, data, latency=False, reference_logits=...)
for the numbers that appear at once (accuracy, non-zero parameters, size, agreement), then
compression.workflows.slider.compressed_latency(model, cfg, data) for the latency drawn after them.
Timed for every built-in model (median ms) on unstructured pruning at 50%, and on the other
slider methods for the largest model."""
from __future__ import annotations


from benchmarks.common import main, print_table, timed
from compression.data import datasets as data_mod
from compression.models import zoo
from compression.metrics.evaluate import predict_logits
from compression.workflows.slider import compress_and_evaluate, compressed_latency
from compression.methods.lowrank import LowRankConfig
from compression.methods.pruning import ChannelPruneConfig, PruneConfig
from compression.methods.quantization import QuantConfig

TARGET_MS = 100.0


def run(quick: bool = False, models: list[str] | None = None, repeats: int | None = None) -> dict:
    data = data_mod.load_digits()
    names = models or zoo.list_models()
    loaded = {n: zoo.load_pretrained(n).eval() for n in names}
    refs = {n: predict_logits(m, data.test.X) for n, m in loaded.items()}  # cached per model by the page
    repeats = repeats or (1 if quick else 7)
    cfg = PruneConfig(sparsity=0.5)

    def move(n: str, c=cfg) -> None:
        compress_and_evaluate(loaded[n], c, data, latency=False, reference_logits=refs[n])

    for n in names:  # one warm-up each (first-call costs are not what a slider move pays)
        move(n)
    slider = {n: timed(lambda n=n: move(n), repeats, warmup=0) * 1e3 for n in names}
    latency = {n: timed(lambda n=n: compressed_latency(loaded[n], cfg, data), 1 if quick else 3, warmup=0) * 1e3
               for n in names}
    print_table(f"slider move: prune 50% + accuracy + size (median of {repeats}, target <= {TARGET_MS:.0f} ms); "
                "latency measured afterwards",
                [{"model": n, "ms": slider[n], "meets": slider[n] <= TARGET_MS, "then latency ms": latency[n]}
                 for n in names])
    big = max(names, key=lambda n: sum(p.numel() for p in loaded[n].parameters()))
    methods = {"prune 50%": cfg, "channel 50%": ChannelPruneConfig(sparsity=0.5), "quantize 4-bit": QuantConfig(bits=4),
               "lowrank 0.5": LowRankConfig(rank_ratio=0.5)}
    by_method = {}
    for label, c in methods.items():
        by_method[label] = timed(lambda c=c: move(big, c), repeats) * 1e3
    print_table(f"slider move on {big} by method (median of {repeats})",
                [{"method": k, "ms": v, "meets": v <= TARGET_MS} for k, v in by_method.items()])
    return {"slider_ms": slider, "slider_then_latency_ms": latency, "slider_by_method_ms": {big: by_method}}


if __name__ == "__main__":
    main(run)
