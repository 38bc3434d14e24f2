"""Data sets: the bundled digits and validated user files, as seeded train/val/test splits.

Every data set is held as float32 tensors of shape (N, C, H, W) for images or (N, D) for
feature vectors, preprocessed once as its `Preprocess` says: a user's file reaches the model as
stored unless the user asks otherwise ('none'); the bundled digits are standardised with the
training split's mean and standard deviation, as documented. `Dataset.eval_split` names the
samples a number is scored on: the whole file ('all') for a user's file, the held-out 'test'
split for the digits.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from compression.core.errors import ConfigError, DataError

SPLIT_SEED = 0
VAL_FRACTION = 0.2
TEST_FRACTION = 0.2
SPLITS = ("train", "val", "test", "all")


@dataclass(frozen=True)
class Preprocess:
    """What is done to a data file's values before they reach the model: x' = (x - mean) / std.

    kind: 'none' (values as stored), 'standardize' (one mean and std from the training split) or
    'fixed' (the user's mean and std, one value or one per channel: axis 1 of (N, C, ...))."""

    kind: str = "none"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @property
    def spec(self) -> str:
        """The option that gives this preprocessing again: 'none', 'standardize' or 'MEAN,STD'
        ('M1,M2,M3/S1,S2,S3' per channel)."""
        if self.kind != "fixed":
            return self.kind
        if len(self.mean) == 1:
            return f"{self.mean[0]:g},{self.std[0]:g}"
        return ",".join(f"{m:g}" for m in self.mean) + "/" + ",".join(f"{s:g}" for s in self.std)

    @property
    def label(self) -> str:
        """One line for people: what the model sees."""
        if self.kind == "none":
            return "none: values as stored in the file"
        stats = f"mean {self.spec.replace('/', ', std ')}" if self.kind == "fixed" and len(self.mean) > 1 else \
            f"mean {self.mean[0]:.4g}, std {self.std[0]:.4g}"
        return f"standardised with the training split's {stats}" if self.kind == "standardize" else \
            f"(x - mean) / std with {stats}"

    def _shape(self, values: tuple[float, ...], X: np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=np.float32)
        if len(values) == 1:
            return v.reshape(())
        if X.ndim < 2 or X.shape[1] != len(values):
            raise DataError(f"The preprocessing gives {len(values)} values per channel but the data has "
                            f"{X.shape[1] if X.ndim >= 2 else 1} channels (axis 1 of {tuple(X.shape)}): "
                            "give one value or one per channel.")
        return v.reshape((1, len(values)) + (1,) * (X.ndim - 2))

    def apply(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "none":
            return X
        return (X - self._shape(self.mean, X)) / self._shape(self.std, X)

    def invert(self, X: np.ndarray) -> np.ndarray:
        """The values as stored, from preprocessed ones."""
        if self.kind == "none":
            return X
        return X * self._shape(self.std, X) + self._shape(self.mean, X)

    def fitted(self, X_train: np.ndarray) -> Preprocess:
        """'standardize' with its statistics taken from the training samples; others unchanged."""
        if self.kind != "standardize":
            return self
        return Preprocess("standardize", (float(X_train.mean()),), (float(X_train.std()) or 1.0,))


def parse_preprocess(spec: str | Preprocess | None, default: str = "none") -> Preprocess:
    """A Preprocess from 'none', 'standardize', 'MEAN,STD' or 'M1,M2,.../S1,S2,...' (per channel).

    Raises:
        ConfigError: any other text, a non-finite value or a std that is not positive."""
    if isinstance(spec, Preprocess):
        return spec
    text = (default if spec is None else str(spec)).strip().lower()
    if text in ("none", "standardize", "standardise"):
        return Preprocess("standardize" if text.startswith("standardi") else "none")
    how = ("use none, standardize, MEAN,STD (e.g. 0.5,0.25) or per channel M1,M2,M3/S1,S2,S3 "
           "(e.g. 0.5,0.5,0.5/0.25,0.25,0.25)")
    try:
        if "/" in text:
            means, stds = (tuple(float(v) for v in part.split(",")) for part in text.split("/", 1))
        else:
            values = tuple(float(v) for v in text.split(","))
            if len(values) != 2:
                raise ValueError
            means, stds = values[:1], values[1:]
    except ValueError:
        raise ConfigError(f"Unknown preprocessing {spec!r}: {how}.") from None
    if len(means) != len(stds):
        raise ConfigError(f"Preprocessing {spec!r} gives {len(means)} means but {len(stds)} stds: {how}.")
    if not all(np.isfinite(means)) or not all(np.isfinite(stds)) or min(stds) <= 0:
        raise ConfigError(f"Preprocessing {spec!r}: means must be finite and stds positive.")
    return Preprocess("fixed", means, stds)


def check_split(name: str) -> str:
    if name not in SPLITS:
        raise DataError(f"Unknown split {name!r}: use 'all', 'train', 'val' or 'test'.")
    return name


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
    meta: dict = field(default_factory=dict)
    preprocess: Preprocess = Preprocess("standardize")
    eval_split: str = "test"
    whole: Split | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. (1, 8, 8) for digits."""
        return tuple(self.train.X.shape[1:])

    @property
    def mean(self) -> float | np.ndarray:
        """The mean subtracted from the stored values (0 for 'none'); per channel, an array
        that broadcasts against X."""
        p = self.preprocess
        return p.mean[0] if len(p.mean) == 1 else p._shape(p.mean, self.train.X[:1].numpy())

    @property
    def std(self) -> float | np.ndarray:
        p = self.preprocess
        return p.std[0] if len(p.std) == 1 else p._shape(p.std, self.train.X[:1].numpy())

    def split(self, name: str) -> Split:
        if check_split(name) != "all":
            return getattr(self, name)
        if self.whole is not None:
            return self.whole
        return Split(torch.cat([self.train.X, self.val.X, self.test.X]),
                     torch.cat([self.train.y, self.val.y, self.test.y]))

    @property
    def scored(self) -> Split:
        """The samples numbers are scored on (`eval_split`)."""
        return self.split(self.eval_split)

    def scoring_note(self, split: str | None = None) -> str | None:
        """What a reader must know about a score on `split` (default `eval_split`): calibration,
        Taylor scores, fine-tuning and distillation draw from the training split."""
        split = split or self.eval_split
        if split in ("all", "train"):
            return (f"evaluated on samples also used for calibration, scores and fine-tuning "
                    f"({'the whole file' if split == 'all' else 'the training split'}, "
                    f"{len(self.split(split))} samples, includes the {len(self.train)} training samples); "
                    "use --split test for held-out numbers")
        return None

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
                 indices: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                 preprocess: str | Preprocess | None = "standardize", eval_split: str = "test") -> Dataset:
    """Split, preprocess and wrap validated arrays.

    Args:
        X: float array (N, ...) of finite values.
        y: int array (N,) with labels in [0, num_classes).
        indices: precomputed (train, val, test) indices; default: split_indices(y, seed).
        preprocess: see parse_preprocess; 'standardize' takes its statistics from the train split.
        eval_split: the split numbers are scored on ('all' keeps the file's order).
    The fingerprint is the arrays' hash, with the preprocessing and scored split mixed in when
    they are not the defaults ('standardize', 'test'), so a run's identity says what was scored.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    num_classes = int(num_classes if num_classes is not None else y.max() + 1)
    train_idx, val_idx, test_idx = indices if indices is not None else split_indices(y, seed)
    prep = parse_preprocess(preprocess).fitted(X[train_idx])
    with np.errstate(over="ignore", invalid="ignore"):
        Xn = prep.apply(X).astype(np.float32, copy=False)
    if prep.kind != "none" and not np.isfinite(Xn).all():
        raise DataError(f"Preprocessing {prep.spec!r} makes values too large for float32: "
                        "check the mean and std, or rescale the file's values.")

    def _split(idx: np.ndarray | slice) -> Split:
        return Split(torch.from_numpy(Xn[idx].copy()), torch.from_numpy(y[idx].copy()))

    fingerprint = fingerprint_arrays(X, y)
    if (prep.kind, check_split(eval_split)) != ("standardize", "test"):
        fingerprint += "-" + hashlib.sha256(f"{prep.spec}|{eval_split}".encode()).hexdigest()[:8]
    names = class_names or tuple(str(i) for i in range(num_classes))
    return Dataset(name=name, train=_split(train_idx), val=_split(val_idx), test=_split(test_idx),
                   num_classes=num_classes, class_names=tuple(names), fingerprint=fingerprint,
                   meta=dict(meta or {}), preprocess=prep, eval_split=eval_split,
                   whole=_split(slice(None)) if eval_split == "all" else None)


_DIGITS: Dataset | None = None
DIGITS_BUNDLE = Path(__file__).resolve().parents[2] / "assets" / "digits.npz"


def bundle_digits(path: Path = DIGITS_BUNDLE) -> Path:
    """Write scikit-learn's digits and the fixed split indices to assets/digits.npz, so the app
    starts without importing scikit-learn (`python -m compression.data.datasets`)."""
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    images = bunch.images.astype(np.uint8)  # (N, 8, 8), values 0..16
    train, val, test = split_indices(bunch.target, SPLIT_SEED)
    np.savez_compressed(path, images=images, target=bunch.target.astype(np.int64),
                        train=train, val=val, test=test)
    return path


def load_digits(preprocess: str | Preprocess | None = None, split: str | None = None) -> Dataset:
    """scikit-learn's bundled handwritten digits: 1,797 images of 8x8, 10 classes.

    Split 60/20/20, stratified, seed 0: 1,077 train, 360 validation, 360 test. Inputs are
    (N, 1, 8, 8), standardised with the training split's mean and std (the built-in models expect
    that), scored on the test split; `preprocess` and `split` choose otherwise. Read from
    assets/digits.npz (written by `python -m compression.data.datasets` from scikit-learn's copy).
    The default result is cached and shared: never modify its tensors in place.
    """
    global _DIGITS
    default = parse_preprocess(preprocess, "standardize").kind == "standardize" and split in (None, "test")
    if _DIGITS is None or not default:
        with np.load(DIGITS_BUNDLE, allow_pickle=False) as z:
            X = z["images"].astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8), values 0..16
            indices = (z["train"], z["val"], z["test"])
            data = make_dataset("digits", X, z["target"], num_classes=10, indices=indices,
                                meta={"source": "scikit-learn load_digits"},
                                preprocess=parse_preprocess(preprocess, "standardize"), eval_split=split or "test")
        if not default:
            return data
        _DIGITS = data
    return _DIGITS


if __name__ == "__main__":
    print(f"wrote {bundle_digits()}")
