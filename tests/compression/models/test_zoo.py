"""The demo zoo: bundled weights load, reach their recorded accuracy, and the sizes are as documented."""
from __future__ import annotations

import pytest

from compression.core.modules import count_params
from compression.data.datasets import load_digits, split_indices
from compression.methods.training import train_model
from compression.metrics.evaluate import accuracy_and_loss
from compression.models import zoo


def test_digits_split_is_fixed(digits):
    assert digits.sizes() == {"train": 1077, "val": 360, "test": 360}
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert abs(float(digits.train.X.mean())) < 1e-4 and abs(float(digits.train.X.std()) - 1) < 1e-3
    assert load_digits().fingerprint == digits.fingerprint


def test_bundled_digits_are_scikit_learns(digits):
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    X = (digits.test.X * digits.std + digits.mean).round().numpy()
    train, val, test = split_indices(bunch.target)
    assert (X[:, 0] == bunch.images[test]).all() and (digits.test.y.numpy() == bunch.target[test]).all()
    assert len(train) == len(digits.train) and len(val) == len(digits.val)


def test_builtin_models_match_their_record(any_builtin, digits):
    name, model = any_builtin
    record = zoo.zoo_summary()[name]
    acc, _ = accuracy_and_loss(model, digits.test)
    assert count_params(model) == record["params"]
    assert acc == pytest.approx(record["test_accuracy"], abs=1e-4)
    if name in ("lenet5", "mobilenet", "resnet", "teacher"):
        assert acc >= 0.97


def test_student_is_about_a_tenth_of_the_teacher():
    ratio = count_params(zoo.build("student")) / count_params(zoo.build("teacher"))
    assert 0.05 < ratio < 0.15


def test_training_is_seeded():
    _, a = train_model("mlp", epochs=1, seed=3)
    _, b = train_model("mlp", epochs=1, seed=3)
    assert a == b
