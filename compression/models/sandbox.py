"""A user's program (TorchScript or torch.export, alone or inside a compact file) is first opened and
run on its sample batch in a child process that can be killed: it must load within LOAD_LIMIT_S,
return from the forward within the forward limit and stay under a memory cap (RLIMIT_AS). Only
then is it opened in this process. A hang or a memory bomb thus costs a killed child, never the
app or the command.

Protocol: the parent writes the program's bytes (and the sample batch, as safetensors) to a
private temporary folder and runs `python -m compression.models.loading --sandbox FD FMT PROGRAM CAP [SAMPLE]`;
the child writes one JSON object per line to the pipe FD (not stdout, which the program's own
`print` reaches): {"loaded": s}, then {"ran": s} or {"forward_error": message}, then
{"peak_kib": n}; or {"error": message} for a refusal.
"""
from __future__ import annotations

import json
import os
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from compression.core.devices import available_memory_bytes
from compression.core.errors import CompressionError, ModelLoadError

LOAD_LIMIT_S = 90.0        # seconds the child may take to import torch and open the program
FORWARD_LIMIT_S = 20.0     # seconds the forward on the sample batch may take ($COMPRESSION_FORWARD_LIMIT_S)
MIN_MEMORY_CAP = 3 << 30   # the child's address-space cap is at least this (torch alone maps ~0.7 GiB)
MAX_MEMORY_CAP = 16 << 30
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def forward_limit_s() -> float:
    return float(os.environ.get("COMPRESSION_FORWARD_LIMIT_S", FORWARD_LIMIT_S))


def memory_cap_bytes() -> int:
    """Half the memory available now, within [MIN_MEMORY_CAP, MAX_MEMORY_CAP]."""
    free = available_memory_bytes()
    return MAX_MEMORY_CAP if free is None else max(MIN_MEMORY_CAP, min(MAX_MEMORY_CAP, free // 2))


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _next(lines: queue.Queue, deadline: float) -> dict | None:
    """The child's next JSON line; None when it closed stdout; TimeoutError past the deadline."""
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError from None
        if line is None:
            return None
        try:
            msg = json.loads(line)
        except ValueError:
            continue  # a library's stray print
        if isinstance(msg, dict):
            return msg


def check_program(fmt: str, payload: bytes, sample: torch.Tensor | None) -> dict:
    """Open the program and run it on `sample` in a child process. Returns {"load_s", "forward_s",
    "peak_kib", "forward_error"}; raises ModelLoadError when the child refuses it, hangs, runs out
    of its memory cap or dies."""
    limit, cap = forward_limit_s(), memory_cap_bytes()
    what = f"the model on {len(sample)} samples" if sample is not None else "the model"
    with tempfile.TemporaryDirectory(prefix="cstudio-sandbox-") as tmp:
        program = Path(tmp) / "program.bin"
        program.write_bytes(payload)
        read_fd, write_fd = os.pipe()
        args = [sys.executable, "-m", "compression.models.loading", "--sandbox", str(write_fd), fmt, str(program), str(cap)]
        if sample is not None:
            save_file({"x": sample.detach().contiguous().cpu()}, Path(tmp) / "sample.safetensors")
            args.append(str(Path(tmp) / "sample.safetensors"))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])}
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, cwd=tmp, env=env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(os.fdopen(read_fd, encoding="utf-8"), lines), daemon=True).start()
        report: dict = {"forward_error": None}
        phase = "load"
        try:
            deadline = time.monotonic() + LOAD_LIMIT_S
            while (msg := _next(lines, deadline)) is not None:
                if "error" in msg:
                    raise ModelLoadError(str(msg["error"])[:400])
                if "loaded" in msg:
                    report["load_s"] = msg["loaded"]
                    phase, deadline = "forward", time.monotonic() + limit
                elif "ran" in msg or "forward_error" in msg:
                    report["forward_s"] = msg.get("ran")
                    report["forward_error"] = msg.get("forward_error")
                    phase, deadline = "done", time.monotonic() + 10
                elif "peak_kib" in msg:
                    report["peak_kib"] = msg["peak_kib"]
        except TimeoutError:
            raise ModelLoadError(
                f"Refused: {what} did not return within {limit:g} s (it was stopped)." if phase == "forward" else
                f"Refused: the program could not be opened within {LOAD_LIMIT_S:g} s (it was stopped).") from None
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    if "peak_kib" not in report:
        died = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited ({proc.returncode})"
        raise ModelLoadError(f"Refused: {what} {died} while being checked in a separate process, "
                             f"probably by running out of its memory cap of {cap / 2**30:.1f} GiB.")
    return report


_CHANNEL: list = []  # the child's pipe to the parent


def _emit(**msg) -> None:
    _CHANNEL[0].write(json.dumps(msg) + "\n")
    _CHANNEL[0].flush()


def _peak_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def serve(argv: list[str], load: Callable[[str, bytes], nn.Module]) -> int:
    """The child's side: FD FMT PROGRAM CAP [SAMPLE]; `load` is compression.models.loading.load_program."""
    _CHANNEL.append(os.fdopen(int(argv[0]), "w", encoding="utf-8"))
    fmt, program, cap = argv[1], Path(argv[2]), int(argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        start = time.perf_counter()
        model = load(fmt, program.read_bytes())
        _emit(loaded=round(time.perf_counter() - start, 3))
        if len(argv) > 4:
            x = load_file(argv[4])["x"]
            start = time.perf_counter()
            try:
                with torch.inference_mode():
                    model.eval()
                    model(x)
                _emit(ran=round(time.perf_counter() - start, 3))
            except MemoryError:
                raise
            except Exception as exc:  # the parent's own check explains a mismatch with its hints
                if "can't allocate memory" in str(exc) or "not enough memory" in str(exc):
                    raise MemoryError from None
                _emit(forward_error=str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
    except CompressionError as exc:
        _emit(error=str(exc))
        return 2
    except MemoryError:
        _emit(error=f"Refused: the model needs more than its memory cap of {cap / 2**30:.1f} GiB on the check "
                    "batch (a size bomb or a model too large for this machine).")
        return 2
    except Exception as exc:
        _emit(error=f"The program could not be loaded: {str(exc).splitlines()[0][:200] if str(exc) else exc!r}")
        return 2
    _emit(peak_kib=_peak_kib())
    return 0
