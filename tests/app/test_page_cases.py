"""AppTest: the Case studies page opens with every case's published table, runs a case in the
background on the quick budget, draws its figures and measured table, and records the run."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from compression.io.store import Store

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "cases.py")


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def open_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def wait_for_job(at: AppTest, key: str, budget_s: float = 60.0) -> None:
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline and not at.session_state[key].done:
        time.sleep(0.3)
    job = at.session_state[key]
    assert job.done, "job did not finish in time"
    assert job.error is None, job.error_trace
    at.run()
    assert not at.exception, at.exception


def test_page_shows_every_case_with_its_published_numbers():
    at = open_page()
    assert len(at.tabs) == 5
    assert len(at.dataframe) == 5                                  # a published table per case
    assert len(at.get("plotly_chart")) == 0                        # nothing measured yet
    assert any("Press Run" in c.value for c in at.caption)


def test_run_a_case_quick_records_and_draws():
    at = open_page()
    at.checkbox(key="cases_quick").check().run()
    at.button(key="case_run_layer-sensitivity").click().run()
    assert not at.exception
    wait_for_job(at, "case_job_layer-sensitivity")
    result = at.session_state["case_job_layer-sensitivity"].result
    assert result.quick and result.allocated_accuracy >= result.uniform_accuracy
    assert len(at.get("plotly_chart")) == 2                        # sensitivity bars, allocation bars
    assert len(at.dataframe) == 6                                  # + the measured table
    assert any("Shape:" in m.value and "✓" in m.value for m in at.markdown)
    runs = Store().list(kind="case")
    assert len(runs) == 1 and runs[0].config["case"] == "layer-sensitivity"
    at.run()                                                       # a rerun does not record again
    assert len(Store().list(kind="case")) == 1


def test_stop_ends_a_running_case():
    at = open_page()
    at.button(key="case_run_distillation").click().run()           # full budget: far longer than the test waits
    at.button(key="case_job_distillation_stop").click().run()
    wait_for_job(at, "case_job_distillation", budget_s=60)
    job = at.session_state["case_job_distillation"]
    assert job.message == "stopped" and job.result.stopped
    assert any("Stopped early" in w.value for w in at.warning)
