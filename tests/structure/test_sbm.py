"""SBM (sampled) structure: the fastRG sampler's distribution, straight-through gradients, batching."""

import math

import pytest
import torch

from graphattn.ops import edge_attention
from graphattn.structure import fold, unfold
from graphattn.structure._adaptive import straight_through_edge_gate, straight_through_ones
from graphattn.structure.sbm import SBM, _draw, _draw_table, sample_fastrg
from graphattn.testing import adversarial_graphs


def _small_model(seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand(6, 2, 3, generator=gen, dtype=torch.float64)
    z = torch.rand(6, 2, 3, generator=gen, dtype=torch.float64)
    s = torch.softmax(torch.randn(2, 9, generator=gen, dtype=torch.float64), -1).reshape(2, 3, 3)
    return y, s, z


def test_fastrg_edge_counts_have_mean_p_ij():
    # T copies of one 6-node example in one batch: T independent samples in one call.
    y, s, z = _small_model()
    t, n = 4000, 6
    p = torch.einsum("iha,hac,jhc->hij", y, s, z)  # [H, N, N]
    ptr = torch.arange(t + 1) * n
    head, dst, src = sample_fastrg(
        y.repeat(t, 1, 1), s, z.repeat(t, 1, 1), ptr, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(dst // n, src // n)  # never across examples
    counts = torch.zeros(2, n, n, dtype=torch.float64)
    counts.index_put_((head, dst % n, src % n), torch.ones(head.numel(), dtype=torch.float64), accumulate=True)
    freq = counts / t
    # Poisson(p) counts: standard error sqrt(p / T); allow 5 of them.
    assert bool(((freq - p).abs() <= 5 * (p / t).sqrt() + 1e-3).all()), (freq - p).abs().max()


def test_endpoint_draws_keep_their_precision_in_a_row_of_tiny_memberships():
    # Node masses 1e-12 beside a row of masses 1e6: one running sum over both rows would round
    # every tiny increment away; each row's own normalization keeps them. Two examples per row
    # (nodes 0-3 and 4-6); node 2 has mass 0 and must never be drawn.
    x = torch.zeros(7, 1, 2, dtype=torch.float64)
    x[:, 0, 0] = 1e6 * torch.arange(1.0, 8.0, dtype=torch.float64)
    x[:, 0, 1] = 1e-12 * torch.tensor([1.0, 3.0, 0.0, 4.0, 2.0, 5.0, 1.0], dtype=torch.float64)
    table, guide, total = _draw_table(x)
    assert torch.allclose(total.reshape(-1), x.sum(0).reshape(-1), rtol=1e-12)
    t, ptr, row_start = 200_000, torch.tensor([0, 4, 7]), torch.tensor([[8]])  # row 1 starts at entry 1 * (N + 1)
    for example, (node_first, node_last) in enumerate(((0, 4), (4, 7))):
        pair = torch.full((t,), example)  # block pair `example` of shape (2, 1): that example's block of row 1
        node = _draw(table, guide, 7, row_start, ptr, (2, 1), pair, torch.Generator().manual_seed(example))
        freq = torch.bincount(node, minlength=7).double() / t
        p = torch.zeros(7, dtype=torch.float64)
        p[node_first:node_last] = x[node_first:node_last, 0, 1] / x[node_first:node_last, 0, 1].sum()
        assert bool(((freq - p).abs() <= 5 * (p * (1 - p) / t).sqrt() + 1e-9).all()), (freq, p)


def _skewed(n):
    """Masses [n, 1, 1]: two heavy end nodes, one empty middle node, the rest light (3% of the mass at n = 64)."""
    mass = torch.full((n, 1, 1), 1e-3, dtype=torch.float64)
    mass[0], mass[-1], mass[n // 2] = 1.0, 1.0, 0.0
    return mass


def test_endpoint_draws_match_a_skewed_row_whose_tiny_masses_share_guide_cells():
    # Two heavy nodes and 62 light ones holding 3% of the mass: the light ones fall into two or
    # three of the row's 64 guide cells, so their draws search wide ranges (and drop out of the
    # search at different rounds).
    n, t = 64, 400_000
    mass = _skewed(n)
    table, guide, _ = _draw_table(mass)
    pair = torch.zeros(t, dtype=torch.long)
    node = _draw(
        table, guide, n, torch.tensor([[0]]), torch.tensor([0, n]), (1, 1), pair, torch.Generator().manual_seed(0)
    )
    freq = torch.bincount(node, minlength=n).double() / t
    p = mass.reshape(n) / mass.sum()
    assert bool(((freq - p).abs() <= 5 * (p * (1 - p) / t).sqrt() + 1e-9).all()), (freq - p).abs().max()


@pytest.mark.parametrize(
    "case",
    [
        # (y, s, z, ptr): a ragged batch with an empty and a one-node example; rows of tiny masses
        # beside huge ones; a skewed row whose light nodes share guide cells; saturated memberships.
        lambda: (_small_model()[0], _small_model()[1] * 50, _small_model()[2], torch.tensor([0, 0, 1, 4, 6])),
        lambda: (_small_model(3)[0], _small_model(3)[1] * 1e11, _small_model(3)[0] * 1e-9, torch.tensor([0, 6])),
        lambda: (_skewed(64), torch.ones(1, 1, 1, dtype=torch.float64) * 400, _skewed(64), torch.tensor([0, 20, 64])),
        lambda: (
            torch.ones(300, 2, 4),
            torch.full((2, 4, 4), 1 / 16),
            torch.ones(300, 2, 4),
            torch.tensor([0, 100, 300]),
        ),
    ],
)
def test_native_sampler_equals_the_pytorch_path(case, monkeypatch):
    from graphattn.structure import sbm

    y, s, z, ptr = case()
    assert sbm._native_sampler(y)  # the native kernel is built and takes CPU inputs
    native = sample_fastrg(y, s, z, ptr, generator=torch.Generator().manual_seed(7))
    monkeypatch.setattr(sbm, "_native_sampler", lambda x: False)
    reference = sample_fastrg(y, s, z, ptr, generator=torch.Generator().manual_seed(7))
    assert native[0].numel() > 100
    for got, want in zip(native, reference, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 2, 37, 1000])
def test_native_tables_equal_the_pytorch_ones(dtype, n, monkeypatch):
    from graphattn.structure import sbm

    gen = torch.Generator().manual_seed(n)
    x = torch.rand(n, 3, 4, generator=gen, dtype=dtype) ** 4  # skewed masses
    x[:, 0, 1] = 0  # a row without mass
    x[: n // 2, 1, 2] *= 1e-30  # tiny masses beside ordinary ones
    native = sbm._draw_table(x)
    monkeypatch.setattr(sbm, "_native_sampler", lambda x: False)
    reference = sbm._draw_table(x)
    for got, want in zip(native, reference, strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_sampler_of_no_nodes_returns_no_edges():
    y, s, _ = _small_model()
    empty = y[:0]
    for out in sample_fastrg(empty, s, empty, torch.tensor([0, 0])):
        assert out.dtype == torch.long and out.numel() == 0


def test_native_draw_rejects_bad_inputs():
    table, guide, _ = _draw_table(torch.rand(8, 1, 2, dtype=torch.float64))  # 2 rows of 9 entries
    args = {
        "table": table, "guide": guide, "offsets": torch.tensor([0, 3, 5]), "row": torch.tensor([0, 1]),
        "example": torch.tensor([0, 1]), "ptr": torch.tensor([0, 5, 8]), "n": 8,
        "u": torch.rand(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
    }  # fmt: skip
    # Block pair 0 (row 0, example 0) draws 3 nodes, block pair 1 (row 1, example 1) 2: as _draw does.
    pair = torch.tensor([0, 0, 0, 1, 1])
    want = _draw(table, guide, 8, torch.tensor([0, 9]), args["ptr"], (2,), pair, torch.Generator().manual_seed(0))
    assert torch.equal(torch.ops.graphattn.sbm_draw(**args), want)
    for change, match in [
        ({"row": torch.tensor([0, 2])}, r"row must lie in \[0, 2\), got 2"),
        ({"example": torch.tensor([0, -1])}, r"example must lie in \[0, 2\), got -1"),
        ({"u": torch.rand(5)}, "u must be a contiguous CPU float64 vector"),
        ({"u": torch.rand(4, dtype=torch.float64)}, "offsets must run from 0 to u's 4 draws"),
        ({"offsets": torch.tensor([0, 6, 5])}, "offsets must be non-decreasing"),
        ({"ptr": torch.tensor([0, 5, 9])}, r"ptr must lie in \[0, n = 8\]"),
        ({"ptr": torch.tensor([0, 5, 5])}, "block pair 1 has draws in an example without nodes"),
        ({"guide": guide + 100}, "guide entries must index the table"),
        ({"table": table.float()}, "table must be a contiguous CPU float64 vector"),
        ({"n": 7}, "rows of n \\+ 1 = 8 entries"),
    ]:
        with pytest.raises(RuntimeError, match=match):
            torch.ops.graphattn.sbm_draw(**{**args, **change})
    for bad in (torch.tensor(-1.0), torch.tensor(float("nan")), torch.tensor(float("inf"))):
        x = torch.rand(8, 1, 2)
        x[3, 0, 1] = bad
        with pytest.raises(RuntimeError, match="memberships must be finite and >= 0"):
            torch.ops.graphattn.sbm_table(x)
    with pytest.raises(RuntimeError, match=r"x must be a contiguous CPU float32 / float64 tensor \[N, H, k\]"):
        torch.ops.graphattn.sbm_table(torch.rand(8, 2))


def test_saturated_memberships_sample_every_pair_in_expectation():
    n, b = 20, 50
    sbm = SBM(2, 4, num_clusters=3, dedup=False, self_loops=False, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sbm.offset.fill_(60.0)  # sigmoid -> 1: p_ij = sum(S) = 1 for every pair
    q = torch.randn(n * b, 2, 4)
    out = sbm(q, q.clone(), ptr=torch.arange(b + 1) * n)
    mean_degree = out.graph.num_edges / (2 * n * b)
    assert abs(mean_degree - n) < 0.03 * n  # Poisson(1) per pair, L pairs per row
    # Deduplicated, a pair is present with probability 1 - exp(-1).
    sbm.dedup = True
    out = sbm(q, q.clone(), ptr=torch.arange(b + 1) * n)
    assert abs(out.graph.num_edges / (2 * n * b) - n * (1 - math.exp(-1))) < 0.03 * n


def test_edges_stay_inside_head_and_example_and_rows_are_never_empty():
    n, h = 30, 3
    sbm = SBM(h, 4, num_clusters=4, generator=torch.Generator().manual_seed(0))
    ptr = torch.tensor([0, 5, 5, 18, 30])
    q = torch.randn(n, h, 4)
    g = sbm(q, torch.randn(n, h, 4), ptr=ptr).graph
    src, dst = g.col, g.dst()
    assert torch.equal(src // n, dst // n)
    example = torch.bucketize(torch.arange(n), ptr[1:], right=True)
    assert torch.equal(example[src % n], example[dst % n])
    assert bool((g.in_degree() > 0).all())  # self loops


def test_straight_through_gate_is_one_and_clips_gradient():
    p = torch.tensor([0.2, 0.9], requires_grad=True)
    gate = straight_through_ones(p)
    assert torch.equal(gate, torch.ones(2))
    (gate * torch.tensor([5.0, -0.5])).sum().backward()
    assert torch.equal(p.grad, torch.tensor([1.0, -0.5]))


@pytest.mark.parametrize("case", adversarial_graphs(hub_degree=500), ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_edge_gate_equals_the_gate_of_the_gathered_dot_product(case, dtype):
    """straight_through_edge_gate(a, b, g) == straight_through_ones(<a[dst], b[src]>): the value, and
    the gradients of a and b (through the transpose; empty rows, duplicates, a hub, N_src != N_dst)
    against the gathered form in float64."""
    g, k = case.graph, 5
    torch.manual_seed(0)
    a64, b64 = torch.randn(g.num_dst, k, dtype=torch.float64), torch.randn(g.num_src, k, dtype=torch.float64)
    weight = 3 * torch.randn(g.num_edges, dtype=torch.float64)  # beyond [-1, 1]: the clip is exercised
    a, b = a64.to(dtype).requires_grad_(), b64.to(dtype).requires_grad_()
    got = straight_through_edge_gate(a, b, g)
    assert got.dtype == dtype and torch.equal(got, torch.ones(g.num_edges, dtype=dtype))
    got_grads = torch.autograd.grad((got * weight.to(dtype)).sum(), (a, b))
    a64, b64 = a.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    want = straight_through_ones(torch.linalg.vecdot(a64[g.dst()], b64[g.col]))
    want_grads = torch.autograd.grad((want * weight.to(dtype).double()).sum(), (a64, b64), allow_unused=True)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    for x, y in zip(got_grads, want_grads, strict=True):
        y = y if y is not None else torch.zeros_like(x, dtype=torch.float64)  # no edges: no gradient
        scale = 1 + (y.abs().max().item() if y.numel() else 0.0)
        torch.testing.assert_close(x.double(), y, atol=tol * scale, rtol=tol)


def test_gradients_reach_every_parameter_through_attention():
    n, h, d = 24, 2, 4
    sbm = SBM(h, d, num_clusters=3, generator=torch.Generator().manual_seed(0))
    q, k, v = (torch.randn(n, h, d, requires_grad=True) for _ in range(3))
    s = sbm(q, k)
    out = unfold(edge_attention(fold(q), fold(k), fold(v), s.graph, gate=s.gate), h)
    (out.pow(2).sum() + s.aux_loss).backward()
    for name, param in sbm.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_seeded_sampling_is_reproducible():
    q, k = torch.randn(16, 2, 4), torch.randn(16, 2, 4)
    torch.manual_seed(0)
    a = SBM(2, 4, num_clusters=3, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    b = SBM(2, 4, num_clusters=3, generator=torch.Generator().manual_seed(5))
    ga, gb = a(q, k).graph, b(q, k).graph
    assert torch.equal(ga.rowptr, gb.rowptr) and torch.equal(ga.col, gb.col)


def test_density_regularizer_matches_the_dense_formula():
    n, h = 9, 2
    sbm = SBM(h, 4, num_clusters=3, density_weight=1.0).double()
    q, k = torch.randn(n, h, 4, dtype=torch.float64), torch.randn(n, h, 4, dtype=torch.float64)
    ptr = torch.tensor([0, 4, 9])
    aux = sbm(q, k, ptr=ptr).aux_loss
    y, z, s = sbm.memberships(q), sbm.memberships(k), sbm.block_matrix()
    dens = []
    for lo, hi in ((0, 4), (4, 9)):  # a dense check on a tiny input
        p = torch.einsum("iha,hac,jhc->hij", y[lo:hi], s, z[lo:hi])
        dens.append(p.mean((1, 2)))
    torch.testing.assert_close(aux, torch.stack(dens).mean())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_clusters": 0}, ValueError, r"num_clusters must be >= 1, got 0"),
        ({"init_density": 0.0}, ValueError, r"init_density must be in \(0, 1\], got 0.0"),
        ({"hidden": -3}, ValueError, r"hidden must be >= 1, got -3"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SBM(2, 4, **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"q must be \[N, H=2, D=4\] for this SBM"):
        SBM(2, 4)(torch.randn(5, 3, 4), torch.randn(5, 3, 4))
    with pytest.raises(ValueError, match=r"ptr must end at N = 5"):
        SBM(2, 4)(torch.randn(5, 2, 4), torch.randn(5, 2, 4), ptr=torch.tensor([0, 4]))


@pytest.mark.parametrize("ptr", [None, torch.tensor([0, 0, 0])])
def test_no_nodes_give_an_empty_graph_and_gradients(ptr):
    """N = 0 (an empty batch, or examples without tokens): no edges, and the layer runs forward and
    backward. Its memberships reshape no longer infers a width from zero elements."""
    from graphattn.nn import GraphAttention

    q = torch.zeros(0, 2, 4, requires_grad=True)
    out = SBM(2, 4, 3)(q, q, ptr=ptr)
    assert out.graph.num_edges == 0 and out.gate.shape == (0, 1)
    layer = GraphAttention(8, 2, structure=SBM(2, 4, 3))
    x = torch.randn(0, 8, requires_grad=True)
    y = layer(x, ptr=ptr).output
    assert y.shape == (0, 8)
    y.sum().backward()
    assert x.grad.shape == (0, 8)
