"""A zip of class folders of PNG/JPEG images: the plan (classes, entries) read from the archive's
listing, then every image decoded within the limits, as one (N, C, H, W) array."""
from __future__ import annotations

import io
import math
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image

from compression.core.errors import DataError
from compression.data.safe_zip import FORMATS_HELP, EntryReader, Parsed, human_bytes


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"})


@dataclass(frozen=True)
class _ImageEntry:
    path: str
    info: zipfile.ZipInfo
    label: int


def _entry_parts(name: str) -> list[str]:
    return [part for part in name.replace("\\", "/").split("/") if part]


def _scan_entries(infos: list[zipfile.ZipInfo]) -> tuple[list[tuple[list[str], zipfile.ZipInfo]],
                                                         list[list[str]], list[list[str]]]:
    """Split entries into images, folders (dirs and parents of other files) and ignored files."""
    images, folders, ignored = [], [], []
    for info in infos:
        parts = _entry_parts(info.filename)
        if not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
            continue  # macOS metadata, .DS_Store and other hidden files
        if info.is_dir():
            folders.append(parts)
        elif parts[-1].lower().endswith(IMAGE_SUFFIXES):
            images.append((parts, info))
        else:
            ignored.append(parts)
            folders.append(parts[:-1])
    if not images:
        seen = f" (other files found, e.g. {'/'.join(ignored[0])!r})" if ignored else ""
        raise DataError(f"The zip archive holds no PNG/JPEG images{seen}: {FORMATS_HELP}")
    return images, folders, ignored


def _plan_images(infos: list[zipfile.ZipInfo]) -> tuple[tuple[str, ...], list[_ImageEntry], int]:
    """Class names (sorted folder names), labelled image entries, and the count of ignored files."""
    images, folders, ignored = _scan_entries(infos)
    tops = {parts[0] for parts, _ in images}
    root = tops.pop() if len(tops) == 1 and all(len(parts) >= 3 for parts, _ in images) else None

    def strip(parts: list[str]) -> list[str]:  # drop one enclosing folder: data/cat/1.png -> cat/1.png
        return parts[1:] if root is not None and parts and parts[0] == root else parts

    for parts, info in images:
        depth = len(strip(parts))
        if depth == 1:
            raise DataError(f"Image {info.filename!r} is not inside a class folder: put every image in a "
                            "folder named after its class (class/image.png).")
        if depth > 2:
            raise DataError(f"Image {info.filename!r} is in a nested folder: keep images directly inside "
                            "one folder per class (class/image.png), with no sub-folders.")
    classes = sorted({strip(parts)[0] for parts, _ in images})
    empty = sorted({strip(p)[0] for p in folders if strip(p)} - set(classes))
    if empty:
        raise DataError(f"Folder {empty[0]!r} has no PNG/JPEG images, but every top-level folder is a "
                        "class: add images to it or remove it from the archive.")
    if len(classes) < 2:
        raise DataError(f"Found only one class folder ({classes[0]!r}): a classifier needs at least 2; "
                        "add a folder of images for another class.")
    index = {name: i for i, name in enumerate(classes)}
    entries = sorted((_ImageEntry(info.filename, info, index[strip(parts)[0]]) for parts, info in images),
                     key=lambda e: (e.label, e.path))
    return tuple(classes), entries, len(ignored)


def _open_image(blob: bytes, path: str) -> Image.Image:
    """Open (lazily) a PNG or JPEG; oversized images count as unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(blob), formats=("PNG", "JPEG"))
    except Image.UnidentifiedImageError as exc:  # its message holds an object address: say it plainly
        raise DataError(f"Cannot read image {path!r} (not a PNG or JPEG image): re-save it as PNG or JPEG, "
                        "or remove it.") from exc
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        raise DataError(f"Cannot read image {path!r} ({exc}): re-save it as PNG or JPEG, or remove it.") from exc


def _image_pixels(blob: bytes, path: str, gray: bool) -> np.ndarray:
    """Decoded pixels (C, H, W) float32 in 0..255, C = 1 if `gray` else 3."""
    im = _open_image(blob, path)
    try:
        im.load()
        if im.mode.startswith("I"):  # 16-bit grayscale PNG: scale to 0..255
            plane = np.asarray(im, dtype=np.float32)[None] / 257.0  # (1, H, W)
            return plane if gray else np.repeat(plane, 3, axis=0)
        if im.mode in ("P", "PA"):  # palette: expand via RGBA so transparency is handled
            im = im.convert("RGBA")
        arr = np.asarray(im.convert("L" if gray else "RGB"), dtype=np.float32)  # (H, W) or (H, W, 3)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"Cannot read image {path!r} ({exc}): re-save it as PNG or JPEG, or remove it.") from exc
    return arr[None] if gray else arr.transpose(2, 0, 1)


def _decode_images(reader: EntryReader, entries: list[_ImageEntry]) -> np.ndarray:
    """All images as one (N, C, H, W) float32 array; they must share one size."""
    blobs = [reader.read(entry.info) for entry in entries]
    heads = [_open_image(blob, entry.path) for blob, entry in zip(blobs, entries)]
    first = heads[0].size
    for entry, im in zip(entries, heads):
        if im.size != first:
            raise DataError(f"Images differ in size: {entries[0].path!r} is {first[0]}x{first[1]} but "
                            f"{entry.path!r} is {im.size[0]}x{im.size[1]} (width x height): "
                            "resize all images to one size.")
    gray = all(im.mode in GRAY_MODES for im in heads)
    shape = (len(entries), 1 if gray else 3, first[1], first[0])  # (N, C, H, W)
    need = 4 * math.prod(shape)
    if need > reader.limits.max_uncompressed:
        raise DataError(f"The decoded images would take {human_bytes(need)}, over the limit of "
                        f"{human_bytes(reader.limits.max_uncompressed)}: use fewer or smaller images.")
    X = np.empty(shape, dtype=np.float32)
    for i, (blob, entry) in enumerate(zip(blobs, entries)):
        X[i] = _image_pixels(blob, entry.path, gray)
    return X


def load_image_zip(reader: EntryReader, infos: list[zipfile.ZipInfo]) -> Parsed:
    classes, entries, n_ignored = _plan_images(infos)
    X = _decode_images(reader, entries)  # (N, C, H, W)
    y = np.array([entry.label for entry in entries], dtype=np.int64)
    meta = {"format": "image-zip", "image_mode": "L" if X.shape[1] == 1 else "RGB", "ignored_files": n_ignored}
    return Parsed(X, y, classes, meta)
