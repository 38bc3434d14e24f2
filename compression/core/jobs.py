"""Background jobs for long work (sweeps, distillation, fine-tuning) on `concurrent.futures`: the
work runs on a shared thread pool, reports progress into its Job and stops when asked. No UI here;
the app polls a Job from a fragment."""
from __future__ import annotations

import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

# One pool for the process: a few jobs at once (each user runs at most one per kind), threads named
# job-N so a stack dump shows what they are.
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="job")


@dataclass
class Job:
    """State of one background job. `events` holds progress payloads (e.g. per-epoch rows)."""

    name: str
    stop: threading.Event = field(default_factory=threading.Event)
    fraction: float = 0.0
    message: str = "starting"
    events: list = field(default_factory=list)
    result: Any = None
    error: BaseException | None = None
    error_trace: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None
    future: Future | None = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def running(self) -> bool:
        return self.future is not None and not self.future.done()

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

    def update(self, fraction: float, message: str = "", event: Any = None) -> None:
        """Called from the worker: progress 0-1, a short message, and an optional event."""
        with self.lock:
            self.fraction = max(0.0, min(1.0, fraction))
            if message:
                self.message = message
            if event is not None:
                self.events.append(event)

    def snapshot_events(self) -> list:
        with self.lock:
            return list(self.events)


def start_job(name: str, work: Callable[[Job], Any]) -> Job:
    """Submit `work(job)` to the job pool; its return value lands in job.result, any exception
    in job.error (never raised into the caller). A job waiting for a free worker can be stopped
    before it starts."""
    job = Job(name)

    def runner() -> None:
        try:
            job.result = work(job)
            job.update(1.0, "stopped" if job.stopped else "done")
        except BaseException as exc:  # reported to the UI, never lost
            job.error, job.error_trace = exc, traceback.format_exc()
            job.message = f"failed: {exc}"
        finally:
            job.finished = time.time()

    job.future = _POOL.submit(runner)
    return job
