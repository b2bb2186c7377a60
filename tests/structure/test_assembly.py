"""The CSR assembly paths of the fixed builders agree with each other and with their definitions.

``assemble_rows`` has a generic path (arithmetic runs written by prefix sums) and a grouped path
(rows that are shifted copies of the row before them, written as 2-D blocks); the grouped path
only runs on graphs of at least ``16 · _MIN_GROUP_EDGES`` edges. Here the threshold is moved so
that every builder is built both ways, on small and on medium inputs, and the two graphs must be
identical (same ``rowptr``, same ``col``, same order within rows). The generic path itself is
checked against the dense definitions in ``test_builders.py``.
"""

from __future__ import annotations

import pytest
import torch

import graphattn.structure as S
from graphattn.structure import _segments
from graphattn.structure._segments import Part, assemble_rows, fill_runs, repeat_rows

LENGTHS = [[0], [1], [2], [7], [13, 0, 1, 17, 5], [300], [64, 64, 64, 65], [1000], [5] * 40 + [200]]

BUILDERS = {
    "full": lambda L: S.full(lengths=L),
    "window": lambda L: S.window(None, 9, lengths=L),
    "window_wide": lambda L: S.window(None, 400, lengths=L),
    "window_causal": lambda L: S.window(None, 6, causal=True, lengths=L),
    "dilated": lambda L: S.dilated(None, 4, 3, lengths=L),
    "dilated_causal": lambda L: S.dilated(None, 5, 2, causal=True, lengths=L),
    "strided": lambda L: S.strided(None, 8, lengths=L),
    "strided_causal": lambda L: S.strided(None, 5, causal=True, lengths=L),
    "fixed": lambda L: S.fixed(None, 8, 3, lengths=L),
    "fixed_c1": lambda L: S.fixed(None, 16, 1, lengths=L),
    "block_local": lambda L: S.block_local(None, 16, lengths=L),
    "global_tokens": lambda L: S.global_tokens(None, 3, lengths=L),
    "global_positions": lambda L: S.global_tokens(None, [0, 2, 3, 9, 50], lengths=L),
}

IMAGES = [[(0, 0)], [(1, 1)], [(1, 6)], [(7, 1)], [(5, 6)], [(3, 5), (4, 4), (0, 3), (4, 4)], [(40, 33)], [(9, 9)] * 7]


def _both(build, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(_segments, "_MIN_GROUP_EDGES", 10**15)  # never grouped
        generic = build()
    with monkeypatch.context() as m:
        m.setattr(_segments, "_MIN_GROUP_EDGES", 1)  # grouped wherever a shift is declared
        grouped = build()
    return generic, grouped


def _assert_same(a, b):
    assert torch.equal(a.rowptr, b.rowptr)
    assert torch.equal(a.col, b.col)
    assert a.num_src == b.num_src
    assert (a.ptr is None and b.ptr is None) or torch.equal(a.ptr, b.ptr)


@pytest.mark.parametrize("lengths", LENGTHS, ids=str)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_grouped_and_generic_paths_build_the_same_graph(name, lengths, monkeypatch):
    generic, grouped = _both(lambda: BUILDERS[name](lengths), monkeypatch)
    _assert_same(generic, grouped)


@pytest.mark.parametrize("sizes", IMAGES, ids=str)
def test_axial_grouped_and_generic_paths_agree(sizes, monkeypatch):
    for patch in (1, 2):
        generic, grouped = _both(lambda p=patch: S.axial(sizes=sizes, patch_size=p), monkeypatch)
        _assert_same(generic, grouped)


def test_grouped_path_at_its_default_threshold_matches_the_definition():
    # Large enough for the default threshold (>= 65536 edges): the dense definition of each pattern.
    n = 1400
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    cases = [
        (S.strided(n, 8), ((i - j).abs() < 8) | ((i - j) % 8 == 0)),
        (S.strided(n, 8, causal=True), (((i - j).abs() < 8) | ((i - j) % 8 == 0)) & (j <= i)),
        (S.fixed(n, 16, 3), (i // 16 == j // 16) | (j % 16 >= 13)),
        (S.window(n, 60), (i - j).abs() < 60),
        (S.full(n), torch.ones(n, n, dtype=torch.bool)),
        (S.block_local(n, 200), i // 200 == j // 200),
    ]
    for g, mask in cases:
        assert g.num_edges >= 16 * _segments._MIN_GROUP_EDGES
        assert torch.equal(g.to_dense(), mask.long())
    a = S.axial(60, 50)
    assert a.num_edges >= 16 * _segments._MIN_GROUP_EDGES
    y, x = torch.arange(60 * 50) // 50, torch.arange(60 * 50) % 50
    assert torch.equal(a.to_dense(), ((y[:, None] == y[None, :]) | (x[:, None] == x[None, :])).long())
    # row order of the window part of strided: ascending; of axial: the row first
    assert a.col[a.rowptr[51] : a.rowptr[52]].tolist() == [*range(50, 100), 1, *range(101, 3000, 50)]


def test_fill_runs_constant_and_per_run_steps():
    start = torch.tensor([0, 3, 4])
    length = torch.tensor([3, 1, 4])
    first = torch.tensor([10, -5, 7])
    assert fill_runs(8, start, first, 2, length).tolist() == [10, 12, 14, -5, 7, 9, 11, 13]
    steps = torch.tensor([1, 9, -3])
    assert fill_runs(8, start, first, steps, length).tolist() == [10, 11, 12, -5, 7, 4, 1, -2]
    assert fill_runs(0, start[:0], first[:0], 1, length[:0]).tolist() == []
    assert repeat_rows(torch.tensor([4, 5, 6]), torch.tensor([2, 0, 3]), 5).tolist() == [4, 4, 6, 6, 6]


def test_assemble_rows_mixed_steps_explicit_parts_and_shifts(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    n = 300
    deg_a = torch.randint(0, 4, (n,), generator=gen)
    deg_a[100:250] = 3  # a long run of shifted copies
    first_a = torch.arange(n) * 2
    deg_b = torch.full((n,), 2)
    deg_b[::37] = 0
    first_b = torch.full((n,), 1000)
    step_b = torch.where(torch.arange(n) < 150, 5, 7)  # a per-row step
    parts = [Part(deg_a, first_a, 1), Part(deg_b, first_b, step_b)]
    expect = []
    for i in range(n):
        expect += [int(first_a[i]) + t for t in range(int(deg_a[i]))]
        expect += [1000 + int(step_b[i]) * t for t in range(int(deg_b[i]))]
    for threshold in (10**15, 1, 16):
        monkeypatch.setattr(_segments, "_MIN_GROUP_EDGES", threshold)
        rowptr, col = assemble_rows(parts, shift=(2, 0))
        assert col.tolist() == expect
        assert torch.equal(rowptr[1:] - rowptr[:-1], deg_a + deg_b)
    values = torch.arange(int(deg_b.sum())) + 5000
    rowptr, col = assemble_rows([Part(deg_a, first_a, 1), Part(deg_b, col=values)])
    rows = [col[rowptr[i] : rowptr[i + 1]].tolist() for i in range(n)]
    taken = 0
    for i in range(n):
        own = [int(first_a[i]) + t for t in range(int(deg_a[i]))]
        assert rows[i] == own + values[taken : taken + int(deg_b[i])].tolist()
        taken += int(deg_b[i])
    with pytest.raises(ValueError, match="shift needs one entry per part"):
        monkeypatch.setattr(_segments, "_MIN_GROUP_EDGES", 1)
        assemble_rows(parts, shift=(1, 1, 1))


@pytest.mark.parametrize("positions", [list(range(0, 40, 3)), [1, 2, 3, 10, 11, 30]], ids=["scattered", "runs"])
def test_global_tokens_runs_and_scattered_positions(positions):
    # More than 8 runs of consecutive positions takes the explicit path; fewer, the arithmetic one.
    lengths = [50, 12, 0, 1, 31]
    g = S.global_tokens(None, positions, lengths=lengths)
    off = 0
    for length in lengths:
        glob = [p for p in positions if p < length]
        for p in range(length):
            row = g.col[g.rowptr[off + p] : g.rowptr[off + p + 1]].tolist()
            assert row == ([off + j for j in range(length)] if p in glob else [off + j for j in glob])
        off += length


def test_filter_edges_and_causal_keep_order_and_batch():
    g = S.bigbird(None, 3, 2, 3, lengths=[9, 0, 14], generator=torch.Generator().manual_seed(1))
    c, keep = S.causal(g, return_mask=True)
    dst = torch.repeat_interleave(torch.arange(g.num_dst), g.in_degree())
    assert torch.equal(keep, g.col <= dst)
    assert torch.equal(c.col, g.col[keep])
    assert torch.equal(c.in_degree(), torch.bincount(dst[keep], minlength=g.num_dst))
    assert torch.equal(c.ptr, g.ptr)
