"""graphattn.nn.dgl.GraphAttnConv equals the same math written with dgl.ops (SDDMM -> edge softmax -> SpMM).

Reference first, then graphs (homogeneous, duplicate edges, blocks, bipartite), gradients,
attention weights in DGL's edge order, the zero-in-degree policy, and the import helper.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

if importlib.util.find_spec("dgl") is None:  # an optional extra: without DGL there is nothing to test
    pytest.skip("dgl is not installed", allow_module_level=True)

from graphattn._compat import graphbolt_library_path, import_dgl

dgl = import_dgl()
from dgl import ops as dops  # noqa: E402

from graphattn.nn.dgl import GraphAttnConv, graph_from_dgl  # noqa: E402
from graphattn.ops import backends  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BACKENDS = [b.name for b in backends() if b.unavailable() is None and "cpu" in b.devices]


def dgl_reference(
    conv: GraphAttnConv, graph, h_src: Tensor, h_dst: Tensor, ef: Tensor | None, mask: Tensor | None = None
):
    """The layer's math with DGL's building blocks: u_dot_v / e_dot_v, edge_softmax, u_mul_e_sum / copy_e_sum;
    ``mask [E, H]`` (DGL edge order) multiplies the weights that aggregate (attention dropout)."""
    H, C = conv._num_heads, conv._out_feats
    q = conv.fc_q(h_dst).view(-1, H, C)
    k = conv.fc_k(h_src).view(-1, H, C)
    v = conv.fc_v(h_src).view(-1, H, C)
    scores = dops.u_dot_v(graph, k, q)  # [E, H, 1]: <k_src, q_dst>
    e = None
    if ef is not None:
        e = conv.fc_e(ef).view(-1, H, C)
        scores = scores + dops.e_dot_v(graph, e, q)
    attn = dops.edge_softmax(graph, scores / C**0.5)
    if mask is not None:
        attn = attn * mask.unsqueeze(-1)
    out = dops.u_mul_e_sum(graph, v, attn)
    if e is not None:
        out = out + dops.copy_e_sum(graph, e * attn)
    return out, attn


def random_graph(n: int, e: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    return dgl.add_self_loop(dgl.graph((src, dst), num_nodes=n))  # self loops: no zero in-degree


def random_block(n_src: int, n_dst: int, e: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    dst = torch.cat([torch.arange(n_dst), torch.randint(0, n_dst, (e - n_dst,), generator=g)])
    src = torch.randint(0, n_src, (e,), generator=g)
    return dgl.create_block((src, dst), num_src_nodes=n_src, num_dst_nodes=n_dst)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("edge_feats", [None, 4])
@pytest.mark.parametrize("kind", ["graph", "block", "bipartite_tuple"])
def test_equals_dgl_ops_composition(kind, edge_feats, backend):
    torch.manual_seed(0)
    if kind == "graph":
        graph, in_feats = random_graph(9, 30, seed=1), 5
    else:
        graph, in_feats = random_block(11, 6, 25, seed=2), (5 if kind == "block" else (5, 7))
    conv = GraphAttnConv(in_feats, 3, 2, edge_feats=edge_feats, backend=backend).double()
    gen = torch.Generator().manual_seed(3)
    n_src, n_dst, n_e = graph.num_src_nodes(), graph.num_dst_nodes(), graph.num_edges()
    upstream = torch.randn(n_dst, 2, 3, generator=gen, dtype=torch.float64)

    def run(fn):
        g2 = torch.Generator().manual_seed(4)
        h_src = torch.randn(n_src, 5, generator=g2, dtype=torch.float64, requires_grad=True)
        if kind == "bipartite_tuple":
            h_dst = torch.randn(n_dst, 7, generator=g2, dtype=torch.float64, requires_grad=True)
        else:
            h_dst = h_src[:n_dst] if kind == "block" else h_src
        ef = torch.randn(n_e, 4, generator=g2, dtype=torch.float64, requires_grad=True) if edge_feats else None
        conv.zero_grad()
        out, attn = fn(h_src, h_dst, ef)
        (out * upstream).sum().backward()
        leaves = [h_src] + ([h_dst] if kind == "bipartite_tuple" else []) + ([ef] if edge_feats else [])
        return out.detach(), attn.detach(), [t.grad for t in leaves], [p.grad.clone() for p in conv.parameters()]

    def ours(h_src, h_dst, ef):
        feat = (h_src, h_dst) if kind == "bipartite_tuple" else h_src
        return conv(graph, feat, ef, get_attention=True)

    o1, a1, g1, p1 = run(lambda s, d, ef: dgl_reference(conv, graph, s, d, ef))
    o2, a2, g2, p2 = run(ours)
    torch.testing.assert_close(o2, o1)
    assert a2.shape == (n_e, 2, 1)
    torch.testing.assert_close(a2, a1)  # in DGL's edge-id order
    for x, y in zip(g2 + p2, g1 + p1, strict=True):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("residual", ["identity", "linear"])
@pytest.mark.parametrize("kind", ["graph", "block", "bipartite_tuple"])
def test_dropouts_residual_and_activation_equal_dgl_ops_with_the_same_draws(kind, residual):
    """feat_drop, attn_drop (the op's gate, drawn in graphattn's edge order), residual and activation,
    as DGL's GATConv applies them, against the dgl.ops composition fed the same random draws."""
    graph = random_graph(9, 30, seed=1) if kind == "graph" else random_block(11, 6, 25, seed=2)
    dst_feats = 6 if residual == "identity" else 7  # 6 = num_heads * out_feats: GATConv's identity residual
    in_feats = (5, dst_feats) if kind == "bipartite_tuple" else dst_feats
    torch.manual_seed(0)
    conv = GraphAttnConv(
        in_feats, 3, 2, edge_feats=4, feat_drop=0.3, attn_drop=0.4, residual=True, activation=torch.nn.functional.elu
    ).double()
    assert isinstance(conv.res_fc, torch.nn.Identity) == (residual == "identity")
    n_src, n_dst, n_e = graph.num_src_nodes(), graph.num_dst_nodes(), graph.num_edges()
    _, eids = graph_from_dgl(graph)
    upstream = torch.randn(n_dst, 2, 3, dtype=torch.float64)

    def run(training: bool, reference: bool):
        conv.train(training)
        gen = torch.Generator().manual_seed(4)
        src_feats = 5 if kind == "bipartite_tuple" else dst_feats
        h_src = torch.randn(n_src, src_feats, generator=gen, dtype=torch.float64, requires_grad=True)
        h_dst = torch.randn(n_dst, dst_feats, generator=gen, dtype=torch.float64, requires_grad=True)
        ef = torch.randn(n_e, 4, generator=gen, dtype=torch.float64, requires_grad=True)
        pair = kind == "bipartite_tuple"
        conv.zero_grad()
        torch.manual_seed(7)
        if reference:
            drop = (lambda t: torch.nn.functional.dropout(t, 0.3)) if training else (lambda t: t)
            s = drop(h_src)
            d = drop(h_dst) if pair else s[:n_dst]
            mask = None
            if training:  # the layer's gate: [E, H] in graphattn's (destination-sorted) edge order
                gate = torch.empty(n_e, 2, dtype=torch.float64).bernoulli_(0.6) / 0.6
                mask = torch.empty_like(gate).index_copy_(0, eids, gate)
            out, attn = dgl_reference(conv, graph, s, d, ef, mask)
            out = torch.nn.functional.elu(out + conv.res_fc(d).view(-1, 2, 3))
        else:
            out, attn = conv(graph, (h_src, h_dst) if pair else h_src, ef, get_attention=True)
        (out * upstream).sum().backward()
        grads = [h_src.grad, ef.grad] + ([h_dst.grad] if pair else [])
        return out.detach(), attn.detach(), grads, [p.grad.clone() for p in conv.parameters()]

    for training in (True, False):
        o1, a1, g1, p1 = run(training, reference=True)
        o2, a2, g2, p2 = run(training, reference=False)
        torch.testing.assert_close(o2, o1)
        torch.testing.assert_close(a2, a1)  # the weights after attn_drop, as GATConv returns them
        for x, y in zip(g2 + p2, g1 + p1, strict=True):
            torch.testing.assert_close(x, y)


def test_module_activation_and_residual_survive_copies():
    import copy
    import pickle

    torch.manual_seed(0)
    conv = GraphAttnConv(5, 3, 2, residual=True, activation=torch.nn.PReLU(init=0.1)).eval()
    graph, x = random_graph(9, 30, seed=1), torch.randn(9, 5)
    expected = conv(graph, x)
    for copied in (copy.deepcopy(conv), pickle.loads(pickle.dumps(conv))):
        assert isinstance(copied.activation, torch.nn.PReLU) and isinstance(copied.res_fc, torch.nn.Linear)
        torch.testing.assert_close(copied(graph, x), expected)


def test_a_layer_pickled_before_the_dropouts_and_residual_existed_still_runs():
    import pickle

    torch.manual_seed(0)
    conv = GraphAttnConv(5, 3, 2).eval()
    graph, x = random_graph(9, 30, seed=1), torch.randn(9, 5)
    expected = conv(graph, x)
    for key in ("feat_drop", "attn_drop", "activation", "res_fc"):  # what such a pickle lacks
        delattr(conv, key)
    old = pickle.loads(pickle.dumps(conv))
    assert (old.feat_drop, old.attn_drop, old.activation, old.res_fc) == (0.0, 0.0, None, None)
    torch.testing.assert_close(old(graph, x), expected)


def test_csr_comes_from_dgl_csc_with_edge_ids():
    graph = random_graph(7, 20, seed=5)
    g, eids = graph_from_dgl(graph)
    src, dst = graph.edges()
    assert g.num_src == g.num_dst == 7 and g.num_edges == graph.num_edges()
    assert torch.equal(g.col, src[eids]) and torch.equal(g.dst(), dst[eids])


def test_zero_in_degree_policy():
    graph = dgl.graph((torch.tensor([0, 1]), torch.tensor([1, 2])), num_nodes=4)  # nodes 0 and 3: no in-edges
    x = torch.randn(4, 5)
    with pytest.raises(dgl.DGLError, match="0-in-degree nodes"):
        GraphAttnConv(5, 3, 2)(graph, x)
    conv = GraphAttnConv(5, 3, 2, allow_zero_in_degree=True)
    out = conv(graph, x)
    assert out.shape == (4, 2, 3)
    assert torch.all(out[[0, 3]] == 0) and torch.isfinite(out).all()  # empty neighbourhood: zero, never NaN
    conv.set_allow_zero_in_degree(False)
    with pytest.raises(dgl.DGLError):
        conv(graph, x)


def test_errors_name_the_argument():
    graph = random_graph(5, 10, seed=6)
    with pytest.raises(ValueError, match="edge_feat must be given exactly when"):
        GraphAttnConv(4, 3, 2, edge_feats=2)(graph, torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"feat must have \(N_src, N_dst\) = \(5, 5\)"):
        GraphAttnConv(4, 3, 2)(graph, torch.randn(6, 4))
    with pytest.raises(ValueError, match="num_heads must be >= 1, got 0"):
        GraphAttnConv(4, 3, 0)
    with pytest.raises(TypeError, match="num_heads must be an int, got bool"):
        GraphAttnConv(4, 3, True)  # was one head
    with pytest.raises(TypeError, match="out_feats must be an int, got bool"):
        GraphAttnConv(4, True, 2)
    with pytest.raises(ValueError, match=r"in_feats\[1\] must be >= 1, got 0"):
        GraphAttnConv((4, 0), 3, 2)
    with pytest.raises(ValueError, match="in_feats must be >= 1, got -1"):
        GraphAttnConv(-1, 3, 2)  # no lazy sizes in DGL
    with pytest.raises(ValueError, match="edge_feats must be >= 1, got 0"):
        GraphAttnConv(4, 3, 2, edge_feats=0)
    # These named the internal q, or failed inside DGL's in_degrees or a matmul (audits).
    with pytest.raises(ValueError, match=r"feat must be a \[N, 4\] tensor \(in_feats = 4\), got shape \[5, 2, 4\]"):
        GraphAttnConv(4, 3, 2)(graph, torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match=r"feat must be a \[N, 4\] tensor \(in_feats = 4\), got shape \[5, 6\]"):
        GraphAttnConv(4, 3, 2)(graph, torch.randn(5, 6))
    with pytest.raises(ValueError, match=r"feat\[1\] \(destination features\) must be a \[N, 7\] tensor"):
        GraphAttnConv((4, 7), 3, 2)(graph, (torch.randn(5, 4), torch.randn(5, 4)))
    for call in (lambda m, x: m(torch.tensor([[0, 1], [1, 0]]), x), lambda m, x: m(x, graph)):  # no graph / PyG order
        with pytest.raises(TypeError, match=r"graph must be a DGLGraph or block \(forward\(graph, feat\)"):
            call(GraphAttnConv(4, 3, 2), torch.randn(5, 4))
    for name in ("feat_drop", "attn_drop"):
        with pytest.raises(ValueError, match=rf"{name} must be in \[0, 1\), got 1.0"):
            GraphAttnConv(4, 3, 2, **{name: 1.0})
    with pytest.raises(TypeError, match="activation must be callable or None, got str"):
        GraphAttnConv(4, 3, 2, activation="relu")
    two_types = dgl.heterograph({("a", "x", "a"): ([0], [1]), ("a", "y", "a"): ([1], [0])})
    with pytest.raises(ValueError, match="graph must have one edge type"):
        GraphAttnConv(4, 3, 2)(two_types, torch.randn(2, 4))


def test_import_helper_stubs_graphbolt_only_when_missing():
    # In a fresh interpreter: import_dgl works and stubs graphbolt exactly when its library is absent.
    code = (
        "import sys\n"
        "from graphattn._compat import import_dgl, graphbolt_library_path\n"
        "import os\n"
        "dgl = import_dgl()\n"
        "missing = not os.path.exists(graphbolt_library_path())\n"
        "gb = sys.modules['dgl.graphbolt']\n"
        "assert missing == (getattr(gb, '__file__', None) is None), (missing, gb)\n"
        "assert dgl.graph(([0], [1])).num_edges() == 1\n"
        "print('stubbed' if missing else 'real')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = "stubbed" if not os.path.exists(graphbolt_library_path()) else "real"
    assert proc.stdout.strip() == expected
