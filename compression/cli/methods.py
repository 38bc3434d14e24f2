"""CLI commands of the compression methods: prune, quantize, lowrank, distill.

Each takes --data (calibrates, fine-tunes and evaluates), --json (the `evaluate` keys of the
compressed model plus the method's own) and --save PATH (the compact format, which --model reads
back whatever the file is called), so steps chain: prune, save, quantize the saved file."""
from __future__ import annotations

import argparse
from pathlib import Path

from compression.analysis.hf import measure_method
from compression.cli.common import (add_data_args, add_device_arg, add_model_args, add_record_args, command, data_row,
                                    eval_row, layer_selection, load_inputs, record)
from compression.core.errors import ConfigError
from compression.core.modules import fold_masks_
from compression.io.export import export_model
from compression.io.hf_export import save_hf_folder
from compression.methods import distillation, lowrank, pruning, quantization
from compression.methods.hf import HFLowRankConfig, HFPruneConfig, HFQuantConfig, Int8Config
from compression.methods.int8 import int8_layers, quantize_int8
from compression.methods.training import TrainConfig
from compression.metrics.evaluate import count_macs
from compression.metrics.task import evaluate_model
from compression.models import zoo
from compression.models.compact import save_compact
from compression.models.loading import check_model, load_model
from compression.models.zoo import zoo_summary


def _common(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--save", default=None, help="write the compressed model in the compact format")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--include", default="", help="comma-separated layer names or patterns (layers.*.conv1) to "
                                                 "compress; default every layer")
    p.add_argument("--exclude", default="", help="comma-separated layer names or patterns left as they are")
    add_record_args(p)


ORIGINAL_SUFFIXES = {"torchscript": ".pt", "exported": ".pt2"}  # a user's model may save back in its format


def _save(model, path: str | None, loaded=None, example=None) -> dict:
    """Write the compressed model to `path` in the compact format, or, for a user's TorchScript or
    torch.export model saved to a path with its format's suffix (.pt, .pt2), in that format
    (traced with `example`)."""
    if not path:
        return {}
    own = ORIGINAL_SUFFIXES.get(loaded.origin) if loaded is not None and loaded.arch is None else None
    if own is not None and Path(path).suffix == own:
        written = export_model(model, loaded.origin, path, example)
        return {"saved": str(path), "saved_bytes": written.size_bytes, "saved_format": loaded.origin}
    written = save_compact(model, Path(path))
    return {"saved": str(path), "saved_bytes": written, "saved_format": "compact"}


def finish(args: argparse.Namespace, loaded, data, model, report, baseline_model=None) -> dict:
    """Evaluate the compressed model against the original, save it, record the run."""
    reference = baseline_model if baseline_model is not None else loaded.model
    result = {"model": loaded.name, "method": report.method, "data": data.name,
              **eval_row(model, data, reference=reference, latency=not args.no_latency)}
    base = eval_row(reference, data, latency=not args.no_latency)
    result["baseline"] = {k: base[k] for k in ("accuracy", "loss", "params", "nonzero_params",
                                               "size_bytes", "macs", "latency_ms")}
    result.update({k: v for k, v in report.metrics.items() if k not in result})
    result.update(data_row(reference, data, base["accuracy"], fitted=True))
    result["simulated"] = report.simulated
    result["config"] = report.config
    result["layers"] = report.layers
    result["skipped"] = [{"layer": n, "reason": r} for n, r in report.skipped]
    artefacts = _save(model, getattr(args, "save", None), loaded, data.val.X[:1])
    result.update(artefacts)
    result.update(record(args, report.config.get("kind", report.method), loaded,
                          data, report.config, {k: v for k, v in result.items() if k not in ("layers", "config")},
                          artefacts))
    return result


def _not_on_text(**given: bool) -> None:
    """ConfigError naming the options a transformer does not take yet."""
    names = [name for name, on in given.items() if on]
    if names:
        raise ConfigError(f"Not on transformers yet: {', '.join(names)}. Transformers take magnitude pruning per "
                          "layer, weight quantization (per tensor or channel, symmetric, min-max) or --int8, and "
                          "low-rank; heads and FFN neurons through `hf --method heads|ffn`.")


def finish_text(args: argparse.Namespace, loaded, data, cfg) -> dict:
    """Compress a transformer with `cfg` and measure it against the original on the texts
    (analysis.hf.measure_method: the task's fidelity metrics, params, non-zeros, paired latency),
    save it as a Hugging Face folder with --save, record the run."""
    small, result = measure_method(loaded, cfg, data, latency=not args.no_latency)
    result = {"model": loaded.name, "model_kind": loaded.origin, "task": loaded.task, "data": data.name,
              "texts": min(len(data), 256), **result, "simulated": result["report"]["simulated"]}
    artefacts = {"saved": str(save_hf_folder(small, args.save, check=data)), "saved_format": "huggingface"} \
        if args.save else {}
    result.update(artefacts)
    result.update(record(args, cfg.kind, loaded, data, cfg.to_dict(),
                         {k: v for k, v in result.items() if k != "report"}, artefacts))
    return result


def _setup_prune(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--sparsity", type=float, required=True, help="fraction of weights (or channels) removed")
    p.add_argument("--method", choices=["magnitude", "random", "taylor", "channel"], default="magnitude")
    p.add_argument("--scope", choices=["layer", "global"], default="layer")
    p.add_argument("--finetune-epochs", type=int, default=0, help="recovery fine-tuning with masks fixed")


@command("prune", "prune a model (unstructured or whole channels)", _setup_prune)
def cmd_prune(args: argparse.Namespace) -> dict:
    loaded, data = load_inputs(args, text=True)
    if loaded.is_text:
        _not_on_text(**{f"--method {args.method}": args.method != "magnitude", "--scope global": args.scope != "layer",
                        "--finetune-epochs": bool(args.finetune_epochs)})
        return finish_text(args, loaded, data, HFPruneConfig(sparsity=args.sparsity, **layer_selection(args)))
    if args.method == "channel":
        cfg = pruning.ChannelPruneConfig(sparsity=args.sparsity, **layer_selection(args))
        model, report = pruning.channel_prune(loaded.model, cfg, data, measure_latency=not args.no_latency)
    else:
        cfg = pruning.PruneConfig(method=args.method, sparsity=args.sparsity, scope=args.scope, seed=args.seed,
                                  **layer_selection(args))
        model, report = pruning.prune(loaded.model, cfg, data)
    if args.finetune_epochs:
        model, ft = pruning.finetune(model, data, TrainConfig(epochs=args.finetune_epochs, seed=args.seed))
        report.metrics.update({f"finetune_{k}": v for k, v in ft.metrics.items()})
    if args.method != "channel":
        model = fold_masks_(model)
    return finish(args, loaded, data, model, report)


def _setup_quantize(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--bits", type=int, default=8, help="weight bit-width, 2-16 (simulated)")
    p.add_argument("--granularity", choices=["tensor", "channel"], default="channel")
    p.add_argument("--asymmetric", action="store_true")
    p.add_argument("--activations", action="store_true", help="also quantize each layer's input")
    p.add_argument("--calibration", choices=["minmax", "percentile", "mse"], default="minmax")
    p.add_argument("--int8", action="store_true",
                   help="real int8 (dynamic quantization kernels for Linear layers) instead of simulation")


def _int8_macs(model, data) -> dict:
    """{int8_macs: MACs per sample run by int8 kernels, int8_macs_share: their share of all MACs,
    int8_macs_by_layer: {module: int8 MACs}}, at batch 1 of the scored split like `evaluate`."""
    example = data.scored.X[:1]
    total = count_macs(model, example)[0]
    int8, by_module = count_macs(model, example, kernels="int8")
    return {"int8_macs": int8, "int8_macs_share": int8 / total if total else 0.0,
            "int8_macs_by_layer": {n: by_module.get(n, 0) for n in int8_layers(model)}}


@command("quantize", "quantize a model (simulated 2-16 bits, or real int8)", _setup_quantize)
def cmd_quantize(args: argparse.Namespace) -> dict:
    loaded, data = load_inputs(args, text=True)
    if loaded.is_text:
        _not_on_text(**{"--asymmetric": args.asymmetric, "--activations": args.activations,
                        f"--calibration {args.calibration}": args.calibration != "minmax"})
        cfg = Int8Config(**layer_selection(args)) if args.int8 else \
            HFQuantConfig(bits=args.bits, granularity=args.granularity, **layer_selection(args))
        return finish_text(args, loaded, data, cfg)
    if args.int8:
        model, report = quantize_int8(loaded.model, **layer_selection(args), measure=not args.no_latency,
                                      input_shape=data.input_shape)
        report.metrics.update(_int8_macs(model, data))
        save_path, args.save = args.save, None
        result = finish(args, loaded, data, model, report)
        if save_path:
            import torch

            torch.jit.save(torch.jit.script(model), save_path)
            result.update({"saved": save_path, "saved_format": "torchscript (real int8 kernels)"})
        return result
    cfg = quantization.QuantConfig(bits=args.bits, granularity=args.granularity, symmetric=not args.asymmetric,
                                   activations=args.activations, calibration=args.calibration, **layer_selection(args))
    model, report = quantization.quantize(loaded.model, cfg, data)
    return finish(args, loaded, data, model, report)


def _setup_lowrank(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--rank-ratio", type=float, required=True, help="kept rank / full rank, in (0, 1]")
    p.add_argument("--include-conv", action="store_true", help="also factorise Conv2d layers")


@command("lowrank", "replace layers by truncated-SVD factors", _setup_lowrank)
def cmd_lowrank(args: argparse.Namespace) -> dict:
    loaded, data = load_inputs(args, text=True)
    if loaded.is_text:
        _not_on_text(**{"--include-conv": args.include_conv})
        return finish_text(args, loaded, data, HFLowRankConfig(rank_ratio=args.rank_ratio, **layer_selection(args)))
    cfg = lowrank.LowRankConfig(rank_ratio=args.rank_ratio, include_conv=args.include_conv, **layer_selection(args))
    model, report = lowrank.lowrank(loaded.model, cfg, data, measure_latency=not args.no_latency)
    return finish(args, loaded, data, model, report)


def _setup_distill(p: argparse.ArgumentParser) -> None:
    add_model_args(p, "--teacher")
    p.add_argument("--student", required=True, help="demo:NAME or a model file")
    p.add_argument("--fresh", action="store_true", help="start the student from random weights (built-ins only)")
    add_data_args(p)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--hard-labels", action="store_true", help="train on the teacher's argmax instead")
    p.add_argument("--baseline", action="store_true", help="also train the student alone on the same budget")
    p.add_argument("--save", default=None)
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    add_record_args(p)


@command("distill", "distil a teacher into a student", _setup_distill)
def cmd_distill(args: argparse.Namespace) -> dict:
    teacher, data = load_inputs(args, "teacher")
    if args.fresh:
        student = check_model(zoo.build(zoo.parse_demo_name(args.student)), data)
    else:
        student = load_model(args.student, data=data).model
    cfg = distillation.DistillConfig(temperature=args.temperature, alpha=args.alpha, epochs=args.epochs,
                                     lr=args.lr, hard_labels=args.hard_labels, seed=args.seed)
    model, report = distillation.distill(teacher.model, student, data, cfg, baseline=args.baseline)
    return finish(args, teacher, data, model, report, baseline_model=teacher.model)


def _setup_evaluate(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    add_device_arg(p)
    add_record_args(p)


@command("models", "list the built-in models", lambda p: p.add_argument("--json", action="store_true"))
def cmd_models(args: argparse.Namespace) -> list:
    return list(zoo_summary().values())


@command("evaluate", "evaluate a model on a data set (or a transformer on texts)", _setup_evaluate)
def cmd_evaluate(args: argparse.Namespace) -> dict:
    loaded, data = load_inputs(args, text=True)
    row = evaluate_model(loaded, data, latency=not args.no_latency, device=args.device)
    result = {"model": loaded.name, "model_kind": loaded.origin, "data": data.name, "device": args.device, **row}
    if not loaded.is_text:
        result.update(data_row(loaded.model, data, row["accuracy"]))
    result.update(record(args, "evaluate", loaded, data, {"kind": "evaluate"}, result, {}))
    return result
