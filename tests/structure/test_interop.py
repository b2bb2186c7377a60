"""from_pyg / from_dgl: duck-typed inputs (no framework import) and the self-loop policy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import graphattn.structure as S
from graphattn._compat import import_dgl

EDGES = torch.tensor([[0, 1, 1, 2, 2], [1, 0, 1, 0, 2]])  # 1->1 and 2->2 are self loops


class FakeDGL:
    """The three members from_dgl reads, like a DGL graph."""

    def __init__(self, src, dst, n_src, n_dst):
        self.src, self.dst, self.n_src, self.n_dst = src, dst, n_src, n_dst

    def edges(self):
        return self.src, self.dst

    def num_src_nodes(self):
        return self.n_src

    def num_dst_nodes(self):
        return self.n_dst


@pytest.mark.parametrize("policy,loops", [("keep", [0, 1, 1]), ("remove", [0, 0, 0]), ("add", [1, 1, 1])])
def test_from_pyg_self_loop_policy(policy, loops):
    data = SimpleNamespace(edge_index=EDGES, num_nodes=3)
    g, perm = S.from_pyg(data, self_loops=policy, return_perm=True)
    assert torch.diagonal(g.to_dense()).tolist() == loops
    off_diag = g.to_dense() - torch.diag(torch.diagonal(g.to_dense()))
    assert off_diag.sum() == 3  # 0->1, 1->0, 2->0 always kept
    real = perm >= 0
    assert torch.equal(EDGES[0][perm[real]], g.col[real]) and torch.equal(EDGES[1][perm[real]], g.dst()[real])


def test_from_pyg_batch_sets_ptr():
    data = SimpleNamespace(edge_index=torch.tensor([[0, 3], [1, 2]]), num_nodes=4, batch=torch.tensor([0, 0, 1, 1]))
    assert S.from_pyg(data, self_loops="keep").ptr.tolist() == [0, 2, 4]


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (torch.tensor([0, 1, 0]), r"batch must be non-decreasing \(nodes grouped by example, as in PyG\)"),
        (torch.tensor([0, 1]), r"batch must have n = 3 entries, got 2"),
    ],
)
def test_from_pyg_rejects_a_bad_batch(batch, match):
    data = SimpleNamespace(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3, batch=batch)
    with pytest.raises(ValueError, match=match):
        S.from_pyg(data, self_loops="keep")


def test_from_pyg_rejects_a_bad_ptr():
    data = SimpleNamespace(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3, ptr=torch.tensor([0, 2, 1, 3]))
    with pytest.raises(ValueError, match=r"ptr must be non-decreasing, but ptr\[2\] = 1 < ptr\[1\] = 2"):
        S.from_pyg(data, self_loops="keep")


def test_from_dgl_with_a_duck_typed_graph_and_bipartite_block():
    g = S.from_dgl(FakeDGL(EDGES[0], EDGES[1], 3, 3), self_loops="add")
    assert torch.diagonal(g.to_dense()).tolist() == [1, 1, 1]
    block = S.from_dgl(FakeDGL(torch.tensor([4, 0]), torch.tensor([1, 0]), 5, 2), self_loops="keep")
    assert block.num_src == 5 and block.num_dst == 2 and block.col.tolist() == [0, 4]


def test_from_dgl_with_dgl():
    dgl = import_dgl()
    a = dgl.graph((EDGES[0], EDGES[1]), num_nodes=3)
    b = dgl.graph((torch.tensor([0]), torch.tensor([1])), num_nodes=2)
    g = S.from_dgl(dgl.batch([a, b]), self_loops="remove")
    assert g.ptr.tolist() == [0, 3, 5]
    assert g.to_dense().sum() == 4 and int(torch.diagonal(g.to_dense()).sum()) == 0


def test_policy_is_required_and_checked():
    data = SimpleNamespace(edge_index=EDGES, num_nodes=3)
    with pytest.raises(TypeError):
        S.from_pyg(data)  # no default: the caller must choose
    with pytest.raises(ValueError, match="self_loops must be 'keep', 'add' or 'remove', got 'yes'"):
        S.from_pyg(data, self_loops="yes")
    with pytest.raises(ValueError, match="self_loops='add' needs num_src == num_dst"):
        S.from_dgl(FakeDGL(torch.tensor([0]), torch.tensor([0]), 2, 1), self_loops="add")
    with pytest.raises(TypeError, match=r"g must be a DGL graph with .edges\(\)"):
        S.from_dgl(object(), self_loops="keep")


@pytest.mark.parametrize("self_loops", ["keep", "add", "remove"])
def test_from_edge_index_rejects_non_integer_indices(self_loops):
    """A float edge_index was truncated by .long() into another graph; the policies that read the
    indices ("add", "remove") did so before any check."""
    with pytest.raises(TypeError, match=r"edge_index must have an integer dtype, got torch\.float32"):
        S.from_edge_index(torch.tensor([[0.9, 1.5], [1.2, 0.7]]), 2, 2, self_loops=self_loops)
    with pytest.raises(TypeError, match=r"edge_index must have an integer dtype, got torch\.bool"):
        S.from_edge_index(torch.tensor([[True, False], [False, True]]), 2, 2, self_loops=self_loops)
    with pytest.raises(ValueError, match=r"edge_index must be \[2, E\], got shape \[3, 1\]"):
        S.from_edge_index(torch.zeros(3, 1, dtype=torch.long), 2, 2, self_loops=self_loops)
