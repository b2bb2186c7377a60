"""Images as graphs: MNIST test images and scikit-learn digits, plus pixel and patch neighbourhoods.

Loaders return plain tensors (``images [B, H, W]`` float32 in ``[0, 1]``, ``labels [B]`` int64)
and the grid they live on; the graph is built from the grid. Pixels (or patches) are nodes
numbered row-major, ``node = row * W + col``; :func:`pixel_edge_index` links each node to the
nodes within a Chebyshev (``connectivity=8``) or Manhattan (``connectivity=4``) radius. The
structure builders of :mod:`graphattn.structure` (image grids) take the same grid; this local
builder keeps the datasets usable on their own.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._common import cache_lock, cache_root, data_root, download_file, local_copy, try_download

__all__ = [
    "ImageSet",
    "load_mnist_test",
    "load_digits",
    "pixel_edge_index",
    "batch_edge_index",
    "patchify",
    "fixed_split",
]

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@dataclass
class ImageSet:
    """Images and labels on a ``height x width`` grid.

    Attributes:
        images: ``float32 [B, H, W]`` in ``[0, 1]``.
        labels: ``int64 [B]``.
        grid: ``(H, W)``: node ``r * W + c`` is pixel ``(r, c)``.
        num_classes: number of label values.
    """

    images: Tensor
    labels: Tensor
    grid: tuple[int, int]
    num_classes: int

    def __len__(self) -> int:
        return self.images.shape[0]


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_mnist_test(root: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None) -> ImageSet:
    """The 10,000 MNIST **test** images (the only MNIST images in the offline data).

    Looks for ``<root>/mnist/raw/t10k-{images-idx3,labels-idx1}-ubyte.gz``, else downloads them
    from torchvision's mirror. For demos split them with :func:`fixed_split` and say so: results
    are not comparable to standard MNIST numbers.
    """
    relative = "mnist/raw"
    local = data_root(root)  # checked before the cache is touched
    cache = cache_root(cache_dir)
    with cache_lock(cache, relative):
        folder = local_copy(local, relative, cache, required=_MNIST_FILES)
        if folder is None:
            folder = cache / relative

            def fetch() -> None:
                for name in _MNIST_FILES:
                    if not (folder / name).exists():
                        download_file(MNIST_URL + name, folder / name)

            try_download("MNIST test set", local, relative, MNIST_URL, fetch)
    pixels = _read_idx(folder / _MNIST_FILES[0], 16).reshape(-1, 28, 28)
    labels = _read_idx(folder / _MNIST_FILES[1], 8)
    images = torch.from_numpy(pixels.astype(np.float32) / 255.0)
    return ImageSet(images, torch.from_numpy(labels.astype(np.int64)), (28, 28), 10)


def load_digits() -> ImageSet:
    """scikit-learn's 1,797 8x8 handwritten digits (shipped inside scikit-learn; no download)."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as err:
        raise ImportError("load_digits needs scikit-learn: `pip install scikit-learn`") from err
    bunch = sk_load_digits()
    # Pixel values are counts 0..16 of a 4x4 block of the original 32x32 bitmap.
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)
    return ImageSet(images, torch.from_numpy(bunch.target.astype(np.int64)), (8, 8), 10)


def pixel_edge_index(
    height: int, width: int, *, radius: int = 1, connectivity: int = 8, self_loops: bool = True
) -> Tensor:
    """Neighbourhood edges of one ``height x width`` grid: ``int64 [2, E]``, destination-sorted.

    Node ``r * width + c`` receives an edge from every node within ``radius`` steps: Chebyshev
    distance for ``connectivity=8`` (a ``(2r+1)^2`` square), Manhattan for ``connectivity=4``.

    Args:
        height: grid rows ``H``.
        width: grid columns ``W``.
        radius: neighbourhood radius (``>= 1``).
        connectivity: ``8`` or ``4``.
        self_loops: include ``i -> i``.
    """
    for arg, value in (("height", height), ("width", width), ("radius", radius)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    offsets = torch.arange(-radius, radius + 1)
    dr, dc = torch.meshgrid(offsets, offsets, indexing="ij")
    dr, dc = dr.reshape(-1), dc.reshape(-1)
    keep = (dr.abs() + dc.abs() <= radius) if connectivity == 4 else torch.ones_like(dr, dtype=torch.bool)
    if not self_loops:
        keep &= (dr != 0) | (dc != 0)
    dr, dc = dr[keep], dc[keep]
    rows = torch.arange(height).repeat_interleave(width)  # destination row / col, row-major
    cols = torch.arange(width).repeat(height)
    src_r = rows[:, None] + dr[None, :]
    src_c = cols[:, None] + dc[None, :]
    inside = (src_r >= 0) & (src_r < height) & (src_c >= 0) & (src_c < width)
    dst = torch.arange(height * width)[:, None].expand_as(src_r)
    return torch.stack([(src_r * width + src_c)[inside], dst[inside]])


def batch_edge_index(edge_index: Tensor, num_nodes: int, batch_size: int) -> Tensor:
    """``batch_size`` copies of one example's ``edge_index`` as a block-diagonal batch (PyG's batching)."""
    offsets = (torch.arange(batch_size) * num_nodes).repeat_interleave(edge_index.shape[1])
    return edge_index.repeat(1, batch_size) + offsets


def patchify(images: Tensor, patch: int) -> tuple[Tensor, tuple[int, int]]:
    """Cut ``images [B, H, W]`` into non-overlapping ``patch x patch`` tiles: ``([B, H/p * W/p, p*p], (H/p, W/p))``.

    Patches are numbered row-major on the returned grid, so :func:`pixel_edge_index` on that grid
    gives the patch graph.
    """
    if images.dim() != 3:
        raise ValueError(f"images must be [B, H, W], got shape {list(images.shape)}")
    b, h, w = images.shape
    if not isinstance(patch, int) or patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch must be a positive int dividing H={h} and W={w}, got {patch!r}")
    gh, gw = h // patch, w // patch
    tiles = images.reshape(b, gh, patch, gw, patch).permute(0, 1, 3, 2, 4)
    return tiles.reshape(b, gh * gw, patch * patch), (gh, gw)


def fixed_split(n: int, train_fraction: float = 0.8, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A seeded random ``(train_idx, test_idx)`` partition of ``range(n)``."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = round(n * train_fraction)
    return perm[:cut].sort().values, perm[cut:].sort().values
