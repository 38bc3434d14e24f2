"""What every data file reader shares: size limits, the arrays a reader returns before they are
validated, and reading a zip archive safely (entry names, counts, sizes and ratios checked before
and while reading; never past an entry's declared size)."""
from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from compression.core.errors import ConfigError, DataError


MAX_BYTES = 200 * 2**20          # size of the file itself


MAX_ENTRIES = 100_000            # entries in an archive


MAX_UNCOMPRESSED = 2**30         # total unpacked bytes, and decoded image bytes


MAX_RATIO = 200.0                # unpacked / packed size of any one archive entry


_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Size limits for one data file; archives are checked before and while reading."""

    max_bytes: int = MAX_BYTES
    max_entries: int = MAX_ENTRIES
    max_uncompressed: int = MAX_UNCOMPRESSED
    max_ratio: float = MAX_RATIO

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_entries", "max_uncompressed", "max_ratio"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"Limits.{name} must be positive, got {getattr(self, name)!r}.")


@dataclass(frozen=True, eq=False)
class Parsed:
    """Arrays read from a file, before validation."""

    X: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...] | None
    meta: dict = field(default_factory=dict)


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _unsafe_name(name: str) -> bool:
    """Absolute paths, drive letters, '..' components or NUL bytes: refused outright."""
    norm = name.replace("\\", "/")
    return (norm.startswith("/") or bool(re.match(r"^[A-Za-z]:", norm))
            or ".." in norm.split("/") or "\x00" in name)


def check_archive(infos: list[zipfile.ZipInfo], limits: Limits) -> None:
    """Refuse an archive from its headers alone, before any entry is read."""
    if len(infos) > limits.max_entries:
        raise DataError(f"The archive holds {len(infos):,} entries, over the limit of {limits.max_entries:,}: "
                        "split the data set or pack it as an .npz.")
    for info in infos:
        if _unsafe_name(info.filename):
            raise DataError(f"The archive contains an unsafe path {info.filename!r} (absolute, or leading "
                            "outside with '..'), so it is refused: zip the data folder with relative paths only.")
        if info.flag_bits & 0x1:
            raise DataError(f"Entry {info.filename!r} is password-protected: "
                            "re-create the archive without encryption.")
        if info.file_size > limits.max_ratio * info.compress_size:
            ratio = info.file_size / max(info.compress_size, 1)
            raise DataError(f"Entry {info.filename!r} expands {ratio:,.0f}x (limit {limits.max_ratio:g}x), like a "
                            "zip bomb, so the archive is refused: store it with less compression "
                            "(e.g. numpy.savez rather than savez_compressed).")
    total = sum(info.file_size for info in infos)
    if total > limits.max_uncompressed:
        raise DataError(f"The archive would unpack to {human_bytes(total)}, over the limit of "
                        f"{human_bytes(limits.max_uncompressed)}: use a smaller data set.")


class EntryReader:
    """Reads entries of a checked archive into memory, never past their declared sizes or the total limit."""

    def __init__(self, zf: zipfile.ZipFile, limits: Limits) -> None:
        self.zf, self.limits, self.total = zf, limits, 0

    def read(self, info: zipfile.ZipInfo) -> bytes:
        chunks, got = [], 0
        try:
            with self.zf.open(info) as fh:
                while chunk := fh.read(_CHUNK):
                    got += len(chunk)
                    self.total += len(chunk)
                    if got > info.file_size:
                        raise DataError(f"Entry {info.filename!r} holds more data than its header declares, "
                                        "so the archive is refused: re-create it with a standard zip tool.")
                    if self.total > self.limits.max_uncompressed:
                        raise DataError(f"The archive unpacks to more than {human_bytes(self.limits.max_uncompressed)}: "
                                        "use a smaller data set.")
                    chunks.append(chunk)
            if got != info.file_size:
                raise zipfile.BadZipFile(f"{got:,} bytes where the header declares {info.file_size:,}")
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
            raise DataError(f"Entry {info.filename!r} of the zip archive is damaged ({exc}): "
                            "re-create the archive and try again.") from exc
        return b"".join(chunks)


FORMATS_HELP = ("use an .npz made with numpy.savez(path, X=features, y=labels), a .zip with one "
                "folder of PNG/JPEG images per class, or a UTF-8 .csv whose last column is the label.")
