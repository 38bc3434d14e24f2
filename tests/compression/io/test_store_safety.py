"""Stores are never harmed: a file that is not a healthy store of ours is refused before anything
is written (bytes, mtime and journal mode unchanged), a hand-damaged row is refused or skipped
with a note, `report` never writes over the store or a file that is not its own, and a recorded
run's JSON says which store it went to."""
from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
from pathlib import Path

import pytest

from compression.io.store import Store
from compression.io.store_schema import DamagedRunError, StoreError
from tests.compression.cli.clitools import assert_one_line_error, run_cli


@pytest.fixture(autouse=True)
def _no_home(tmp_path, monkeypatch):
    """Nothing here may reach the user's home: HOME and XDG_DATA_HOME point into tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / "data"))


def state(path: Path) -> tuple[str, int]:
    """(sha256 of the bytes, mtime in ns) of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def journal_mode(path: Path) -> str:
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path) -> Store:
    """A real store with three runs, its WAL checkpointed into the file (no -wal left)."""
    s = Store(tmp_path / "mine.sqlite")
    for i in range(3):
        s.record("prune", ("demo:mlp", "f" * 16), ("digits", "d" * 16), {"kind": "prune", "i": i},
                 {"accuracy": 0.5 + i / 10, "payload": [i] * 2000})
    assert not (tmp_path / "mine.sqlite-wal").exists()
    return s


# ---- opening: refused files are left as they were -------------------------------------------

def sqlite_file(path: Path, *statements: str) -> Path:
    """A plain SQLite database (another program's) made with `statements`."""
    with sqlite3.connect(path) as conn:
        for sql in statements:
            conn.execute(sql)
    conn.close()
    return path


def test_foreign_sqlite_database_is_refused_untouched(tmp_path, capsys):
    path = sqlite_file(tmp_path / "contacts.sqlite", "CREATE TABLE people (name TEXT, phone TEXT)",
                       "INSERT INTO people VALUES ('Ada', '123')")
    before = state(path)
    assert journal_mode(path) == "delete"
    with pytest.raises(StoreError, match="not an experiment store.*people"):
        Store(path)
    assert_one_line_error(*run_cli(capsys, "runs", "--store", str(path)), "not an experiment store")
    assert_one_line_error(*run_cli(capsys, "evaluate", "--model", "demo:mlp", "--no-latency", "--store", str(path)),
                          "not an experiment store")
    assert state(path) == before and journal_mode(path) == "delete"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("contacts")) == ["contacts.sqlite"]


def test_tables_of_our_names_without_our_columns_are_refused(tmp_path):
    path = sqlite_file(tmp_path / "lookalike.sqlite", "CREATE TABLE meta (key TEXT, value TEXT)",
                       "CREATE TABLE runs (id TEXT, score REAL)")
    before = state(path)
    with pytest.raises(StoreError, match="runs table lacks column"):
        Store(path)
    assert state(path) == before and journal_mode(path) == "delete"


def test_random_bytes_are_refused_untouched(tmp_path, capsys):
    path = tmp_path / "noise.sqlite"
    path.write_bytes(random.Random(0).randbytes(10_000))
    before = state(path)
    with pytest.raises(StoreError, match="not a SQLite database"):
        Store(path)
    assert_one_line_error(*run_cli(capsys, "runs", "--store", str(path), "--json"), "not a SQLite database")
    assert state(path) == before


@pytest.mark.parametrize("keep", [50, 100, 4096, 0.5, -4096])
def test_truncated_store_is_refused_untouched(store, tmp_path, capsys, keep):
    data = store.path.read_bytes()
    cut = tmp_path / "cut.sqlite"
    cut.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
    before = state(cut)
    with pytest.raises(StoreError, match="truncated|damaged"):
        Store(cut)
    assert_one_line_error(*run_cli(capsys, "report", "--store", str(cut), "--out", str(tmp_path / "r.html")),
                          "cannot be used")
    assert state(cut) == before and not (tmp_path / "r.html").exists()


def test_newer_schema_is_refused_before_any_write(store):
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    before = state(store.path)
    with pytest.raises(StoreError, match="schema version 99, newer"):
        Store(store.path)
    assert state(store.path) == before


def test_empty_files_become_stores_only_when_named_like_one(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.touch()
    before = state(notes)
    with pytest.raises(StoreError, match="empty file"):
        Store(notes)
    assert state(notes) == before and notes.stat().st_size == 0
    blank = tmp_path / "blank.sqlite"
    blank.touch()
    assert len(Store(blank)) == 0 and Store(blank).record("evaluate", "m", "d", {}, {})


def test_a_healthy_store_opens_and_a_new_path_is_created(store, tmp_path):
    assert len(Store(store.path)) == 3 and Store(store.path).schema_version == 1
    fresh = tmp_path / "a" / "b" / "new.sqlite"
    assert len(Store(fresh)) == 0
    assert [p.name for p in fresh.parent.iterdir()] == ["new.sqlite"]  # no temporary file left
    assert journal_mode(fresh) == "wal"


def test_a_store_deleted_meanwhile_is_not_recreated_empty(store):
    store.path.unlink()
    with pytest.raises(StoreError):
        store.record("evaluate", "m", "d", {}, {})
    assert not store.path.exists()


# ---- damaged rows ----------------------------------------------------------------------------

def damage(store: Store) -> tuple[str, str]:
    """Break two runs by hand: one's metrics is not JSON, one's config is a JSON list."""
    runs = sorted(store.list(), key=lambda r: r.seq)
    conn = sqlite3.connect(store.path)
    try:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("UPDATE runs SET metrics = '{broken' WHERE id = ?", (runs[0].id,))
        conn.execute("UPDATE runs SET config = '[1, 2]' WHERE id = ?", (runs[1].id,))
        conn.commit()
    finally:
        conn.close()
    return runs[0].id, runs[1].id


def test_damaged_rows_are_refused_by_get_and_skipped_by_listing(store):
    bad_json, not_object = damage(store)
    good = [r.id for r in Store(store.path).list()]
    assert len(good) == 1 and bad_json not in good and not_object not in good
    runs, notes = store.scan()
    assert [r.id for r in runs] == good and len(notes) == 2
    assert any(bad_json in n and "metrics column is not valid JSON" in n for n in notes)
    assert any(not_object in n and "config column holds a JSON list" in n for n in notes)
    assert store.dataframe()["id"].tolist() == good
    with pytest.raises(DamagedRunError, match="damaged") as caught:
        store.get(bad_json[:8])
    assert caught.value.run_id == bad_json and len(str(caught.value).splitlines()) == 1


def test_cli_on_damaged_rows_gives_notes_or_one_line(store, tmp_path, capsys):
    bad_json, _ = damage(store)
    code, out, err = run_cli(capsys, "runs", "--store", str(store.path), "--json")
    assert code == 0 and len(json.loads(out)) == 1
    assert [line.split(":")[0] for line in err.strip().splitlines()] == ["note", "note"]
    assert "Traceback" not in err
    page = tmp_path / "report.html"
    code, out, err = run_cli(capsys, "report", "--store", str(store.path), "--out", str(page), "--json")
    result = json.loads(out)
    assert code == 0 and result["runs"] == 1 and len(result["skipped"]) == 2 and page.exists()
    assert_one_line_error(*run_cli(capsys, "report", "--store", str(store.path), "--runs", bad_json,
                                   "--out", str(page)), "is damaged")


# ---- report outputs --------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["absolute", "relative", "symlink", "hardlink", "wal"])
def test_report_never_writes_over_the_store(store, tmp_path, monkeypatch, capsys, spelling):
    monkeypatch.chdir(tmp_path)
    target = {"absolute": str(store.path), "relative": "./sub/../mine.sqlite", "wal": "mine.sqlite-wal",
              "symlink": "link.html", "hardlink": "hard.html"}[spelling]
    (tmp_path / "sub").mkdir()
    if spelling == "symlink":
        os.symlink(store.path, tmp_path / "link.html")
    if spelling == "hardlink":
        os.link(store.path, tmp_path / "hard.html")
    before = state(store.path)
    for flags in ([], ["--force"]):
        assert_one_line_error(*run_cli(capsys, "report", "--store", str(store.path), "--out", target, *flags),
                              "is the experiment store")
        assert_one_line_error(*run_cli(capsys, "report", "--store", str(store.path), "--out", "ok.html",
                                       "--csv", target, *flags), "is the experiment store")
    assert state(store.path) == before and len(Store(store.path)) == 3
    if spelling == "wal":
        assert not (tmp_path / "mine.sqlite-wal").exists()  # nothing was written there either


def test_report_overwrites_only_its_own_files_unless_forced(store, tmp_path, capsys):
    other, table = tmp_path / "notes.html", tmp_path / "data.csv"
    other.write_text("my own notes, not a report\n")
    table.write_text("a,b\n1,2\n")
    before = state(other), state(table)
    args = ["report", "--store", str(store.path)]
    assert_one_line_error(*run_cli(capsys, *args, "--out", str(other)), "add --force")
    assert_one_line_error(*run_cli(capsys, *args, "--out", str(tmp_path / "r.html"), "--csv", str(table)),
                          "not a runs CSV")
    assert (state(other), state(table)) == before and not (tmp_path / "r.html").exists()
    page, runs_csv = tmp_path / "r.html", tmp_path / "runs.csv"
    for _ in range(2):  # our own report and CSV are replaced without --force
        code, _, err = run_cli(capsys, *args, "--out", str(page), "--csv", str(runs_csv))
        assert code == 0 and err == ""
    (tmp_path / "empty.html").touch()
    assert run_cli(capsys, *args, "--out", str(tmp_path / "empty.html"))[0] == 0
    assert run_cli(capsys, *args, "--out", str(other), "--csv", str(table), "--force")[0] == 0
    assert other.read_text().startswith("<!DOCTYPE html>") and table.read_text().startswith("id,created,kind")


# ---- where a run went ------------------------------------------------------------------------

def test_recorded_json_says_which_store(tmp_path, capsys):
    path = tmp_path / "chosen.sqlite"
    code, out, _ = run_cli(capsys, "evaluate", "--model", "demo:mlp", "--json", "--no-latency", "--store", str(path))
    result = json.loads(out)
    assert code == 0 and result["store"] == str(path) and Store(path).get(result["run_id"]).kind == "evaluate"
    assert "store" not in Store(path).get(result["run_id"]).metrics
    code, out, _ = run_cli(capsys, "prune", "--model", "demo:mlp", "--sparsity", "0.5", "--json", "--no-latency",
                           "--store", str(path))
    assert code == 0 and json.loads(out)["store"] == str(path) and len(Store(path)) == 2


def test_recording_is_the_default_and_no_store_records_nothing(tmp_path, capsys):
    default = Path(os.environ["COMPRESSION_STORE"])  # the per-test store of conftest.py
    code, out, _ = run_cli(capsys, "evaluate", "--model", "demo:mlp", "--json", "--no-latency")
    result = json.loads(out)
    assert code == 0 and result["store"] == str(default) and len(Store(default)) == 1
    code, out, _ = run_cli(capsys, "evaluate", "--model", "demo:mlp", "--json", "--no-latency", "--no-store")
    result = json.loads(out)
    assert code == 0 and "store" not in result and "run_id" not in result and len(Store(default)) == 1
    assert not (tmp_path / "home").exists()
