"""Encoder blocks: pre-norm residual structure, aux-loss sums, and a 2-layer encoder over BigBird
that learns a small sequence task (the acceptance test of issue 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import graphattn.structure as S
from graphattn.nn import (
    GraphTransformerEncoder,
    GraphTransformerLayer,
    SequenceClassifier,
    Structure,
    StructureOutput,
)


def test_layer_is_pre_norm_residual():
    torch.manual_seed(0)
    layer = GraphTransformerLayer(16, 2, 32, dropout=0.0, structure=S.Full()).eval()
    x = torch.randn(5, 16)
    att = layer.self_attn(layer.norm1(x)).output
    h = x + att
    ffn = layer.linear2(torch.nn.functional.gelu(layer.linear1(layer.norm2(h))))
    assert torch.allclose(layer(x).output, h + ffn, atol=1e-6)


def test_activation_takes_a_callable_and_errors_name_d_model_and_nhead():
    torch.manual_seed(0)
    x = torch.randn(5, 16)
    by_name = GraphTransformerLayer(16, 2, 32, dropout=0.0, activation="relu", structure=S.Full()).eval()
    by_callable = GraphTransformerLayer(16, 2, 32, dropout=0.0, activation=torch.relu, structure=S.Full()).eval()
    by_callable.load_state_dict(by_name.state_dict())
    torch.testing.assert_close(by_callable(x).output, by_name(x).output)  # as nn.TransformerEncoderLayer takes
    with pytest.raises(ValueError, match=r"activation must be one of \['gelu', 'relu'\] or a callable, got 'tanh'"):
        GraphTransformerLayer(16, 2, activation="tanh")
    with pytest.raises(TypeError, match="activation must be a str or a callable, got int"):
        GraphTransformerLayer(16, 2, activation=3)
    with pytest.raises(ValueError, match="d_model must be divisible by nhead, got 16 and 3"):  # named embed_dim
        GraphTransformerLayer(16, 3)


def test_a_layer_pickled_with_the_activations_name_still_runs():
    import pickle

    torch.manual_seed(0)
    layer = GraphTransformerLayer(16, 2, 32, dropout=0.0, activation="relu", structure=S.Full()).eval()
    x = torch.randn(5, 16)
    expected = layer(x).output
    layer.__dict__["activation"] = "relu"  # what the layer kept before callables were taken
    torch.testing.assert_close(pickle.loads(pickle.dumps(layer))(x).output, expected)


def test_encoder_copies_layers_shares_graph_and_final_norm():
    torch.manual_seed(0)
    layer = GraphTransformerLayer(16, 2, dropout=0.0)
    enc = GraphTransformerEncoder(layer, 3).eval()
    assert len(enc.layers) == 3 and enc.layers[0].linear1.weight is not enc.layers[1].linear1.weight
    g = S.window(None, 2, lengths=[4, 6])
    out = enc(torch.randn(10, 16), g)
    assert out.output.shape == (10, 16)
    assert torch.allclose(out.output.mean(-1), torch.zeros(10), atol=1e-5)  # final LayerNorm
    with pytest.raises(ValueError, match="num_layers must be >= 1, got 0"):
        GraphTransformerEncoder(layer, 0)
    with pytest.raises(TypeError, match="num_layers must be an int, got bool"):  # True was one layer
        GraphTransformerEncoder(layer, True)
    assert len(GraphTransformerEncoder(layer, np.int64(2)).layers) == 2
    with pytest.raises(ValueError, match="dim_feedforward must be >= 1, got 0"):
        GraphTransformerLayer(16, 2, dim_feedforward=0)


class AuxOnly(Structure):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))

    def forward(self, q, k, *, ptr=None, src_ptr=None, graph=None):
        return StructureOutput(S.full(q.shape[0]), aux_loss=self.w * 1.5)


def test_aux_losses_of_all_layers_are_summed():
    enc = GraphTransformerEncoder(GraphTransformerLayer(8, 2, structure=AuxOnly()), 2)
    out = enc(torch.randn(4, 8))
    assert out.aux_loss.item() == pytest.approx(6.0)
    out.aux_loss.backward()
    assert all(layer.self_attn.structure.w.grad.item() == pytest.approx(1.5) for layer in enc.layers)


def make_task(n_examples: int, gen: torch.Generator) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """Label = whether token 1 occurs in the sequence (anywhere: global tokens carry it)."""
    lengths = torch.randint(12, 40, (n_examples,), generator=gen).tolist()
    tokens, labels = [], []
    for n in lengths:
        t = torch.randint(2, 6, (n,), generator=gen)
        y = int(torch.rand((), generator=gen) < 0.5)
        if y:
            t[int(torch.randint(1, n, (), generator=gen))] = 1
        tokens.append(t)
        labels.append(y)
    return torch.cat(tokens), lengths, torch.tensor(labels)


def test_two_layer_encoder_over_bigbird_trains():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = SequenceClassifier(
        6,
        2,
        d_model=32,
        nhead=4,
        num_layers=2,
        dim_feedforward=64,
        dropout=0.0,
        structure=S.BigBird(2, 1, 2, generator=torch.Generator().manual_seed(1)),
        pooling="first",
    )
    assert len(model.encoder.layers) == 2
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    tokens, lengths, labels = make_task(32, gen)
    losses = []
    for _ in range(25):
        out = model(tokens, lengths=lengths)
        loss = nn.functional.cross_entropy(out.logits, labels) + out.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    acc = (model(tokens, lengths=lengths).logits.argmax(1) == labels).float().mean().item()
    assert acc > 0.9


def test_copies_share_the_structures_generator():
    # The deep copies each got a copy of SBM's generator: every layer drew the same numbers, and
    # reseeding the caller's generator no longer reproduced the encoder (audit).
    from graphattn.structure.sbm import SBM

    gen = torch.Generator().manual_seed(0)
    layer = GraphTransformerLayer(16, 2, dropout=0.0, structure=SBM(2, 8, 4, generator=gen))
    enc = GraphTransformerEncoder(layer, 2).eval()
    assert all(lay.self_attn.structure.generator is gen for lay in enc.layers)
    assert enc.layers[0].self_attn.structure.clusters is not enc.layers[1].self_attn.structure.clusters  # copied
    x = torch.randn(12, 16)
    gen.manual_seed(3)
    first = enc(x).output
    gen.manual_seed(3)
    torch.testing.assert_close(enc(x).output, first)
