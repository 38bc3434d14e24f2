"""Background jobs: results, errors and the stop flag."""
from __future__ import annotations

import threading
import time

from compression.core.jobs import start_job


def _wait(job, timeout=10.0):
    deadline = time.time() + timeout
    while not job.done and time.time() < deadline:
        time.sleep(0.01)
    assert job.done


def test_job_result_and_progress():
    def work(job):
        for i in range(5):
            job.update((i + 1) / 5, f"step {i}", event={"i": i})
        return 42
    job = start_job("count", work)
    _wait(job)
    assert job.result == 42 and job.fraction == 1.0 and [e["i"] for e in job.snapshot_events()] == list(range(5))


def test_job_error_is_captured():
    def work(job):
        raise ValueError("bad input")
    job = start_job("fail", work)
    _wait(job)
    assert isinstance(job.error, ValueError) and "bad input" in job.message and job.result is None


def test_job_stops_on_flag():
    def work(job):
        n = 0
        while not job.stop.is_set():
            n += 1
            time.sleep(0.005)
        return n
    job = start_job("loop", work)
    time.sleep(0.05)
    job.stop.set()
    _wait(job)
    assert job.result > 0 and job.stopped and job.message == "stopped"


def test_jobs_run_on_the_shared_pool_and_all_finish():
    jobs = [start_job(f"j{i}", lambda job: threading.current_thread().name) for i in range(10)]
    for job in jobs:
        _wait(job)
    assert all(job.result.startswith("job") for job in jobs) and not any(job.running for job in jobs)
