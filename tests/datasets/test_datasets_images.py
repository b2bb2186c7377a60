"""MNIST test images and scikit-learn digits as tensors on a grid, and the grid's pixel / patch graphs."""

from __future__ import annotations

import pytest
import torch

from graphattn.datasets import batch_edge_index, fixed_split, load_digits, load_mnist_test, patchify, pixel_edge_index


def test_mnist_test_images(shared_data, cache):
    ds = load_mnist_test(shared_data, cache_dir=cache)
    assert ds.images.shape == (10000, 28, 28) and ds.images.dtype == torch.float32
    assert ds.grid == (28, 28) and len(ds) == 10000
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
    assert ds.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the official test set's first labels
    assert torch.bincount(ds.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_digits():
    ds = load_digits()
    assert ds.images.shape == (1797, 8, 8) and ds.grid == (8, 8) and ds.num_classes == 10
    assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) == 1.0


@pytest.mark.parametrize(("h", "w"), [(28, 28), (3, 5), (1, 4)])
def test_pixel_edges_8_connected(h, w):
    ei = pixel_edge_index(h, w)
    # Each axis contributes 3 offsets per position except 2 at the borders: (3H - 2)(3W - 2) edges.
    assert ei.shape[1] == (3 * h - 2 if h > 1 else 1) * (3 * w - 2 if w > 1 else 1)
    assert bool((ei[1][1:] >= ei[1][:-1]).all())  # destination-sorted
    r_s, c_s, r_d, c_d = ei[0] // w, ei[0] % w, ei[1] // w, ei[1] % w
    assert int(torch.maximum((r_s - r_d).abs(), (c_s - c_d).abs()).max()) <= 1


def test_pixel_edges_4_connected_without_loops_and_radius():
    ei = pixel_edge_index(4, 6, connectivity=4, self_loops=False)
    assert ei.shape[1] == 2 * (4 * 5 + 6 * 3)  # every horizontal and vertical neighbour pair, both ways
    assert not bool((ei[0] == ei[1]).any())
    big = pixel_edge_index(5, 5, radius=2)
    assert int(torch.bincount(big[1]).max()) == 25  # the centre pixel sees the whole 5x5 grid
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        pixel_edge_index(3, 3, connectivity=6)


def test_patchify_and_batching():
    images = torch.arange(2 * 4 * 6, dtype=torch.float32).view(2, 4, 6)
    tiles, grid = patchify(images, 2)
    assert tiles.shape == (2, 6, 4) and grid == (2, 3)
    assert tiles[0, 1].tolist() == [2.0, 3.0, 8.0, 9.0]  # patch (0, 1): rows 0-1, cols 2-3
    with pytest.raises(ValueError, match="patch must be a positive int dividing"):
        patchify(images, 4)
    ei = pixel_edge_index(*grid)
    batched = batch_edge_index(ei, 6, 2)
    assert batched.shape[1] == 2 * ei.shape[1] and int(batched[:, ei.shape[1] :].min()) == 6


def test_fixed_split_is_a_seeded_partition():
    a, b = fixed_split(100, 0.8, seed=3)
    assert len(a) == 80 and len(b) == 20 and torch.equal(torch.cat([a, b]).sort().values, torch.arange(100))
    assert torch.equal(fixed_split(100, 0.8, seed=3)[0], a) and not torch.equal(fixed_split(100, 0.8, seed=4)[0], a)
