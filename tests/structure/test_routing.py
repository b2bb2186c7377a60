"""Routing (clustered) structure: invariants of Roy et al.'s balanced k-means routing."""

import pytest
import torch

from graphattn.ops import edge_attention
from graphattn.structure import fold, full, unfold
from graphattn.structure.routing import Routing
from graphattn.structure.sac import SAC
from graphattn.structure.sbm import SBM
from graphattn.structure.sea import SEA


def _qk(n=23, h=2, d=8, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, h, d, generator=gen, dtype=torch.float64).requires_grad_(requires_grad)
    k = torch.randn(n, h, d, generator=gen, dtype=torch.float64).requires_grad_(requires_grad)
    v = torch.randn(n, h, d, generator=gen, dtype=torch.float64).requires_grad_(requires_grad)
    return q, k, v


def test_one_cluster_covering_everything_equals_full_attention():
    q, k, v = _qk(requires_grad=True)
    ptr = torch.tensor([0, 15, 23])
    routing = Routing(2, 8, num_clusters=1, window=0).double()
    s = routing(q, k, ptr=ptr)
    assert s.per_head
    out = unfold(edge_attention(fold(q), fold(k), fold(v), s.graph), 2)
    want = edge_attention(q, k, v, full(None, lengths=[15, 8]))
    torch.testing.assert_close(out, want)
    g1 = torch.autograd.grad(out.sum(), (q, k, v))
    g2 = torch.autograd.grad(want.sum(), (q, k, v))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [0, 3])
def test_edges_stay_inside_their_head_and_example(causal, window):
    n, h = 40, 3
    q, k, _ = _qk(n=n, h=h)
    ptr = torch.tensor([0, 7, 7, 25, 40])  # an empty example too
    s = Routing(h, 8, num_clusters=4, window=window, causal=causal).double()(q, k, ptr=ptr)
    g = s.graph
    assert g.num_dst == g.num_src == h * n
    src, dst = g.col, g.dst()
    assert torch.equal(src // n, dst // n)  # same head
    example = torch.bucketize(torch.arange(n), ptr[1:], right=True)
    assert torch.equal(example[src % n], example[dst % n])  # same example
    if causal:
        assert bool((src % n <= dst % n).all())
    # Each edge once: the union is deduplicated.
    keys = dst * g.num_src + src
    assert torch.unique(keys).numel() == keys.numel()
    # No empty rows by default (local edges or self loops).
    assert bool((g.in_degree() > 0).all())


def test_balanced_windows_have_w_squared_edges_per_cluster():
    n, c = 36, 6  # w = 6
    q, k, _ = _qk(n=n, h=1)
    g = Routing(1, 8, num_clusters=c, window=0, allow_empty_rows=True).double()(q, k).graph
    # C windows of w x w pairs, minus pairs that appear in two windows.
    assert g.num_edges <= c * 6 * 6
    assert g.num_edges >= 6 * 6


def test_allow_empty_rows_leaves_unrouted_queries_empty():
    n = 50
    q, k, _ = _qk(n=n, h=1)
    g = Routing(1, 8, num_clusters=2, window=0, allow_empty_rows=True).double()(q, k).graph
    routed = torch.zeros(n, dtype=torch.bool)
    routed[g.dst().unique()] = True
    assert torch.equal(g.in_degree() > 0, routed)


def test_centroids_move_only_when_training_and_commitment_has_gradient():
    q, k, _ = _qk(requires_grad=True)
    routing = Routing(2, 8, num_clusters=3).double()
    before = routing.centroids.clone()
    routing.eval()
    s = routing(q, k)
    assert torch.equal(routing.centroids, before)
    routing.train()
    s = routing(q, k)
    assert not torch.equal(routing.centroids, before)
    assert s.aux_loss.ndim == 0 and float(s.aux_loss.detach()) > 0
    gq, gk = torch.autograd.grad(s.aux_loss, (q, k))
    assert gq.abs().sum() > 0 and gk.abs().sum() > 0


def test_centroid_ema_converges_to_cluster_means():
    # Two well separated groups of routing vectors: with decay 0 the centroids jump to their means.
    torch.manual_seed(0)
    a, b = torch.zeros(8), torch.zeros(8)
    a[0], b[1] = 1.0, 1.0
    x = torch.cat([a.expand(10, 8), b.expand(10, 8)])[:, None, :] + 0.01 * torch.randn(20, 1, 8)
    routing = Routing(1, 8, num_clusters=2, decay=0.0)
    routing.centroids.copy_(torch.stack([a, b])[None] * 2.0)
    routing(x, x)
    r = torch.nn.functional.layer_norm(x, (8,))
    torch.testing.assert_close(routing.centroids[0, 0], r[:10, 0].mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(routing.centroids[0, 1], r[10:, 0].mean(0), atol=1e-5, rtol=0)


def test_assignment_is_by_distance_not_inner_product():
    # Centroid 0 is long and on the vectors' side; centroid 1 is near them. The largest inner product is
    # centroid 0's, the nearest is centroid 1: the EMA must move centroid 1 halfway (decay 0.5) to the
    # vectors' mean and leave centroid 0, and the commitment loss is the distance to centroid 1.
    x = torch.zeros(6, 1, 4, dtype=torch.float64)
    x[:, 0, 0], x[:, 0, 1] = 1.0, -1.0  # layer-normed: about (1.41, -1.41, 0, 0)
    x[:3, 0, 2] = 0.1
    r = torch.nn.functional.layer_norm(x, (4,))[:, 0]
    routing = Routing(1, 4, num_clusters=2, window=0, decay=0.5, commitment=1.0).double()
    mu = torch.tensor([[10.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.2, 0.2]], dtype=torch.float64)
    routing.centroids.copy_(mu[None])
    assert bool(((r @ mu.T).argmax(-1) == 0).all())  # the inner product would pick centroid 0
    assert bool((torch.cdist(r, mu).argmin(-1) == 1).all())  # centroid 1 is the nearest
    s = routing(x, x)
    torch.testing.assert_close(s.aux_loss, (r - mu[1]).pow(2).sum(-1).mean())
    assert torch.equal(routing.centroids[0, 0], mu[0])
    torch.testing.assert_close(routing.centroids[0, 1], 0.5 * mu[1] + 0.5 * r.mean(0))


def test_windows_take_the_nearest_tokens():
    # Token 0 has the larger inner product with the centroid (1.2 against 1.0) but token 1 is on it: token 1
    # takes the single window slot. (Layer-normed tokens have equal norms, except near-constant ones.)
    routing = Routing(1, 2, num_clusters=1, window=0, allow_empty_rows=True).double()
    routing.centroids.copy_(torch.tensor([[[1.0, 0.0]]], dtype=torch.float64))
    r = torch.tensor([[[1.2, 0.9]], [[1.0, 0.0]], [[-1.0, 0.0]]], dtype=torch.float64)
    assert routing._route(r, 1).flatten().tolist() == [1]


def test_seeded_construction_is_reproducible():
    q, k, _ = _qk()
    torch.manual_seed(3)
    g1 = Routing(2, 8, num_clusters=3).double().eval()(q, k).graph
    torch.manual_seed(3)
    g2 = Routing(2, 8, num_clusters=3).double().eval()(q, k).graph
    assert torch.equal(g1.rowptr, g2.rowptr) and torch.equal(g1.col, g2.col)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_clusters": 0}, ValueError, r"num_clusters must be >= 1, got 0"),
        ({"num_clusters": 2, "window": -1}, ValueError, r"window must be >= 0, got -1"),
        ({"num_clusters": 2, "decay": 1.0}, ValueError, r"decay must be in \[0, 1\), got 1.0"),
        ({"num_clusters": 2.5}, TypeError, r"num_clusters must be an int, got float"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Routing(2, 8, **kwargs)


def test_bad_inputs():
    q, k, _ = _qk(h=2, d=8)
    with pytest.raises(ValueError, match=r"q must be \[N, H=3, D=8\]"):
        Routing(3, 8, num_clusters=2)(q.float(), k.float())
    with pytest.raises(ValueError, match=r"q and k must have one shape"):
        Routing(2, 8, num_clusters=2)(q.float(), k[:5].float())


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [  # passed silently (a truthy string, NaN weights) or failed only at the first forward (audit)
        (lambda: Routing(2, 8, 2, causal="no"), TypeError, "causal must be a bool, got str"),
        (lambda: Routing(2, 8, 2, commitment=float("nan")), ValueError, "commitment must be finite"),
        (lambda: SBM(2, 8, 4, density_weight=-1.0), ValueError, r"density_weight must be >= 0.0, got -1.0"),
        (lambda: SBM(2, 8, 4, generator=42), TypeError, "generator must be a torch.Generator or None, got int"),
        (lambda: SAC(2, 8, entropy_weight=float("nan")), ValueError, "entropy_weight must be finite"),
        (lambda: SAC(2, 8, generator=1), TypeError, "generator must be a torch.Generator or None, got int"),
        (lambda: SEA(2, 8, 4, scale=float("nan")), ValueError, "scale must be finite"),
        (lambda: SEA(2, 8, 4, scale=-1.0), ValueError, r"scale must be > 0, got -1.0"),
    ],
)
def test_adaptive_structures_check_their_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()
