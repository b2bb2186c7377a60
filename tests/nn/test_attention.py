"""GraphAttention: nn.MultiheadAttention on the complete graph (values and grads), structures,
per-head graphs, auxiliary losses, dropout through the gate, weights on demand, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graphattn.structure as S
from graphattn import Graph
from graphattn.nn import GraphAttention, Structure, StructureOutput


def pair(embed_dim=16, heads=4, **kw):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(embed_dim, heads, **kw).double()
    ga = GraphAttention(embed_dim, heads, **{k: v for k, v in kw.items() if k in ("bias", "kdim", "vdim")}).double()
    ga.load_state_dict(mha.state_dict())
    return mha, ga


def dense_weights(weights: torch.Tensor, g: Graph) -> torch.Tensor:
    out = torch.zeros(weights.shape[1], g.num_dst, g.num_src, dtype=weights.dtype)
    out[:, g.dst(), g.col] = weights.T
    return out


@pytest.mark.parametrize("bias", [True, False])
def test_full_graph_equals_multihead_attention_values_and_grads(bias):
    mha, ga = pair(bias=bias)
    assert set(mha.state_dict()) == set(ga.state_dict())
    x = torch.randn(9, 16, dtype=torch.float64, requires_grad=True)
    y_ref, w_ref = mha(x, x, x, average_attn_weights=False)
    out = ga(x, S.full(9), need_weights=True)
    assert torch.allclose(out.output, y_ref, atol=1e-12)
    assert torch.allclose(dense_weights(out.weights, out.graph), w_ref, atol=1e-12)
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x, *mha.parameters()])
    g_out = torch.autograd.grad(out.output.square().sum(), [x, *ga.parameters()])
    names = ["x"] + [n for n, _ in mha.named_parameters()]
    assert [n for n, _ in mha.named_parameters()] == [n for n, _ in ga.named_parameters()]
    for name, a, b in zip(names, g_ref, g_out, strict=True):
        assert torch.allclose(a, b, atol=1e-11), name


def test_batched_examples_equal_padded_multihead_attention():
    mha, ga = pair()
    lengths = [5, 8, 3]
    x = torch.randn(sum(lengths), 16, dtype=torch.float64)
    out = ga(x, S.full(lengths=lengths)).output
    pad = torch.zeros(3, 8, 16, dtype=torch.float64)
    mask = torch.ones(3, 8, dtype=torch.bool)
    off = 0
    for b, n in enumerate(lengths):
        pad[b, :n], mask[b, :n] = x[off : off + n], False
        off += n
    ref = mha(pad.transpose(0, 1), pad.transpose(0, 1), pad.transpose(0, 1), key_padding_mask=mask)[0].transpose(0, 1)
    assert torch.allclose(out, torch.cat([ref[b, :n] for b, n in enumerate(lengths)]), atol=1e-12)


def test_cross_attention_with_kdim_matches_multihead_attention():
    mha, ga = pair(kdim=6, vdim=6)
    assert ga.in_proj_weight is None and ga.k_proj_weight.shape == (16, 6)
    x, mem = torch.randn(4, 16, dtype=torch.float64), torch.randn(7, 6, dtype=torch.float64)
    g = Graph.from_dense(torch.ones(4, 7, dtype=torch.bool))
    assert torch.allclose(ga(x, g, x_src=mem).output, mha(x, mem, mem)[0], atol=1e-12)


def test_causal_structure_equals_multihead_attention_with_causal_mask():
    mha, ga = pair()
    ga.structure = S.Full(causal=True)
    x = torch.randn(6, 16, dtype=torch.float64)
    mask = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)
    assert torch.allclose(ga(x).output, mha(x, x, x, attn_mask=mask)[0], atol=1e-12)


def test_window_structure_equals_explicit_graph():
    torch.manual_seed(1)
    ga = GraphAttention(8, 2, structure=S.Window(3))
    x, ptr = torch.randn(11, 8), torch.tensor([0, 4, 11])
    a = ga(x, ptr=ptr)
    ga.structure = None
    b = ga(x, S.window(None, 3, lengths=[4, 7]))
    assert torch.allclose(a.output, b.output) and torch.equal(a.graph.col, b.graph.col)
    assert a.aux_loss.item() == 0.0


class HeadwiseWindows(Structure):
    """A per-head structure with a learned bias and an aux loss, as routing/SBM will return."""

    def __init__(self, widths):
        super().__init__()
        self.widths = widths
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, q, k, *, ptr=None, src_ptr=None, graph=None):
        lengths = None if ptr is None else ptr.diff()
        n = None if ptr is not None else q.shape[0]
        g = S.fold_heads([S.window(n, w, lengths=lengths) for w in self.widths])
        bias = self.scale * torch.ones(g.num_edges, 1, dtype=q.dtype)
        return StructureOutput(g, bias=bias, gate=None, aux_loss=self.scale.square(), per_head=True)


def test_per_head_structure_bias_and_aux_loss_reach_the_op():
    torch.manual_seed(2)
    st = HeadwiseWindows([1, 2, 9])
    ga = GraphAttention(12, 3, structure=st).double()
    x = torch.randn(9, 12, dtype=torch.float64)
    out = ga(x, need_weights=True)
    assert out.graph.num_dst == 27 and out.weights.shape == (out.graph.num_edges, 1)
    # head h equals a one-head layer over window(widths[h]): check through the projections
    q, k, v = ga._project(x, x)
    for h, w in enumerate(st.widths):
        from graphattn.ops import edge_attention

        ref = edge_attention(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], S.window(9, w))
        part = (out.output - ga.out_proj.bias) @ torch.linalg.pinv(ga.out_proj.weight).T
        assert torch.allclose(part[:, 4 * h : 4 * h + 4], ref[:, 0], atol=1e-8)
    assert torch.allclose(out.aux_loss, torch.tensor(0.25, dtype=torch.float64))
    # a constant bias cancels in the softmax, the aux loss still gives the parameter a gradient
    out.aux_loss.backward()
    assert st.scale.grad is not None and st.scale.grad.item() == pytest.approx(1.0)
    # per-head weights sum to one over each folded row
    sums = torch.zeros(27, dtype=torch.float64).index_add_(0, out.graph.dst(), out.weights[:, 0])
    assert torch.allclose(sums, torch.ones(27, dtype=torch.float64))


def test_dropout_goes_through_the_gate_and_is_off_in_eval():
    torch.manual_seed(3)
    ga = GraphAttention(8, 2, dropout=0.5, structure=S.Full())
    x = torch.randn(30, 8)
    ga.eval()
    a, b = ga(x).output, ga(x).output
    assert torch.equal(a, b)
    ga.train()
    c = ga(x).output
    assert not torch.allclose(a, c)
    # the mean over many dropout draws approaches the eval output (inverted dropout is unbiased)
    mean = torch.stack([ga(x).output for _ in range(300)]).mean(0)
    assert torch.allclose(mean, a, atol=0.08)


def test_edge_bias_and_weights_recomputed_not_stored():
    torch.manual_seed(4)
    ga = GraphAttention(8, 2).double()
    g = S.window(6, 2)
    x = torch.randn(6, 8, dtype=torch.float64)
    big = torch.zeros(g.num_edges, 2, dtype=torch.float64)
    big[g.col == g.dst()] = 100.0  # almost all weight on the self loop
    out = ga(x, g, edge_bias=big, need_weights=True)
    selfw = out.weights[g.col == g.dst()]
    assert bool((selfw > 0.999).all())
    assert not any(isinstance(v, torch.Tensor) and v.shape[:1] == (g.num_edges,) for v in vars(ga).values())
    # A wrong shape names edge_bias (the op's check named its own "bias").
    with pytest.raises(ValueError, match=rf"edge_bias must be \[E, H\] = \[{g.num_edges}, 2\], got shape \[5, 2\]"):
        ga(x, g, edge_bias=big[:5])


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: GraphAttention(10, 3), ValueError, "embed_dim must be divisible by num_heads"),
        (lambda: GraphAttention(10, True), TypeError, "num_heads must be an int, got bool"),
        (lambda: GraphAttention(10, 0), ValueError, "num_heads must be >= 1, got 0"),
        (lambda: GraphAttention(True, 1), TypeError, "embed_dim must be an int, got bool"),
        (lambda: GraphAttention(8, 2, kdim=True), TypeError, "kdim must be an int, got bool"),
        (lambda: GraphAttention(8, 2, vdim=0), ValueError, "vdim must be >= 1, got 0"),
        (lambda: GraphAttention(8, 2, dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
        (lambda: GraphAttention(8, 2, dropout="0.1"), TypeError, "dropout must be a float, got str"),
        (lambda: GraphAttention(8, 2, structure=lambda q, k: None), TypeError, "structure must be a"),
        (lambda: GraphAttention(8, 2)(torch.zeros(3, 8)), ValueError, "graph is required"),
        (
            lambda: GraphAttention(8, 2)(torch.zeros(2, 8), torch.tensor([[0, 1], [1, 0]])),
            TypeError,
            r"graph must be a graphattn.Graph, got Tensor; build one with Graph.from_edge_index\(edge_index\)",
        ),
        (
            lambda: GraphAttention(8, 2, structure=S.Window(1))(torch.zeros(2, 8), torch.tensor([[0, 1], [1, 0]])),
            TypeError,
            "graph must be a graphattn.Graph, got Tensor",
        ),
        (lambda: GraphAttention(8, 2)(torch.zeros(3, 5), S.full(3)), ValueError, r"x must be \[N, embed_dim\]"),
        (lambda: GraphAttention(8, 2, kdim=4, vdim=4)(torch.zeros(3, 8), S.full(3)), ValueError, "x_src is required"),
        (lambda: GraphAttention(8, 2, kdim=6, vdim=4), ValueError, "kdim and vdim must be equal"),  # no call could pass
        # These named the internal q / k, or raised AttributeError (API audit).
        (
            lambda: GraphAttention(8, 2)(torch.zeros(4, 8), S.full(5)),
            ValueError,
            "x must have graph.num_dst = 5 rows, got 4",
        ),
        (
            lambda: GraphAttention(8, 2)(
                torch.zeros(2, 8), Graph.from_dense(torch.ones(2, 3, dtype=torch.bool)), x_src=torch.zeros(4, 8)
            ),
            ValueError,
            "x_src must have graph.num_src = 3 rows, got 4",
        ),
        (
            lambda: GraphAttention(8, 2)(torch.zeros(3, 8), S.full(3), x_src=[1, 2]),
            TypeError,
            "x_src must be a torch.Tensor, got list",
        ),
        (lambda: GraphAttention(8, 2)([[0.0] * 8], S.full(1)), TypeError, "x must be a torch.Tensor, got list"),
        (  # x_src not passed: the message says to pass it, not that it has the wrong rows
            lambda: GraphAttention(8, 2)(torch.zeros(2, 8), Graph.from_dense(torch.ones(2, 3, dtype=torch.bool))),
            ValueError,
            "graph has num_src = 3 source nodes, x has 2 rows: pass their features as x_src",
        ),
    ],
)
def test_layer_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
