"""One latency per result on the compression pages: the paired measurement (here a controlled
clock, so nothing depends on how fast the machine is), at one batch size, 'no measurable change'
inside the noise, and no speed at all for results that run the original's dense fp32 kernels."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import compression.metrics.latency as latency_mod
from compression.metrics.latency import LATENCY_BATCH, Latency

APP = str(Path(__file__).resolve().parents[2] / "app.py")
MLP_PARAMS = 50610  # the default built-in model: anything else timed is the compressed model
ORIGINAL_MS = 2.0


class Clock:
    """measure_latency replaced: the original takes ORIGINAL_MS, the compressed model the next of
    `compressed_ms` in turn. Counts the compressed model's measurements."""

    def __init__(self, compressed_ms):
        self.times, self.calls = itertools.cycle(compressed_ms), 0

    def __call__(self, model, example, repeats=30, **_):
        original = sum(p.numel() for p in model.parameters()) == MLP_PARAMS
        self.calls += not original
        ms = ORIGINAL_MS if original else next(self.times)
        return Latency(ms, 0.01, ms, repeats, int(example.shape[0]), 2, "cpu")


@pytest.fixture
def clock(monkeypatch):
    """Install a Clock (default: the compressed model twice as fast); latencies cached by earlier
    tests are dropped before, and ours after."""
    def install(compressed_ms=(1.0,)) -> Clock:
        fake = Clock(compressed_ms)
        monkeypatch.setattr(latency_mod, "measure_latency", fake)
        return fake
    st.cache_data.clear()
    yield install
    st.cache_data.clear()


def open_page(path: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page(path).run()
    assert not at.exception
    return at


def main_metric(at: AppTest, label: str):
    return next(m for m in at.main.metric if m.label == label)


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.main.caption]


def test_unstructured_pruning_never_shows_a_speed_up(clock):
    fake = clock()
    at = open_page("pages/pruning.py")
    for level in (50, 51):  # neighbouring sparsities: the text and the numbers must agree
        at.slider(key="prune_sparsity").set_value(level).run()
        assert not at.exception and not at.error
        latency = main_metric(at, "Latency")
        assert latency.value == "no speed-up" and "x original" not in (latency.delta or "")
        assert not any("x original" in (m.delta or "") for m in at.main.metric)
        assert any("no speed change expected" in c for c in captions(at))
    assert fake.calls == 0  # nothing was timed for it
    assert at.session_state["working"]["metrics"]["latency_ms"] is None  # and no chart gets a latency


def test_simulated_quantization_shows_no_speed_and_int8_one_batch(clock):
    clock()
    at = open_page("pages/quantization.py")
    at.slider(key="quant_bits").set_value(4).run()
    assert not at.exception and not at.error
    assert main_metric(at, "Latency").value == "no speed-up"
    assert "Simulated: no speed change expected (runs in fp32)" in captions(at)
    int8 = main_metric(at, f"int8 latency (batch {LATENCY_BATCH})")  # the batch of every other latency
    assert int8.value == "1.000 ms" and int8.delta == "0.50x original (0.50x-0.50x)"
    assert any(c.startswith(f"batch {LATENCY_BATCH}, 2 threads") for c in captions(at))
    results = {r["label"]: r["metrics"] for r in at.session_state["results"]}
    assert results["quantize (simulated): 4-bit channel sym minmax"]["latency_ms"] is None
    assert results["quantize: real int8 kernels"]["batch_size"] == LATENCY_BATCH


def test_channel_pruning_metric_and_caption_give_the_same_numbers(clock):
    clock()
    at = open_page("pages/pruning.py")
    at.selectbox(key="prune_method").select("channel").run()
    assert not at.exception and not at.error
    latency = main_metric(at, "Latency")
    assert latency.value == "1.000 ms" and latency.delta == "0.50x original (0.50x-0.50x)"
    assert any(f"batch {LATENCY_BATCH}, 2 threads" in c and "2.000 → 1.000 ms" in c for c in captions(at))
    assert any(c.startswith(f"batch {LATENCY_BATCH}, 2 threads, cpu, 3 paired rounds; original 2.000 ms")
               for c in captions(at))


def test_a_change_within_the_noise_reads_no_measurable_change(clock):
    clock((1.96, 2.06, 2.0))  # per-round ratios 0.98, 1.03, 1.00
    at = open_page("pages/pruning.py")
    at.selectbox(key="prune_method").select("channel").run()
    assert not at.exception
    assert main_metric(at, "Latency").delta == "no measurable change (0.98x-1.03x)"
