"""The Sensitivity page's proxies phase: compression.analysis.proxies.proxy_table(model, data, sweep)
on the residual CNN (what compression.workflows.background.sweep_work runs after the sweep), with
its defaults (Hutchinson's Hessian trace at rtol 0.05, gradxact and conductance importance),
against the way it ran before: the same estimates one layer after another on torch's intra-op
threads, BatchNorm left unfolded. Both runs take turns (drift hits both alike); medians. Checks the two agree: the
same vectors per layer and traces within float rounding (max |difference| / standard error).
Target: proxies_resnet_s <= 30 s."""
from __future__ import annotations

import statistics

import numpy as np
import pandas as pd
import torch

from benchmarks.common import in_turns, main, print_table
from compression.analysis import hessian as H
from compression.analysis import proxies as P
from compression.analysis.sensitivity import prune_sweep
from compression.data import datasets as data_mod
from compression.models import zoo

TARGET_S = 30.0


def before_hessian(model, data, names: list[str], n_samples: int) -> dict[str, H.HessianEstimate]:
    """The loop hutchinson ran before: BatchNorm unfolded, one layer after another in this thread,
    on torch's intra-op threads (the same vectors and estimator; defaults as proxy_table's)."""
    m, params, _ = H._grad_model(model, names, fold=False)
    grads = torch.autograd.grad(H._batch_loss(m, H._loss_batches(data, "train", 2, 128)), params, create_graph=True)
    budget = H._Budget(n_samples, min(16, n_samples), 0.05)
    return {n: H._layer_estimate(g, p, H._layer_generator(0, n), budget) for n, g, p in zip(names, grads, params)}


def before(model, data, sweep: pd.DataFrame, hessian_samples: int, importance_samples: int) -> pd.DataFrame:
    """What proxy_table computed before, the way it did: `before_hessian`, then both importance
    methods on torch's threads (the columns the comparison needs)."""
    names = list(dict.fromkeys(sweep["layer"]))
    hess = before_hessian(model, data, names, hessian_samples)
    out = pd.DataFrame({"layer": names, "hessian_trace": [hess[n].trace for n in names],
                        "hessian_trace_se": [hess[n].stderr for n in names]})
    out.attrs["hessian_vectors"] = {n: e.n_vectors for n, e in hess.items()}
    for method in P.IMPORTANCE_METHODS:
        scores = P.layer_importance(model, data, method, n=importance_samples, layers=names)
        out[method] = [scores[n] for n in names]
    return out


def run(quick: bool = False, model_name: str | None = None, repeats: int | None = None) -> dict:
    name = model_name or ("lenet5" if quick else "resnet")
    model, data = zoo.load_pretrained(name).eval(), data_mod.load_digits()
    sweep = prune_sweep(model, data, [0.0, 0.5] if quick else [0.0, 0.5, 0.9])
    hs, imp = (8, 8) if quick else (256, 64)
    repeats = repeats or (1 if quick else 3)
    times, outs = in_turns({"before": lambda: before(model, data, sweep, hs, imp),
                          "ours": lambda: P.proxy_table(model, data, sweep, hessian_samples=hs,
                                                        importance_samples=imp)[0]}, repeats)
    old, new = outs["before"], outs["ours"]
    diff_se = np.abs(old["hessian_trace"] - new["hessian_trace"]) / old["hessian_trace_se"]
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"proxies_model": name, "proxies_layers": len(new), "proxies_resnet_s": med["ours"],
           "proxies_before_s": med["before"], "proxies_speedup": med["before"] / med["ours"],
           "proxies_times_s": times, "proxies_workers": torch.get_num_threads(),
           "proxies_intra_op_threads": H.INTRA_OP_THREADS,
           "proxies_hessian_vectors": int(sum(new.attrs["hessian_vectors"].values())),
           "proxies_same_vectors": new.attrs["hessian_vectors"] == old.attrs["hessian_vectors"],
           "proxies_max_trace_diff_se": float(diff_se.max()),
           "proxies_same_importance": bool(np.allclose(old[list(P.IMPORTANCE_METHODS)],
                                                       new[list(P.IMPORTANCE_METHODS)], rtol=1e-4))}
    print_table(f"proxies on {name} ({len(new)} layers, median of {repeats}, target <= {TARGET_S:.0f} s)",
                [{"run": "before (torch threads, BatchNorm unfolded)", "s": med["before"]},
                 {"run": f"proxy_table ({res['proxies_workers']} workers x {H.INTRA_OP_THREADS} thread, "
                         "BatchNorm folded)", "s": med["ours"],
                  "meets": med["ours"] <= TARGET_S, "same vectors": res["proxies_same_vectors"],
                  "max |dtrace|/se": res["proxies_max_trace_diff_se"]}])
    return res


if __name__ == "__main__":
    main(run)
