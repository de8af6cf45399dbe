"""Data sets: the fixed digits split, CIFAR-10 from tiny files in its python format, synthetic."""

import pickle

import numpy as np
import pytest
import torch

from golden.training.datasets import (Dataset, load_cifar10, load_dataset, load_digits,
                                      make_synthetic)
from training_support import one_thread, write_cifar  # noqa: F401 (autouse fixture)


def test_digits_split_is_fixed_stratified_and_scaled():
    a, b = load_digits(), load_digits()
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert a.x_train.shape[0] + a.x_test.shape[0] == 1797
    assert a.x_test.shape[0] == 360
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert float(a.x_train.min()) == 0.0 and float(a.x_train.max()) == 1.0
    # stratified: every class has 35 or 36 test images (1797 * 0.2 over 10 classes)
    counts = torch.bincount(a.y_test, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37, counts
    other = load_digits(split_seed=1)
    assert not torch.equal(a.y_test, other.y_test)


def test_cifar10_reads_python_format(tmp_path):
    root = write_cifar(tmp_path / "c10")
    d = load_cifar10(root)
    assert d.input_shape == (3, 32, 32) and d.x_train.dtype == torch.uint8
    assert d.x_train.shape[0] == 20 and d.x_test.shape[0] == 4
    x, y = d.fetch("train", torch.arange(3))
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # pixel order: the first 1024 bytes are the red plane, row by row
    with open(root / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    assert int(d.x_train[0, 0, 0, 1]) == int(raw[0, 1])
    assert int(d.x_train[0, 1, 0, 0]) == int(raw[0, 1024])
    # the standard extraction folder inside the given folder is found too
    nested = write_cifar(tmp_path / "outer" / "cifar-10-batches-py")
    assert load_cifar10(nested.parent).x_train.shape[0] == 20


def test_cifar10_errors(tmp_path):
    with pytest.raises(ValueError, match="CIFAR-10 folder .*does not exist"):
        load_cifar10(tmp_path / "nope")
    root = write_cifar(tmp_path / "c10")
    (root / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="data_batch_3' is missing"):
        load_cifar10(root)
    root = write_cifar(tmp_path / "bad")
    with open(root / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="uint8 N x 3072"):
        load_cifar10(root)
    with pytest.raises(ValueError, match="needs a data folder"):
        load_dataset("cifar10")


def test_synthetic_is_seeded_and_learnable_shape():
    a, b = make_synthetic(seed=3), make_synthetic(seed=3)
    assert torch.equal(a.x_train, b.x_train)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 4
    assert torch.bincount(a.y_train).tolist() == [128] * 4
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        make_synthetic(num_classes=1)


def test_dataset_checks_shapes_and_names():
    x = torch.zeros(4, 1, 2, 2)
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        Dataset("t", x, torch.tensor([0, 1, 2, 0]), x, torch.zeros(4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match=r"x_train must be \(N, C, H, W\)"):
        Dataset("t", torch.zeros(4, 4), torch.zeros(4, dtype=torch.int64), x,
                torch.zeros(4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; known: digits, cifar10"):
        load_dataset("mnist")
