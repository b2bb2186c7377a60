"""knn(): exact k nearest neighbours per example, independent of the chunking budget."""

from __future__ import annotations

import importlib

import pytest
import torch

import graphattn.structure as S


def spec_knn(x: torch.Tensor, k: int, lengths: list[int], loop: bool) -> list[set[int]]:
    out, off = [], 0
    for n in lengths:
        xs = x[off : off + n]
        d = torch.cdist(xs.double(), xs.double())
        if not loop:
            d.fill_diagonal_(float("inf"))
        kk = min(k, n - (0 if loop else 1))
        for i in range(n):
            out.append({off + int(j) for j in torch.topk(d[i], max(kk, 0), largest=False).indices})
        off += n
    return out


@pytest.mark.parametrize("max_elements", [1, 7, 50, 2**22])
@pytest.mark.parametrize("loop", [True, False])
def test_knn_matches_brute_force(max_elements, loop):
    lengths = [9, 0, 1, 14, 5]
    x = torch.randn(sum(lengths), 3, generator=torch.Generator().manual_seed(0))  # distinct distances a.s.
    g = S.knn(x, 4, lengths=lengths, loop=loop, max_elements=max_elements)
    expect = spec_knn(x, 4, lengths, loop)
    rows = [set(g.col[g.rowptr[i] : g.rowptr[i + 1]].tolist()) for i in range(g.num_dst)]
    assert rows == expect
    n = torch.tensor([9] * 9 + [1] + [14] * 14 + [5] * 5)
    assert torch.equal(g.in_degree(), torch.clamp(n - (0 if loop else 1), max=4, min=0))


def test_knn_over_1d_positions_is_a_window_and_cosine_runs():
    g = S.knn(torch.arange(20.0), 3)  # nearest: itself, then the two neighbours (ties at the ends)
    assert g.in_degree().tolist() == [3] * 20
    assert set(g.col[g.rowptr[10] : g.rowptr[11]].tolist()) == {9, 10, 11}
    c = S.knn(torch.randn(12, 4), 2, cosine=True, batch=torch.tensor([0] * 5 + [1] * 7))
    assert c.ptr.tolist() == [0, 5, 12]


def test_knn_errors():
    with pytest.raises(TypeError, match="x must be a floating"):
        S.knn(torch.arange(5), 2)
    with pytest.raises(ValueError, match="k must be >= 0"):
        S.knn(torch.randn(5, 2), -1)
    with pytest.raises(ValueError, match=r"lengths must sum to n = 5"):
        S.knn(torch.randn(5, 2), 2, lengths=[2, 2])


def test_knn_is_independent_of_the_chunking_budget_and_batches_equal_lengths():
    # Whole examples batched by length, one example in row chunks, or one row at a time: the
    # same distances, so the same graph (same order within rows), and the nearest-first order.
    lengths = [300, 300, 7, 0, 300, 700, 1]
    x = torch.rand(sum(lengths), 2, generator=torch.Generator().manual_seed(1))
    graphs = [S.knn(x, 6, lengths=lengths, max_elements=m) for m in (2**22, 2**17, 5000, 700)]
    for g in graphs[1:]:
        assert torch.equal(g.rowptr, graphs[0].rowptr)
        assert torch.equal(g.col, graphs[0].col)
    g = graphs[0]
    dst = torch.repeat_interleave(torch.arange(g.num_dst), g.in_degree())
    d = (x[g.col] - x[dst]).norm(dim=1)
    ptr = g.rowptr.tolist()
    for i in range(g.num_dst):
        assert torch.all(d[ptr[i] + 1 : ptr[i + 1]] >= d[ptr[i] : ptr[i + 1] - 1] - 1e-6)
    assert torch.equal(torch.bincount(dst, minlength=g.num_dst), g.in_degree())
    assert set(graphs[0].col[graphs[0].rowptr[0] : graphs[0].rowptr[1]].tolist()) <= set(range(300))


def _points(kind: str, n: int, f: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "uniform":
        return torch.rand(n, f, generator=gen)
    if kind == "clustered":  # blobs at very different scales and places
        centre = torch.randint(0, 4, (n,), generator=gen)
        scale = torch.tensor([1e-4, 1e-2, 1.0, 30.0])[centre, None]
        return torch.randn(n, f, generator=gen) * scale + 100.0 * centre[:, None]
    if kind == "duplicates":  # many points at the same few places: ties everywhere
        return torch.randint(0, 3, (n, f), generator=gen).float()
    if kind == "lattice":  # integer grid: exact distance ties at cell borders
        return torch.stack([torch.arange(n) % 7, torch.arange(n) // 7, torch.arange(n) % 3][:f], 1).float()
    if kind == "strip":  # extreme anisotropy: 1e6 long, 1e-3 wide (one cell per point along it, uncapped)
        return torch.cat([torch.rand(n, 1, generator=gen) * 1e6, torch.rand(n, f - 1, generator=gen) * 1e-3], 1)
    if kind == "flat":  # points on a line inside an F-dimensional box (zero extent elsewhere)
        t = torch.rand(n, 1, generator=gen)
        return torch.cat([t, torch.full((n, f - 1), 0.5)], 1)
    raise ValueError(kind)


def _row_distances(g, x: torch.Tensor) -> list[list[float]]:
    d = (x.double()[g.col] - x.double()[g.dst()]).norm(dim=1)
    ptr = g.rowptr.tolist()
    return [sorted(d[ptr[i] : ptr[i + 1]].tolist()) for i in range(g.num_dst)]


@pytest.mark.parametrize("f", [1, 2, 3])
@pytest.mark.parametrize("kind", ["uniform", "clustered", "duplicates", "lattice", "flat", "strip"])
@pytest.mark.parametrize("loop", [True, False])
def test_grid_method_is_exact_like_brute_force(f, kind, loop):
    lengths = [0, 1, 2, 37, 200, 5]
    x = _points(kind, sum(lengths), f, torch.Generator().manual_seed(f))
    brute = S.knn(x, 7, lengths=lengths, loop=loop, method="brute")
    for cell_points, budget in [(None, 2**22), (0.5, 50), (3.0, 2**22), (50.0, 700)]:
        grid = S.knn(x, 7, lengths=lengths, loop=loop, method="grid", cell_points=cell_points, max_elements=budget)
        assert torch.equal(grid.rowptr, brute.rowptr)
        if not loop:  # never the node itself
            assert not bool((grid.col == grid.dst()).any())
        # Same distances row by row (tied neighbours may differ); without ties, the same sets.
        for got, want in zip(_row_distances(grid, x), _row_distances(brute, x), strict=True):
            assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
        if kind == "uniform":
            assert [set(r) for r in _rows(grid)] == [set(r) for r in _rows(brute)]


def _rows(g) -> list[list[int]]:
    ptr = g.rowptr.tolist()
    return [g.col[ptr[i] : ptr[i + 1]].tolist() for i in range(g.num_dst)]


@pytest.mark.parametrize("method", ["grid", "brute"])
def test_knn_is_exact_for_coordinates_near_the_dtype_range(method):
    # Squared distances of coordinates ~1e25 overflow float32 (and of ~1e-25 underflow): the grid
    # returned a non-nearest neighbour in every row. Scaling by a power of two changes no comparison.
    x = torch.rand(200, 2, generator=torch.Generator().manual_seed(0))
    want = [set(r) for r in _rows(S.knn(x.double(), 4, method="brute"))]
    for scale in (1e25, 1e-25, 2.0**40, 1.0, 1e-40):  # 1e-40: subnormal in float32
        got = S.knn(x * scale, 4, method=method)
        assert [set(r) for r in _rows(got)] == want, scale


def test_auto_uses_the_grid_for_spread_points_and_brute_force_for_clusters(monkeypatch):
    knn_module = importlib.import_module("graphattn.structure.knn")  # (the package exports the function)
    calls = []
    original = knn_module._brute_force
    monkeypatch.setattr(knn_module, "_brute_force", lambda *a: calls.append(a[2].tolist()) or original(*a))
    gen = torch.Generator().manual_seed(0)
    spread = torch.rand(4000, 2, generator=gen)
    S.knn(spread, 8)
    assert calls == []  # one long example of spread points: grid only
    clustered = torch.cat([torch.randn(3900, 2, generator=gen) * 1e-6, torch.rand(100, 2, generator=gen)])
    both = torch.cat([spread, clustered])
    g = S.knn(both, 8, lengths=[4000, 4000])
    assert calls == [[False, True]]  # the clustered example alone went to brute force
    brute = S.knn(both, 8, lengths=[4000, 4000], method="brute")
    flat = [d for row in _row_distances(g, both) for d in row]
    assert flat == pytest.approx([d for row in _row_distances(brute, both) for d in row], rel=1e-5, abs=1e-9)


def test_knn_method_errors():
    with pytest.raises(ValueError, match="method must be 'auto', 'grid' or 'brute'"):
        S.knn(torch.randn(5, 2), 2, method="kdtree")
    with pytest.raises(ValueError, match=r"method='grid' needs Euclidean distance \(cosine=False\) and 1 to 3"):
        S.knn(torch.randn(5, 2), 2, method="grid", cosine=True)
    with pytest.raises(ValueError, match=r"1 to 3 coordinates.*\[5, 4\]"):
        S.knn(torch.randn(5, 4), 2, method="grid")
    with pytest.raises(ValueError, match="cell_points must be > 0"):
        S.knn(torch.randn(5, 2), 2, cell_points=0)
    with pytest.raises(ValueError, match="x must be finite"):
        S.knn(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), 1)
