"""Data sets of the training harness: scikit-learn's digits, CIFAR-10 from a local folder, synthetic.

Nothing is downloaded. Every data set is a :class:`Dataset` of image tensors ``(N, C, H, W)`` with
values in [0, 1] (CIFAR-10 is kept as ``uint8`` and scaled when a batch is fetched, a quarter of
the memory) and ``int64`` labels. Models that want flat vectors flatten inside the model, so the
same data feeds the MLP, the CNN and the ResNet, and input downsampling always sees images.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["Dataset", "DATASETS", "load_dataset", "load_digits", "load_cifar10", "make_synthetic",
           "CIFAR10_TRAIN_FILES", "CIFAR10_TEST_FILE"]

#: names accepted by :func:`load_dataset`
DATASETS = ("digits", "cifar10", "synthetic")

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"


@dataclass(frozen=True)
class Dataset:
    """A train/test pair of image tensors.

    Members
    -------
    name:
        Short name, written into reports.
    x_train, x_test:
        ``(N, C, H, W)`` float32 in [0, 1], or uint8 (scaled by 1/255 in :meth:`fetch`).
    y_train, y_test:
        ``(N,)`` int64 class labels in ``0 .. num_classes - 1``.
    num_classes:
        Number of classes.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 4:
                raise ValueError(f"x_{split} must be (N, C, H, W), got shape {tuple(x.shape)}")
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(f"y_{split} must be ({x.shape[0]},) to match x_{split}, "
                                 f"got shape {tuple(y.shape)}")
            if x.dtype not in (torch.float32, torch.uint8):
                raise ValueError(f"x_{split} must be float32 or uint8, got {x.dtype}")
            if y.dtype != torch.int64:
                raise ValueError(f"y_{split} must be int64, got {y.dtype}")
            if x.shape[0] == 0:
                raise ValueError(f"the {split} split of {self.name!r} is empty")
            if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
                raise ValueError(f"y_{split} labels must lie in 0..{self.num_classes - 1}, got "
                                 f"{int(y.min())}..{int(y.max())}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"train images {tuple(self.x_train.shape[1:])} and test images "
                             f"{tuple(self.x_test.shape[1:])} differ in shape")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.x_train.shape[1:])

    def fetch(self, split: str, index: torch.Tensor, device: torch.device | str = "cpu"):
        """Images (float32 in [0, 1]) and labels of ``index`` in ``split`` ("train" or "test")."""
        x = getattr(self, f"x_{split}")[index]
        y = getattr(self, f"y_{split}")[index]
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return x.to(device), y.to(device)


def load_digits(split_seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), inputs scaled to [0, 1].

    The train/test split is stratified and fixed by ``split_seed`` (independent of the training
    seed, so every training seed is measured on the same test images).
    """
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    bunch = _load()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction,
                                              random_state=split_seed, stratify=y)
    return Dataset("digits", torch.from_numpy(x_tr), torch.from_numpy(y_tr),
                   torch.from_numpy(x_te), torch.from_numpy(y_te), 10)


def _read_cifar_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise ValueError(f"CIFAR-10 file {str(path)!r} is missing; the folder must hold "
                         f"{', '.join(CIFAR10_TRAIN_FILES)} and {CIFAR10_TEST_FILE} "
                         "(the 'python version' of CIFAR-10)")
    try:
        with open(path, "rb") as f:
            # the standard CIFAR-10 python format is a pickle; read only files you trust
            d = pickle.load(f, encoding="bytes")
    except Exception as e:  # a truncated or foreign file: say which one
        raise ValueError(f"CIFAR-10 file {str(path)!r} is not a CIFAR-10 python batch: {e}") from e
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise ValueError(f"CIFAR-10 file {str(path)!r} must be a dict with b'data' and b'labels'")
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"CIFAR-10 file {str(path)!r}: b'data' must be uint8 N x 3072, got "
                         f"{data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"CIFAR-10 file {str(path)!r}: {labels.shape[0]} labels for "
                         f"{data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root: str | Path, limit_train: int | None = None,
                 limit_test: int | None = None) -> Dataset:
    """CIFAR-10 from a local folder in its standard python format (never downloaded).

    ``root`` holds ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, or a
    ``cifar-10-batches-py`` folder that does. ``limit_train`` / ``limit_test`` keep the first
    images only (quick runs).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"CIFAR-10 folder {str(root)!r} does not exist; pass --data-dir with "
                         "the folder of the python version (data_batch_1..5, test_batch)")
    if not (root / CIFAR10_TEST_FILE).exists() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    for name, limit in (("limit_train", limit_train), ("limit_test", limit_test)):
        if limit is not None and limit < 1:
            raise ValueError(f"{name} must be >= 1, got {limit}")
    parts = [_read_cifar_file(root / name) for name in CIFAR10_TRAIN_FILES]
    x_tr = np.concatenate([p[0] for p in parts])[:limit_train]
    y_tr = np.concatenate([p[1] for p in parts])[:limit_train]
    x_te, y_te = _read_cifar_file(root / CIFAR10_TEST_FILE)
    x_te, y_te = x_te[:limit_test], y_te[:limit_test]
    return Dataset("cifar10", torch.from_numpy(np.ascontiguousarray(x_tr)), torch.from_numpy(y_tr),
                   torch.from_numpy(np.ascontiguousarray(x_te)), torch.from_numpy(y_te), 10)


def make_synthetic(n_train: int = 512, n_test: int = 256, num_classes: int = 4,
                   shape: tuple[int, int, int] = (1, 8, 8), noise: float = 0.25,
                   seed: int = 0) -> Dataset:
    """Noisy class prototypes: each class is a random image in [0, 1]; samples add Gaussian
    noise of standard deviation ``noise`` and are clipped to [0, 1]. Learnable in a few epochs,
    not trivially (the noise makes classes overlap a little)."""
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train}, {n_test}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (C, H, W) with positive sizes, got {shape}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    protos = rng.random((num_classes, *shape), dtype=np.float32)

    def draw(n):
        y = np.arange(n) % num_classes
        rng.shuffle(y)
        x = protos[y] + rng.normal(0.0, noise, (n, *shape)).astype(np.float32)
        return torch.from_numpy(np.clip(x, 0.0, 1.0)), torch.from_numpy(y.astype(np.int64))

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    return Dataset("synthetic", x_tr, y_tr, x_te, y_te, num_classes)


def load_dataset(name: str, data_dir: str | Path | None = None, seed: int = 0) -> Dataset:
    """The data set called ``name`` (one of :data:`DATASETS`); ``data_dir`` for cifar10.

    ``seed`` fixes the digits split and the synthetic draw (not the training seed).
    """
    if name == "digits":
        return load_digits(split_seed=seed)
    if name == "cifar10":
        if data_dir is None:
            raise ValueError("dataset 'cifar10' needs a data folder (--data-dir) holding the "
                             "python version (data_batch_1..5, test_batch); nothing is downloaded")
        return load_cifar10(data_dir)
    if name == "synthetic":
        return make_synthetic(seed=seed)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
