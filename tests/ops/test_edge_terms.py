"""Per-edge key / value terms of edge_attention (``edge_key`` / ``edge_value``).

The specification: edge ``e = (j -> i)`` has key ``k_j + edge_key_e`` and value ``v_j + edge_value_e``.
Its oracle is a construction that shares no code with the terms: every edge becomes its own source
(``col = arange(E)``) whose key and value are gathered explicitly, and attention runs without terms
(the per-row loop for the reference, the reference for the native kernels). Then native vs
reference on the adversarial graphs (values, lse, every gradient), the same tensor as both terms,
gradcheck, determinism, layouts, the custom-op machinery and bad inputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from graphattn import Graph
from graphattn.ops import attention_weights, edge_attention
from graphattn.testing import (
    OP_INPUTS,
    TOLERANCES,
    GraphCase,
    adversarial_graphs,
    assert_same_run,
    custom_op_args,
    loop_attention,
    random_edge_terms,
    random_inputs,
    run_with_grads,
    source_hub_graph,
    window_graph,
)

ALL_GRAPHS = [*adversarial_graphs(), GraphCase("source_hub", source_hub_graph())]
SMALL = adversarial_graphs(hub_degree=40)


def inputs_with_terms(graph, heads=2, d=5, dv=None, dtype=torch.float64, requires_grad=False):
    dv = d if dv is None else dv
    inputs = random_inputs(graph, heads=heads, head_dim=d, value_dim=dv, dtype=dtype, requires_grad=requires_grad)
    inputs.update(random_edge_terms(graph, heads, d, dv, dtype=dtype, requires_grad=requires_grad))
    return inputs


def as_edge_sources(graph: Graph, inputs: dict) -> tuple[Graph, dict]:
    """The oracle's construction: edge e is source e with key k[col_e] + edge_key_e (value likewise)."""
    own = Graph(graph.rowptr, torch.arange(graph.num_edges), graph.num_edges)
    k, v = inputs["k"].index_select(0, graph.col), inputs["v"].index_select(0, graph.col)
    if inputs.get("edge_key") is not None:
        k = k + inputs["edge_key"]
    if inputs.get("edge_value") is not None:
        v = v + inputs["edge_value"]
    return own, {**inputs, "k": k, "v": v, "edge_key": None, "edge_value": None}


def pick(inputs, *, bias=True, gate=True, key=True, value=True):
    keep = {"bias": bias, "gate": gate, "edge_key": key, "edge_value": value}
    return {n: (t if keep.get(n, True) else None) for n, t in inputs.items()}


# ---------------------------------------------------------------------- the reference against the oracle
@pytest.mark.parametrize("case", SMALL, ids=repr)
@pytest.mark.parametrize("use_bias,use_gate", [(False, False), (True, True)])
def test_reference_matches_loop_oracle_on_edge_sources(case, use_bias, use_gate):
    inputs = pick(inputs_with_terms(case.graph, d=3, dv=4), bias=use_bias, gate=use_gate)
    out, lse = edge_attention(graph=case.graph, return_lse=True, backend="reference", scale=0.7, **inputs)
    own, flat = as_edge_sources(case.graph, inputs)
    want_out, want_lse = loop_attention(graph=own, scale=0.7, **{n: flat[n] for n in ("q", "k", "v", "bias", "gate")})
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(lse, want_lse)


@pytest.mark.parametrize("case", SMALL, ids=repr)
def test_reference_gradients_match_edge_sources(case):
    inputs = inputs_with_terms(case.graph, d=3, dv=4, requires_grad=True)
    got = run_with_grads("reference", case.graph, inputs)
    own, flat = as_edge_sources(case.graph, inputs)
    want = run_with_grads("reference", own, flat, wrt=inputs)  # grads reach k, v and the terms through the gathers
    assert_same_run(got, want, torch.float64)


# ---------------------------------------------------------------------- native against the reference
CONFIGS = [(torch.float32, 5, 5), (torch.float32, 64, 64), (torch.float32, 8, 20), (torch.float64, 5, 7)]


@pytest.mark.parametrize("case", ALL_GRAPHS, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype,d,dv", CONFIGS, ids=lambda x: str(x).removeprefix("torch."))
@pytest.mark.parametrize("use_bias_gate", [False, True], ids=["plain", "bias_gate"])
def test_native_matches_reference(case, dtype, d, dv, use_bias_gate):
    inputs = pick(inputs_with_terms(case.graph, 2, d, dv, dtype, True), bias=use_bias_gate, gate=use_bias_gate)
    got = run_with_grads("native", case.graph, inputs)
    assert_same_run(got, run_with_grads("reference", case.graph, inputs), dtype)


@pytest.mark.parametrize("name", ["empty_rows_in_middle", "hub_beside_degree_one", "bipartite_more_dst", "random"])
@pytest.mark.parametrize("dtype,d,dv", CONFIGS, ids=lambda x: str(x).removeprefix("torch."))
@pytest.mark.parametrize("which", ["key_only", "value_only"])
def test_native_matches_reference_with_one_term(name, dtype, d, dv, which):
    g = next(c.graph for c in ALL_GRAPHS if c.name == name)
    inputs = pick(inputs_with_terms(g, 2, d, dv, dtype, True), key=which == "key_only", value=which == "value_only")
    assert_same_run(run_with_grads("native", g, inputs), run_with_grads("reference", g, inputs), dtype)


# float32 head dims for the blocked kernels (AVX-512: 16 floats a vector, AVX2: 8): one short
# masked vector (8 on AVX2 is full), full rows (16, 64, 128), masked tails (13, 59, 100), and
# D != Dv with equal vector counts (59 / 57: different tails for the key and value rows).
BLOCKED_DIMS = [(8, 8), (13, 13), (16, 16), (59, 59), (59, 57), (64, 64), (100, 100), (128, 128)]
TERMS = {
    "plain": {"bias": False, "gate": False, "key": False, "value": False},
    "bias_gate": {"bias": True, "gate": True, "key": False, "value": False},
    "key_only": {"bias": False, "gate": False, "key": True, "value": False},
    "value_only": {"bias": False, "gate": True, "key": False, "value": True},
    "all": {"bias": True, "gate": True, "key": True, "value": True},
}


@pytest.mark.parametrize("case", ALL_GRAPHS, ids=lambda c: c.name)
@pytest.mark.parametrize("d,dv", BLOCKED_DIMS, ids=lambda x: str(x))
@pytest.mark.parametrize("terms", list(TERMS), ids=str)
def test_float32_blocked_kernels_match_reference(case, d, dv, terms):
    """Values, lse and every gradient of the float32 blocked kernels, full and tail blocks of edges
    (hubs cut into segments, rows of 1 to 10,000 edges) and of head dims, with and without each term."""
    inputs = pick(inputs_with_terms(case.graph, 2, d, dv, torch.float32, True), **TERMS[terms])
    got = run_with_grads("native", case.graph, inputs)
    assert_same_run(got, run_with_grads("reference", case.graph, inputs), torch.float32)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.partition(":")[2].split())


@pytest.mark.skipif(bool(os.environ.get("GRAPHATTN_ARCH_FLAGS")), reason="built for another target than this CPU")
def test_float32_runs_a_blocked_kernel_on_this_cpu():
    """Built with -march=native, float32 head dims <= 128 run the widest blocked kernel this CPU has."""
    flags = _cpu_flags()
    if "avx512f" in flags:
        want = "avx512_blocked"
    elif {"avx2", "fma"} <= flags:
        want = "avx2_blocked"
    else:
        pytest.skip("no AVX2 / AVX-512 on this CPU: the generic kernels run")
    for d, dv in BLOCKED_DIMS:
        assert torch.ops.graphattn.cpu_kernel(d, dv) == want, (d, dv)
    assert torch.ops.graphattn.cpu_kernel(129, 129) == "generic"  # beyond the blocked kernels' registers
    assert torch.ops.graphattn.cpu_kernel(8, 20) == "generic"  # different vector counts for q / k and v


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("dtype,d", [(torch.float32, 16), (torch.float32, 6), (torch.float64, 5)])
def test_same_tensor_as_key_and_value_gets_the_sum_of_both_gradients(backend, dtype, d):
    g = next(c.graph for c in ALL_GRAPHS if c.name == "duplicate_edges")
    inputs = inputs_with_terms(g, 3, d, d, dtype, True)
    e = inputs["edge_key"]
    shared = {**inputs, "edge_value": e}
    out, lse, grads = run_with_grads(backend, g, shared)
    torch.testing.assert_close(grads["edge_key"], grads["edge_value"], rtol=0, atol=0)  # one tensor, one gradient
    # Two distinct leaves holding the same values: the shared gradient is the sum of theirs.
    twin = e.detach().clone().requires_grad_()
    two = {**inputs, "edge_key": e, "edge_value": twin}
    out2, lse2, grads2 = run_with_grads(backend, g, two)
    torch.testing.assert_close(out, out2, rtol=0, atol=0)
    torch.testing.assert_close(lse, lse2, rtol=0, atol=0)
    torch.testing.assert_close(grads["edge_key"], grads2["edge_key"] + grads2["edge_value"], **TOLERANCES[dtype])
    assert (grads2["edge_key"] != 0).any() and (grads2["edge_value"] != 0).any()
    if backend == "native":
        assert_same_run((out, lse, grads), run_with_grads("reference", g, shared), dtype)


def test_terms_change_the_result():
    """A zero edge_key / edge_value is the op without them; a nonzero one is not."""
    g = next(c.graph for c in ALL_GRAPHS if c.name == "random")
    inputs = inputs_with_terms(g, 2, 16, 16, torch.float32)
    base = {n: inputs[n] for n in ("q", "k", "v", "bias", "gate")}
    plain = edge_attention(graph=g, backend="native", **base)
    zeros = edge_attention(
        graph=g,
        backend="native",
        edge_key=torch.zeros_like(inputs["edge_key"]),
        edge_value=torch.zeros_like(inputs["edge_value"]),
        **base,
    )
    torch.testing.assert_close(zeros, plain, rtol=0, atol=1e-7)
    for term in ("edge_key", "edge_value"):
        changed = edge_attention(graph=g, backend="native", **{term: inputs[term]}, **base)
        assert (changed - plain).abs().max() > 1e-2, term


@pytest.mark.parametrize(
    "name", ["empty_rows_in_middle", "duplicate_edges", "bipartite_more_src", "random", "no_edges"]
)
@pytest.mark.parametrize("use_bias_gate", [False, True])
def test_gradcheck_float64(name, use_bias_gate):
    g = next(c.graph for c in ALL_GRAPHS if c.name == name)
    inputs = inputs_with_terms(g, 2, 3, 4, torch.float64, True)

    def f(q, k, v, bias, gate, edge_key, edge_value):
        out, lse = edge_attention(
            q,
            k,
            v,
            g,
            bias=bias if use_bias_gate else None,
            gate=gate if use_bias_gate else None,
            edge_key=edge_key,
            edge_value=edge_value,
            return_lse=True,
            backend="native",
        )
        return out, torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))

    assert torch.autograd.gradcheck(f, tuple(inputs[n] for n in OP_INPUTS), eps=1e-6, atol=1e-6)


def test_gradcheck_float64_shared_term():
    g = next(c.graph for c in ALL_GRAPHS if c.name == "random")
    inputs = inputs_with_terms(g, 2, 4, 4, torch.float64, True)

    def f(q, k, v, e):
        return edge_attention(q, k, v, g, edge_key=e, edge_value=e, backend="native")

    assert torch.autograd.gradcheck(f, (inputs["q"], inputs["k"], inputs["v"], inputs["edge_key"]), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("d", [16, 6, 13])  # the blocked kernels (unmasked / masked rows)
def test_gradcheck_float32_small(d):
    """float32 through the blocked kernels, against finite differences at float32's resolution."""
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2, 1, 1, 3], [0, 0, 0, 2, 2, 3]]), 4, 4)  # empty row 1
    inputs = inputs_with_terms(g, 1, d, d, torch.float32, True)
    with torch.no_grad():
        for n in ("q", "k", "edge_key"):
            inputs[n].mul_(0.3)  # moderate logits: finite differences in float32 stay accurate

    def f(q, k, v, bias, gate, edge_key, edge_value):
        return edge_attention(
            q, k, v, g, bias=bias, gate=gate, edge_key=edge_key, edge_value=edge_value, backend="native"
        )

    assert torch.autograd.gradcheck(
        f, tuple(inputs[n] for n in OP_INPUTS), eps=1e-2, atol=2e-2, rtol=2e-2, fast_mode=False, raise_exception=True
    )


@pytest.mark.parametrize("name", ["hub_beside_degree_one", "source_hub"])
def test_bitwise_deterministic_across_runs_and_thread_counts(name):
    g = next(c.graph for c in ALL_GRAPHS if c.name == name)
    inputs = inputs_with_terms(g, 3, 32, 32, torch.float32, True)

    def once():
        out, lse, grads = run_with_grads("native", g, inputs)
        return [out, lse, *grads.values()]

    first, second = once(), once()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = once()
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, second, single, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_non_contiguous_terms():
    g = next(c.graph for c in ALL_GRAPHS if c.name == "random")
    inputs = inputs_with_terms(g, 2, 16, 16, torch.float32, True)
    gen = torch.Generator().manual_seed(9)
    inputs["edge_key"] = torch.randn(g.num_edges, 16, 2, generator=gen).transpose(1, 2).requires_grad_()
    inputs["edge_value"] = torch.randn(g.num_edges, 2, 32, generator=gen)[:, :, ::2].requires_grad_()
    assert not inputs["edge_key"].is_contiguous() and not inputs["edge_value"].is_contiguous()
    assert_same_run(run_with_grads("native", g, inputs), run_with_grads("reference", g, inputs), torch.float32)


def test_no_edges_gives_zero_and_empty_term_gradients():
    g = next(c.graph for c in ALL_GRAPHS if c.name == "no_edges")
    inputs = inputs_with_terms(g, 2, 4, 4, torch.float32, True)
    assert inputs["edge_key"].shape == (0, 2, 4)
    out, lse, grads = run_with_grads("native", g, inputs)
    assert (out == 0).all() and torch.isneginf(lse).all()
    assert grads["edge_key"].shape == (0, 2, 4) and grads["edge_value"].shape == (0, 2, 4)
    assert (grads["q"] == 0).all() and (grads["k"] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_error_within_twice_reference(dtype):
    g = window_graph(300, 24)
    inputs = inputs_with_terms(g, 2, 32, 32, torch.float64)
    truth = edge_attention(graph=g, backend="reference", **inputs)
    low = {n: t.to(dtype) for n, t in inputs.items()}
    out = edge_attention(graph=g, backend="native", **low)
    ref = edge_attention(graph=g, backend="reference", **low)
    assert out.dtype == dtype
    err, ref_err = (out.double() - truth).abs().max(), (ref.double() - truth).abs().max()
    assert err <= 2 * ref_err + 1e-6, (err, ref_err)


def test_attention_weights_with_edge_key():
    g = next(c.graph for c in ALL_GRAPHS if c.name == "duplicate_edges")
    inputs = inputs_with_terms(g, 2, 5, 5)
    _, lse = edge_attention(graph=g, return_lse=True, scale=0.4, backend="native", **inputs)
    p = attention_weights(inputs["q"], inputs["k"], g, lse, bias=inputs["bias"], edge_key=inputs["edge_key"], scale=0.4)
    own, flat = as_edge_sources(g, inputs)
    want = attention_weights(flat["q"], flat["k"], own, lse, bias=flat["bias"], scale=0.4)
    torch.testing.assert_close(p, want)
    rows = torch.zeros(g.num_dst, 2, dtype=p.dtype).index_add(0, g.dst(), p)
    torch.testing.assert_close(rows, torch.ones_like(rows))  # every row of this graph has edges


# ---------------------------------------------------------------------- the custom ops
def test_opcheck_forward_op_with_terms():
    g = next(c.graph for c in ALL_GRAPHS if c.name == "empty_rows_in_middle")
    inputs = inputs_with_terms(g, 2, 8, 8, torch.float32, True)
    torch.library.opcheck(torch.ops.graphattn.edge_attention_fwd.default, custom_op_args(g, inputs, 0.3))


def test_opcheck_backward_op_with_terms():
    g = next(c.graph for c in ALL_GRAPHS if c.name == "random")
    inputs = inputs_with_terms(g, 2, 8, 8, torch.float32)
    fwd = custom_op_args(g, inputs, 0.3)
    out, lse, lse_lo = torch.ops.graphattn.edge_attention_fwd(*fwd)
    q, k, v, rowptr, col, colptr, row, perm, bias, gate, ek, ev, scale = fwd
    args = (torch.randn_like(out), torch.randn_like(lse), q, k, v, out, lse, lse_lo, rowptr, col, colptr, row, perm)
    args += (bias, gate, ek, ev, scale, True, True, True, True, True)
    torch.library.opcheck(torch.ops.graphattn.edge_attention_bwd.default, args)
    grads = torch.ops.graphattn.edge_attention_bwd(*args)
    assert grads[5].shape == ek.shape and grads[6].shape == ev.shape


def test_direct_op_call_checks_the_terms():
    g = next(c.graph for c in ALL_GRAPHS if c.name == "random")
    inputs = inputs_with_terms(g, 2, 8, 6, torch.float32)
    args = list(custom_op_args(g, inputs, 0.3))
    op = torch.ops.graphattn.edge_attention_fwd
    ek, ev = inputs["edge_key"], inputs["edge_value"]
    bad = [
        (10, ek[:-1], r"edge_key must be \[E, H, 8\]"),
        (10, ek.double(), "edge_key must have dtype"),
        (10, ek.transpose(0, 1).contiguous().transpose(0, 1), "edge_key must be contiguous"),
        (11, ek, r"edge_value must be \[E, H, 6\]"),
        (11, ev[..., :-1], r"edge_value must be \[E, H, 6\]"),
    ]
    for pos, value, msg in bad:
        a = list(args)
        a[pos] = value
        with pytest.raises(RuntimeError, match=msg):
            op(*a)


# ---------------------------------------------------------------------- bad inputs through the public op
G = Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]))
Q = torch.randn(3, 2, 4)


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize(
    ("over", "error", "match"),
    [
        ({"edge_key": torch.randn(4, 2, 4)}, ValueError, r"edge_key must be \[E, H, D\] = \[3, 2, 4\] .*\[4, 2, 4\]"),
        ({"edge_key": torch.randn(3, 2, 5)}, ValueError, r"edge_key must be \[E, H, D\] = \[3, 2, 4\]"),
        ({"edge_key": torch.randn(3, 8)}, ValueError, r"edge_key must be \[E, H, D\] = \[3, 2, 4\]"),
        ({"edge_value": torch.randn(3, 1, 4)}, ValueError, r"edge_value must be \[E, H, Dv\] = \[3, 2, 4\]"),
        ({"edge_value": torch.randn(3, 2, 4).double()}, TypeError, r"edge_value must have the dtype of q"),
        ({"edge_key": [[1.0]]}, TypeError, r"edge_key must be a torch.Tensor or None, got list"),
        ({"edge_key": torch.randn(3, 2, 4, device="meta")}, ValueError, r"edge_key must be on the device of q"),
    ],
)
def test_bad_terms_raise_clear_errors(backend, over, error, match):
    with pytest.raises(error, match=match):
        edge_attention(Q, Q, Q, G, backend=backend, **over)
