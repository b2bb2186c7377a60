"""The op's specification, checked on the reference backend.

Order: the oracle (a per-row loop in float64), then the table of graphs, then dense
equivalences, then gradients, then building blocks, then bad inputs and dispatch.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from graphattn import Graph, ops
from graphattn.testing import adversarial_graphs, loop_attention, random_inputs

CASES = adversarial_graphs(hub_degree=10_000)
SMALL = adversarial_graphs(hub_degree=40)


def run(inputs, graph, **kw):
    return ops.edge_attention(graph=graph, return_lse=True, backend="reference", **inputs, **kw)


# ---------------------------------------------------------------------- values
@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("use_gate", [False, True])
def test_matches_loop_oracle(case, use_bias, use_gate):
    inputs = random_inputs(case.graph, heads=2, head_dim=3, value_dim=4)
    bias, gate = inputs.pop("bias"), inputs.pop("gate")
    kw = {"bias": bias if use_bias else None, "gate": gate if use_gate else None, "scale": 0.7}
    out, lse = run(inputs, case.graph, **kw)
    want_out, want_lse = loop_attention(graph=case.graph, **inputs, **kw)
    assert out.shape == (case.graph.num_dst, 2, 4) and lse.shape == (case.graph.num_dst, 2)
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(lse, want_lse)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_empty_rows_give_zero_and_minus_inf_never_nan(case):
    inputs = random_inputs(case.graph)
    out, lse = run(inputs, case.graph)
    empty = case.graph.in_degree() == 0
    assert not out.isnan().any() and not lse.isnan().any()
    assert torch.all(out[empty] == 0)
    assert torch.all(lse[empty] == float("-inf"))
    assert torch.all(torch.isfinite(lse[~empty]))


def test_all_minus_inf_bias_row_is_treated_as_empty():
    g = Graph.from_edge_index(torch.tensor([[0, 1, 0], [0, 0, 1]]))
    inputs = random_inputs(g, heads=1, requires_grad=True)
    bias = torch.tensor([[float("-inf")], [float("-inf")], [0.0]], dtype=torch.float64)
    out, lse = ops.edge_attention(inputs["q"], inputs["k"], inputs["v"], g, bias=bias, return_lse=True)
    assert torch.all(out[0] == 0) and lse[0, 0] == float("-inf")
    torch.testing.assert_close(out[1, 0], inputs["v"][0, 0])  # one edge: weight 1
    out.sum().backward()
    assert not inputs["q"].grad.isnan().any() and not inputs["v"].grad.isnan().any()


def test_complete_graph_equals_sdpa():
    n_dst, n_src, h, d = 7, 9, 3, 8
    mask = torch.ones(n_dst, n_src, dtype=torch.bool)
    g = Graph.from_dense(mask)
    inputs = random_inputs(g, heads=h, head_dim=d)
    out = ops.edge_attention(inputs["q"], inputs["k"], inputs["v"], g)
    want = F.scaled_dot_product_attention(*(inputs[n].transpose(0, 1) for n in "qkv")).transpose(0, 1)
    torch.testing.assert_close(out, want)


def test_masked_dense_graph_equals_masked_sdpa():
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(12, 10, generator=gen) < 0.4
    mask[:, 0] = True  # SDPA gives NaN on empty rows; the empty-row rule is tested above
    g = Graph.from_dense(mask)
    inputs = random_inputs(g, heads=2, head_dim=6, value_dim=3)
    out = ops.edge_attention(inputs["q"], inputs["k"], inputs["v"], g, scale=0.3)
    q, k, v = (inputs[n].transpose(0, 1) for n in "qkv")
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3).transpose(0, 1)
    torch.testing.assert_close(out, want)


def test_duplicate_edges_count_separately():
    # Two copies of 0 -> 0 beside one 1 -> 0: weights 2e^a / (2e^a + e^b), not e^a / (e^a + e^b).
    g = Graph.from_edge_index(torch.tensor([[0, 0, 1], [0, 0, 0]]), num_src=2, num_dst=1)
    q, k = torch.ones(1, 1, 1, dtype=torch.float64), torch.tensor([[[1.0]], [[0.0]]], dtype=torch.float64)
    v = torch.tensor([[[1.0]], [[0.0]]], dtype=torch.float64)
    out = ops.edge_attention(q, k, v, g, scale=1.0)
    assert math.isclose(float(out), 2 * math.e / (2 * math.e + 1), rel_tol=1e-12)


def test_default_scale_is_inverse_sqrt_head_dim():
    g = adversarial_graphs()[-1].graph
    inputs = random_inputs(g, head_dim=9)
    a = ops.edge_attention(inputs["q"], inputs["k"], inputs["v"], g)
    b = ops.edge_attention(inputs["q"], inputs["k"], inputs["v"], g, scale=1 / 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_error_at_most_twice_float_error(dtype):
    # FlashAttention's rule: the error of a path in low precision is compared to the error
    # of the same math done naively in that precision, against a float64 answer.
    g = adversarial_graphs()[5].graph  # the hub
    inputs = random_inputs(g, heads=2, head_dim=16)
    want, _ = loop_attention(inputs["q"], inputs["k"], inputs["v"], g, bias=inputs["bias"])
    low = {n: t.to(dtype) for n, t in inputs.items()}
    out = ops.edge_attention(low["q"], low["k"], low["v"], g, bias=low["bias"])
    assert out.dtype == dtype
    naive = torch.zeros_like(want)
    for i in range(g.num_dst):
        lo, hi = int(g.rowptr[i]), int(g.rowptr[i + 1])
        src = g.col[lo:hi]
        s = torch.einsum("hd,ehd->eh", low["q"][i], low["k"][src]) * 0.25 + low["bias"][lo:hi]
        naive[i] = torch.einsum("eh,ehd->hd", torch.softmax(s, 0), low["v"][src]).double()
    assert (out.double() - want).abs().max() <= 2 * (naive - want).abs().max() + 1e-6


def test_non_contiguous_inputs():
    g = adversarial_graphs()[-1].graph
    inputs = random_inputs(g, heads=3, head_dim=4)
    q_nc = inputs["q"].transpose(1, 2).contiguous().transpose(1, 2)
    k_nc = torch.stack([inputs["k"], -inputs["k"]], -1)[..., 0]
    assert not q_nc.is_contiguous() and not k_nc.is_contiguous()
    bias_nc = inputs["bias"].t().contiguous().t()
    a = ops.edge_attention(q_nc, k_nc, inputs["v"], g, bias=bias_nc)
    b = ops.edge_attention(inputs["q"], inputs["k"], inputs["v"], g, bias=inputs["bias"])
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------- gradients
@pytest.mark.parametrize("case", SMALL, ids=repr)
def test_gradcheck_every_argument(case):
    inputs = random_inputs(case.graph, heads=2, head_dim=3, value_dim=2, requires_grad=True)

    def f(q, k, v, bias, gate):
        out, lse = ops.edge_attention(q, k, v, case.graph, bias=bias, gate=gate, return_lse=True)
        # lse is -inf on empty rows; its gradient there is 0, so mask it out of the check.
        return out, torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))

    assert torch.autograd.gradcheck(f, tuple(inputs.values()))


# ---------------------------------------------------------------------- building blocks
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_building_blocks_compose_to_the_op(case):
    g = case.graph
    inputs = random_inputs(g, heads=2, head_dim=4)
    scores = ops.sddmm(inputs["q"], inputs["k"], g) * 0.5 + inputs["bias"]
    p, lse = ops.edge_softmax(scores, g, return_lse=True)
    out = ops.spmm(p * inputs["gate"], inputs["v"], g)
    want_out, want_lse = ops.edge_attention(graph=g, scale=0.5, return_lse=True, **inputs)
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(lse, want_lse)
    # Weights recomputed from lse equal the softmax; on each non-empty row they sum to 1.
    w = ops.attention_weights(inputs["q"], inputs["k"], g, lse, bias=inputs["bias"], scale=0.5)
    torch.testing.assert_close(w, p)
    row_sums = torch.zeros(g.num_dst, 2, dtype=w.dtype).index_add(0, g.dst(), w)
    nonempty = g.in_degree() > 0
    torch.testing.assert_close(row_sums[nonempty], torch.ones_like(row_sums[nonempty]))


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_attention_weights_of_a_row_masked_by_a_large_bias(backend):
    # exp(s - lse) with lse rounded at -1e9 summed to 4 over a 4-edge row (API review). In float32
    # every score of that row rounds to -1e9, so its softmax is uniform; the other row is untouched.
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2, 3, 0, 1], [0, 0, 0, 0, 1, 1]]), 4, 2)
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 1, 8), torch.randn(4, 1, 8), torch.randn(4, 1, 8)
    bias = torch.zeros(6, 1)
    bias[:4] = -1e9
    _, lse = ops.edge_attention(q, k, v, g, bias=bias, return_lse=True, backend=backend)
    w = ops.attention_weights(q, k, g, lse, bias=bias)
    torch.testing.assert_close(w[:4], torch.full((4, 1), 0.25))
    _, lse_open = ops.edge_attention(q, k, v, g, return_lse=True, backend=backend)
    torch.testing.assert_close(w[4:], ops.attention_weights(q, k, g, lse_open)[4:])


def test_building_blocks_gradcheck():
    g = SMALL[2].graph
    x = random_inputs(g, heads=2, head_dim=3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.sddmm(a, b, g), (x["q"], x["k"]))
    assert torch.autograd.gradcheck(lambda s: ops.edge_softmax(s, g), (x["bias"],))
    assert torch.autograd.gradcheck(lambda w, v: ops.spmm(w, v, g), (x["gate"], x["v"]))


# ---------------------------------------------------------------------- bad input
G = Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), num_src=3, num_dst=3)
Q = torch.randn(3, 2, 4)


def _call(**over):
    args = {"q": Q, "k": Q, "v": Q, "graph": G, "bias": None, "gate": None, "scale": None, "backend": None}
    args.update(over)
    return ops.edge_attention(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("graph"), **args)


@pytest.mark.parametrize(
    ("over", "error", "match"),
    [
        ({"q": torch.randn(4, 2, 4)}, ValueError, r"q must be \[N_dst=3, H, D\] for this graph, got shape \[4, 2, 4\]"),
        ({"q": torch.randn(3, 8)}, ValueError, r"q must be \[N_dst, H, D\] \(3-D\), got shape \[3, 8\]"),
        ({"k": torch.randn(2, 2, 4)}, ValueError, r"k must be \[N_src=3, H, D\]"),
        ({"k": torch.randn(3, 1, 4)}, ValueError, r"q and k must have the same number of heads"),
        ({"k": torch.randn(3, 2, 5)}, ValueError, r"q and k must have the same head dim D"),
        ({"v": torch.randn(3, 3, 4)}, ValueError, r"v must have the heads of q \(2\), got v \[3, 3, 4\]"),
        ({"q": Q.long()}, TypeError, r"q must be a floating tensor .*, got torch.int64"),
        ({"k": Q.double()}, TypeError, r"k must have the dtype of q \(torch.float32\), got torch.float64"),
        ({"v": Q.half()}, TypeError, r"v must have the dtype of q"),
        ({"k": Q.to("meta")}, ValueError, r"q and k must be on one device, got q on cpu, k on meta"),
        ({"v": Q.to("meta")}, ValueError, r"q, k and v must be on one device, got q on cpu, k on cpu, v on meta"),
        (
            {"q": Q.to("meta"), "k": Q.to("meta"), "v": Q.to("meta")},
            ValueError,
            r"graph must be on the device of q \(meta\), got cpu",
        ),
        ({"bias": torch.randn(4, 2)}, ValueError, r"bias must be \[E, H\] = \[3, 2\], got shape \[4, 2\]"),
        ({"bias": torch.randn(3)}, ValueError, r"bias must be \[E, H\] = \[3, 2\], got shape \[3\]"),
        ({"gate": torch.randn(3, 2).double()}, TypeError, r"gate must have the dtype of q"),
        ({"gate": [[1.0]]}, TypeError, r"gate must be a torch.Tensor or None, got list"),
        ({"graph": torch.tensor([[0], [1]])}, TypeError, r"graph must be a graphattn.Graph, got Tensor"),
        ({"scale": float("nan")}, ValueError, r"scale must be finite, got nan"),
        ({"scale": torch.tensor(1.0)}, TypeError, r"scale must be a Python float or None, got Tensor"),
        ({"backend": "nope"}, ValueError, r"backend must be one of .*'reference'.* or None, got 'nope'"),
        ({"backend": 3}, TypeError, r"backend must be a str or None, got int"),
    ],
)
def test_bad_input_raises_clear_error(over, error, match):
    with pytest.raises(error, match=match):
        _call(**over)


def test_primitives_name_their_own_arguments_in_errors():
    # sddmm's errors said q / k, spmm's "the dtype of q": arguments they do not have (API audit).
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]))
    with pytest.raises(ValueError, match=r"a must be \[N_dst=3, H, D\] for this graph, got shape \[2, 1, 4\]"):
        ops.sddmm(torch.randn(2, 1, 4), torch.randn(3, 1, 4), g)
    with pytest.raises(ValueError, match=r"a and b must have the same number of heads"):
        ops.sddmm(torch.randn(3, 2, 4), torch.randn(3, 1, 4), g)
    with pytest.raises(ValueError, match=r"a and b must be on one device, got a on cpu, b on meta"):
        ops.sddmm(torch.randn(3, 1, 4), torch.randn(3, 1, 4, device="meta"), g)
    with pytest.raises(TypeError, match=r"weights must have the dtype of v \(torch.float32\), got torch.float64"):
        ops.spmm(torch.randn(3, 1, dtype=torch.float64), torch.randn(3, 1, 4), g)


def test_building_block_bad_inputs():
    with pytest.raises(ValueError, match=r"scores must be \[E, H\] with E = 3, got shape \[2, 2\]"):
        ops.edge_softmax(torch.randn(2, 2), G)
    with pytest.raises(TypeError, match=r"scores must be a floating torch.Tensor"):
        ops.edge_softmax(torch.ones(3, 2, dtype=torch.long), G)
    with pytest.raises(ValueError, match=r"weights must be \[E, H\] = \[3, 2\]"):
        ops.spmm(torch.randn(3, 1), Q, G)
    with pytest.raises(ValueError, match=r"lse must be \[N_dst, H\] = \[3, 2\], got \[3\]"):
        ops.attention_weights(Q, Q, G, torch.zeros(3))
    for dtype in (torch.int32, torch.float16):  # an int lse truncated; a half one lost the weights' precision
        with pytest.raises(TypeError, match=f"lse must be float32 or float64 .*, got {dtype}"):
            ops.attention_weights(Q, Q, G, torch.zeros(3, 2, dtype=dtype))


# ---------------------------------------------------------------------- dispatch
def test_explicit_backend_never_falls_back():
    b = ops.get_backend("reference")
    assert "cpu" in b.devices and b.not_supported_reasons(Q, Q) == []
    with pytest.raises(RuntimeError, match=r"backend 'reference' cannot run these inputs: device meta not supported"):
        m = Q.to("meta")
        ops.edge_attention(m, m, m, G.to("meta"), backend="reference")


def test_no_backend_lists_every_reason():
    m = Q.to("meta")
    with pytest.raises(
        RuntimeError, match=r"no backend can run these inputs:\n(  .*\n)*  reference: device meta not supported"
    ):
        ops.edge_attention(m, m, m, G.to("meta"))


def test_register_backend_rejects_duplicate_name():
    with pytest.raises(ValueError, match=r"a backend named 'reference' is already registered"):
        ops.register_backend(ops.get_backend("reference"))
