"""Per-head graphs folded into nodes run through the same op as separate per-head attention."""

from __future__ import annotations

import pytest
import torch

import graphattn.structure as S
from graphattn.ops import edge_attention


def test_fold_unfold_round_trip():
    x = torch.randn(5, 3, 4)
    f = S.fold(x)
    assert f.shape == (15, 1, 4) and torch.equal(f[2 * 5 + 1, 0], x[1, 2])
    assert torch.equal(S.unfold(f, 3), x)


def test_per_head_graphs_equal_separate_attention():
    lengths = [7, 5]
    graphs = [S.window(None, 2, lengths=lengths), S.full(lengths=lengths), S.global_tokens(None, 1, lengths=lengths)]
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(12, 3, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    folded = S.fold_heads(graphs)
    assert folded.num_dst == 36 and folded.ptr.tolist() == [0, 7, 12, 19, 24, 31, 36]
    out = S.unfold(edge_attention(S.fold(q), S.fold(k), S.fold(v), folded), 3)
    for h, g in enumerate(graphs):
        ref = edge_attention(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], g)
        assert torch.allclose(out[:, h : h + 1], ref)
    back = S.unfold_graph(folded, 3)
    assert all(torch.equal(a.to_dense(), b.to_dense()) for a, b in zip(back, graphs, strict=True))


def test_fold_errors():
    with pytest.raises(ValueError, match=r"every head's graph must have \(num_dst, num_src\) = \(3, 3\)"):
        S.fold_heads([S.full(3), S.full(4)])
    with pytest.raises(ValueError, match=r"x must be \[N, H, D\]"):
        S.fold(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="not multiples of num_heads"):
        S.unfold_graph(S.full(5), 2)
    # 0 divided by zero; a negative count returned no graphs.
    for h in (0, -2):
        with pytest.raises(ValueError, match=f"num_heads must be >= 1, got {h}"):
            S.unfold_graph(S.full(4), h)
        with pytest.raises(ValueError, match=f"num_heads must be >= 1, got {h}"):
            S.unfold(torch.zeros(4, 1, 2), h)
