"""MNIST-1D as sequences (Greydanus 2020): 1-D signals of length 40, 10 classes, 4000 / 1000 split.

Each signal is a sequence of 40 scalar tokens; as a graph it is a path (or any sequence structure
of :mod:`graphattn.structure`) over 40 nodes with one feature each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._common import cache_lock, cache_root, data_root, download_file, local_copy, try_download

__all__ = ["SequenceSplits", "load_mnist1d"]

MNIST1D_URL = "https://github.com/greydanus/mnist1d/raw/master/mnist1d_data.pkl"


@dataclass
class SequenceSplits:
    """Fixed train / test sequences.

    Attributes:
        x_train: ``float32 [N_train, L]``.
        y_train: ``int64 [N_train]``.
        x_test: ``float32 [N_test, L]``.
        y_test: ``int64 [N_test]``.
        num_classes: number of label values.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int


def _from_arrays(arrays: dict) -> SequenceSplits:
    def f(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    def i(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

    return SequenceSplits(f(arrays["x"]), i(arrays["y"]), f(arrays["x_test"]), i(arrays["y_test"]), 10)


def load_mnist1d(
    root: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None
) -> SequenceSplits:
    """The official MNIST-1D release: ``x_train [4000, 40]``, ``x_test [1000, 40]``, 10 classes.

    Reads ``<root>/mnist1d/mnist1d_data.npz`` (no pickle needed); without it downloads the official
    ``mnist1d_data.pkl`` from the MNIST-1D GitHub repository (unpickling needs numpy and trusts
    that source).
    """
    relative = "mnist1d"
    local = data_root(root)  # checked before the cache is touched
    cache = cache_root(cache_dir)
    with cache_lock(cache, relative):
        folder = local_copy(local, relative, cache, required=("mnist1d_data.npz",))
        if folder is not None:
            with np.load(folder / "mnist1d_data.npz") as z:
                return _from_arrays({k: z[k] for k in ("x", "y", "x_test", "y_test")})
        target = cache / relative / "mnist1d_data.pkl"
        if not target.exists():
            try_download("MNIST-1D", local, relative, MNIST1D_URL, lambda: download_file(MNIST1D_URL, target))
    import pickle

    with open(target, "rb") as fh:
        return _from_arrays(pickle.load(fh))
