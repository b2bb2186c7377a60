"""Combiner (factorized) structure: one hop reaches everything, exactly once; edge counts; full-attention limit."""

import math

import pytest
import torch

from graphattn.ops import edge_attention
from graphattn.structure import full
from graphattn.structure.combiner import Combiner, combiner_graphs


def _coverage(length, variant, s, causal, image_size=None):
    """How many times each query covers each token: directly, or inside a summary it attends to."""
    g1, g2 = combiner_graphs(length, variant, s, causal=causal, image_size=image_size)
    members = torch.zeros(g1.num_dst, length, dtype=torch.long)
    members.index_put_((g1.dst(), g1.col), torch.ones_like(g1.col), accumulate=True)
    cover = torch.zeros(length, length, dtype=torch.long)
    direct = g2.col < length
    cover.index_put_((g2.dst()[direct], g2.col[direct]), torch.ones_like(g2.col[direct]), accumulate=True)
    for i, r in zip(g2.dst()[~direct].tolist(), (g2.col[~direct] - length).tolist(), strict=True):
        cover[i] += members[r]
    return cover, g2


@pytest.mark.parametrize("variant", ["fixed", "logsparse", "mixture"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("length", "s"), [(1, 1), (7, 2), (16, 4), (23, 5), (33, 6), (64, 8)])
def test_every_token_reaches_every_visible_token_exactly_once(variant, causal, length, s):
    cover, _ = _coverage(length, variant, s, causal)
    want = (
        torch.tril(torch.ones(length, length, dtype=torch.long))
        if causal
        else torch.ones(length, length, dtype=torch.long)
    )
    assert torch.equal(cover, want)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("image_size", [(1, 5), (4, 3), (5, 6)])
def test_axial_reaches_every_visible_pixel_exactly_once(causal, image_size):
    n = image_size[0] * image_size[1]
    cover, g2 = _coverage(n, "axial", 0, causal, image_size)
    want = torch.tril(torch.ones(n, n, dtype=torch.long)) if causal else torch.ones(n, n, dtype=torch.long)
    assert torch.equal(cover, want)
    h, w = image_size
    if not causal:  # the row directly, then one summary per column for the other rows
        assert torch.equal(g2.in_degree(), torch.full((n,), w + (w if h > 1 else 0)))


@pytest.mark.parametrize(("length", "s"), [(16, 4), (23, 5), (100, 10)])
def test_edge_counts_match_the_formulas(length, s):
    regions = math.ceil(length / s)
    _, g = combiner_graphs(length, "fixed", s)
    region_len = torch.tensor([min(s, length - (i // s) * s) for i in range(length)])
    assert torch.equal(g.in_degree(), region_len + regions - 1)
    _, g = combiner_graphs(length, "logsparse", s)
    assert int(g.in_degree().max()) <= math.log2(length) + 2
    _, g = combiner_graphs(length, "mixture", s)
    assert int(g.in_degree().max()) <= s + math.ceil(math.log2(regions))


def test_one_region_equals_full_attention_values_and_grads():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(19, 2, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ptr = torch.tensor([0, 12, 19])
    st = Combiner("fixed", region_size=64)(q, k, ptr=ptr)
    k_all, v_all = st.sources(q, k, v)
    out = edge_attention(q, k_all, v_all, st.graph)
    want = edge_attention(q, k, v, full(None, lengths=[12, 7]))
    torch.testing.assert_close(out, want)
    for a, b in zip(torch.autograd.grad(out.sum(), (q, k, v)), torch.autograd.grad(want.sum(), (q, k, v)), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("variant", ["fixed", "logsparse", "mixture"])
def test_batched_examples_never_mix_and_gradients_flow(variant):
    lengths = [9, 0, 14, 5]
    n = sum(lengths)
    ptr = torch.tensor([0, *lengths]).cumsum(0)
    comb = Combiner(variant, region_size=3)
    q, k, v = (torch.randn(n, 2, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    st = comb(q, k, ptr=ptr)
    stage1, stage2 = comb.graphs(lengths, q.device)
    example = torch.bucketize(torch.arange(n), ptr[1:], right=True)
    ex_of_edge = example[stage1.col]
    lo = torch.full((stage1.num_dst,), n).scatter_reduce(0, stage1.dst(), ex_of_edge, "amin")
    hi = torch.full((stage1.num_dst,), -1).scatter_reduce(0, stage1.dst(), ex_of_edge, "amax")
    assert torch.equal(lo, hi)  # every summary holds tokens of one example
    summary_example = hi
    src_example = torch.cat([example, summary_example])
    assert torch.equal(src_example[stage2.col], example[stage2.dst()])
    k_all, v_all = st.sources(q, k, v)
    out = edge_attention(q, k_all, v_all, st.graph)
    out.pow(2).sum().backward()
    assert q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0 and v.grad.abs().sum() > 0
    assert comb(q, k, ptr=ptr).graph is st.graph  # cached per batch layout


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"variant must be one of"):
        Combiner("blocky")
    with pytest.raises(ValueError, match=r"region_size must be >= 1, got 0"):
        Combiner("fixed", region_size=0)
    with pytest.raises(ValueError, match=r"variant 'axial' needs image_size"):
        Combiner("axial")
    with pytest.raises(ValueError, match=r"axial needs image_size \(h, w\) with h·w = L = 10"):
        combiner_graphs(10, "axial", 0, image_size=(3, 3))


def test_range_argmax_matches_brute_force_and_its_gather_matches_scatter_max():
    from graphattn.structure.combiner import range_argmax

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, 5, generator=gen, dtype=torch.float64)
    start = torch.randint(0, 299, (200,), generator=gen)
    end = torch.minimum(start + torch.randint(1, 140, (200,), generator=gen), torch.tensor(300))
    idx = range_argmax(x, start, end)
    for r in range(200):
        assert torch.equal(idx[r], x[start[r] : end[r]].argmax(0) + start[r])
    # ties: the first row of the range wins
    flat = torch.zeros(8, 2)
    assert range_argmax(flat, torch.tensor([3, 0]), torch.tensor([8, 1])).tolist() == [[3, 3], [0, 0]]
    with pytest.raises(ValueError, match="non-empty ranges"):
        range_argmax(x, torch.tensor([5]), torch.tensor([5]))
    # Logsparse's stage 1 (nested blocks): the gathered maxima and their gradients equal the
    # per-edge scatter maximum they replace.
    stage1, _ = combiner_graphs(77, "logsparse", 1)
    q = torch.randn(77, 2, 4, dtype=torch.float64, requires_grad=True)
    first = stage1.col[stage1.rowptr[:-1]]
    got = torch.gather(q, 0, range_argmax(q, first, first + stage1.in_degree()))
    index = stage1.dst()[:, None, None].expand(-1, 2, 4)
    want = q.new_zeros(stage1.num_dst, 2, 4).scatter_reduce(0, index, q[stage1.col], "amax", include_self=False)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    w = torch.randn_like(want)
    (g1,) = torch.autograd.grad((got * w).sum(), q)
    (g2,) = torch.autograd.grad((want * w).sum(), q)
    torch.testing.assert_close(g1, g2)


def test_changing_a_setting_rebuilds_the_cached_graphs():
    # The cache was keyed on the lengths alone: setting causal afterwards kept the future edges (audit).
    c = Combiner("fixed", 4)
    open_graphs = c.graphs([16], torch.device("cpu"))
    c.causal = True
    causal_graphs = c.graphs([16], torch.device("cpu"))
    assert causal_graphs[1] is not open_graphs[1]
    assert causal_graphs[1].num_edges < open_graphs[1].num_edges  # the direct part loses its future edges


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [  # failed at the first forward: "'int' object is not subscriptable", a cast error (audit)
        ({"variant": "axial", "image_size": 16}, TypeError, "image_size must be a pair of ints, got 16"),
        ({"variant": "axial", "image_size": (2.0, 8)}, TypeError, r"image_size\[0\] must be an int, got float"),
        ({"variant": "axial", "image_size": (-4, -4)}, ValueError, r"image_size\[0\] must be >= 1, got -4"),
        ({"causal": "no"}, TypeError, "causal must be a bool, got str"),
    ],
)
def test_combiner_checks_its_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Combiner(**kwargs)
