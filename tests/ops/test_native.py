"""The native backend (cuda/ kernels, CPU launcher) against the reference oracle.

Reference first (graphattn.ops.reference, itself tested against the per-row loop), then the table
of graphs and options, then gradients, determinism, layouts, and the custom-op machinery
(opcheck, torch.compile).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from graphattn import Graph
from graphattn.ops import backends, edge_attention, get_backend, native
from graphattn.testing import (
    TOLERANCES,
    GraphCase,
    adversarial_graphs,
    assert_same_run,
    custom_op_args,
    random_inputs,
    run_with_grads,
    source_hub_graph,
    window_graph,
)

GRAPHS = adversarial_graphs()

ALL_GRAPHS = [*GRAPHS, GraphCase("source_hub", source_hub_graph())]


def run(backend, graph, inputs, use_bias=True, use_gate=True, seed=1):
    """out, lse and the gradients of a loss that uses both, with or without bias / gate."""
    terms = {"bias": inputs["bias"] if use_bias else None, "gate": inputs["gate"] if use_gate else None}
    return run_with_grads(backend, graph, {**inputs, **terms}, seed=seed)


def test_library_is_loaded_and_native_is_preferred():
    assert native.available(), native.load_error()
    assert backends()[0].name == "native"
    b = get_backend("native")
    # CUDA only where the library has CUDA kernels: a CPU-only build under a CUDA torch claimed it,
    # so dispatch would pick native for CUDA tensors and fail instead of using the reference (audit).
    cuda = torch._C._dispatch_has_kernel_for_dispatch_key("graphattn::edge_attention_fwd", "CUDA")
    assert b.devices == (("cpu", "cuda") if cuda else ("cpu",))
    assert torch.float32 in b.dtypes and torch.float64 in b.dtypes
    assert "cpu" in b.deterministic_devices


# (dtype, head dim D, value dim Dv): float32 D=5 and 64 run the blocked kernels (AVX-512 or AVX2,
# masked and unmasked rows), D=13 / Dv=16 the blocked kernels with different row tails for q / k
# and v, D=8 / Dv=20 the generic float32 kernel, float64 the generic kernel.
CONFIGS = [
    (torch.float32, 5, 5),
    (torch.float32, 64, 64),
    (torch.float32, 13, 16),
    (torch.float32, 8, 20),
    (torch.float64, 5, 7),
]


@pytest.mark.parametrize("case", ALL_GRAPHS, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype,d,dv", CONFIGS, ids=lambda x: str(x).removeprefix("torch."))
@pytest.mark.parametrize("use_bias,use_gate", [(False, False), (True, False), (False, True), (True, True)])
def test_matches_reference(case, dtype, d, dv, use_bias, use_gate):
    inputs = random_inputs(case.graph, heads=2, head_dim=d, value_dim=dv, dtype=dtype, requires_grad=True)
    got = run("native", case.graph, inputs, use_bias, use_gate)
    want = run("reference", case.graph, inputs, use_bias, use_gate)
    assert_same_run(got, want, dtype)


@pytest.mark.parametrize("case", ALL_GRAPHS, ids=lambda c: c.name)
@pytest.mark.parametrize("heads", [16, 17])
def test_short_rows_every_head_at_once_or_one_by_one(case, heads):
    """float32 rows of at most one vector block of edges run all heads phase by phase up to 16
    heads (the short-row kernels' limit) and head by head above it: both match the reference."""
    inputs = random_inputs(case.graph, heads=heads, head_dim=16, dtype=torch.float32, requires_grad=True)
    assert_same_run(run("native", case.graph, inputs), run("reference", case.graph, inputs), torch.float32)


def test_empty_rows_give_zero_and_minus_inf():
    g = next(c.graph for c in GRAPHS if c.name == "empty_rows_in_middle")
    inputs = random_inputs(g, heads=3, head_dim=16, dtype=torch.float32)
    out, lse = edge_attention(inputs["q"], inputs["k"], inputs["v"], g, return_lse=True, backend="native")
    empty = g.in_degree() == 0
    assert empty.any()
    assert (out[empty] == 0).all()
    assert torch.isneginf(lse[empty]).all()
    assert torch.isfinite(lse[~empty]).all()


def test_all_minus_inf_bias_row_is_empty():
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2, 0], [0, 0, 1, 1]]), 3, 2)
    inputs = random_inputs(g, heads=1, head_dim=16, dtype=torch.float32, requires_grad=True)
    bias = torch.tensor([[float("-inf")], [float("-inf")], [0.5], [0.0]], requires_grad=True)
    out, lse = edge_attention(inputs["q"], inputs["k"], inputs["v"], g, bias=bias, return_lse=True, backend="native")
    assert (out[0] == 0).all() and torch.isneginf(lse[0]).all()
    assert torch.isfinite(out[1]).all() and torch.isfinite(lse[1]).all()
    out.sum().backward()
    for t in (inputs["q"], inputs["k"], inputs["v"], bias):
        assert not t.grad.isnan().any()
    assert (bias.grad[:2] == 0).all()


@pytest.mark.parametrize("name", ["empty_rows_in_middle", "duplicate_edges", "bipartite_more_src", "random"])
@pytest.mark.parametrize("use_bias,use_gate", [(False, False), (True, True)])
def test_gradcheck_float64(name, use_bias, use_gate):
    g = next(c.graph for c in GRAPHS if c.name == name)
    inputs = random_inputs(g, heads=2, head_dim=3, value_dim=4, dtype=torch.float64, requires_grad=True)

    def f(q, k, v, bias, gate):
        out, lse = edge_attention(
            q,
            k,
            v,
            g,
            bias=bias if use_bias else None,
            gate=gate if use_gate else None,
            return_lse=True,
            backend="native",
        )
        return out, torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))

    args = tuple(inputs[n] for n in ("q", "k", "v", "bias", "gate"))
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


def _fwd_bwd(graph, inputs, bias, gate):
    out, lse = edge_attention(
        inputs["q"], inputs["k"], inputs["v"], graph, bias=bias, gate=gate, return_lse=True, backend="native"
    )
    grads = torch.autograd.grad(
        (out * 1.7).sum() + torch.where(torch.isfinite(lse), lse, 0).sum(),
        [inputs["q"], inputs["k"], inputs["v"], bias, gate],
    )
    return [out, lse, *grads]


@pytest.mark.parametrize(
    "case",
    [c for c in ALL_GRAPHS if c.name in ("hub_beside_degree_one", "source_hub")]
    + [GraphCase("window_2000_k40", window_graph(2000, 40))],
    ids=lambda c: c.name,
)
def test_bitwise_deterministic_across_runs_and_thread_counts(case):
    # D = 64, 3 heads: the window's sources run the source pass in groups (see GroupStep in
    # cuda/edge_attention_cpu.cpp), which one and two threads chunk differently.
    inputs = random_inputs(case.graph, heads=3, head_dim=64, dtype=torch.float32, requires_grad=True)
    first = _fwd_bwd(case.graph, inputs, inputs["bias"], inputs["gate"])
    second = _fwd_bwd(case.graph, inputs, inputs["bias"], inputs["gate"])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _fwd_bwd(case.graph, inputs, inputs["bias"], inputs["gate"])
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, second, single, strict=True):
        assert torch.equal(a, b)
        assert torch.equal(a, c)


def test_non_contiguous_inputs():
    g = next(c.graph for c in GRAPHS if c.name == "random")
    gen = torch.Generator().manual_seed(3)
    h, d = 2, 16
    q = torch.randn(h, g.num_dst, d, generator=gen).transpose(0, 1).requires_grad_()  # [N, H, D], strided
    k_big = torch.randn(g.num_src, h, 2 * d, generator=gen)
    k = k_big[:, :, ::2].requires_grad_()  # every other element
    v = torch.randn(g.num_src, d, h, generator=gen).permute(0, 2, 1).requires_grad_()
    bias = torch.randn(h, g.num_edges, generator=gen).t().requires_grad_()
    gate = (torch.rand(g.num_edges, 2 * h, generator=gen) + 0.5)[:, ::2].requires_grad_()
    assert not any(t.is_contiguous() for t in (q, k, v, bias, gate))
    inputs = {"q": q, "k": k, "v": v, "bias": bias, "gate": gate}
    assert_same_run(run("native", g, inputs), run("reference", g, inputs), torch.float32)


def test_odd_sizes_d59_n97():
    gen = torch.Generator().manual_seed(5)
    n = 97
    deg = torch.randint(0, 30, (n,), generator=gen)
    deg[13] = 0
    src = torch.randint(0, n, (int(deg.sum()),), generator=gen)
    random_graph = Graph.from_edge_index(torch.stack([src, torch.arange(n).repeat_interleave(deg)]), n)
    # The window's sources run the source pass in groups, here with masked row tails.
    for g in (random_graph, window_graph(n, 11)):
        for d, dv in ((59, 59), (59, 33)):
            inputs = random_inputs(g, heads=3, head_dim=d, value_dim=dv, dtype=torch.float32, requires_grad=True)
            assert_same_run(run("native", g, inputs), run("reference", g, inputs), torch.float32)


def test_large_outputs_behave_like_tensors():
    # out and grad_q (36 MB each, huge-page mappings) and grad_k, grad_v (18 MB) come from the
    # kernels' output cache (OutputCache in cuda/edge_attention_cpu.cpp).
    n_dst, n_src, d = 147_456, 73_728, 64
    gen = torch.Generator().manual_seed(11)
    src = torch.cat([torch.randint(0, n_src, (n_dst,), generator=gen), torch.arange(n_dst) % n_src])
    dst = torch.cat([torch.arange(n_dst), torch.arange(n_dst)])
    g = Graph.from_edge_index(torch.stack([src, dst]), num_src=n_src, num_dst=n_dst)
    assert n_dst * d * 4 > 32 << 20 > n_src * d * 4
    inputs = random_inputs(g, heads=1, head_dim=d, dtype=torch.float32, requires_grad=True)
    got = run("native", g, inputs, use_bias=True, use_gate=False)
    assert_same_run(got, run("reference", g, inputs, use_bias=True, use_gate=False), torch.float32)
    out, _, grads = got
    assert out.is_contiguous() and grads["q"].is_contiguous() and grads["q"].shape == (n_dst, 1, d)
    # In-place arithmetic and gradient accumulation work on them as on any tensor.
    before = out.clone()
    out.add_(1.0)
    torch.testing.assert_close(out, before + 1.0)
    q = inputs["q"]
    for _ in range(2):
        edge_attention(q, inputs["k"], inputs["v"], g, backend="native").sum().backward()
    want = torch.autograd.grad(edge_attention(q, inputs["k"], inputs["v"], g, backend="reference").sum(), q)[0]
    torch.testing.assert_close(q.grad, 2 * want, **TOLERANCES[torch.float32])


def test_output_cache_reuses_freed_buffers_and_never_live_ones():
    g = window_graph(4096, 8)
    inputs = random_inputs(g, heads=4, head_dim=32, dtype=torch.float32)  # out: 2 MiB
    qkv = (inputs["q"], inputs["k"], inputs["v"])
    want = edge_attention(*qkv, g, backend="reference")
    native.empty_cache()
    first = edge_attention(*qkv, g, backend="native")
    ptr = first.data_ptr()
    del first
    assert native.empty_cache() >= 2 << 20  # the freed output was cached, and is now unmapped
    assert native.empty_cache() == 0
    a = edge_attention(*qkv, g, backend="native")
    ptr = a.data_ptr()
    del a
    b = edge_attention(*qkv, g, backend="native")  # takes the freed mapping ...
    c = edge_attention(*qkv, g, backend="native")  # ... and c, with b alive, a new one
    assert b.data_ptr() == ptr and c.data_ptr() != ptr
    assert abs(c.data_ptr() - b.data_ptr()) >= b.numel() * b.element_size()
    for t in (b, c):
        torch.testing.assert_close(t, want, **TOLERANCES[torch.float32])
    del b, c
    # Best fit, wasting at most half: a freed 4 MiB output serves a 2.05 MiB request, not a 1.03 MiB one.
    g8 = window_graph(8192, 8)
    i8 = random_inputs(g8, heads=4, head_dim=32, dtype=torch.float32)  # out: 512 B per row
    native.empty_cache()
    big = edge_attention(i8["q"], i8["k"], i8["v"], g8, backend="native")
    ptr = big.data_ptr()
    del big
    small = edge_attention(i8["q"][:2100], i8["k"], i8["v"], _rows(g8, 2100), backend="native")
    assert small.data_ptr() != ptr
    medium = edge_attention(i8["q"][:4200], i8["k"], i8["v"], _rows(g8, 4200), backend="native")
    assert medium.data_ptr() == ptr
    want = edge_attention(i8["q"][:4200], i8["k"], i8["v"], _rows(g8, 4200), backend="reference")
    torch.testing.assert_close(medium, want, **TOLERANCES[torch.float32])
    del small, medium
    native.empty_cache()


def _rows(g: Graph, n: int) -> Graph:
    """The first n destination rows of g."""
    return Graph(g.rowptr[: n + 1], g.col[: int(g.rowptr[n])], g.num_src)


def test_output_cache_can_be_turned_off(tmp_path):
    code = (
        "import torch\n"
        "from graphattn.ops import edge_attention, native\n"
        "from graphattn.testing import random_inputs, window_graph\n"
        "g = window_graph(4096, 8)\n"
        "i = random_inputs(g, heads=4, head_dim=32, dtype=torch.float32)\n"
        "out = edge_attention(i['q'], i['k'], i['v'], g, backend='native')\n"
        "del out\n"
        "print(native.empty_cache())\n"
    )
    env = {**os.environ, "GRAPHATTN_CPU_CACHE_MB": "0"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "0"
    env["GRAPHATTN_CPU_CACHE_MB"] = "64"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(res.stdout.strip()) >= 2 << 20


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_error_within_twice_reference(dtype):
    g = window_graph(300, 24)
    inputs = random_inputs(g, heads=2, head_dim=32, dtype=torch.float64)
    truth, truth_lse = edge_attention(**_qkv(inputs), graph=g, return_lse=True, backend="reference")
    low = {n: t.to(dtype) for n, t in inputs.items()}
    out, lse = edge_attention(**_qkv(low), graph=g, return_lse=True, backend="native")
    ref = edge_attention(**_qkv(low), graph=g, backend="reference")
    assert out.dtype == dtype and lse.dtype == torch.float32
    err = (out.double() - truth).abs().max()
    ref_err = (ref.double() - truth).abs().max()
    # FlashAttention's rule for low precision: the fused path may not be worse than 2x the reference.
    assert err <= 2 * ref_err + 1e-6, (err, ref_err)
    torch.testing.assert_close(lse.double(), truth_lse, atol=1e-2, rtol=1e-2)


def _qkv(inputs):
    return {"q": inputs["q"], "k": inputs["k"], "v": inputs["v"], "bias": inputs["bias"], "gate": inputs["gate"]}


def _op_args(g, inputs, use_bias, use_gate):
    terms = {"bias": inputs["bias"] if use_bias else None, "gate": inputs["gate"] if use_gate else None}
    return custom_op_args(g, {**inputs, **terms}, 0.3)


@pytest.mark.parametrize("use_bias,use_gate", [(False, False), (True, True)])
def test_opcheck_forward_op(use_bias, use_gate):
    g = next(c.graph for c in GRAPHS if c.name == "empty_rows_in_middle")
    inputs = random_inputs(g, heads=2, head_dim=8, dtype=torch.float32, requires_grad=True)
    torch.library.opcheck(torch.ops.graphattn.edge_attention_fwd.default, _op_args(g, inputs, use_bias, use_gate))


def test_opcheck_backward_op():
    g = next(c.graph for c in GRAPHS if c.name == "random")
    inputs = random_inputs(g, heads=2, head_dim=8, dtype=torch.float32)
    fwd_args = _op_args(g, inputs, True, True)
    out, lse, lse_lo = torch.ops.graphattn.edge_attention_fwd(*fwd_args)
    q, k, v, rowptr, col, colptr, row, perm, bias, gate, edge_key, edge_value, scale = fwd_args
    args = (
        torch.randn_like(out),
        torch.randn_like(lse),
        q,
        k,
        v,
        out,
        lse,
        lse_lo,
        rowptr,
        col,
        colptr,
        row,
        perm,
        bias,
        gate,
        edge_key,
        edge_value,
        scale,
        True,
        True,
        True,
        False,
        False,
    )
    torch.library.opcheck(torch.ops.graphattn.edge_attention_bwd.default, args)


def test_torch_compile_fullgraph_forward_and_backward():
    g = window_graph(64, 8)
    inputs = random_inputs(g, heads=2, head_dim=16, dtype=torch.float32, requires_grad=True)
    g.transpose  # noqa: B018  (built eagerly, as a layer would before compiling)

    def f(q, k, v, bias):
        return edge_attention(q, k, v, g, bias=bias, backend="native").square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="inductor")
    args = [inputs[n] for n in ("q", "k", "v", "bias")]
    want = f(*args)
    want_grads = torch.autograd.grad(want, args)
    got = compiled(*args)
    got_grads = torch.autograd.grad(got, args)
    torch.testing.assert_close(got, want)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_direct_op_call_checks_its_inputs():
    g = next(c.graph for c in GRAPHS if c.name == "random")
    inputs = random_inputs(g, heads=2, head_dim=8, dtype=torch.float32)
    args = list(_op_args(g, inputs, True, False))
    op = torch.ops.graphattn.edge_attention_fwd
    bad = [
        (0, inputs["q"].transpose(0, 1), "q must be"),  # wrong shape for the graph / non-contiguous
        (3, g.rowptr.int(), "rowptr must be int64"),
        (3, g.rowptr[:-1].contiguous(), "rowptr must have"),
        (1, inputs["k"].double(), "k must have dtype"),
        (8, inputs["bias"][:-1], "bias must be"),
    ]
    for pos, value, msg in bad:
        a = list(args)
        a[pos] = value
        with pytest.raises(RuntimeError, match=msg):
            op(*a)


def test_backward_without_transpose_is_an_error_not_a_crash():
    g = next(c.graph for c in GRAPHS if c.name == "random")
    inputs = random_inputs(g, heads=2, head_dim=8, dtype=torch.float32)
    empty = g.rowptr.new_empty(0)
    out, lse, lse_lo = torch.ops.graphattn.edge_attention_fwd(
        inputs["q"], inputs["k"], inputs["v"], g.rowptr, g.col, empty, empty, empty, None, None, None, None, 0.5
    )
    with pytest.raises(RuntimeError, match="colptr must have"):
        torch.ops.graphattn.edge_attention_bwd(
            torch.ones_like(out),
            None,
            inputs["q"],
            inputs["k"],
            inputs["v"],
            out,
            lse,
            lse_lo,
            g.rowptr,
            g.col,
            empty,
            empty,
            empty,
            None,
            None,
            None,
            None,
            0.5,
            True,
            False,
            False,
            False,
            False,
        )


@pytest.mark.parametrize("degree", [3, 40, 300])  # one block, several blocks, several runs of blocks
@pytest.mark.parametrize("head_dim", [4, 64])  # the generic kernel and the blocked one
@pytest.mark.parametrize("case", ["nan_bias", "nan_key", "nan_query", "inf_bias", "nan_among_masked"])
def test_nan_and_inf_scores_propagate_like_the_reference(case, head_dim, degree):
    """A NaN (or +inf) score makes its row's output NaN, as torch.softmax would, and reaches the
    gradients: a diverged model must not look finite. Each case puts it in row 0 of head 0 of two
    rows (row 1 stays finite, but for the NaN key both rows read); `nan_among_masked` hides it
    among -inf scores, where the kernel's vector max drops it and the run would otherwise be
    skipped as empty."""
    torch.manual_seed(0)
    n = degree
    dst = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
    g = Graph.from_edge_index(torch.stack([torch.arange(2 * n) % n, dst]), n, 2)
    q, k, v = torch.randn(2, 2, head_dim), torch.randn(n, 2, head_dim), torch.randn(n, 2, head_dim)
    bias = torch.zeros(2 * n, 2)
    if case == "nan_bias":
        bias[n // 2, 0] = float("nan")
    elif case == "nan_key":
        k[n // 2, 0, 1] = float("nan")  # row 1 reads that key too
    elif case == "nan_query":
        q[0, 0, 0] = float("nan")
    elif case == "inf_bias":
        bias[n // 3, 0] = float("inf")
    else:
        bias[:n, 0] = float("-inf")
        bias[n // 3, 0] = float("nan")
    got = {}
    for backend in ("native", "reference"):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out, lse = edge_attention(*leaves, g, bias=bias, return_lse=True, backend=backend)
        out.sum().backward()
        got[backend] = (out.isnan(), lse, [t.grad.isnan().any() for t in leaves])
    (out_nan, lse, grads), (want_nan, want_lse, want_grads) = got["native"], got["reference"]
    assert torch.equal(out_nan, want_nan)
    nan_rows = [0, 1] if case == "nan_key" else [0]
    assert bool(want_nan[nan_rows, 0].all()) and not bool(want_nan[:, 1].any())
    assert not bool(want_nan[1].any()) or case == "nan_key"
    assert torch.equal(lse.isfinite(), want_lse.isfinite())
    assert bool(lse[nan_rows, 0].isnan().all()) and torch.allclose(lse[:, 1], want_lse[:, 1])
    assert grads == want_grads and all(grads)


@pytest.mark.parametrize("terms", ["plain", "bias_gate_lse", "shared_edge_key_value"])
def test_double_backward_gradgradcheck(terms):
    """Second derivatives through the native op (gradient penalties, meta-learning): under
    create_graph its backward takes the reference's differentiable path. Before, the kernels'
    gradients were constants to autograd and every second derivative was silently 0."""
    g = next(c.graph for c in GRAPHS if c.name == "duplicate_edges")
    torch.manual_seed(0)
    e = g.num_edges
    q, k, v = (torch.randn(n, 2, 4, dtype=torch.float64, requires_grad=True) for n in (g.num_dst, g.num_src, g.num_src))
    if terms == "plain":
        args, f = (q, k, v), lambda q, k, v: edge_attention(q, k, v, g, backend="native")
    elif terms == "bias_gate_lse":
        bias, gate = (torch.randn(e, 2, dtype=torch.float64, requires_grad=True) for _ in range(2))

        def f(q, k, v, bias, gate):
            out, lse = edge_attention(q, k, v, g, bias=bias, gate=gate, return_lse=True, backend="native")
            return out, lse.nan_to_num(neginf=0.0)  # empty rows' -inf has no derivative

        args = (q, k, v, bias, gate)
    else:
        ekv = torch.randn(e, 2, 4, dtype=torch.float64, requires_grad=True)
        args, f = (
            (q, k, v, ekv),
            lambda q, k, v, t: edge_attention(q, k, v, g, edge_key=t, edge_value=t, backend="native"),
        )
    assert torch.autograd.gradgradcheck(f, args)


@pytest.mark.parametrize("shift", [-1e9, 1e7])
@pytest.mark.parametrize("hub", [4, 3000])  # the short-row and the blocked / split-row kernels
def test_gradients_of_rows_of_large_scores_match_the_reference(shift, hub):
    """A row whose scores are all large (masked out by a bias of -1e9, a common idiom) had its
    probabilities recomputed as exp(s - lse) with lse rounded to float32: off by up to e^32 in
    the backward while the forward was exact (API audit). lse's rounding error is now saved too."""
    torch.manual_seed(0)
    src = torch.cat([torch.arange(hub), torch.arange(3)])
    dst = torch.cat([torch.zeros(hub, dtype=torch.long), torch.ones(3, dtype=torch.long)])
    g = Graph.from_edge_index(torch.stack([src, dst]), hub, 2)
    q, k, v = torch.randn(2, 2, 16), torch.randn(hub, 2, 16), torch.randn(hub, 2, 16)
    bias = torch.randn(g.num_edges, 2)
    bias[:hub] += shift  # row 0 only: row 1 keeps ordinary scores
    grads = {}
    for backend in ("reference", "native"):
        inputs = [t.clone().requires_grad_() for t in (q, k, v, bias)]
        out = edge_attention(*inputs[:3], g, bias=inputs[3], backend=backend)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads[backend] = [out.detach()] + [t.grad for t in inputs]
    for got, want in zip(grads["native"], grads["reference"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_index_values_are_checked_so_bad_indices_raise_instead_of_crashing():
    """The kernels index memory with rowptr / col (and the transpose's colptr / row / perm). A
    Graph is validated once, when built; a direct op call, or a Graph whose tensors were changed in
    place, reached the kernels unchecked and read out of bounds (a segfault, found by an API audit)."""
    g = next(c.graph for c in GRAPHS if c.name == "random")
    inputs = random_inputs(g, heads=2, head_dim=8, dtype=torch.float32)
    fwd_args = _op_args(g, inputs, True, False)
    op = torch.ops.graphattn.edge_attention_fwd
    e = g.num_edges
    bad_values = [
        (4, lambda c: c.index_fill(0, torch.tensor([e // 2]), 10**9), rf"col must lie in \[0, N_src = {g.num_src}\)"),
        (4, lambda c: c.index_fill(0, torch.tensor([e - 1]), -1), rf"col\[{e - 1}\] = -1"),
        (3, lambda r: r.flip(0), r"rowptr must run from 0 to E"),
        (3, lambda r: r.index_fill(0, torch.tensor([1]), e), r"rowptr must be non-decreasing"),
        (  # every row's pair is checked against the bounds, not only against its neighbour
            3,
            lambda r: r.index_fill(0, torch.tensor([1]), e + 5),
            rf"rowptr must be non-decreasing from 0 to E = {e}, but rowptr\[0\] = 0 and rowptr\[1\] = {e + 5}",
        ),
    ]
    for pos, change, msg in bad_values:
        args = list(fwd_args)
        args[pos] = change(args[pos]).contiguous()
        with pytest.raises(RuntimeError, match=msg):
            op(*args)
    out, lse, lse_lo = op(*fwd_args)
    q, k, v, rowptr, col, colptr, row, perm, bias, gate, edge_key, edge_value, scale = fwd_args
    colptr_flipped = (10, r"colptr must run from 0 to E")
    for pos, msg in [(11, r"row must lie in \[0, N_dst = "), (12, r"perm must lie in \[0, E = "), colptr_flipped]:
        bwd = [torch.ones_like(out), None, q, k, v, out, lse, lse_lo, rowptr, col, colptr, row, perm]
        bwd[pos] = bwd[pos].flip(0).contiguous() if pos == 10 else bwd[pos].index_fill(0, torch.tensor([0]), -5)
        flags = (True, True, False, False, False)  # need k / v, bias; not gate, edge key, edge value
        with pytest.raises(RuntimeError, match=msg):
            torch.ops.graphattn.edge_attention_bwd(*bwd, bias, gate, edge_key, edge_value, scale, *flags)
    mutated = Graph.from_edge_index(torch.tensor([[0, 1, 2], [0, 0, 1]]), 3, 2)
    mutated.col[0] = 10**9  # after validation
    with pytest.raises(RuntimeError, match=r"col must lie in \[0, N_src = 3\), got col\[0\] = 1000000000"):
        edge_attention(torch.randn(2, 1, 4), torch.randn(3, 1, 4), torch.randn(3, 1, 4), mutated, backend="native")
