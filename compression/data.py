"""Data sets: the bundled digits and validated user files, as seeded train/val/test splits.

Every data set is held as float32 tensors of shape (N, C, H, W) for images or (N, D) for
feature vectors, normalised once with the training split's mean and standard deviation.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from compression.errors import DataError

SPLIT_SEED = 0
VAL_FRACTION = 0.2
TEST_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a data set: inputs X (N, ...) float32 and labels y (N,) int64."""

    X: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            yield self.X[start:start + batch_size], self.y[start:start + batch_size]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set ready for training and evaluation. Treat it as immutable: it is shared."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]
    fingerprint: str
    mean: float = 0.0
    std: float = 1.0
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. (1, 8, 8) for digits."""
        return tuple(self.train.X.shape[1:])

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise DataError(f"Unknown split {name!r}: use 'train', 'val' or 'test'.")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """A short content hash of arrays, used as the data set's identity."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def split_indices(y: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded, stratified train/val/test indices (60/20/20). Classes with too few samples
    for stratification fall back to a plain seeded shuffle."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 3 else None
    rest, test = train_test_split(idx, test_size=TEST_FRACTION, random_state=seed, stratify=stratify)
    rel_val = VAL_FRACTION / (1.0 - TEST_FRACTION)
    strat_rest = y[rest] if stratify is not None else None
    train, val = train_test_split(rest, test_size=rel_val, random_state=seed, stratify=strat_rest)
    return np.sort(train), np.sort(val), np.sort(test)


def make_dataset(name: str, X: np.ndarray, y: np.ndarray, num_classes: int | None = None,
                 class_names: tuple[str, ...] | None = None, seed: int = SPLIT_SEED,
                 meta: dict | None = None,
                 indices: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Dataset:
    """Split, normalise (with train statistics) and wrap validated arrays.

    Args:
        X: float array (N, ...) of finite values.
        y: int array (N,) with labels in [0, num_classes).
        indices: precomputed (train, val, test) indices; default: split_indices(y, seed).
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    num_classes = int(num_classes if num_classes is not None else y.max() + 1)
    train_idx, val_idx, test_idx = indices if indices is not None else split_indices(y, seed)
    mean = float(X[train_idx].mean())
    std = float(X[train_idx].std()) or 1.0
    Xn = (X - mean) / std

    def _split(idx: np.ndarray) -> Split:
        return Split(torch.from_numpy(Xn[idx].copy()), torch.from_numpy(y[idx].copy()))

    names = class_names or tuple(str(i) for i in range(num_classes))
    return Dataset(name=name, train=_split(train_idx), val=_split(val_idx), test=_split(test_idx),
                   num_classes=num_classes, class_names=tuple(names),
                   fingerprint=fingerprint_arrays(X, y), mean=mean, std=std, meta=dict(meta or {}))


_DIGITS: Dataset | None = None
DIGITS_BUNDLE = Path(__file__).resolve().parent.parent / "assets" / "digits.npz"


def bundle_digits(path: Path = DIGITS_BUNDLE) -> Path:
    """Write scikit-learn's digits and the fixed split indices to assets/digits.npz, so the app
    starts without importing scikit-learn (`python -m compression.data`)."""
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    images = bunch.images.astype(np.uint8)  # (N, 8, 8), values 0..16
    train, val, test = split_indices(bunch.target, SPLIT_SEED)
    np.savez_compressed(path, images=images, target=bunch.target.astype(np.int64),
                        train=train, val=val, test=test)
    return path


def load_digits() -> Dataset:
    """scikit-learn's bundled handwritten digits: 1,797 images of 8x8, 10 classes.

    Split 60/20/20, stratified, seed 0: 1,077 train, 360 validation, 360 test. Inputs are
    (N, 1, 8, 8), normalised with the training split's mean and std. Read from
    assets/digits.npz (written by `python -m compression.data` from scikit-learn's copy).
    The result is cached and shared: never modify its tensors in place.
    """
    global _DIGITS
    if _DIGITS is None:
        with np.load(DIGITS_BUNDLE, allow_pickle=False) as z:
            X = z["images"].astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8), values 0..16
            indices = (z["train"], z["val"], z["test"])
            _DIGITS = make_dataset("digits", X, z["target"], num_classes=10, indices=indices,
                                   meta={"source": "scikit-learn load_digits"})
    return _DIGITS


def load_data(spec: str | Path | None = None) -> Dataset:
    """Load 'digits' (the default) or a user data file (.npz, .zip of class folders, .csv)."""
    if spec is None or str(spec) == "digits":
        return load_digits()
    from compression.datafiles import load_data_file

    return load_data_file(Path(spec))


if __name__ == "__main__":
    print(f"wrote {bundle_digits()}")
