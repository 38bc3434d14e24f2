"""CLI command `hf`: compress a Hugging Face transformer from a local folder and measure it on texts.

    python -m compression hf --folder PATH [--text FILE] --method prune --sparsity 0.5 --json
    python -m compression hf --folder demo:decoder --method int8
    python -m compression hf --folder PATH --method target --target 0.99

--folder is a folder written by save_pretrained (config.json, safetensors, tokenizer) or
demo:encoder / demo:classifier / demo:decoder (a tiny random model made in a temporary folder).
Prints fidelity (cosine / agreement, KL, perplexity), parameters and measured latency."""
from __future__ import annotations

import argparse

from compression.analysis.hf import choose_int8, int8_tradeoff, measure_method
from compression.cli.common import add_record_args, command, layer_selection, record
from compression.core.errors import ConfigError
from compression.data.text import load_text_data
from compression.io.hf_export import save_hf_folder
from compression.methods.heads_ffn import FFNPruneConfig, HeadPruneConfig
from compression.methods.hf import HFLowRankConfig, HFPruneConfig, HFQuantConfig, Int8Config, NMConfig
from compression.methods.hf_distill import HFDistillConfig, distill_hf
from compression.metrics.text import make_probe
from compression.models.hf import load_hf_folder
from compression.models.hf_demo import load_demo_text_model

METHODS = ("prune", "nm", "heads", "ffn", "quantize", "int8", "lowrank", "target", "distill")
# integer flags: (least, most) each may be; a batch too large would exhaust memory
COUNT_LIMITS = {"max_texts": (1, 100_000), "batch_size": (1, 1024), "seq_len": (1, 8192), "epochs": (0, 1000)}


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folder", required=True, help="model folder, or demo:encoder|classifier|decoder")
    p.add_argument("--text", default=None, help=".txt (one text per line) or .csv with a 'text' column; "
                                                "default: the bundled sample sentences")
    p.add_argument("--method", choices=METHODS, default="prune")
    p.add_argument("--sparsity", type=float, default=0.5, help="prune: fraction of weights removed")
    p.add_argument("--pattern", default="2:4", help="nm: N:M, e.g. 2:4")
    p.add_argument("--fraction", type=float, default=0.25, help="heads / ffn: fraction removed per block")
    p.add_argument("--bits", type=int, default=8, help="quantize: bit-width 2-16")
    p.add_argument("--rank-ratio", type=float, default=0.5, help="lowrank: kept rank / full rank")
    p.add_argument("--granularity", choices=["tensor", "channel"], default="channel", help="quantize: scale per")
    p.add_argument("--include", default="", help="prune, quantize, int8, lowrank: comma-separated layer names or "
                                                 "patterns compressed (default every Linear layer)")
    p.add_argument("--exclude", "--keep", dest="exclude", default="",
                   help="prune, quantize, int8, lowrank: comma-separated layer names or patterns left as they are")
    p.add_argument("--embeddings", action="store_true", help="prune: embeddings too; quantize: they always are")
    p.add_argument("--target", type=float, default=0.99, help="target: fidelity to reach")
    p.add_argument("--epochs", type=int, default=3, help="distill: epochs")
    p.add_argument("--max-texts", type=int, default=256, help="texts measured (first N)")
    p.add_argument("--batch-size", type=int, default=8, help="latency batch size")
    p.add_argument("--seq-len", type=int, default=32, help="latency sequence length")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--save", default=None, help="write the compressed model as a Hugging Face folder here "
                   "(safetensors + tokenizer, checked by loading it back)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_record_args(p)


def check_counts(args: argparse.Namespace) -> None:
    """ConfigError naming the flag when --max-texts, --batch-size, --seq-len or --epochs is out of
    its COUNT_LIMITS range, or --target is not a fidelity from 0 to 1."""
    for name, (low, high) in COUNT_LIMITS.items():
        value = getattr(args, name)
        if not low <= value <= high:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be a whole number from {low} to {high:,}; got {value}.")
    if not 0 <= args.target <= 1:  # also refuses nan
        raise ConfigError(f"--target must be a fidelity from 0 to 1, e.g. 0.99; got {args.target}.")


def method_config(args: argparse.Namespace):
    """The transformer method config the arguments describe."""
    if args.method == "nm":
        try:
            n, m = (int(v) for v in args.pattern.split(":"))
        except ValueError:
            raise ConfigError(f"--pattern must look like 2:4; got {args.pattern!r}.") from None
        return NMConfig(n=n, m=m)
    return {
        "prune": lambda: HFPruneConfig(sparsity=args.sparsity, embeddings=args.embeddings, **layer_selection(args)),
        "heads": lambda: HeadPruneConfig(fraction=args.fraction),
        "ffn": lambda: FFNPruneConfig(fraction=args.fraction),
        "quantize": lambda: HFQuantConfig(bits=args.bits, granularity=args.granularity, **layer_selection(args)),
        "int8": lambda: Int8Config(**layer_selection(args)),
        "lowrank": lambda: HFLowRankConfig(rank_ratio=args.rank_ratio, **layer_selection(args)),
    }[args.method]()


def load_folder(spec: str):
    """A Model from a folder, or the demo transformer for demo:KIND."""
    return load_demo_text_model(spec.split(":", 1)[1]) if spec.startswith("demo:") else load_hf_folder(spec)


def _run(args: argparse.Namespace, hf, data) -> dict:
    if args.method == "target":
        frame = int8_tradeoff(hf, data, max_texts=args.max_texts, batch_size=args.batch_size, seq_len=args.seq_len)
        choice = choose_int8(frame, args.target)
        return {"method": "int8 with fidelity target", **choice,
                "choices": frame.drop(columns=["kept"]).to_dict("records"),
                "fp32_latency_ms": frame.attrs["fp32_latency_ms"]}
    if args.method == "distill":
        student, report = distill_hf(hf, data, HFDistillConfig(epochs=args.epochs))
        return {"method": "distill", **{k: v for k, v in report.metrics.items() if k != "after"}}
    cfg = method_config(args)
    small, result = measure_method(hf, cfg, data, latency=not args.no_latency, batch_size=args.batch_size,
                                   seq_len=args.seq_len, probe=make_probe(hf, data, max_texts=args.max_texts))
    artefacts = {"saved": str(save_hf_folder(small, args.save, check=data))} if args.save else {}
    result.update(artefacts)
    result.update(record(args, cfg.kind, hf, data, cfg.to_dict(), {k: v for k, v in result.items() if k != "report"},
                         artefacts))
    return result


@command("hf", "compress a transformer from a local folder and measure fidelity, params, latency", _setup)
def cmd_hf(args: argparse.Namespace) -> dict:
    check_counts(args)  # validate before loading anything
    if args.method in METHODS[:7]:
        method_config(args)
    hf = load_folder(args.folder)
    data = load_text_data(args.text)
    result = _run(args, hf, data)
    return {"folder": args.folder, "kind": hf.task, "model_type": hf.model_type, "data": data.name,
            "texts": min(len(data), args.max_texts), **result}
