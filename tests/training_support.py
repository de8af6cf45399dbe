"""Shared helpers of the tests/test_training_*.py modules (not a test module itself)."""

import pickle

import numpy as np
import pytest
import torch

from golden.training.datasets import CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these networks are tiny, and on a loaded 2-core machine a second
    intra-op thread makes them up to 7x slower. The previous setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_cifar(folder, n_per_file=4, seed=0):
    """Tiny files in the CIFAR-10 python format: pickled dicts, b'data' uint8 N x 3072."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,)):
        d = {b"data": rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8),
             b"labels": [int(v) for v in (np.arange(n_per_file) + i) % 10],
             b"batch_label": name.encode()}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
    return folder
