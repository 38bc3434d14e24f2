"""Each benchmark runs on a tiny budget and returns its keys (no timing asserts)."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks import channel, memory, proxies, slider, speedups, sweep

CHROMIUM = "/usr/bin/chromium"


def test_sweep_quick_identical():
    res = sweep.run(quick=True, model_name="mlp", n_levels=2)
    for key in ("sweep_speedup", "quant_sweep_speedup", "sweep_floor_s", "sweep_naive_s", "sweep_s"):
        assert res[key] > 0
    assert res["sweep_identical"] and res["quant_sweep_identical"]
    assert res["sweep_levels"] == 2


def test_slider_quick():
    res = slider.run(quick=True, models=["mlp"], repeats=1)
    assert set(res["slider_ms"]) == {"mlp"} and res["slider_ms"]["mlp"] > 0


def test_speedups_quick():
    res = speedups.run(quick=True, channel_models=["resnet"], block=False, rounds=1)
    assert res["channel_latency_ratio"]["resnet"] > 0
    assert res["int8_speedup"]["mlp"] > 0
    assert all(v > 0 for v in res["unstructured_latency_ratio"].values())


def test_memory_quick():
    res = memory.run(quick=True, model_name="mlp", n_levels=2)
    assert res["sweep_peak_mb"] >= res["baseline_mb"] > 0
    assert res["model_mb"] > 0 and res["naive_sweep_extra_mb"] >= 0 and res["forward_extra_mb"] >= 0


def test_proxies_quick_agree_with_before():
    res = proxies.run(quick=True, model_name="lenet5")
    assert res["proxies_resnet_s"] > 0 and res["proxies_before_s"] > 0 and res["proxies_layers"] == 5
    assert res["proxies_same_vectors"] and res["proxies_same_importance"]
    assert res["proxies_max_trace_diff_se"] < 0.01


def test_channel_switch_quick():
    res = channel.run(quick=True, models=["mlp"])
    assert res["channel_switch_s"]["mlp"] > 0 and res["channel_curve_untimed_s"]["mlp"] > 0
    assert set(res["channel_switch_steps_s"]["mlp"]) == {"result", "latency", "curve", "copy"}
    assert res["channel_curve_levels"] == 9


def test_transformer_block_is_linear_heavy():
    import torch

    block = speedups.Block()
    assert sum(isinstance(m, torch.nn.Linear) for m in block.modules()) == 6
    assert block(torch.randn(2, 4, 384)).shape == (2, 4, 384)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium not installed")
def test_startup_quick():
    # In a child process: the browser tests hold a session-wide Playwright (its event loop runs in
    # this process), and a second sync Playwright here would refuse to start.
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--json", "--quick", "--only", "startup"],
                         capture_output=True, text=True, check=True, timeout=300)
    res = json.loads(out.stdout)
    assert res["startup_s"] > 0 and res["ref_startup_s"] > 0


def test_cli_prints_one_json_object():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--json", "--quick", "--only", "memory"],
                         capture_output=True, text=True, check=True, timeout=60)
    res = json.loads(out.stdout)
    assert {"sweep_peak_mb", "baseline_mb", "model_mb", "machine"} <= set(res)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium not installed")
def test_browser_timings_quick():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--json", "--quick", "--only", "browser"],
                         capture_output=True, text=True, check=True, timeout=300)
    res = json.loads(out.stdout)
    assert res["new_tab_s"] > 0 and res["ref_new_tab_s"] > 0
    (row,) = res["pruning_slider"]
    assert row["model"] == "demo:mlp" and row["headline_s"] > 0
    assert 0 <= row["values_computed"] <= row["values_passed"] == 10
