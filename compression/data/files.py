"""User data files, read safely: .npz arrays, a .zip of class folders of images, or a .csv.

The format is detected from the content; the file name is only used as a display name.
Nothing is ever written to disk: archives are read entry by entry into memory, bounded by the
sizes their headers declare and by `Limits`. Every failure raises `DataError` saying what is
wrong and how to fix it.

Formats:
- .npz (numpy.savez): arrays `X` (N, D), (N, H, W) or (N, C, H, W) and `y` (N,), plus an
  optional string array `class_names`. Loaded with allow_pickle=False; other arrays are ignored.
- .zip: one folder per class holding PNG/JPEG images of one size (class names = folder names,
  sorted). One enclosing folder (data/cat/1.png) is allowed; deeper nesting is an error.
  Hidden files, __MACOSX/ and non-image files (README, Thumbs.db) are ignored. Images become
  (N, 1, H, W) if every image is grayscale, else (N, 3, H, W), with values 0..255 (16-bit
  grayscale is scaled down to 0..255, alpha channels are dropped).
- .csv (UTF-8; ',', ';' or tab): feature columns then an integer label column; a header row
  is detected when its first row is not all numbers.

Every data set must then have numeric, finite X; whole-number labels 0..K-1 (K <= MAX_CLASSES,
or K = len(class_names)); at least 2 classes present; and at least MIN_SAMPLES samples and
MIN_PER_CLASS per present class on average, so the 60/20/20 stratified split can give every
split every class.
"""
from __future__ import annotations

import csv
import io
import math
import re
import zipfile
from pathlib import Path

import numpy as np

from compression.core.errors import DataError
from compression.data.datasets import Dataset, Preprocess, check_split, load_digits, make_dataset, parse_preprocess
from compression.data.images import load_image_zip
from compression.data.safe_zip import (EntryReader, FORMATS_HELP, Limits, MAX_BYTES, MAX_ENTRIES, MAX_RATIO,
                                       MAX_UNCOMPRESSED, Parsed, check_archive, human_bytes)

MAX_CLASSES = 1000               # labels must be below this unless class_names are given
MIN_SAMPLES = 10
MIN_PER_CLASS = 5
_OTHER_FORMATS = (  # (magic prefixes, what the file is, how to fix it)
    ((b"\x93NUMPY",), "a single .npy array, which holds no labels",
     "save X and y together with numpy.savez(path, X=X, y=y)"),
    ((b"\x89PNG", b"\xff\xd8\xff"), "a single image",
     "put the images in one folder per class and zip the folders"),
    ((b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"),
     "a Python pickle (e.g. from torch.save), which is refused for safety",
     "save plain arrays with numpy.savez(path, X=X, y=y)"),
    ((b"\x1f\x8b", b"BZh", b"7z\xbc\xaf", b"Rar!"), "a gzip/bzip2/7z/rar archive",
     "pack the data as a .zip archive instead"),
    ((b"\xff\xfe", b"\xfe\xff"), "UTF-16 text", "re-save the CSV with UTF-8 encoding"),
)


# ----------------------------------------------------------------------------- public API

def load_data_file(path: Path | str, *, max_bytes: int = MAX_BYTES, max_entries: int = MAX_ENTRIES,
                   max_uncompressed: int = MAX_UNCOMPRESSED, max_ratio: float = MAX_RATIO,
                   preprocess: str | Preprocess | None = None, split: str | None = None) -> Dataset:
    """Load a data file (.npz, .zip of class folders, or .csv), detecting its format by content.

    Its values reach the model as stored unless `preprocess` says otherwise (see
    compression.data.datasets.parse_preprocess); numbers are scored on the whole file unless `split`
    names a part of the seeded 60/20/20 split ('test' for held-out numbers).

    Raises:
        DataError: the file is missing, too large, of an unknown format, or its data is invalid.
    """
    limits = Limits(max_bytes, max_entries, max_uncompressed, max_ratio)
    path = Path(path)
    if not path.exists():
        raise DataError(f"No file at {str(path)!r}: check the path.")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a folder: zip its class folders into one .zip and load that.")
    try:
        _check_size(path.stat().st_size, limits)
        with path.open("rb") as fh:
            payload = fh.read(limits.max_bytes + 1)
    except OSError as exc:
        raise DataError(f"Cannot read {str(path)!r} ({exc.strerror or exc}): check its permissions.") from exc
    return _load_payload(display_name(path.name), payload, limits, preprocess, split)


def load_data_bytes(filename: str, payload: bytes, *, max_bytes: int = MAX_BYTES,
                    max_entries: int = MAX_ENTRIES, max_uncompressed: int = MAX_UNCOMPRESSED,
                    max_ratio: float = MAX_RATIO, preprocess: str | Preprocess | None = None,
                    split: str | None = None) -> Dataset:
    """Load an uploaded data file from its bytes; `filename` only names the data set. The
    options are load_data_file's."""
    limits = Limits(max_bytes, max_entries, max_uncompressed, max_ratio)
    return _load_payload(display_name(filename), bytes(payload), limits, preprocess, split)


def display_name(filename: str) -> str:
    """A safe display name from a user's file name: no folders, no suffix, no odd characters."""
    base = re.split(r"[\\/]", str(filename))[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    cleaned = re.sub(r"[^\w.\- ]+", "_", stem).strip(" ._-")[:64]
    return cleaned or "upload"


# ----------------------------------------------------------------------------- dispatch

def _load_payload(name: str, payload: bytes, limits: Limits, preprocess: str | Preprocess | None,
                  split: str | None) -> Dataset:
    preprocess, split = parse_preprocess(preprocess, "none"), check_split(split or "all")
    _check_size(len(payload), limits)
    if _detect_format(payload) == "zip":
        parsed = _load_zip(payload, limits)
    else:
        parsed = _load_csv(payload)
    return _build(name, parsed, preprocess, split)


def _check_size(size: int, limits: Limits) -> None:
    if size == 0:
        raise DataError(f"The file is empty (0 bytes): {FORMATS_HELP}")
    if size > limits.max_bytes:
        raise DataError(f"The file is {human_bytes(size)}, over the limit of {human_bytes(limits.max_bytes)}: "
                        "use a smaller data set (fewer or smaller samples).")


def _looks_binary(head: bytes) -> bool:
    controls = sum(byte < 32 and byte not in (9, 10, 12, 13) for byte in head)
    return b"\x00" in head or controls > 0.05 * len(head)


def _detect_format(payload: bytes) -> str:
    """'zip' or 'csv', from the content; other recognisable formats raise a pointed DataError."""
    if payload.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    for magics, what, fix in _OTHER_FORMATS:
        if payload.startswith(magics):
            raise DataError(f"This file is {what}, not a data set: {fix}.")
    if _looks_binary(payload[:4096]):
        raise DataError(f"Unrecognised file format (binary content that is not a zip archive): {FORMATS_HELP}")
    return "csv"


def _build(name: str, parsed: Parsed, preprocess: Preprocess, split: str) -> Dataset:
    """Validate parsed arrays and split and preprocess them into a Dataset."""
    X, y, num_classes = _validate(parsed)
    names = parsed.class_names or tuple(str(i) for i in range(num_classes))
    meta = {"source": name, **parsed.meta}
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            ds = make_dataset(name, X, y, num_classes=num_classes, class_names=names, meta=meta,
                              preprocess=preprocess, eval_split=split)
    except ValueError as exc:  # defensive: a split the checks did not foresee
        raise DataError(f"The data cannot be split into train/validation/test ({exc}): "
                        "add samples to the smallest classes.") from exc
    if not all(map(math.isfinite, ds.preprocess.mean + ds.preprocess.std)):
        raise DataError("X's values are too large to normalise in float32: rescale the features "
                        "(e.g. divide by their maximum) and save the file again.")
    return ds


# ----------------------------------------------------------------------------- validation

def _validate(parsed: Parsed) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked float32 X, int64 y and the number of classes."""
    X, y = np.asarray(parsed.X), np.asarray(parsed.y)
    if X.ndim == 0 or y.ndim == 0:
        raise DataError("X and y must be arrays with one row per sample, not single values: "
                        "save X of shape (N, ...) and y of shape (N,).")
    if len(X) == 0 or len(y) == 0:
        raise DataError(f"The data set holds no samples (X {X.shape}, y {y.shape}): "
                        f"add at least {MIN_SAMPLES} samples.")
    if len(X) != len(y):
        raise DataError(f"X has {len(X):,} samples but y has {len(y):,} labels: give exactly one label per sample.")
    X = _check_features(X)
    y = _check_label_values(y)
    y, num_classes = _check_classes(y, parsed.class_names)
    return X, y, num_classes


def _check_features(X: np.ndarray) -> np.ndarray:
    """Numeric, finite float32 X of shape (N, D) or (N, C, H, W)."""
    if X.dtype.kind not in "biuf":
        raise DataError(f"X must be numeric, but its dtype is {X.dtype}: convert it, e.g. X.astype('float32').")
    if X.ndim not in (2, 3, 4):
        raise DataError(f"X has shape {X.shape}: use (N, features), (N, H, W) or (N, C, H, W).")
    if X.size == 0:
        raise DataError(f"X has no features (shape {X.shape}): give every sample at least one value.")
    with np.errstate(over="ignore", invalid="ignore"):
        X = X.astype(np.float32)
    if X.ndim == 3:
        X = X[:, None]  # (N, H, W) -> (N, 1, H, W)
    finite = np.isfinite(X)
    if not finite.all():
        n_nan = int(np.count_nonzero(np.isnan(X)))
        n_inf = int(finite.size - np.count_nonzero(finite)) - n_nan
        counts = [f"{n_nan:,} NaN"] * bool(n_nan) + [f"{n_inf:,} infinite (or beyond float32 range)"] * bool(n_inf)
        first = int(np.flatnonzero(~finite.reshape(len(X), -1).all(axis=1))[0])
        raise DataError(f"X holds {' and '.join(counts)} values, first in sample {first}: "
                        "remove those samples or fill the gaps.")
    return X


def _check_label_values(y: np.ndarray) -> np.ndarray:
    """1-D labels that are integers or whole-number floats (not yet range-checked)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = " (they look one-hot: save y.argmax(axis=1))" if y.ndim == 2 else ""
        raise DataError(f"y must be 1-D, one class id per sample, but has shape {y.shape}{hint}.")
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            i = int(np.argmin(whole))
            raise DataError(f"Labels must be whole numbers, but the label of sample {i} is {float(y[i]):g}: "
                            "store class ids 0..K-1 as integers.")
    elif y.dtype.kind not in "biu":
        raise DataError(f"Labels y must be integers, but their dtype is {y.dtype}: "
                        "store class ids 0..K-1, e.g. y.astype('int64').")
    return y


def _check_classes(y: np.ndarray, class_names: tuple[str, ...] | None) -> tuple[np.ndarray, int]:
    """int64 labels in range, at least 2 classes, and enough samples to split."""
    low, high = y.min(), y.max()
    if low < 0:
        raise DataError(f"Labels must be 0 or more, but {int(np.count_nonzero(y < 0)):,} are negative "
                        f"(smallest {low:g}): renumber the classes as 0..K-1.")
    limit = len(class_names) if class_names is not None else MAX_CLASSES
    if high >= limit:
        why = (f"there are {limit} class names" if class_names is not None
               else f"at most {MAX_CLASSES} classes are supported")
        raise DataError(f"Label {high:g} is out of range: {why}, so labels must be 0..{limit - 1}; "
                        "renumber the classes as 0..K-1.")
    y = y.astype(np.int64)
    num_classes = limit if class_names is not None else int(high) + 1
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"Every sample has label {present[0]}: a classifier needs at least 2 classes; "
                        "add samples of another class.")
    need = max(MIN_SAMPLES, MIN_PER_CLASS * len(present))
    if len(y) < need:
        raise DataError(f"Only {len(y)} samples for {len(present)} classes: need at least {need} "
                        f"(at least {MIN_SAMPLES}, and {MIN_PER_CLASS} per class on average) so that "
                        "train, validation and test can each hold every class; add samples.")
    return y, num_classes


# ----------------------------------------------------------------------------- zip archives


def _load_zip(payload: bytes, limits: Limits) -> Parsed:
    """An .npz (every file entry is .npy) or a zip of class folders of images."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(payload))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataError(f"The zip archive is damaged ({exc}): re-create it and try again.") from exc
    with zf:
        infos = zf.infolist()
        check_archive(infos, limits)
        reader = EntryReader(zf, limits)
        files = [info for info in infos if not info.is_dir()]
        if files and all(info.filename.endswith(".npy") for info in files):
            return _load_npz(reader, files)
        return load_image_zip(reader, infos)


# ----------------------------------------------------------------------------- .npz

def _read_npy(reader: EntryReader, info: zipfile.ZipInfo, key: str) -> np.ndarray:
    data = reader.read(info)
    if not data.startswith(b"\x93NUMPY"):
        raise DataError(f"Array {key!r} is not a .npy array: save the file again with numpy.savez.")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"Array {key!r} holds Python objects, which would need unpickling and are refused "
                            "for safety: save plain numeric arrays, e.g. X.astype('float32'), "
                            "y.astype('int64').") from exc
        raise DataError(f"Array {key!r} is damaged ({exc}): save the file again with numpy.savez.") from exc
    except (OSError, EOFError, MemoryError) as exc:
        raise DataError(f"Array {key!r} is damaged ({exc!r}): save the file again with numpy.savez.") from exc


def _names_from_array(names: np.ndarray | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(f"class_names must be a 1-D array of strings, not {names.dtype} of shape {names.shape}: "
                        "save it as np.array(['cat', 'dog']).")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist())


def _load_npz(reader: EntryReader, files: list[zipfile.ZipInfo]) -> Parsed:
    members = {info.filename[:-len(".npy")]: info for info in files}
    missing = [key for key in ("X", "y") if key not in members]
    if missing:
        found = ", ".join(sorted(members))
        raise DataError(f"The .npz has no {' and no '.join(missing)} array (arrays found: {found}): "
                        "save it with numpy.savez(path, X=features, y=labels).")
    arrays = {key: _read_npy(reader, members[key], key)
              for key in ("X", "y", "class_names") if key in members}
    names = _names_from_array(arrays.get("class_names"))
    return Parsed(arrays["X"], arrays["y"], names, {"format": "npz", "arrays": sorted(members)})


# ----------------------------------------------------------------------------- zip of images


# ----------------------------------------------------------------------------- .csv

def _decode_text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = payload[:exc.start].count(b"\n") + 1
        raise DataError(f"The CSV is not UTF-8 text (byte 0x{payload[exc.start]:02X} on line {line}): "
                        "re-save it with UTF-8 encoding (in Excel: 'CSV UTF-8').") from exc


def _sniff_delimiter(text: str) -> str:
    first = next((line for line in text.splitlines() if line.strip()), "")
    return max((",", ";", "\t"), key=first.count)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _csv_rows(text: str) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """The header (or None) and the non-blank data rows with their line numbers."""
    reader = csv.reader(io.StringIO(text), delimiter=_sniff_delimiter(text))
    rows = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DataError(f"The CSV cannot be parsed on line {reader.line_num} ({exc}): check its quoting.") from exc
    if not rows:
        raise DataError(f"The CSV holds no rows: {FORMATS_HELP}")
    width = len(rows[0][1])
    if width < 2:
        raise DataError("The CSV has only one column: give feature columns followed by a label column.")
    for line, row in rows:
        if len(row) != width:
            raise DataError(f"Line {line} has {len(row)} fields but line {rows[0][0]} has {width}: every row "
                            "needs the same number of columns (features, then the label).")
    header = None
    if not all(_is_number(cell) or not cell.strip() for cell in rows[0][1]):
        header, rows = [cell.strip() for cell in rows[0][1]], rows[1:]
    if not rows:
        raise DataError("The CSV has a header row but no data rows: add one row per sample below the header.")
    return header, rows


def _csv_numbers(header: list[str] | None, rows: list[tuple[int, list[str]]]) -> np.ndarray:
    """All cells as float64 (N, columns); the first bad cell is named by line and column."""
    try:
        return np.array([row for _, row in rows], dtype=np.float64)
    except ValueError:
        pass
    for line, row in rows:
        for col, cell in enumerate(row):
            if not _is_number(cell):
                name = f" ({header[col]!r})" if header else ""
                what = "an empty cell" if not cell.strip() else f"the non-numeric value {cell.strip()[:40]!r}"
                hint = ("the label column must hold integer class ids 0..K-1" if col == len(row) - 1
                        else "features must be numbers")
                raise DataError(f"Line {line}, column {col + 1}{name} holds {what}: every cell must be "
                                f"a number ({hint}).")
    return np.array([[float(cell) for cell in row] for _, row in rows], dtype=np.float64)


def _load_csv(payload: bytes) -> Parsed:
    header, rows = _csv_rows(_decode_text(payload))
    values = _csv_numbers(header, rows)  # (N, D + 1)
    return Parsed(values[:, :-1], values[:, -1], None, {"format": "csv", "columns": header})


def load_data(spec: str | Path | None = None, preprocess: str | Preprocess | None = None,
              split: str | None = None) -> Dataset:
    """Load 'digits' (the default) or a user data file (.npz, .zip of class folders, .csv).

    preprocess: None for the source's default ('standardize' for the digits, 'none' for a file:
    its values as stored); split: the samples scored (default 'test' for the digits, 'all' for a file)."""
    if spec is None or str(spec) == "digits":
        return load_digits(preprocess, split)
    return load_data_file(Path(spec), preprocess=preprocess, split=split)
