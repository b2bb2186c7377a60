"""Every input-dependent structure runs inside GraphAttention and an encoder, and trains."""

import pytest
import torch

from graphattn.nn import GraphAttention, SequenceClassifier
from graphattn.structure import SAC, SBM, SEA, Combiner, Full, Routing
from graphattn.structure.sac import policy_losses

E, H = 16, 2


def _structures():
    return {
        "routing": Routing(H, E // H, num_clusters=3, window=2),
        "sbm": SBM(H, E // H, num_clusters=4, generator=torch.Generator().manual_seed(0)),
        "sac-reinforce": SAC(H, E // H, edges_per_node=3, generator=torch.Generator().manual_seed(0)),
        "sac-st": SAC(H, E // H, edges_per_node=3, mode="straight_through", generator=torch.Generator().manual_seed(0)),
        "combiner": Combiner("fixed", region_size=4),
        "combiner-logsparse": Combiner("logsparse"),
        "sea": SEA(H, E // H, k=4, width=4),
    }


@pytest.mark.parametrize("name", list(_structures()))
def test_layer_runs_batched_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    layer = GraphAttention(E, H, structure=_structures()[name])
    x = torch.randn(25, E, requires_grad=True)
    ptr = torch.tensor([0, 9, 25])
    out = layer(x, ptr=ptr, need_weights=True)
    assert out.output.shape == (25, E) and torch.isfinite(out.output).all()
    assert out.weights.shape[0] == out.graph.num_edges
    loss = out.output.pow(2).mean() + out.aux_loss
    loss = loss + policy_losses(layer, -loss.detach())
    loss.backward()
    # Examples never mix: the output of example 0 does not depend on example 1's input.
    layer.eval()
    x2 = x.detach().clone()
    x2[9:] += 1.0
    if name not in ("sbm",):  # SBM samples a new graph each call
        a = layer(x.detach(), ptr=ptr).output[:9]
        b = layer(x2, ptr=ptr).output[:9]
        torch.testing.assert_close(a, b)
    # Structure parameters receive gradients through what they return (SEA's only by distillation,
    # Routing has none: its centroids are an EMA buffer).
    if name in ("routing", "combiner", "combiner-logsparse", "sea"):
        return
    params = list(layer.structure.named_parameters())
    assert params, name
    for n, p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0, (name, n)


def test_combiner_with_one_region_equals_full_in_a_layer():
    torch.manual_seed(0)
    a = GraphAttention(E, H, structure=Combiner("fixed", region_size=100)).double()
    b = GraphAttention(E, H, structure=Full()).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(30, E, dtype=torch.float64)
    ptr = torch.tensor([0, 12, 30])
    torch.testing.assert_close(a(x, ptr=ptr).output, b(x, ptr=ptr).output)


@pytest.mark.parametrize("name", ["routing", "sbm", "sac-st", "combiner"])
def test_sequence_classifier_trains_with_the_structure(name):
    torch.manual_seed(0)
    model = SequenceClassifier(8, 2, d_model=E, nhead=H, num_layers=2, dropout=0.0, structure=_structures()[name])
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 8, (6 * 12,), generator=gen)
    lengths = torch.full((6,), 12)
    labels = (tokens.view(6, 12) == 3).any(1).long()  # "does token 3 occur?"
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        out = model(tokens, lengths=lengths)
        loss = torch.nn.functional.cross_entropy(out.logits, labels) + out.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
