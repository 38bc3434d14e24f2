"""AppTest, issue 21 item 5: a page says when a result is not comparable, bigger or behind, and why:
a sweep stopped after one layer names no most/least sensitive layer; a real int8 model that is
larger than fp32 says how many layers ran on int8 kernels; a distilled student below the student
trained alone gets the epochs hint (and only then)."""
from __future__ import annotations

import threading
import time

from compression.analysis.sensitivity import prune_sweep
from compression.core.jobs import Job
from compression.data.datasets import load_digits
from compression.models import zoo
from tests.app.test_pages_analysis import metrics, open_page, pct, wait_for_job


def _stopped_sweep_job() -> Job:
    """A finished sweep job whose sweep was stopped by its Stop flag after the first point."""
    stop = threading.Event()
    sweep = prune_sweep(zoo.load_pretrained("mlp").eval(), load_digits(), [0.5],
                        callback=lambda done, total, row: stop.set(), stop=stop)
    job = Job("Sensitivity sweep", stop=stop, result={"sweep": sweep, "proxies": None, "correlations": None})
    job.finished = time.time()
    return job


def test_a_sweep_stopped_after_one_layer_names_no_most_or_least_sensitive_layer():
    job = _stopped_sweep_job()
    assert set(job.result["sweep"]["layer"]) == {"fc1"}
    setup = {"kind": "prune", "levels": [0.5], "model": "demo:mlp", "data": load_digits().fingerprint}
    at = open_page("pages/sensitivity.py", sens_job=job, sens_setup=setup)
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("Only 1 of 3 layers measured before the stop") for w in warnings), warnings
    assert "Most sensitive layer" not in metrics(at) and "Least sensitive layer" not in metrics(at)


def test_a_real_int8_model_larger_than_fp32_says_why():
    at = open_page("pages/model.py")
    at.selectbox(key="model_source").select("demo:mobilenet").run()
    at.switch_page("pages/quantization.py").run()
    assert not at.exception and not at.error
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("Not smaller: only 1 of") and "than the fp32 model" in w for w in warnings), warnings
    assert metrics(at)["Layers on int8 kernels"][0] == "1"


def test_the_epochs_hint_appears_exactly_when_distillation_loses_to_the_student_alone():
    at = open_page("pages/distillation.py")
    at.number_input(key="kd_epochs").set_value(1).run()
    at.button(key="kd_train").click().run()
    wait_for_job(at, "kd_job", budget_s=120)
    m = metrics(at)
    distilled, alone = pct(m["Distilled student accuracy"][0]), pct(m["Student without teacher"][0])
    hinted = any("usually needs more epochs" in w.value for w in at.warning)
    assert hinted == (distilled < alone), (distilled, alone)
    if hinted:
        assert any("after 1 epoch:" in w.value for w in at.warning)
