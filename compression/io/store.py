"""The experiment store: every run (an evaluation, a compression, a sweep, a recipe) recorded in
an embedded SQLite file, so results outlive the app session and can be compared, replayed and
reported on.

One run is one row, inserted in a single transaction: a crashed or killed process leaves either
the whole run or nothing, and readers never see half a row. The file is in WAL mode (readers do
not block the writer) with a busy timeout, so several processes and threads may record at once.
Run ids are uuid4 hex strings (unique across processes and machines); `seq`, an autoincrement
integer, orders runs by insertion.

A store never harms a file: an existing file is first checked read-only (SQLite header,
`PRAGMA quick_check`, our tables and columns, the schema version) and refused with a
`StoreError` before anything is written or switched when it is not a healthy store of ours (a
foreign database, a damaged or truncated store, an empty or non-SQLite file). A new store is built
in a temporary file beside its path and linked into place, so no process sees a half-made one. A
row whose JSON was damaged by hand is refused by `Store.get` and skipped, with a note, by
`Store.scan` / `Store.list`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from compression.core.plain import to_json
from compression.io.store_schema import (BUSY_TIMEOUT_MS, DamagedRunError, ELSEWHERE, JSON_COLUMNS, MIGRATIONS,
                                         RUN_COLUMNS, SCHEMA_VERSION, StoreError, check_store_file, create_schema,
                                         newer_schema, sqlite_uri, utc_now)



log = logging.getLogger(__name__)


def default_store_path() -> Path:
    """$COMPRESSION_STORE if set, else the user's data directory ($XDG_DATA_HOME or
    ~/.local/share)/compression-studio/runs.sqlite."""
    env = os.environ.get("COMPRESSION_STORE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "compression-studio" / "runs.sqlite"


class Identity(NamedTuple):
    """Who a run is about: a model's or data set's name and content fingerprint ('' when unknown)."""

    name: str
    fingerprint: str = ""


def identity(value: Any) -> Identity:
    """The Identity of a model or data set given as an Identity or (name, fingerprint) pair, an
    object with .name and .fingerprint (Model, Dataset), a dict with those keys, or a bare name
    (fingerprint ''). A string is always a name: nothing is parsed out of it."""
    if value is None:
        return Identity("")
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return Identity(str(value[0]), str(value[1]))
    if isinstance(value, dict):
        return Identity(str(value.get("name", "")), str(value.get("fingerprint", "")))
    if hasattr(value, "name") and hasattr(value, "fingerprint"):
        return Identity(str(value.name), str(value.fingerprint))
    return Identity(str(value))


def query_identity(text: str) -> Identity:
    """A model filter as a user types it (`runs --model`): 'name:fingerprint' when it ends in a
    16-hex-digit fingerprint, 'x:x' for a built-in recorded under its own name, else a bare name."""
    half = len(text) // 2
    if len(text) % 2 == 1 and text[half] == ":" and text[:half] == text[half + 1:]:
        return Identity(text[:half], text[half + 1:])
    name, sep, tail = text.rpartition(":")
    if sep and len(tail) == 16 and all(c in "0123456789abcdef" for c in tail):
        return Identity(name, tail)
    return Identity(text)


@dataclass(frozen=True)
class Run:
    """One recorded run. `config`, `metrics` and `artefacts` are plain JSON values."""

    id: str
    created: str
    kind: str
    model: str
    data: str
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    artefacts: dict = field(default_factory=dict)
    status: str = "done"
    model_fingerprint: str = ""
    data_fingerprint: str = ""
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "kind": self.kind, "status": self.status,
                "model": self.model, "model_fingerprint": self.model_fingerprint, "data": self.data,
                "data_fingerprint": self.data_fingerprint, "config": self.config,
                "metrics": self.metrics, "artefacts": self.artefacts}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Run":
        """A Run from `to_dict()` output (e.g. the CLI's `runs --json`)."""
        return cls(id=str(d.get("id", "")), created=str(d.get("created", "")), kind=str(d.get("kind", "")),
                   model=str(d.get("model", "")), data=str(d.get("data", "")), config=d.get("config") or {},
                   metrics=d.get("metrics") or {}, artefacts=d.get("artefacts") or {},
                   status=str(d.get("status", "done")), model_fingerprint=str(d.get("model_fingerprint", "")),
                   data_fingerprint=str(d.get("data_fingerprint", "")), seq=int(d.get("seq", 0) or 0))


def _json_object(row: sqlite3.Row, column: str, path: Path) -> dict:
    """The JSON object in `column` of a runs row; DamagedRunError if it is not valid JSON or not
    an object (the column's CHECK (json_valid) lets '[1]' or '3' through, and can be bypassed)."""
    text = row[column]
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        problem = f"is not valid JSON ({exc})" if isinstance(exc, ValueError) else f"holds {type(text).__name__}"
    else:
        if isinstance(value, dict):
            return value
        problem = f"holds a JSON {type(value).__name__}, not an object"
    run_id = str(row["id"])
    raise DamagedRunError(f"Run {run_id} in the experiment store {path} is damaged: its {column} column {problem}. "
                          "Delete the run (Runs page, or Store.delete) or restore the store from a backup.", run_id)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _row_to_run(row: sqlite3.Row, path: Path) -> Run:
    """A Run from a runs row; DamagedRunError when its config, metrics or artefacts are not JSON objects."""
    config, metrics, artefacts = (_json_object(row, c, path) for c in JSON_COLUMNS)
    return Run(id=_text(row["id"]), created=_text(row["created"]), kind=_text(row["kind"]),
               model=_text(row["model"]), data=_text(row["data"]), config=config, metrics=metrics,
               artefacts=artefacts, status=_text(row["status"]), model_fingerprint=_text(row["model_fingerprint"]),
               data_fingerprint=_text(row["data_fingerprint"]), seq=int(row["seq"] or 0))


def _write_new_store(path: Path) -> None:
    """Create a complete, empty store (WAL mode, schema, version) at the new file `path`."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        create_schema(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()  # the last connection checkpoints: the whole store is in `path`, no -wal left


def _link_new(tmp: Path, path: Path) -> None:
    """Put the new store `tmp` at `path` unless a file is there by now (another process made it)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return  # checked like any existing file
    except OSError:  # no hard links on this file system: replace, only if still absent
        if not os.path.lexists(path):
            os.replace(tmp, path)


class Store:
    """An experiment store in one SQLite file (created, with its folders, on first use).

    Safe to share between threads and processes: every call opens its own connection. An existing
    file is checked read-only first (`check_store_file`) and left untouched when refused.
    Raises:
        StoreError: the file is not a healthy store of ours (not SQLite, empty, damaged, a foreign
            database), or was written by a newer version.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        if not os.path.lexists(self.path):
            self._create()
        self._retry(lambda: check_store_file(self.path))  # read-only: nothing written before this passes
        self._retry(self._init_schema)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # ---- connections and schema ------------------------------------------------------------

    def _create(self) -> None:
        """Build a new store in a temporary file beside `path`, then hard-link it into place: no
        other process sees a half-made store, and a file that appeared meanwhile is never replaced."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot create the store's folder {self.path.parent}: {exc.strerror}.") from None
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.new")
        try:
            _write_new_store(tmp)  # a private file: no other process can lock it
            _link_new(tmp, self.path)
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise StoreError(f"Cannot create the experiment store {self.path}: {reason}.") from None
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                leftover.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:  # mode=rw: a store deleted meanwhile is an error, not silently recreated as an empty file
            conn = sqlite3.connect(sqlite_uri(self.path, "rw"), uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the experiment store {self.path}: {exc}.") from None
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            yield conn
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise StoreError(f"The experiment store {self.path} cannot be used ({exc}). If it is not a "
                             "store, point --store / $COMPRESSION_STORE at another file.") from None
        finally:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT); rolled back on any error."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _retry(self, fn: Callable[[], Any], attempts: int = 20) -> Any:
        """Run fn, retrying on 'database is locked' (which WAL's busy timeout does not cover
        when switching journal modes or upgrading a read lock)."""
        for attempt in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise StoreError(f"The experiment store {self.path} stayed locked: {exc}.") from None
                time.sleep(0.05 * (attempt + 1))
        return None

    def _init_schema(self) -> None:
        """After `check_store_file` passed: switch the store to WAL if an older version left it in
        another journal mode, then set up a blank file's tables or migrate to SCHEMA_VERSION."""
        with self._connect() as conn:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
        with self._transaction() as conn:
            version = self._schema_version(conn)
            if version is None:
                create_schema(conn)
            else:
                self._migrate(conn, version)

    def _schema_version(self, conn: sqlite3.Connection) -> int | None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            if tables - {"sqlite_sequence"}:  # became foreign since it was checked
                raise StoreError(f"{self.path} is a SQLite database but not an experiment store "
                                 f"(tables: {', '.join(sorted(tables))}); {ELSEWHERE}.")
            return None
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            return int(row[0]) if row else None
        except ValueError:
            raise StoreError(f"{self.path} has an unreadable schema version {row[0]!r}.") from None

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise newer_schema(self.path, version)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(target),))

    @property
    def schema_version(self) -> int:
        with self._connect() as conn:
            return int(self._schema_version(conn) or 0)

    # ---- writing -----------------------------------------------------------------------------

    def record(self, kind: str, model: Any, data: Any, config: dict, metrics: dict,
               artefacts: dict | None = None, status: str = "done") -> str:
        """Insert one run in a single transaction and return its id (uuid4 hex).

        Args:
            model, data: an Identity or (name, fingerprint) pair, an object with .name and
                .fingerprint (Model, Dataset), or a bare name; see `identity`.
            config, metrics, artefacts: JSON-able dicts (tensors, numpy values and configs with
                to_dict() are converted; NaN becomes null).
        """
        if not isinstance(kind, str) or not kind:
            raise StoreError(f"A run needs a non-empty kind string; got {kind!r}.")
        run_id = uuid.uuid4().hex
        (model_name, model_fp), (data_name, data_fp) = identity(model), identity(data)
        row = (run_id, utc_now(), kind, status, model_name, model_fp, data_name, data_fp,
               to_json(config or {}), to_json(metrics or {}), to_json(artefacts or {}))

        def insert() -> None:
            with self._transaction() as conn:
                conn.execute(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES "
                             f"({', '.join('?' * len(RUN_COLUMNS))})", row)

        self._retry(insert)
        return run_id

    def delete(self, ids: str | Iterable[str]) -> int:
        """Delete runs by id (one transaction); returns how many were deleted."""
        keys = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        if not keys:
            return 0

        def remove() -> int:
            with self._transaction() as conn:
                return conn.execute(f"DELETE FROM runs WHERE id IN ({', '.join('?' * len(keys))})", keys).rowcount

        return self._retry(remove)

    # ---- reading -----------------------------------------------------------------------------

    def get(self, run_id: str) -> Run:
        """The run with this id, or with this unique id prefix (at least 4 characters)."""
        run_id = str(run_id).strip()
        rows = self._query("SELECT * FROM runs WHERE id = ?", [run_id])
        if not rows and len(run_id) >= 4 and run_id.isalnum():
            rows = self._query("SELECT * FROM runs WHERE id LIKE ? || '%' LIMIT 2", [run_id])
        if len(rows) != 1:
            what = "matches several runs" if rows else "is not in the store"
            raise StoreError(f"Run {run_id!r} {what} ({self.path}); list runs with `python -m compression runs`.")
        return _row_to_run(rows[0], self.path)  # DamagedRunError if its JSON was damaged

    def list(self, kind: str | None = None, model: str | None = None, limit: int | None = None) -> list[Run]:
        """Runs, newest first. `model` matches the model's name, fingerprint or 'name:fingerprint'.
        Damaged rows are skipped with a logged warning (`scan` also returns why)."""
        runs, notes = self.scan(kind=kind, model=model, limit=limit)
        for note in notes:
            log.warning("%s", note)
        return runs

    def scan(self, kind: str | None = None, model: str | None = None,
             limit: int | None = None) -> tuple[list[Run], list[str]]:
        """Like `list`, and the damaged rows it skipped: (runs newest first, one note per skipped
        run saying which run and column, and what to do). `limit` counts rows, skipped ones too."""
        runs, notes = [], []
        for row in self._query(*self._select(kind, model, limit)):
            try:
                runs.append(_row_to_run(row, self.path))
            except DamagedRunError as exc:
                notes.append(f"skipped: {exc}")
        return runs, notes

    def _select(self, kind: str | None, model: str | None, limit: int | None) -> tuple[str, list]:
        where, params = [], []
        if kind:
            where.append("kind = ?")
            params.append(kind)
        if model:
            name, fp = query_identity(str(model))
            where.append("(model = ? OR model_fingerprint = ? OR (model = ? AND model_fingerprint = ?))")
            params += [str(model), str(model), name, fp]
        sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return sql, params

    def __len__(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM runs", [])[0][0])

    def _query(self, sql: str, params: list) -> list[sqlite3.Row]:
        def read() -> list[sqlite3.Row]:
            with self._connect() as conn:
                return conn.execute(sql, params).fetchall()

        return self._retry(read)

    def dataframe(self, kind: str | None = None, model: str | None = None, limit: int | None = None):
        """The runs as a pandas DataFrame, newest first: one row per run with its fields and its
        metrics flattened into columns (see `runs_frame`)."""
        return runs_frame(self.list(kind=kind, model=model, limit=limit))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}, 'c': 2} -> {'a.b': 1, 'c': 2}; lists stay as values."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def runs_frame(runs: Iterable[Run | dict]):
    """Runs as a DataFrame: the run fields (config and artefacts as dicts), then one column per
    metric, flattened ('baseline.accuracy'); a metric whose name is a run field is prefixed
    'metrics.' (e.g. 'metrics.model'). Ready for the Runs page and trade-off plots."""
    import pandas as pd

    rows = []
    for run in runs:
        run = run if isinstance(run, Run) else Run.from_dict(run)
        row = run.to_dict()
        for key, value in flatten(run.metrics).items():
            row[f"metrics.{key}" if key in row else key] = value
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    metric_cols = [c for c in frame.columns if c not in RUN_COLUMNS]
    return frame[[c for c in RUN_COLUMNS if c != "metrics"] + metric_cols + ["metrics"]]
