"""An evaluation under ``torch.inference_mode`` must not break the training step after it.

Each graph cache (a fixed structure's, Combiner's, the PyG layer's ``edge_index`` cache, a
``Graph``'s own views) kept what an inference-mode call built; those are inference tensors, which
autograd cannot save, so the next training call on the same layout raised (an API audit found it).
"""

import pytest
import torch

import graphattn.structure as S
from graphattn import Graph
from graphattn.nn import GraphAttention
from graphattn.ops import edge_attention


def _layers():
    yield "window", lambda: GraphAttention(8, 2, structure=S.Window(2)), lambda m, x: m(x).output
    yield "combiner", lambda: GraphAttention(8, 2, structure=S.Combiner("fixed", 2)), lambda m, x: m(x).output
    pyg = pytest.importorskip("graphattn.nn.pyg")
    edges = torch.randint(0, 10, (2, 30), generator=torch.Generator().manual_seed(0))
    yield "pyg", lambda: pyg.GraphAttnConv(8, 4, heads=2), lambda m, x: m(x, edges)


@pytest.mark.parametrize("name", ["window", "combiner", "pyg"])
def test_training_after_an_inference_mode_call_works(name):
    make, call = next((make, call) for n, make, call in _layers() if n == name)
    torch.manual_seed(0)
    layer, x = make(), torch.randn(10, 8)
    with torch.inference_mode():  # the first call: it fills the cache
        expected = call(layer, x).clone()
    out = call(layer, x)
    out.sum().backward()
    torch.testing.assert_close(out, expected)
    assert all(p.grad is not None for p in layer.parameters() if p.requires_grad)


def test_a_cache_built_outside_inference_mode_serves_inside_it():
    structure = S.Window(2)
    q = torch.randn(10, 2, 4)
    built = structure(q, q).graph
    with torch.inference_mode():
        assert structure(q, q).graph is built  # no rebuild for evaluation
    assert structure(q, q).graph is built


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_graph_views_built_in_inference_mode_are_rebuilt_for_training(backend):
    g = Graph.from_edge_index(torch.tensor([[0, 1, 2, 0, 2], [1, 2, 0, 0, 0]]))
    q = torch.randn(3, 2, 4)
    with torch.inference_mode():
        expected = edge_attention(q, q, q, g, backend=backend)
        assert g.dst().is_inference() and g.transpose.perm.is_inference()
    assert not g.dst().is_inference() and not g.transpose.perm.is_inference()
    qg = q.clone().requires_grad_()
    out = edge_attention(qg, qg, qg, g, backend=backend)
    out.sum().backward()
    torch.testing.assert_close(out, expected)
    assert qg.grad is not None and torch.isfinite(qg.grad).all()
    transpose = g.transpose
    with torch.inference_mode():
        assert g.transpose is transpose  # views built outside serve inside
    assert g.transpose is transpose


def test_pyg_layer_takes_edges_made_in_inference_mode():
    # An eval loop that moves its batch inside inference_mode hands the layer an inference
    # edge_index, which has no version counter for the edge_index cache to read (review).
    pyg = pytest.importorskip("graphattn.nn.pyg")
    conv = pyg.GraphAttnConv(8, 4, heads=2).eval()
    x = torch.randn(10, 8)
    edges = torch.randint(0, 10, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        inference_edges = edges.clone()
        got = [conv(x, inference_edges), conv(x, inference_edges)]
    want = conv(x, edges)
    for out in got:
        torch.testing.assert_close(out, want)
