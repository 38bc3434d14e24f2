"""The experiment store: round trip, filters, schema versions, concurrent writers, and a writer
killed with SIGKILL mid-transaction leaving a sound database of complete runs."""
from __future__ import annotations

import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from compression.io import store as store_mod
from compression.io.store import Identity, Run, Store, default_store_path, identity, query_identity
from compression.io.store_schema import StoreError

ROOT = Path(__file__).resolve().parents[3]

WRITER = """
import sys, time
from compression.io.store import Store
path, name, n, payload, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
store = Store(path)
time.sleep(max(0.0, start - time.time()))  # every writer starts at the same moment
i = 0
while n < 0 or i < n:
    store.record("prune", (f"model-{name}", "fp"), ("digits", "0123456789abcdef"),
                 {"kind": "prune", "sparsity": 0.5, "writer": name, "i": i},
                 {"accuracy": 0.5, "writer": name, "i": i, "payload": [i] * payload})
    i += 1
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _writer(path: Path, name: str, n: int, payload: int = 10, start: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(n), str(payload), str(start)],
                            env=_env(), stderr=subprocess.PIPE)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "sub" / "runs.sqlite")


def test_round_trip(store):
    metrics = {"accuracy": 0.9, "size_bytes": 1234, "loss": math.nan, "baseline": {"accuracy": 0.95},
               "per_class": torch.tensor([0.5, 1.0]), "model": "demo:mlp"}
    run_id = store.record("prune", ("demo:mlp", "demo:mlp"), ("digits", "0123456789abcdef"),
                          {"kind": "prune", "sparsity": 0.5, "layers": ("fc1", "fc2")}, metrics,
                          {"saved": Path("/tmp/x.bin")})
    assert len(run_id) == 32 and int(run_id, 16) >= 0  # uuid4 hex
    run = store.get(run_id)
    assert run.kind == "prune" and run.model == "demo:mlp" and run.model_fingerprint == "demo:mlp"
    assert run.data == "digits" and run.data_fingerprint == "0123456789abcdef"
    assert run.config == {"kind": "prune", "sparsity": 0.5, "layers": ["fc1", "fc2"]}
    assert run.metrics["loss"] is None and run.metrics["per_class"] == [0.5, 1.0]
    assert run.artefacts == {"saved": "/tmp/x.bin"}
    d = run.to_dict()
    assert {"id", "kind", "config", "metrics", "created", "model", "data"} <= set(d)
    assert d["created"].endswith("+00:00")
    assert Run.from_dict(json.loads(json.dumps(d))).to_dict() == d
    assert store.get(run_id[:8]).id == run_id


def test_list_filters_dataframe_and_delete(store):
    ids = [store.record(kind, (model, "f" * 16), ("digits", "d"), {"kind": kind}, {"accuracy": acc, "size_bytes": 10})
           for kind, model, acc in [("prune", "a", 0.1), ("quantize", "a", 0.2), ("prune", "b", 0.3)]]
    assert [r.id for r in store.list()] == ids[::-1]  # newest first
    assert [r.id for r in store.list(kind="prune")] == [ids[2], ids[0]]
    assert [r.id for r in store.list(model="a")] == [ids[1], ids[0]]
    assert [r.id for r in store.list(model="a:" + "f" * 16)] == [ids[1], ids[0]]
    assert [r.id for r in store.list(limit=1)] == [ids[2]]
    df = store.dataframe()
    assert df["accuracy"].tolist() == [0.3, 0.2, 0.1] and "size_bytes" in df and "config" in df
    assert df.loc[0, "config"] == {"kind": "prune"}
    assert store.delete([ids[0], "nope"]) == 1 and len(store) == 2
    with pytest.raises(StoreError, match="not in the store"):
        store.get(ids[0])
    assert store.dataframe(kind="lowrank").empty


def test_identity_forms():
    class Loaded:
        name, fingerprint = "model.pt", "0123456789abcdef"
    assert identity(Loaded()) == Identity("model.pt", "0123456789abcdef")
    assert identity(("x", "y")) == ("x", "y") and identity({"name": "d", "fingerprint": "f"}) == ("d", "f")
    assert identity("model.pt:0123456789abcdef") == ("model.pt:0123456789abcdef", "")  # a string is a name
    assert query_identity("model.pt:0123456789abcdef") == ("model.pt", "0123456789abcdef")
    assert query_identity("demo:mlp:demo:mlp") == ("demo:mlp", "demo:mlp") and query_identity("digits") == ("digits", "")


def test_default_path(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPRESSION_STORE", str(tmp_path / "s.sqlite"))
    assert default_store_path() == tmp_path / "s.sqlite"
    monkeypatch.delenv("COMPRESSION_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_store_path() == tmp_path / "compression-studio" / "runs.sqlite"


def test_refuses_newer_schema_and_foreign_files(tmp_path, store):
    store.record("evaluate", "m", "d", {}, {})
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99, newer"):
        Store(store.path)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not an experiment store"):
        Store(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="cannot be used"):
        Store(junk)


def test_migrates_older_schema(monkeypatch, store):
    run_id = store.record("evaluate", "m", "d", {}, {"accuracy": 0.5})
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(store_mod.MIGRATIONS, 2, "ALTER TABLE runs ADD COLUMN note TEXT")
    upgraded = Store(store.path)
    assert upgraded.schema_version == 2 and upgraded.get(run_id).metrics == {"accuracy": 0.5}


def test_concurrent_processes_and_threads(tmp_path):
    """4 processes and 4 threads, started together, each record 50 runs: all 400 are there."""
    path, n, k = tmp_path / "runs.sqlite", 50, 4
    start = time.time() + 2.0
    procs = [_writer(path, f"p{j}", n, start=start) for j in range(k)]

    def thread_writer(name: str) -> None:
        s = Store(path)
        time.sleep(max(0.0, start - time.time()))
        for i in range(n):
            s.record("quantize", (f"model-{name}", "fp"), "digits", {"writer": name, "i": i},
                     {"writer": name, "i": i})

    threads = [threading.Thread(target=thread_writer, args=(f"t{j}",)) for j in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read().decode()
    runs = Store(path).list()
    assert len(runs) == 2 * k * n == len({r.id for r in runs})
    got = {(r.metrics["writer"], r.metrics["i"]) for r in runs}
    assert got == {(f"{w}{j}", i) for w in "pt" for j in range(k) for i in range(n)}
    writers_in_order = [r.metrics["writer"] for r in sorted(runs, key=lambda r: r.seq)]
    switches = sum(a != b for a, b in zip(writers_in_order, writers_in_order[1:]))
    assert switches > 2 * k  # the writers really interleaved
    for w in [f"{c}{j}" for c in "pt" for j in range(k)]:  # each writer's runs in its own order
        assert [r.metrics["i"] for r in sorted(runs, key=lambda r: r.seq) if r.metrics["writer"] == w] == list(range(n))


def _count(path: Path) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("kill_after", [5, 30])
def test_sigkill_mid_write_leaves_complete_runs(tmp_path, kill_after):
    """Writers record ~120 KB runs in a loop (~5 ms each); each is killed with SIGKILL at a
    random moment. Afterwards the file passes integrity_check and every row is a whole run."""
    path, payload, rounds = tmp_path / "runs.sqlite", 20_000, 4
    rng = random.Random(kill_after)
    for round_ in range(rounds):
        proc = _writer(path, f"r{round_}", -1, payload)
        deadline = time.monotonic() + 30
        while _count(path) < kill_after * (round_ + 1) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.02))
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    store = Store(path)  # opens (and recovers the WAL) after the kills
    rows = _check_sound(path)
    assert len(rows) >= rounds * kill_after
    for row in rows:
        config, metrics = json.loads(row[5]), json.loads(row[6])
        assert config["i"] == metrics["i"]
        assert metrics["payload"] == [metrics["i"]] * payload  # the whole run, not a prefix
    assert len(store.list()) == len(rows)
    store.record("evaluate", "m", "d", {}, {})  # still writable


def test_sigkill_inside_open_transaction_leaves_nothing(tmp_path):
    """A process killed between INSERT and COMMIT: its run is not there, the earlier one is."""
    path = tmp_path / "runs.sqlite"
    kept = Store(path).record("evaluate", "m", "d", {"kept": True}, {})
    script = (
        "import sys, time\n"
        "from compression.io.store import Store\n"
        "s = Store(sys.argv[1])\n"
        "with s._transaction() as conn:\n"
        "    conn.execute('INSERT INTO runs (id, created, kind, config, metrics, artefacts) '\n"
        "                 'VALUES (?, ?, ?, ?, ?, ?)',\n"
        "                 ('torn', 'now', 'prune', '{}', '{\"big\": \"' + 'x' * 500000 + '\"}', '{}'))\n"
        "    print('inside', flush=True)\n"
        "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], env=_env(), stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"inside"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    store = Store(path)
    assert [r.id for r in store.list()] == [kept]
    assert len(_check_sound(path)) == 1


def _check_sound(path: Path) -> list[tuple]:
    """integrity_check passes and every row has its text fields and valid JSON objects."""
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT id, created, kind, model, data, config, metrics, artefacts FROM runs").fetchall()
    for row in rows:
        assert all(isinstance(v, str) and v for v in row[:5])
        assert all(isinstance(json.loads(v), dict) for v in row[5:])
    return rows


def test_cli_runs_lists_the_store(tmp_path, capsys):
    import compression.cli.runs  # noqa: F401  (registers runs, report, run)
    from compression.cli import main

    path = tmp_path / "runs.sqlite"
    ids = [Store(path).record(kind, ("demo:mlp", "demo:mlp"), "digits", {"kind": kind}, {"accuracy": 0.5})
           for kind in ("prune", "quantize")]
    assert main(["runs", "--store", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == ids[::-1]
    assert {"id", "kind", "config", "metrics"} <= set(rows[0]) and rows[0]["config"] == {"kind": "quantize"}
    assert main(["runs", "--store", str(path), "--kind", "prune", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ids[:1]
    assert main(["runs", "--store", str(path)]) == 0
    assert ids[0] in capsys.readouterr().out
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"junk" * 1000)
    assert main(["runs", "--store", str(junk)]) == 2
    assert "cannot be used" in capsys.readouterr().err


def test_store_arg_is_opt_in(tmp_path, monkeypatch):
    import argparse

    from compression.cli.runs import add_store_arg, store_from_args

    monkeypatch.setenv("COMPRESSION_STORE", str(tmp_path / "default.sqlite"))
    parser = argparse.ArgumentParser()
    add_store_arg(parser)
    assert store_from_args(parser.parse_args([])) is None
    assert store_from_args(parser.parse_args([]), default=True).path == tmp_path / "default.sqlite"
    assert store_from_args(parser.parse_args(["--store"])).path == tmp_path / "default.sqlite"
    assert store_from_args(parser.parse_args(["--store", str(tmp_path / "x.sqlite")])).path == tmp_path / "x.sqlite"
