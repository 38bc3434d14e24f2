"""The run store's schema, its errors, and the read-only health check a file passes before the
store writes anything into it (our tables and columns, schema version, size, integrity)."""
from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from compression.core.errors import CompressionError

BUSY_TIMEOUT_MS = 30_000
SCHEMA_VERSION = 1


RUN_COLUMNS = ("id", "created", "kind", "status", "model", "model_fingerprint", "data",
               "data_fingerprint", "config", "metrics", "artefacts")


_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'done',
    model TEXT NOT NULL DEFAULT '',
    model_fingerprint TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL DEFAULT '',
    data_fingerprint TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL CHECK (json_valid(config)),
    metrics TEXT NOT NULL CHECK (json_valid(metrics)),
    artefacts TEXT NOT NULL CHECK (json_valid(artefacts))
);
CREATE INDEX IF NOT EXISTS runs_kind ON runs (kind);
CREATE INDEX IF NOT EXISTS runs_model ON runs (model);
"""


# version -> SQL that upgrades a store from version-1 to version (none yet: v1 is the first).
MIGRATIONS: dict[int, str] = {}


SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


HEADER_BYTES = 100  # the SQLite file header: page size at 16, change counter 24, pages 28, valid-for 92


OUR_COLUMNS = {"meta": {"key", "value"}, "runs": {"seq", *RUN_COLUMNS}}  # migrations may add more


JSON_COLUMNS = ("config", "metrics", "artefacts")


# quick_check findings about single rows (a hand edit): such rows are skipped or refused when read
ROW_PROBLEMS = ("CHECK constraint failed in runs", "NULL value in runs.")


STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")  # an empty file so named may become a new store


ELSEWHERE = "point --store / $COMPRESSION_STORE at another file (this one was left untouched)"


class StoreError(CompressionError):
    """The store file cannot be opened or used (damaged, foreign, newer schema, unknown run id)."""


class DamagedRunError(StoreError):
    """A row of the store holds JSON that cannot be read (the file was edited by hand)."""

    def __init__(self, message: str, run_id: str):
        super().__init__(message)
        self.run_id = run_id


def sqlite_uri(path: Path, mode: str) -> str:
    """A sqlite3 URI for `path` opened with `mode` ('ro': read-only, 'rw': never creates the file)."""
    return f"{Path(os.path.abspath(path)).as_uri()}?mode={mode}"


def _blank_ok(path: Path, what: str) -> bool:
    """True when `path` is named like a store (*.sqlite, *.sqlite3, *.db), so that a file holding
    nothing yet (`what`: 0 bytes, or a database without tables) is set up as a new store in place;
    StoreError otherwise (an empty report.html or notes.txt is never claimed)."""
    if path.suffix.lower() in STORE_SUFFIXES:
        return True
    raise StoreError(f"The experiment store {path} cannot be used: it is {what}, and its name does not end in "
                     f"{', '.join(STORE_SUFFIXES)}. Delete it to start a new store there, or {ELSEWHERE}.")


def _check_header(path: Path) -> bool:
    """True when `path` is a regular file starting with the SQLite header, False when it is an
    empty file named like a store (to be set up); StoreError otherwise. Reads the 100-byte header."""
    if path.is_dir():
        raise StoreError(f"The experiment store {path} cannot be used: it is a folder. Give a file path, or "
                         f"{ELSEWHERE}.")
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as exc:
        raise StoreError(f"The experiment store {path} cannot be used: it cannot be read ({exc.strerror}).") from None
    if not head:
        return not _blank_ok(path, "an empty file (0 bytes)")
    if not head.startswith(SQLITE_MAGIC):
        raise StoreError(f"The experiment store {path} cannot be used: it is not a SQLite database (it starts "
                         f"with {head[:8]!r}); {ELSEWHERE}.")
    _check_size(path, head)
    return True


def _check_size(path: Path, head: bytes) -> None:
    """StoreError when the file is shorter than its header says (a truncated copy), judged only
    while no -wal / -journal file is beside it (a writer may be growing it then)."""
    if len(head) < HEADER_BYTES:
        raise StoreError(f"The experiment store {path} cannot be used: it is truncated ({len(head)} bytes, shorter "
                         f"than a SQLite header). Restore it from a backup, or {ELSEWHERE}.")
    if any(path.with_name(path.name + s).exists() for s in ("-wal", "-journal")):
        return
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] != head[92:96] or not pages:  # the in-header size is not maintained
        return
    size = path.stat().st_size
    if size < pages * page_size:
        raise StoreError(f"The experiment store {path} cannot be used: it is truncated ({size} of "
                         f"{pages * page_size} bytes). Restore it from a backup, or {ELSEWHERE}.")


def _check_tables(conn: sqlite3.Connection, path: Path) -> bool:
    """True when the database holds our tables with our columns and nothing else, False when it
    holds no table at all and is named like a store (to be set up); StoreError otherwise."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    ours = {t for t in tables if not t.startswith("sqlite_")}
    if not tables:
        return not _blank_ok(path, "a SQLite database without any table")
    if ours != set(OUR_COLUMNS):
        listed = ", ".join(sorted(ours)) or "none"
        raise StoreError(f"{path} is a SQLite database but not an experiment store (tables: {listed}); "
                         f"{ELSEWHERE}.")
    for table, needed in OUR_COLUMNS.items():
        missing = needed - {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if missing:
            raise StoreError(f"{path} is not an experiment store: its {table} table lacks column(s) "
                             f"{', '.join(sorted(missing))}; {ELSEWHERE}.")
    return True


def _check_contents(conn: sqlite3.Connection, path: Path) -> None:
    """StoreError unless SQLite's quick_check passes and, in a database with tables, ours are there
    with a schema version this code understands."""
    problems = [r[0] for r in conn.execute("PRAGMA quick_check") if not str(r[0]).startswith(ROW_PROBLEMS)]
    if problems and problems != ["ok"]:
        raise StoreError(f"The experiment store {path} cannot be used: it is damaged ({problems[0]}). Restore "
                         f"it from a backup, or {ELSEWHERE}.")
    if not _check_tables(conn, path):
        return
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or not str(row[0]).isdigit():
        found = "no schema version" if row is None else f"an unreadable schema version {row[0]!r}"
        raise StoreError(f"The experiment store {path} cannot be used: it has {found}; {ELSEWHERE}.")
    if int(row[0]) > SCHEMA_VERSION:
        raise newer_schema(path, int(row[0]))


def check_store_file(path: Path) -> None:
    """Check, reading only, that the existing file at `path` is a healthy experiment store, or a
    file named like one that holds nothing yet (0 bytes, or a database without tables).

    The file is opened read-only: nothing is written, no pragma switched, so a refused file keeps
    its bytes and mtime. (SQLite may add its -wal/-shm side files beside a WAL-mode database.)
    Raises:
        StoreError: not a SQLite file, damaged, a foreign database, missing our columns, of a newer
            schema version, or empty but not named like a store.
        sqlite3.OperationalError: the database is locked (callers retry).
    """
    if not _check_header(path):
        return
    try:
        conn = sqlite3.connect(sqlite_uri(path, "ro"), uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise StoreError(f"The experiment store {path} cannot be used: it cannot be opened ({exc}).") from None
    try:
        _check_contents(conn, path)
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise
        raise StoreError(f"The experiment store {path} cannot be used: it is damaged or unreadable ({exc}). "
                         f"Restore it from a backup, or {ELSEWHERE}.") from None
    finally:
        conn.close()


def newer_schema(path: Path, version: int) -> StoreError:
    return StoreError(f"The experiment store {path} has schema version {version}, newer than this Compression "
                      f"Studio understands ({SCHEMA_VERSION}). Upgrade Compression Studio, or use another store file.")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def create_schema(conn: sqlite3.Connection) -> None:
    """Our tables, indexes and schema version, inside the caller's write transaction."""
    for statement in _SCHEMA_V1.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('created', ?)", (utc_now(),))
