"""SEA (estimated) structure: the full-attention limit, budgets, the estimator, distillation."""

import pytest
import torch
from torch import nn

from graphattn.ops import edge_attention
from graphattn.structure import fold, full, unfold
from graphattn.structure.sea import SEA, distill, teacher_rows, to_sea, topk_recall

PTR = torch.tensor([0, 20, 20, 57])


def _qkv(n=57, h=2, d=8, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, h, d, generator=gen, dtype=dtype, requires_grad=True) for _ in range(3))


def test_k_at_least_length_is_full_attention_values_and_grads():
    q, k, v = _qkv()
    sea = SEA(2, 8, k=64).double()
    out = unfold(edge_attention(fold(q), fold(k), fold(v), sea(q, k, ptr=PTR).graph), 2)
    want = edge_attention(q, k, v, full(None, lengths=[20, 0, 37]))
    torch.testing.assert_close(out, want)
    for a, b in zip(torch.autograd.grad(out.sum(), (q, k, v)), torch.autograd.grad(want.sum(), (q, k, v)), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("budget", ["per_query", "shared"])
def test_budgets_and_examples(budget):
    q, k, _ = _qkv()
    sea = SEA(2, 8, k=5, width=6, budget=budget).double()
    g = sea(q, k, ptr=PTR).graph
    n = 57
    src, dst = g.col, g.dst()
    assert torch.equal(src // n, dst // n)  # same head
    example = torch.bucketize(torch.arange(n), PTR[1:], right=True)
    assert torch.equal(example[src % n], example[dst % n])
    keys = dst * g.num_src + src
    assert keys.unique().numel() == keys.numel()
    if budget == "per_query":
        assert torch.equal(g.in_degree(), torch.full((2 * n,), 5))
    else:  # k · L edges per head and example, spread unevenly
        assert g.num_edges == 2 * 5 * n
        assert g.in_degree().max() > g.in_degree().min()


def test_k_can_change_at_inference():
    q, k, _ = _qkv()
    sea = SEA(2, 8, k=5).double().eval()
    sea.k = 3
    assert torch.equal(sea(q, k, ptr=PTR).graph.in_degree(), torch.full((114,), 3))


def test_estimator_tracks_the_true_bin_mass():
    # With many random features, phi(q)·phi(k) ~ exp(scale q·k): the compressed estimate matches on
    # average (single entries of large-norm queries keep a heavy-tailed error, a known property of
    # positive random features).
    q, k, _ = _qkv(n=64, h=1, d=4, seed=1)
    sea = SEA(1, 4, k=8, width=8, features=8192, seed=0).double()
    with torch.no_grad():
        est = torch.softmax(sea.estimate_bins(q, k), -1)[:, 0]  # [L, T]
        true = torch.softmax((q[:, 0] @ k[:, 0].T) * 0.5, -1).reshape(64, 8, 8).sum(-1)
    assert (est - true).abs().mean() < 0.02
    assert (est - true).abs().mean() < 0.5 * (true - 1 / 8).abs().mean()  # far better than a flat guess


def test_estimated_attention_is_a_row_stochastic_sparse_graph():
    q, k, _ = _qkv()
    g, w = SEA(2, 8, k=4).double().estimated_attention(q, k, ptr=PTR)
    assert w.shape == (g.num_edges,) and bool((w > 0).all())
    sums = torch.zeros(g.num_dst, dtype=w.dtype).index_add(0, g.dst(), w)
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_teacher_rows_are_the_same_in_any_chunking():
    torch.manual_seed(0)
    teacher = nn.MultiheadAttention(16, 2)
    x = torch.randn(37, 16)
    sea = SEA(2, 8, width=5)
    b1, o1 = teacher_rows(teacher, x, sea, chunk=4)
    b2, o2 = teacher_rows(teacher, x, sea, chunk=1000)
    torch.testing.assert_close(b1, b2)
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(b1.sum(-1), torch.ones(37, 2))
    # The teacher's output is nn.MultiheadAttention's.
    want = teacher(x[:, None], x[:, None], x[:, None], need_weights=False)[0][:, 0]
    torch.testing.assert_close(o1, want, atol=1e-5, rtol=1e-5)


def test_distillation_raises_top_k_recall():
    torch.manual_seed(0)
    e, h, length, kk = 16, 2, 96, 12
    teacher = nn.MultiheadAttention(e, h)
    with torch.no_grad():  # a peaked teacher, as trained attention is
        teacher.in_proj_weight[: 2 * e] *= 3.0
    centers = torch.randn(6, e)
    examples = [centers[torch.randint(0, 6, (length,))] + 0.3 * torch.randn(length, e) for _ in range(4)]
    student = to_sea(teacher, kk, width=24, features=16)
    before = topk_recall(student, teacher, examples[0], kk)
    losses = distill(student, teacher, examples, steps=60, lr=2e-2)
    after = topk_recall(student, teacher, examples[0], kk)
    assert losses[-1] < losses[0]
    assert after > before
    # Only the estimator trained: the layer's weights are still the teacher's.
    assert torch.equal(student.in_proj_weight, teacher.in_proj_weight)
    assert torch.equal(student.out_proj.weight, teacher.out_proj.weight)
    distill(student, teacher, examples, steps=2, lr=2e-2, output_weight=1.0)  # the output term trains them
    assert not torch.equal(student.in_proj_weight, teacher.in_proj_weight)


def test_to_sea_copies_the_teacher_and_rejects_misfits():
    teacher = nn.MultiheadAttention(16, 2)
    student = to_sea(teacher, 4)
    assert torch.equal(student.in_proj_weight, teacher.in_proj_weight)
    assert torch.equal(student.out_proj.weight, teacher.out_proj.weight)
    with pytest.raises(TypeError, match=r"student.structure must be an SEA"):
        distill(nn.MultiheadAttention(16, 2), teacher, [torch.randn(4, 16)])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, r"k must be >= 1, got 0"),
        ({"width": 0}, ValueError, r"width must be >= 1, got 0"),
        ({"budget": "global"}, ValueError, r"budget must be one of \('per_query', 'shared'\), got 'global'"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SEA(2, 8, **kwargs)


def _estimator_top(sea: SEA, q: torch.Tensor, k: torch.Tensor, kk: int) -> torch.Tensor:
    """The estimator's exact top-``kk`` keys per (query, head) of one example, scoring every key."""
    lq, lk = sea.log_features(q), sea.log_features(k)
    every = torch.arange(q.shape[0])[None, None].expand(q.shape[0], q.shape[1], -1)
    return sea._gather_scores(lq, lk, every).topk(kk, dim=-1).indices


def test_beam_refinement_finds_the_estimators_top_keys_with_a_fixed_candidate_budget():
    gen = torch.Generator().manual_seed(3)
    sea = SEA(2, 8, k=6, width=8)
    sizes = []
    for length in (300, 1200):
        assert length > sea._beam_items(length, 6)  # the beam search runs (not the every-key scoring)
        q, k = (1.5 * torch.randn(length, 2, 8, generator=gen) for _ in range(2))
        cand = sea._candidate_keys(sea.log_features(q), sea.log_features(k), 6)
        sizes.append(cand.shape[-1])
        head, dst, src = sea._select(q, k, 6)
        kept = torch.zeros(length, 2, length, dtype=torch.bool)
        kept[dst, head, src] = True
        top = _estimator_top(sea, q, k, 6)
        recall = kept.gather(-1, top).float().mean()
        assert recall >= 0.95, (length, float(recall))
    assert sizes == [12, 12]  # oversample · k candidates per query at any length (width 8: 38 and 150 keys per bin)


def test_shared_budget_over_the_beam_candidates():
    gen = torch.Generator().manual_seed(4)
    sea = SEA(2, 8, k=6, width=8, budget="shared")
    length = 1200
    assert length > sea._beam_items(length, 6)  # the beam search runs (not the every-key scoring)
    q, k = (torch.randn(length, 2, 8, generator=gen) for _ in range(2))
    g = sea(q, k).graph
    assert g.num_edges == 2 * 6 * length  # k · L pairs per head
    src, dst = g.col, g.dst()
    assert torch.equal(src // length, dst // length)  # within a head
    keys = dst * g.num_src + src
    assert keys.unique().numel() == keys.numel()
