"""Background jobs for long work (sweeps, distillation, fine-tuning): a thread that reports progress
into a Job object and stops when asked. No UI here; the app polls a Job from a fragment."""
from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable


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
    thread: threading.Thread | None = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

    def report(self, fraction: float, message: str = "", event: Any = None) -> None:
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
    """Run `work(job)` in a daemon thread; its return value lands in job.result, any exception
    in job.error (never raised into the caller)."""
    job = Job(name)

    def runner() -> None:
        try:
            job.result = work(job)
            job.report(1.0, "stopped" if job.stopped else "done")
        except BaseException as exc:  # reported to the UI, never lost
            job.error, job.error_trace = exc, traceback.format_exc()
            job.message = f"failed: {exc}"
        finally:
            job.finished = time.time()

    job.thread = threading.Thread(target=runner, name=f"job-{name}", daemon=True)
    job.thread.start()
    return job
