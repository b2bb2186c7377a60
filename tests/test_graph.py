"""Graph: construction, views and validation (every bad input names its argument)."""

import pytest
import torch

import graphattn._keys as keys_module
from graphattn import Graph
from graphattn.testing import adversarial_graphs


def test_from_edge_index_sorts_by_destination_stably():
    # PyG convention: row 0 = source, row 1 = destination.
    edge_index = torch.tensor([[0, 3, 1, 2, 3], [2, 0, 2, 1, 2]])
    g, perm = Graph.from_edge_index(edge_index, return_perm=True)
    assert g.num_dst == g.num_src == 4
    assert g.rowptr.tolist() == [0, 1, 2, 5, 5]
    assert g.col.tolist() == [3, 2, 0, 1, 3]  # into 2: input order 0, 1, 3 kept
    assert perm.tolist() == [1, 3, 0, 2, 4]
    assert torch.equal(edge_index[:, perm], g.to_edge_index())


def test_from_edge_index_sizes():
    ei = torch.tensor([[0, 4], [1, 0]])
    assert Graph.from_edge_index(ei, num_src=5, num_dst=2).num_dst == 2
    assert Graph.from_edge_index(ei, num_dst=5).num_src == 5  # the other defaults to it
    g = Graph.from_edge_index(torch.empty(2, 0, dtype=torch.long))
    assert (g.num_src, g.num_dst, g.num_edges) == (0, 0, 0)
    assert Graph.from_edge_index(ei.int()).col.dtype == torch.int64  # any integer dtype accepted


def test_from_dense_roundtrip():
    mask = torch.rand(5, 7, generator=torch.Generator().manual_seed(0)) > 0.5
    g = Graph.from_dense(mask)
    assert (g.num_dst, g.num_src) == (5, 7)
    assert torch.equal(g.to_dense() > 0, mask)
    assert torch.equal(g.in_degree(), mask.sum(1))
    assert torch.equal(g.out_degree(), mask.sum(0))


@pytest.mark.parametrize("case", adversarial_graphs(hub_degree=300), ids=repr)
def test_transpose_lists_the_same_edges(case):
    g = case.graph
    colptr, row, perm = g.transpose
    assert colptr.numel() == g.num_src + 1 and int(colptr[-1]) == g.num_edges
    assert torch.equal(g.col[perm], torch.repeat_interleave(torch.arange(g.num_src), colptr.diff()))
    assert torch.equal(row, g.dst()[perm])
    assert sorted(perm.tolist()) == list(range(g.num_edges))
    # Stable: within one source, edge ids increase.
    for s in range(g.num_src):
        ids = perm[colptr[s] : colptr[s + 1]]
        assert torch.all(ids[1:] > ids[:-1])
    assert g.transpose is g.transpose  # cached


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_editing_col_in_place_rebuilds_the_cached_views(backend):
    # The transpose is cached; an in-place edit of col must not leave it describing the old
    # edges (the backward reads it: the native gradients of k and v were silently wrong).
    from graphattn.ops import edge_attention

    g = Graph.from_edge_index(torch.tensor([[0, 1, 2, 0], [1, 2, 0, 0]]))
    stale = g.transpose
    g.col.copy_(torch.tensor([1, 1, 1, 1]))
    colptr, row, perm = g.transpose
    assert colptr.tolist() == [0, 0, 4, 4] and row.tolist() == [0, 0, 1, 2] and perm.tolist() == [0, 1, 2, 3]
    assert g.transpose is not stale and g.transpose is g.transpose  # rebuilt once, then cached again
    assert g.dst().tolist() == [0, 0, 1, 2]
    q, k, v = (torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    got = torch.autograd.grad(edge_attention(q, k, v, g, backend=backend).sum(), (q, k, v))
    fresh = Graph(g.rowptr.clone(), g.col.clone(), g.num_src)
    want = torch.autograd.grad(edge_attention(q, k, v, fresh, backend="reference").sum(), (q, k, v))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("case", adversarial_graphs(hub_degree=300), ids=repr)
def test_packed_key_argsort_equals_the_stable_sort(case, monkeypatch):
    """On the CPU, stable argsorts (the transpose, from_edge_index) sort packed (value, position)
    keys; inputs too large to pack them use torch.sort(stable=True) (forced here): same results."""
    g = case.graph
    edge_index = g.to_edge_index()[:, torch.randperm(g.num_edges, generator=torch.Generator().manual_seed(0))]
    packed = (
        *Graph(g.rowptr, g.col, g.num_src).transpose,
        *Graph.from_edge_index(edge_index, g.num_src, g.num_dst, return_perm=True)[1:],
    )
    monkeypatch.setattr(keys_module, "_KEY_BITS", 0)
    stable = (
        *Graph(g.rowptr, g.col, g.num_src).transpose,
        *Graph.from_edge_index(edge_index, g.num_src, g.num_dst, return_perm=True)[1:],
    )
    for x, y in zip(packed, stable, strict=True):
        assert torch.equal(x, y)


def test_multigraph_counts_duplicates():
    g = Graph.from_edge_index(torch.tensor([[1, 1, 0], [0, 0, 0]]), num_src=2, num_dst=1)
    assert g.to_dense().tolist() == [[1, 2]]
    assert g.in_degree().tolist() == [3]


def test_to_same_device_is_identity_and_repr():
    g = Graph.from_edge_index(torch.tensor([[0], [1]]))
    assert g.to("cpu") is g
    assert repr(g) == "Graph(num_dst=2, num_src=2, num_edges=1, device=cpu)"


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_graphs_made_under_inference_mode_work(backend):
    # Inference tensors have no version counter; the cache check must not ask them for one.
    from graphattn.ops import edge_attention

    with torch.inference_mode():
        g = Graph.from_edge_index(torch.tensor([[0, 1, 2, 0], [1, 2, 0, 0]]))
        assert g.dst().tolist() == [0, 0, 1, 2] and g.transpose.colptr.tolist() == [0, 2, 3, 4]
        assert g.to_edge_index().shape == (2, 4)
        q = torch.randn(3, 2, 4)
        out = edge_attention(q, q, q, g, backend=backend)
    torch.testing.assert_close(out, edge_attention(q, q, q, Graph(g.rowptr.clone(), g.col.clone(), 3)))


def test_to_moves_cached_views():
    g = Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]))
    _ = g.transpose, g.dst()
    moved = g.to("meta")
    carried = moved._cache["transpose"], moved._cache["dst"]
    assert moved.transpose is carried[0] and moved.dst() is carried[1]  # not rebuilt on first use
    assert moved.col.device.type == "meta"
    assert moved.transpose.perm.device.type == "meta"


# ---------------------------------------------------------------------- bad input
rp, c = torch.tensor([0, 1, 2]), torch.tensor([0, 1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"rowptr": rp.int(), "col": c, "num_src": 2},
            TypeError,
            r"rowptr must have dtype torch.int64, got torch.int32",
        ),
        ({"rowptr": rp, "col": c.float(), "num_src": 2}, TypeError, r"col must have dtype torch.int64"),
        ({"rowptr": rp, "col": [0, 1], "num_src": 2}, TypeError, r"col must be a torch.Tensor, got list"),
        ({"rowptr": rp[None], "col": c, "num_src": 2}, ValueError, r"rowptr must be 1-D, got shape \[1, 3\]"),
        ({"rowptr": rp, "col": c, "num_src": -1}, ValueError, r"num_src must be >= 0, got -1"),
        ({"rowptr": rp, "col": c, "num_src": 2.0}, TypeError, r"num_src must be an int, got float"),
        ({"rowptr": rp, "col": c, "num_src": torch.tensor(True)}, TypeError, r"num_src must be an int, got a bool"),
        (
            {"rowptr": rp, "col": c, "num_src": 1},
            ValueError,
            r"col must hold source indices in \[0, num_src\) = \[0, 1\), got values in \[0, 1\]",
        ),
        ({"rowptr": rp, "col": torch.tensor([0, -1]), "num_src": 2}, ValueError, r"got values in \[-1, 0\]"),
        (
            {"rowptr": torch.tensor([0, 2, 1, 2]), "col": c, "num_src": 2},
            ValueError,
            r"rowptr must be non-decreasing, but rowptr\[2\] = 1 < rowptr\[1\] = 2",
        ),
        (
            {"rowptr": torch.tensor([1, 2]), "col": c, "num_src": 2},
            ValueError,
            r"rowptr must start at 0, got rowptr\[0\] = 1",
        ),
        (
            {"rowptr": torch.tensor([0, 3]), "col": c, "num_src": 2},
            ValueError,
            r"rowptr must end at E = col.numel\(\) = 2, got rowptr\[-1\] = 3",
        ),
        ({"rowptr": torch.zeros(0, dtype=torch.long), "col": c[:0], "num_src": 0}, ValueError, r"N_dst \+ 1 >= 1"),
        ({"rowptr": rp, "col": c.to("meta"), "num_src": 2}, ValueError, r"col and rowptr must be on the same device"),
        ({"ptr": torch.zeros(0, dtype=torch.long)}, ValueError, r"ptr must have B \+ 1 >= 1 entries"),
        ({"ptr": torch.tensor([0, 5])}, ValueError, r"ptr must end at N_dst = 2, got ptr\[-1\] = 5"),
        (
            {"ptr": torch.tensor([0, 2, 1, 2])},
            ValueError,
            r"ptr must be non-decreasing, but ptr\[2\] = 1 < ptr\[1\] = 2",
        ),
        ({"ptr": torch.tensor([1, 2])}, ValueError, r"ptr must start at 0, got ptr\[0\] = 1"),
        ({"src_ptr": torch.tensor([0, 3])}, ValueError, r"src_ptr must end at num_src = 2, got src_ptr\[-1\] = 3"),
        ({"src_ptr": torch.tensor([-1, 2])}, ValueError, r"src_ptr must start at 0, got src_ptr\[0\] = -1"),
        (
            {"ptr": torch.tensor([0, 1, 2]), "src_ptr": torch.tensor([0, 2])},
            ValueError,
            r"src_ptr must have one entry per entry of ptr \(B \+ 1 = 3\), got 2 entries",
        ),
    ],
)
def test_constructor_rejects(kwargs, error, match):
    kwargs = {"rowptr": rp, "col": c, "num_src": 2} | kwargs
    with pytest.raises(error, match=match):
        Graph(**kwargs)


def test_validation_fetches_every_value_check_in_one_host_sync(monkeypatch):
    # rowptr, ptr, src_ptr and col's range were 4 device-to-host copies per Graph (structures build
    # one per forward on the GPU); they are one now. Count the Tensor -> Python conversions.
    rowptr, col, ptr = torch.tensor([0, 1, 3, 3, 4]), torch.tensor([2, 0, 1, 3]), torch.tensor([0, 2, 4])
    calls = []
    for method in ("tolist", "item", "__int__", "__bool__", "__index__", "__float__"):
        real = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method, lambda t, *a, _m=method, _r=real: calls.append(_m) or _r(t, *a))
    Graph(rowptr, col, 4, ptr=ptr, src_ptr=ptr.clone())
    assert calls == ["tolist"]
    calls.clear()
    with pytest.raises(ValueError, match=r"src_ptr must end at num_src = 4, got src_ptr\[-1\] = 3"):
        Graph(rowptr, col, 4, ptr=ptr, src_ptr=torch.tensor([0, 2, 3]))
    with pytest.raises(ValueError, match=r"col must hold source indices in .*, got values in \[0, 4\]"):
        Graph(rowptr, torch.tensor([2, 0, 1, 4]), 4, ptr=ptr)


def test_non_contiguous_index_tensors_are_stored_contiguous():
    from graphattn.ops import edge_attention

    rowptr = torch.tensor([[0, 9], [2, 9], [3, 9], [5, 9]])[:, 0]  # stride 2
    col = torch.tensor([[1, 0], [2, 1], [0, 2], [1, 0], [2, 1]])[:, 0]
    ptr = torch.tensor([[0, 0], [3, 3]])[:, 1]
    ones = torch.tensor([1]).expand(2)  # stride 0
    strided = Graph(rowptr, col, 3, ptr=ptr, src_ptr=ptr)
    expanded = Graph(torch.tensor([0, 2, 2, 2]), ones, 3)
    assert all(t.is_contiguous() for t in (strided.rowptr, strided.col, strided.ptr, strided.src_ptr, expanded.col))
    q, k, v = (torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(i)) for i in range(3))
    for g, ref in [
        (strided, Graph(rowptr.contiguous(), col.contiguous(), 3)),
        (expanded, Graph(torch.tensor([0, 2, 2, 2]), ones.contiguous(), 3)),
    ]:
        torch.testing.assert_close(edge_attention(q, k, v, g), edge_attention(q, k, v, ref))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (
            (torch.tensor([[0.0, 1.0], [1.0, 0.0]]),),
            {},
            TypeError,
            r"edge_index must have an integer dtype, got torch.float32",
        ),
        ((torch.tensor([0, 1]),), {}, ValueError, r"edge_index must be \[2, E\], got shape \[2\]"),
        ((torch.tensor([[0, 1, 2]] * 3),), {}, ValueError, r"edge_index must be \[2, E\], got shape \[3, 3\]"),
        (
            (torch.tensor([[0, -1], [1, 0]]),),
            {},
            ValueError,
            r"edge_index\[0\] \(sources\) must be in \[0, num_src\) = \[0, 2\), got min -1",
        ),
        (
            (torch.tensor([[0], [5]]),),
            {"num_src": 2, "num_dst": 3},
            ValueError,
            r"edge_index\[1\] .* \[0, 3\), got max 5",
        ),
        (
            (torch.tensor([[5], [0]]),),
            {"num_src": 2, "num_dst": 3},
            ValueError,
            r"edge_index\[0\] \(sources\) must be in \[0, num_src\) = \[0, 2\), got max 5",
        ),
        ((torch.tensor([[0], [0]]),), {"num_dst": -2}, ValueError, r"num_dst must be >= 0, got -2"),
        (([[0], [0]],), {}, TypeError, r"edge_index must be a torch.Tensor, got list"),
    ],
)
def test_from_edge_index_rejects(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        Graph.from_edge_index(*args, **kwargs)


def test_from_dense_rejects():
    with pytest.raises(TypeError, match=r"mask must have dtype torch.bool, got torch.int64"):
        Graph.from_dense(torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask must be \[N_dst, N_src\], got shape \[4\]"):
        Graph.from_dense(torch.ones(4, dtype=torch.bool))


def test_frozen():
    g = Graph.from_edge_index(torch.tensor([[0], [1]]))
    with pytest.raises(AttributeError):
        g.num_src = 3


def test_sizes_accept_integral_numbers_not_booleans():
    """check_int (every size argument): numpy integers are sizes (np.int64 from array arithmetic),
    booleans are not, in Python, NumPy or tensor form."""
    import numpy as np

    g = Graph(rp, c, np.int64(2))
    assert g.num_src == 2 and type(g.num_src) is int
    for flag in (True, np.bool_(True)):
        with pytest.raises(TypeError, match="num_src must be an int, got bool"):
            Graph(rp, c, flag)
