"""random(): r distinct uniform sources from the own example, reproducible with a generator."""

from __future__ import annotations

import torch

import graphattn.structure as S


def test_reproducible_with_a_generator():
    a = S.random(None, 5, generator=torch.Generator().manual_seed(7), lengths=[30, 4, 100])
    b = S.random(None, 5, generator=torch.Generator().manual_seed(7), lengths=[30, 4, 100])
    c = S.random(None, 5, generator=torch.Generator().manual_seed(8), lengths=[30, 4, 100])
    assert torch.equal(a.col, b.col) and torch.equal(a.rowptr, b.rowptr)
    assert not torch.equal(a.col, c.col)


def test_distinct_sorted_sources_inside_the_example():
    g = S.random(None, 6, generator=torch.Generator().manual_seed(0), lengths=[50, 6, 3, 0, 1])
    assert g.in_degree().tolist() == [6] * 50 + [6] * 6 + [3] * 3 + [1]
    rows = g.col.view(-1)[: 50 * 6].view(50, 6)
    assert bool((rows[:, 1:] > rows[:, :-1]).all())  # sorted and distinct
    assert int(rows.max()) < 50
    d = g.to_dense()
    assert int(d.max()) == 1
    assert torch.equal(d[50:56, 50:56], torch.ones(6, 6, dtype=torch.long))  # L <= r: all of the example


def test_replace_draws_r_per_row():
    g = S.random(None, 8, generator=torch.Generator().manual_seed(0), replace=True, lengths=[3, 0, 10])
    assert g.in_degree().tolist() == [8] * 13
    assert int(g.col[:24].max()) < 3 and int(g.col[24:].min()) >= 3


def test_marginals_are_uniform():
    # Each of L = 10 sources is picked by a row with probability r / L = 0.3.
    n, r, length = 4000, 3, 10
    g = S.random(None, r, generator=torch.Generator().manual_seed(1), lengths=[length] * (n // length))
    freq = torch.bincount(g.col - (g.dst() // length) * length, minlength=length).double() / n
    assert torch.allclose(freq, torch.full((length,), r / length, dtype=torch.float64), atol=0.03)


def test_structure_draws_a_new_graph_each_call():
    st = S.Random(3, generator=torch.Generator().manual_seed(0))
    q = torch.zeros(40, 1, 2)
    a, b = st(q, q).graph, st(q, q).graph
    assert not torch.equal(a.col, b.col)
