"""User data files: each format loads with the right shapes, and every bad input raises a
DataError that says what is wrong. Every file is generated here, in tmp_path."""
from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compression.data.datasets import load_digits
from compression.data.files import load_data
from compression.data.files import MIN_SAMPLES, display_name, load_data_bytes, load_data_file
from compression.data.safe_zip import Limits
from compression.core.errors import ConfigError, DataError

# ----------------------------------------------------------------------------- helpers


def blobs(n_classes: int = 3, per_class: int = 20, dim: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded features (N, dim) with labels (N,) 0..n_classes-1."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    X = rng.normal(size=(len(y), dim)) + y[:, None]
    return X, y


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def zip_bytes(entries: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def image_bytes(mode: str, size: tuple[int, int] = (8, 6), color: object = 0, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt)
    return buf.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def image_zip(per_class: int = 6, size: tuple[int, int] = (8, 6), classes: tuple[str, ...] = ("cat", "dog"),
              extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Entries of a zip of grayscale class folders: class i's images have the value 40 * (i + 1)."""
    entries = {f"{name}/{k}.png": image_bytes("L", size, 40 * (i + 1))
               for i, name in enumerate(classes) for k in range(per_class)}
    return {**entries, **(extra or {})}


def file_tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def load_error(tmp_path: Path, name: str, data: bytes, **kw) -> str:
    """The DataError message of loading `data` from a file (checked against the bytes loader too)."""
    with pytest.raises(DataError) as from_file:
        load_data_file(write(tmp_path, name, data), **kw)
    with pytest.raises(DataError) as from_bytes:
        load_data_bytes(name, data, **kw)
    assert str(from_file.value) == str(from_bytes.value)
    return str(from_file.value)


def assert_normalised(ds) -> None:
    X = ds.train.X
    assert abs(float(X.mean())) < 1e-4
    assert abs(float(X.std(correction=0)) - 1.0) < 1e-3


def assert_as_given(ds) -> None:
    """A file's values reach the model as stored, and every sample is scored."""
    assert (ds.preprocess.kind, ds.eval_split, ds.mean, ds.std) == ("none", "all", 0.0, 1.0)
    assert len(ds.scored) == sum(ds.sizes().values())
    rows = torch.cat([ds.train.X, ds.val.X, ds.test.X]).flatten(1)
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, ds.scored.X.flatten(1).tolist()))


def denormalised(ds, split: str = "train") -> np.ndarray:
    return ds.split(split).X.numpy() * ds.std + ds.mean


# ----------------------------------------------------------------------------- happy paths


def test_npz_flat_features_load(tmp_path):
    X, y = blobs()
    ds = load_data_file(write(tmp_path, "blobs.npz", npz_bytes(X=X, y=y)))
    assert ds.name == "blobs"
    assert ds.input_shape == (5,)
    assert ds.num_classes == 3 and ds.class_names == ("0", "1", "2")
    assert sum(ds.sizes().values()) == 60 and ds.sizes() == {"train": 36, "val": 12, "test": 12}
    assert ds.train.X.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    assert ds.meta["format"] == "npz"
    assert_as_given(ds)
    assert np.allclose(ds.scored.X.numpy(), X)                      # the file's order, its values
    assert_normalised(load_data_file(tmp_path / "blobs.npz", preprocess="standardize"))


@pytest.mark.parametrize("shape, expected", [((40, 6, 7), (1, 6, 7)), ((40, 3, 4, 5), (3, 4, 5))])
def test_npz_image_shapes(tmp_path, shape, expected):
    rng = np.random.default_rng(1)
    X = rng.integers(0, 255, size=shape).astype(np.uint8)  # any numeric dtype is accepted
    y = np.tile(np.arange(2), 20)
    ds = load_data_file(write(tmp_path, "imgs.npz", npz_bytes(X=X, y=y)))
    assert ds.input_shape == expected and sum(ds.sizes().values()) == 40
    assert_as_given(ds)


def test_npz_class_names_and_whole_float_labels(tmp_path):
    X, y = blobs(n_classes=2)
    data = npz_bytes(X=X, y=y.astype(np.float64), class_names=np.array(["cat", "dog", "eel"]), extra=np.ones(3))
    ds = load_data_file(write(tmp_path, "named.npz", data))
    assert ds.class_names == ("cat", "dog", "eel") and ds.num_classes == 3  # eel has no samples: allowed
    assert ds.meta["arrays"] == ["X", "class_names", "extra", "y"]
    assert set(ds.train.y.tolist()) == {0, 1}


def test_npz_round_trip_of_digits(tmp_path):
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    path = write(tmp_path, "digits.npz", npz_bytes(X=bunch.images, y=bunch.target))  # (N, 8, 8) float64
    ds, ref = load_data_file(path, preprocess="standardize", split="test"), load_digits()
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.sizes() == ref.sizes() == {"train": 1077, "val": 360, "test": 360}
    assert ds.fingerprint == ref.fingerprint
    assert torch.equal(ds.train.X, ref.train.X) and torch.equal(ds.test.y, ref.test.y)


def test_load_data_dispatches_to_files(tmp_path):
    X, y = blobs()
    ds = load_data(write(tmp_path, "via_load_data.npz", npz_bytes(X=X, y=y)))
    assert ds.name == "via_load_data" and ds.input_shape == (5,)


def test_image_zip_grayscale_with_ignored_files(tmp_path):
    junk = {"README.txt": b"about", "cat/.DS_Store": b"\x00\x01", "__MACOSX/cat/._0.png": b"\x00",
            "cat/notes.md": b"hi", "dog/": b""}
    ds = load_data_file(write(tmp_path, "pets.zip", zip_bytes(image_zip(per_class=10, extra=junk))))
    assert ds.input_shape == (1, 6, 8)  # (C, H, W) from 8x6 (width x height) images
    assert ds.class_names == ("cat", "dog") and ds.num_classes == 2
    assert sum(ds.sizes().values()) == 20
    assert ds.meta["image_mode"] == "L" and ds.meta["ignored_files"] == 2  # README.txt, cat/notes.md
    assert_as_given(ds)
    raw = denormalised(ds)
    for label, value in ((0, 40.0), (1, 80.0)):
        np.testing.assert_allclose(raw[ds.train.y.numpy() == label], value, atol=1e-3)


def test_image_zip_mixed_modes_become_rgb(tmp_path):
    red_palette = Image.new("RGB", (4, 4), (255, 0, 0)).convert("P")
    buf = io.BytesIO()
    red_palette.save(buf, "PNG")
    entries = {f"a/rgb{k}.png": image_bytes("RGB", (4, 4), (255, 0, 0)) for k in range(3)}
    entries.update({"a/pal.png": buf.getvalue(), "a/rgba.png": image_bytes("RGBA", (4, 4), (255, 0, 0, 128))})
    entries.update({f"b/gray{k}.png": image_bytes("L", (4, 4), 128) for k in range(4)})
    entries["b/la.png"] = image_bytes("LA", (4, 4), (128, 255))
    ds = load_data_bytes("modes.zip", zip_bytes(entries))
    assert ds.input_shape == (3, 4, 4) and ds.meta["image_mode"] == "RGB"
    raw = np.concatenate([denormalised(ds, s) for s in ("train", "val", "test")])
    labels = torch.cat([ds.train.y, ds.val.y, ds.test.y]).numpy()
    np.testing.assert_allclose(raw[labels == 0], np.broadcast_to([255.0, 0, 0], (5, 4, 4, 3)).transpose(0, 3, 1, 2),
                               atol=1e-3)
    np.testing.assert_allclose(raw[labels == 1], 128.0, atol=1e-3)


def test_image_zip_16bit_gray_is_scaled(tmp_path):
    def png16(value: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.full((5, 5), value, dtype=np.uint16)).save(buf, "PNG")
        return buf.getvalue()

    entries = {f"lo/{k}.png": png16(0) for k in range(5)} | {f"hi/{k}.png": png16(65535) for k in range(5)}
    ds = load_data_bytes("deep.zip", zip_bytes(entries))
    raw = denormalised(ds)
    assert ds.input_shape == (1, 5, 5) and ds.class_names == ("hi", "lo")
    np.testing.assert_allclose(raw[ds.train.y.numpy() == 0], 255.0, atol=1e-3)


def test_image_zip_enclosing_folder_and_jpeg(tmp_path):
    entries = {f"data/{name}/{k}.JPG": image_bytes("L", (10, 10), 50 * (i + 1), fmt="JPEG")
               for i, name in enumerate(("zebra", "ant")) for k in range(6)}
    entries["data/"] = b""
    ds = load_data_file(write(tmp_path, "jpegs.zip", zip_bytes(entries, zipfile.ZIP_DEFLATED)))
    assert ds.class_names == ("ant", "zebra")  # sorted folder names
    assert ds.input_shape == (1, 10, 10) and sum(ds.sizes().values()) == 12


@pytest.mark.parametrize("text", [
    "f1,f2,f3,label\n" + "".join(f"{i * 0.5},{i % 3},{-i},{i % 2}\n" for i in range(30)),
    "".join(f"{i * 0.5},{i % 3},{-i},{i % 2}\n" for i in range(30)),
    "\ufeffa;b;c;y\r\n" + "".join(f"{i * 0.5};{i % 3};{-i};{float(i % 2)}\r\n" for i in range(30)) + "\n\n",
], ids=["header", "no-header", "semicolon-bom-crlf-float-labels"])
def test_csv_loads(tmp_path, text):
    ds = load_data_file(write(tmp_path, "table.csv", text.encode()))
    assert ds.input_shape == (3,) and ds.num_classes == 2 and ds.class_names == ("0", "1")
    assert sum(ds.sizes().values()) == 30
    assert ds.meta["format"] == "csv"
    assert_as_given(ds)


def test_csv_header_is_recorded(tmp_path):
    text = "height,weight,label\n" + "".join(f"{i},{2 * i},{i % 2}\n" for i in range(20))
    ds = load_data_bytes("people.csv", text.encode())
    assert ds.meta["columns"] == ["height", "weight", "label"]


def test_bytes_loader_uses_the_name_only_for_display(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X, y = blobs()
    ds = load_data_bytes("../../etc/passwd.npz", npz_bytes(X=X, y=y))
    assert ds.name == "passwd" and ds.meta["source"] == "passwd"
    assert file_tree(tmp_path) == set()


@pytest.mark.parametrize("raw, expected", [
    ("C:\\Users\\me\\my data.csv", "my data"), ("../../x.npz", "x"), ("..", "upload"), ("", "upload"),
    ("<script>.zip", "script"), ("a\x00b\nc.npz", "a_b_c"), (".hidden", "hidden"), ("x" * 300 + ".csv", "x" * 64),
])
def test_display_name_is_sanitised(raw, expected):
    assert display_name(raw) == expected


# ----------------------------------------------------------------------------- bad files


def test_empty_file(tmp_path):
    assert "empty (0 bytes)" in load_error(tmp_path, "empty.npz", b"")


def test_file_over_max_bytes(tmp_path):
    X, y = blobs()
    msg = load_error(tmp_path, "big.npz", npz_bytes(X=X, y=y), max_bytes=1000)
    assert "over the limit of 1000 bytes" in msg


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(DataError, match="No file at"):
        load_data_file(tmp_path / "nope.npz")
    with pytest.raises(DataError, match="is a folder: zip"):
        load_data_file(tmp_path)


def test_random_bytes_are_an_unknown_format(tmp_path):
    data = np.random.default_rng(0).bytes(4096)
    assert "Unrecognised file format" in load_error(tmp_path, "data.csv", data)


@pytest.mark.parametrize("data, phrase", [
    (image_bytes("L"), "a single image"),
    (b"\x93NUMPY\x01\x00" + b" " * 60, "single .npy array"),
    (b"\x80\x04\x95" + b"\x00" * 20, "Python pickle"),
    (b"\x1f\x8b\x08\x00" + b"\x00" * 20, "as a .zip archive instead"),
    ("a,b\n1,0\n".encode("utf-16"), "UTF-16"),
], ids=["png", "npy", "pickle", "gzip", "utf16"])
def test_other_formats_are_named(tmp_path, data, phrase):
    assert phrase in load_error(tmp_path, "thing.npz", data)


def test_npz_missing_arrays_lists_keys(tmp_path):
    X, y = blobs()
    msg = load_error(tmp_path, "keys.npz", npz_bytes(features=X, labels=y))
    assert "no X and no y array" in msg and "arrays found: features, labels" in msg
    msg = load_error(tmp_path, "keys.npz", npz_bytes(X=X, labels=y))
    assert "no y array" in msg and "numpy.savez(path, X=features, y=labels)" in msg


def test_npz_non_numeric_x(tmp_path):
    _, y = blobs()
    msg = load_error(tmp_path, "s.npz", npz_bytes(X=np.array([["a", "b"]] * len(y)), y=y))
    assert "X must be numeric" in msg and "<U1" in msg


def test_npz_fractional_labels(tmp_path):
    X, y = blobs()
    y = y.astype(np.float64)
    y[7] = 1.5
    assert "label of sample 7 is 1.5" in load_error(tmp_path, "f.npz", npz_bytes(X=X, y=y))


def test_npz_string_labels(tmp_path):
    X, y = blobs()
    msg = load_error(tmp_path, "s.npz", npz_bytes(X=X, y=y.astype(str)))
    assert "must be integers" in msg and "y.astype('int64')" in msg


def test_npz_object_arrays_are_refused(tmp_path):
    X, y = blobs()
    buf = io.BytesIO()
    np.savez(buf, X=np.array([{"a": 1}] * len(y), dtype=object), y=y)  # pickled inside the .npz
    assert "holds Python objects" in load_error(tmp_path, "obj.npz", buf.getvalue())


def test_negative_labels(tmp_path):
    X, y = blobs()
    y = y - 1
    assert "20 are negative" in load_error(tmp_path, "neg.npz", npz_bytes(X=X, y=y))


@pytest.mark.parametrize("extra, phrase", [
    ({"class_names": np.array(["a", "b"])}, "there are 2 class names"),
    ({}, "at most 1000 classes"),
])
def test_labels_out_of_range(tmp_path, extra, phrase):
    X, y = blobs()
    y = y.copy()
    y[0] = 2 if extra else 5000
    msg = load_error(tmp_path, "oor.npz", npz_bytes(X=X, y=y, **extra))
    assert "out of range" in msg and phrase in msg


def test_single_class(tmp_path):
    X, _ = blobs()
    msg = load_error(tmp_path, "one.npz", npz_bytes(X=X, y=np.zeros(len(X), dtype=int)))
    assert "at least 2 classes" in msg


def test_one_hot_labels(tmp_path):
    X, y = blobs()
    assert "one-hot" in load_error(tmp_path, "oh.npz", npz_bytes(X=X, y=np.eye(3)[y]))


def test_mismatched_lengths(tmp_path):
    X, y = blobs()
    msg = load_error(tmp_path, "mm.npz", npz_bytes(X=X, y=y[:-1]))
    assert "X has 60 samples but y has 59 labels" in msg


def test_nan_and_inf_are_counted(tmp_path):
    X, y = blobs()
    X[3, 0] = X[9, 1] = np.nan
    X[5, 2] = np.inf
    msg = load_error(tmp_path, "nan.npz", npz_bytes(X=X, y=y))
    assert "2 NaN and 1 infinite" in msg and "first in sample 3" in msg
    X[3, 0] = X[9, 1] = 0.0
    assert "X holds 1 infinite" in load_error(tmp_path, "inf.npz", npz_bytes(X=X, y=y))


def test_zero_samples(tmp_path):
    msg = load_error(tmp_path, "zero.npz", npz_bytes(X=np.zeros((0, 4)), y=np.zeros(0, dtype=int)))
    assert "holds no samples" in msg


@pytest.mark.parametrize("n_classes, per_class, need", [(2, 4, MIN_SAMPLES), (4, 4, 20)])
def test_too_few_samples_to_split(tmp_path, n_classes, per_class, need):
    X, y = blobs(n_classes=n_classes, per_class=per_class)
    msg = load_error(tmp_path, "few.npz", npz_bytes(X=X, y=y))
    assert f"need at least {need}" in msg


def test_bad_x_shape(tmp_path):
    _, y = blobs()
    assert "use (N, features)" in load_error(tmp_path, "1d.npz", npz_bytes(X=np.ones(len(y)), y=y))


def test_values_too_large_to_normalise(tmp_path):
    X, y = blobs()
    assert "too large to normalise" in load_error(tmp_path, "huge.npz", npz_bytes(X=X * 1e30, y=y),
                                                  preprocess="standardize")
    assert "too large for float32" in load_error(tmp_path, "tiny_std.npz", npz_bytes(X=X * 1e30, y=y),
                                                 preprocess="0,1e-30")


def test_mixed_image_sizes(tmp_path):
    entries = image_zip(size=(8, 8))
    entries["dog/odd.png"] = image_bytes("L", (10, 6))
    msg = load_error(tmp_path, "sizes.zip", zip_bytes(entries))
    assert "8x8" in msg and "'dog/odd.png' is 10x6" in msg


def noisy_png(size: tuple[int, int] = (8, 6)) -> bytes:
    pixels = np.random.default_rng(3).integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("blob, phrase", [
    (b"not an image at all", "not a PNG or JPEG image"),
    (noisy_png()[:-30], "truncated"),                     # header fine, pixel data cut short
    (noisy_png()[:20], "Cannot read image"),              # header cut short
    (b"GIF89a" + b"\x00" * 40, "not a PNG or JPEG image"),   # another format under a .png name
], ids=["garbage", "truncated-data", "truncated-header", "gif"])
def test_corrupt_image(tmp_path, blob, phrase):
    msg = load_error(tmp_path, "bad.zip", zip_bytes(image_zip(extra={"cat/broken.png": blob})))
    assert "Cannot read image 'cat/broken.png'" in msg and phrase in msg


def test_nested_folders(tmp_path):
    msg = load_error(tmp_path, "nest.zip", zip_bytes(image_zip(extra={"dog/puppies/1.png": image_bytes("L")})))
    assert "'dog/puppies/1.png' is in a nested folder" in msg


def test_image_outside_class_folder(tmp_path):
    msg = load_error(tmp_path, "top.zip", zip_bytes(image_zip(extra={"loose.png": image_bytes("L")})))
    assert "not inside a class folder" in msg


def test_class_folder_without_images(tmp_path):
    msg = load_error(tmp_path, "empty_class.zip", zip_bytes(image_zip(extra={"eel/README.txt": b"todo"})))
    assert "Folder 'eel' has no PNG/JPEG images" in msg


def test_zip_without_images(tmp_path):
    msg = load_error(tmp_path, "docs.zip", zip_bytes({"a/readme.txt": b"x", "b.bmp": b"BM"}))
    assert "no PNG/JPEG images" in msg and "a/readme.txt" in msg


def test_single_class_folder(tmp_path):
    msg = load_error(tmp_path, "one.zip", zip_bytes(image_zip(classes=("cat",))))
    assert "only one class folder ('cat')" in msg


@pytest.mark.parametrize("bad", ["../evil.png", "../../evil.png", "cat/../../evil.png", "..\\evil.png",
                                 "C:/evil.png", "ABSOLUTE"])
def test_path_traversal_is_refused_and_nothing_is_written(tmp_path, monkeypatch, bad):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # '..' entries would land inside tmp_path if anything were extracted
    target = tmp_path / "abs_evil.png"
    name = str(target) if bad == "ABSOLUTE" else bad
    path = write(work, "data.zip", zip_bytes(image_zip(extra={name: image_bytes("L")})))
    before = file_tree(tmp_path)
    with pytest.raises(DataError, match="unsafe path"):
        load_data_file(path)
    with pytest.raises(DataError, match="unsafe path"):
        load_data_bytes("data.zip", path.read_bytes())
    assert file_tree(tmp_path) == before and not target.exists()


def test_too_many_entries(tmp_path):
    data = zip_bytes(image_zip(per_class=10))
    assert "20 entries, over the limit of 10" in load_error(tmp_path, "many.zip", data, max_entries=10)
    assert load_data_bytes("many.zip", data, max_entries=20).num_classes == 2


def test_total_uncompressed_size_limit(tmp_path):
    X, y = blobs()
    msg = load_error(tmp_path, "total.npz", npz_bytes(X=X, y=y), max_uncompressed=2000)
    assert "would unpack to" in msg and "over the limit of 2.0 KiB" in msg


def test_decoded_image_size_limit(tmp_path):
    data = zip_bytes(image_zip(size=(64, 64)))  # 12 images: tiny PNGs, 192 KiB decoded
    msg = load_error(tmp_path, "wide.zip", data, max_uncompressed=100_000)
    assert "decoded images would take 192.0 KiB" in msg


@pytest.mark.parametrize("payload, kw", [
    (b"\x00" * 64 * 1024, {}),                                   # ~1000x: refused by default
    (b"ab" * 4000 + bytes(range(256)) * 4, {"max_ratio": 5}),   # modest ratio, lowered limit
], ids=["default-limit", "lowered-limit"])
def test_compression_ratio_limit(tmp_path, payload, kw):
    entries = image_zip(extra={"cat/bomb.txt": payload})
    msg = load_error(tmp_path, "bomb.zip", zip_bytes(entries, zipfile.ZIP_DEFLATED), **kw)
    assert "'cat/bomb.txt' expands" in msg and "zip bomb" in msg


def patch_first_entry(data: bytes, offset_local: int, offset_central: int, fmt: str, value: int) -> bytes:
    """Overwrite one field of the first entry in both its local and central headers."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        local, central = zf.infolist()[0].header_offset, zf.start_dir
    out = bytearray(data)
    struct.pack_into(fmt, out, local + offset_local, value)
    struct.pack_into(fmt, out, central + offset_central, value)
    return bytes(out)


def test_entry_that_lies_about_its_size(tmp_path):
    X, y = blobs()
    data = zip_bytes({"X.npy": npz_entry(X), "y.npy": npz_entry(y)}, zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        declared = zf.infolist()[0].file_size
    for size in (declared // 4, declared + 100):  # the uncompressed size field, too small or too large
        lying = patch_first_entry(data, 22, 24, "<I", size)
        assert "'X.npy' of the zip archive is damaged" in load_error(tmp_path, "lie.npz", lying)


def npz_entry(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_encrypted_entry(tmp_path):
    data = zip_bytes(image_zip())
    locked = patch_first_entry(data, 6, 8, "<H", 0x1)  # general purpose flag: encrypted
    assert "password-protected" in load_error(tmp_path, "locked.zip", locked)


def test_damaged_archive(tmp_path):
    data = zip_bytes(image_zip())
    assert "zip archive is damaged" in load_error(tmp_path, "cut.zip", data[: len(data) // 2])


def test_csv_header_only(tmp_path):
    assert "no data rows" in load_error(tmp_path, "h.csv", b"a,b,label\n")


def test_csv_non_numeric_cell(tmp_path):
    text = "a,b,label\n1,2,0\n3,oops,1\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(20))
    msg = load_error(tmp_path, "nn.csv", text.encode())
    assert "Line 3, column 2 ('b')" in msg and "'oops'" in msg


def test_csv_empty_and_label_cells(tmp_path):
    rows = "".join(f"{i},{i},{i % 2}\n" for i in range(20))
    assert "Line 21, column 2 holds an empty cell" in load_error(tmp_path, "e.csv", (rows + "1,,0\n").encode())
    msg = load_error(tmp_path, "l.csv", (rows + "1,2,cat\n").encode())
    assert "column 3" in msg and "integer class ids" in msg


def test_csv_not_utf8(tmp_path):
    data = "name,x,label\n1,2,0\ncafé,3,1\n".encode("latin-1")
    msg = load_error(tmp_path, "latin.csv", data)
    assert "not UTF-8" in msg and "line 3" in msg and "0xE9" in msg


def test_csv_ragged_rows(tmp_path):
    text = "1,2,0\n3,4,1\n5,6,0\n7,1\n"
    assert "Line 4 has 2 fields but line 1 has 3" in load_error(tmp_path, "rag.csv", text.encode())


def test_csv_single_column(tmp_path):
    assert "only one column" in load_error(tmp_path, "one.csv", b"1\n2\n3\n")


def test_csv_fractional_label(tmp_path):
    text = "".join(f"{i},{i % 2 + (0.5 if i == 4 else 0)}\n" for i in range(20))
    assert "label of sample 4 is 0.5" in load_error(tmp_path, "frac.csv", text.encode())


def test_limits_must_be_positive():
    with pytest.raises(ConfigError, match="max_ratio must be positive"):
        Limits(max_ratio=0)
    with pytest.raises(ConfigError):
        load_data_bytes("x.csv", b"1,0\n", max_entries=-1)
