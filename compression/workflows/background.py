"""Bodies of the pages' background jobs (no streamlit): each returns `work(job) -> dict` for a
compression.core.jobs.Job, reporting progress and one event per finished step into the job."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from compression.analysis import sensitivity
from compression.analysis.proxies import proxy_table
from compression.core.modules import copy_model
from compression.methods.distillation import distill
from compression.methods.training import fit
from compression.metrics.evaluate import evaluate


def distill_work(teacher, student, data, cfg, with_baseline: bool = True,
                 evaluate_latency: bool = True, device: str | None = None) -> Callable[[Any], dict]:
    """Distil `student` from `teacher` (then, optionally, train the same student on the labels
    alone with the same budget and seed, as distill(..., baseline=True) does), reporting
    per-batch progress and one event per finished epoch:
    {'run': 'distilled'|'baseline', 'epoch', 'loss', 'train_accuracy', 'val_accuracy', 'val_loss'}.
    Returns {'distilled': {'model', 'metrics', 'report'}, 'baseline': {...} or None,
    'teacher': the teacher's metrics}; a run stopped early still returns its best epoch. Both
    runs train copies: `student` itself is not changed."""
    runs = ["distilled", "baseline"] if with_baseline else ["distilled"]

    def work(job) -> dict:
        teacher_ = copy_model(teacher)  # the caller's model may be in use by the page meanwhile
        job.update(0.0, "measuring the teacher")
        out: dict = {"distilled": None, "baseline": None,
                     "teacher": evaluate(teacher_, data, latency=evaluate_latency, repeats=10).to_dict()}
        for i, run in enumerate(runs):
            if job.stop.is_set():
                break

            def callback(p, run=run, i=i) -> None:
                frac = (i + p.fraction) / len(runs)
                if p.phase == "epoch":
                    job.update(frac, f"{run}: epoch {p.epoch + 1}/{p.epochs}, val acc {p.val_accuracy:.2%}",
                               {"run": run, "epoch": p.epoch + 1, "loss": p.loss,
                                "train_accuracy": p.train_accuracy, "val_accuracy": p.val_accuracy,
                                "val_loss": p.val_loss})
                else:
                    job.update(frac, f"{run}: epoch {p.epoch + 1}/{p.epochs}, batch {p.batch}/{p.batches}")

            if run == "distilled":
                model, report = distill(teacher_, student, data, cfg, callback=callback, stop=job.stop, device=device)
            else:  # what distill(..., baseline=True) trains, but with progress: the same fit, no teacher
                model, history = fit(student, data, cfg.train_config(), callback=callback, stop=job.stop,
                                     device=device)
                report = {"method": "train", "config": cfg.to_dict(), "metrics": {"history": history}}
            metrics = evaluate(model, data, reference=teacher_, latency=evaluate_latency, repeats=10).to_dict()
            out[run] = {"model": model, "metrics": metrics,
                        "report": report.to_dict() if hasattr(report, "to_dict") else report}
        return out

    return work


def sweep_work(model, data, kind: str, levels: Sequence, proxies: bool = True,
               device: str | None = None) -> Callable[[Any], dict]:
    """Per-layer sweep (`kind` 'prune': sparsities, or 'quantize': bit-widths) over `levels` on the
    validation split, then (optionally) the proxy table. Progress goes into the job, one event per
    point (the sweep's row); returns {'sweep', 'proxies', 'correlations'}. A stopped sweep returns
    the rows measured so far and skips the proxies."""
    sweep_fn = sensitivity.prune_sweep if kind == "prune" else sensitivity.quant_sweep
    share = 0.8 if proxies else 1.0

    def work(job) -> dict:
        def callback(done: int, total: int, row: dict) -> None:
            job.update(share * done / max(total, 1), f"{row['layer']} at {row['level']} ({done}/{total})", row)

        sweep = sweep_fn(model, data, list(levels), callback=callback, stop=job.stop, device=device)
        out = {"sweep": sweep, "proxies": None, "correlations": None}
        if proxies and not job.stop.is_set() and len(sweep):
            job.update(share, "computing the proxies (Hessian trace, importance)")

            def on_proxy(done: int, total: int, message: str) -> None:
                job.update(share + (1 - share) * done / max(total, 1), message)

            table, corr = proxy_table(model, data, sweep, callback=on_proxy, stop=job.stop)
            if not table.attrs.get("stopped"):  # a stopped table's NaN correlations are not results
                out["proxies"], out["correlations"] = table, corr
        return out

    return work
