"""The sweep engine's replayed suffixes: a functional ReLU runs in place only where nothing else reads
its input, so the cached values stay intact."""
from __future__ import annotations

import torch

from compression.analysis.perturbations import prune_weight
from compression.analysis.sweep_engine import SweepEngine
from compression.analysis.sweep_setup import eval_set


def test_in_place_relu_only_where_nothing_else_reads_its_input(pretrained, digits):
    engine = SweepEngine(pretrained("resnet"), eval_set(digits), ["stem.0", "layers.0.conv1"])
    relus = [n for name in engine.layers for n in engine.suffixes[name].module.graph.nodes
             if n.op == "call_function" and n.target is torch.nn.functional.relu]
    in_place = [n for n in relus if n.kwargs.get("inplace")]
    assert in_place, "the resnet's suffixes have functional ReLUs to run in place"
    for node in in_place:  # never a cached value, never a value something else reads
        assert node.args[0].op != "placeholder" and len(node.args[0].users) == 1
    before = [{k: v.clone() for k, v in cache.items()} for cache in engine.caches]
    engine.evaluate("stem.0", 0.5, prune_weight)
    assert all(torch.equal(cache[k], before[i][k]) for i, cache in enumerate(engine.caches) for k in cache)
