"""Text data for transformers: a .txt file (one text per line) or a .csv with a `text` column and
an optional integer `label` column; the bundled sample sentences by default. Validated, with a
DataError that says what is wrong and how to fix it."""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from compression.core.errors import DataError

SAMPLE_PATH = Path(__file__).resolve().parents[2] / "assets" / "sample_sentences.txt"
MAX_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class TextData:
    """Texts, optional integer labels (one per text), a name and a content fingerprint."""

    texts: tuple[str, ...]
    labels: tuple[int, ...] | None
    name: str
    fingerprint: str

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True, eq=False)
class Encoded:
    """Tokenized texts: input_ids and attention_mask (N, T) int64; labels (N,) or None."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def batches(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            yield self.input_ids[start:start + batch_size], self.attention_mask[start:start + batch_size]


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _decode(name: str, raw: bytes) -> str:
    if len(raw) > MAX_BYTES:
        raise DataError(f"{name} is {len(raw) / 2**20:.0f} MiB; text files up to {MAX_BYTES // 2**20} MiB are read.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name} is not UTF-8 text (byte {exc.start}): save it as UTF-8.") from None


def _parse_csv(name: str, text: str) -> tuple[list[str], list[int] | None]:
    rows = list(csv.DictReader(io.StringIO(text)))
    columns = [c.strip().lower() for c in (rows[0].keys() if rows else next(csv.reader(io.StringIO(text)), []))]
    if "text" not in columns:
        raise DataError(f"{name} has no 'text' column (columns: {', '.join(columns) or 'none'}). "
                        "Name the column holding the texts 'text'.")
    rows = [{k.strip().lower(): (v or "").strip() for k, v in r.items() if k is not None} for r in rows]
    rows = [r for r in rows if r.get("text")]
    texts = [r["text"] for r in rows]
    if "label" not in columns:
        return texts, None
    labels = []
    for line, r in enumerate(rows, start=2):
        try:
            labels.append(int(r.get("label", "")))
        except ValueError:
            raise DataError(f"{name}: label {r.get('label')!r} of text {line - 1} is not an integer; labels must "
                            "be class numbers 0, 1, 2, ...") from None
    if min(labels, default=0) < 0:
        raise DataError(f"{name}: labels must be non-negative class numbers.")
    return texts, labels


def load_text_bytes(name: str, raw: bytes) -> TextData:
    """TextData from a file's bytes: .csv by suffix, otherwise one text per non-blank line."""
    text = _decode(name, raw)
    if not text.strip():
        raise DataError(f"{name} is empty: give one text per line (.txt) or a 'text' column (.csv).")
    if name.lower().endswith(".csv"):
        texts, labels = _parse_csv(name, text)
    else:
        texts, labels = [t.strip() for t in text.splitlines() if t.strip()], None
    if not texts:
        raise DataError(f"{name} holds no text: give one text per line (.txt) or a 'text' column (.csv).")
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return TextData(tuple(texts), tuple(labels) if labels is not None else None, Path(name).name, digest)


def load_text_data(path: str | Path | None = None) -> TextData:
    """The texts of a .txt or .csv file; the bundled sample sentences when `path` is None."""
    path = Path(path) if path is not None else SAMPLE_PATH
    if not path.is_file():
        raise DataError(f"No text file at {path}.")
    data = load_text_bytes(path.name, path.read_bytes())
    return TextData(data.texts, data.labels, "sample sentences" if path == SAMPLE_PATH else data.name,
                    data.fingerprint)


def encode(tokenizer, data: TextData, max_length: int = 64, max_texts: int | None = 256) -> Encoded:
    """Tokenize the first `max_texts` texts, padded to the longest (at most `max_length` tokens)."""
    texts = list(data.texts[:max_texts] if max_texts else data.texts)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    labels = None
    if data.labels is not None:
        labels = torch.tensor(data.labels[:len(texts)], dtype=torch.int64)
    return Encoded(batch["input_ids"].long(), batch["attention_mask"].long(), labels)
