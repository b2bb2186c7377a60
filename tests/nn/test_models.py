"""Classifiers: batched by concatenation, pooled with ptr, images of mixed sizes."""

from __future__ import annotations

import pytest
import torch

import graphattn.structure as S
from graphattn.nn import ImageClassifier, SequenceClassifier, segment_pool


def test_segment_pool_modes():
    x = torch.tensor([[1.0], [3.0], [5.0], [-2.0]])
    ptr = torch.tensor([0, 2, 2, 4])
    assert segment_pool(x, ptr, "mean").flatten().tolist() == [2.0, 0.0, 1.5]
    assert segment_pool(x, ptr, "max").flatten().tolist() == [3.0, 0.0, 5.0]
    with pytest.raises(ValueError, match="at least one node"):
        segment_pool(x, ptr, "first")


@pytest.mark.parametrize("mode", ["mean", "max", "first"])
@pytest.mark.parametrize(
    ("ptr", "match"),
    [
        (torch.tensor([0, 3, 1, 4]), r"ptr must be non-decreasing, but ptr\[2\] = 1 < ptr\[1\] = 3"),
        (torch.tensor([0, 2, 5]), r"ptr must end at N = 4, got ptr\[-1\] = 5"),
        (torch.tensor([1, 2, 4]), r"ptr must start at 0, got ptr\[0\] = 1"),
        (torch.tensor(4), r"ptr must be 1-D, got shape \[\]"),
    ],
)
def test_segment_pool_rejects_a_bad_ptr(ptr, match, mode):
    with pytest.raises(ValueError, match=match):
        segment_pool(torch.randn(4, 2), ptr, mode)


def test_sequence_classifier_batch_equals_examples_one_by_one():
    torch.manual_seed(0)
    model = SequenceClassifier(
        11, 3, 16, 2, 2, dropout=0.0, structure=S.Window(3), positional="learned", max_len=32
    ).eval()
    tokens = torch.randint(0, 11, (17,))
    together = model(tokens, lengths=[5, 12]).logits
    apart = torch.cat([model(tokens[:5]).logits, model(tokens[5:]).logits])
    assert together.shape == (2, 3) and torch.allclose(together, apart, atol=1e-5)
    logits = model(tokens, ptr=torch.tensor([0, 5, 17])).logits
    assert torch.allclose(logits, together)


def test_image_classifier_tensor_equals_list_and_mixed_sizes_run():
    torch.manual_seed(0)
    model = ImageClassifier(3, 4, patch_size=2, d_model=16, nhead=2, num_layers=1, dropout=0.0).eval()
    imgs = torch.randn(2, 3, 8, 6)
    a = model(imgs).logits
    b = model(list(imgs)).logits
    assert a.shape == (2, 4) and torch.allclose(a, b, atol=1e-5)
    mixed = model([torch.randn(3, 8, 6), torch.randn(3, 4, 10), torch.randn(3, 2, 2)])
    assert mixed.logits.shape == (3, 4) and mixed.aux_loss.item() == 0.0
    mixed.logits.sum().backward()
    assert model.patch.weight.grad is not None


def test_image_classifier_with_axial_structure():
    model = ImageClassifier(1, 2, patch_size=4, d_model=8, nhead=2, num_layers=1, structure=S.Axial(3, 3))
    assert model(torch.randn(2, 1, 12, 12)).logits.shape == (2, 2)
    with pytest.raises(ValueError, match="needs every example to have 9 nodes"):
        model(torch.randn(2, 1, 8, 8))


def test_classifier_argument_errors():
    with pytest.raises(ValueError, match="pooling must be"):
        SequenceClassifier(5, 2, pooling="sum")
    with pytest.raises(ValueError, match="positional must be"):
        ImageClassifier(3, 2, positional="rope")
    with pytest.raises(ValueError, match=r"tokens must be \[N\]"):
        SequenceClassifier(5, 2, 8, 2, structure=S.Full())(torch.zeros(2, 3, dtype=torch.long))
    # Sizes that constructed a model and failed at forward (or never): checked when made.
    bad = [
        (lambda: SequenceClassifier(0, 2), "vocab_size must be >= 1, got 0"),
        (lambda: SequenceClassifier(5, 0), "num_classes must be >= 1, got 0"),
        (lambda: ImageClassifier(1, 2, patch_size=0), "patch_size must be >= 1, got 0"),
        (lambda: ImageClassifier(1, 0), "num_classes must be >= 1, got 0"),
        (lambda: SequenceClassifier(10, 2, d_model=5, nhead=5), r"d_model must be even for positional='sinusoidal'"),
        (lambda: ImageClassifier(1, 2, positional="learned", max_grid=(0, 0)), r"max_grid\[0\] must be >= 1, got 0"),
        (lambda: ImageClassifier(1, 2, d_model=6, nhead=2), r"d_model must be divisible by 4 for positional="),
    ]
    for make, match in bad:
        with pytest.raises(ValueError, match=match):
            make()
    with pytest.raises(TypeError, match=r"tokens must be a torch\.Tensor, got list"):  # an AttributeError before
        SequenceClassifier(5, 2, 8, 2)([1, 2, 3])
    with pytest.raises(ValueError, match="pass lengths or ptr, not both"):  # ptr silently won before
        SequenceClassifier(5, 2, 8, 2, structure=S.Full())(
            torch.zeros(7, dtype=torch.long), lengths=[3, 4], ptr=torch.tensor([0, 1, 7])
        )


def test_sequence_classifier_rejects_a_graph_whose_examples_disagree():
    # A window graph over examples [0, 5) and [5, 10) with lengths [4, 6] ran: attention over one
    # split, positions and pooling over the other (audit).
    model = SequenceClassifier(5, 2, 8, 2).eval()
    tokens = torch.zeros(10, dtype=torch.long)
    g = S.window(None, 2, lengths=[5, 5])
    with pytest.raises(ValueError, match=r"graph.ptr \[0, 5, 10\] and the examples .* \[0, 4, 10\] disagree"):
        model(tokens, lengths=[4, 6], graph=g)
    assert model(tokens, lengths=[5, 5], graph=g).logits.shape == (2, 2)


def test_image_classifier_trains_after_an_inference_mode_call():
    # Its cached grid graph, made under inference_mode, was handed to the next training step (audit).
    model = ImageClassifier(1, 3, patch_size=4, d_model=16, nhead=2, num_layers=1)
    img = torch.randn(2, 1, 8, 8)
    with torch.inference_mode():
        model.eval()(img)
    model.train()(img).logits.sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())


def test_sequence_classifier_real_valued_inputs():
    model = SequenceClassifier(None, 3, d_model=16, nhead=2, num_layers=1, structure=S.Full(), in_features=2)
    out = model(torch.randn(7, 2), lengths=[3, 4])
    assert out.logits.shape == (2, 3)
    with pytest.raises(ValueError, match=r"tokens must be \[N, in_features\] = \[N, 2\]"):
        model(torch.randn(7, 3), lengths=[3, 4])
    with pytest.raises(ValueError, match="give exactly one of vocab_size"):
        SequenceClassifier(10, 3, in_features=2)
    with pytest.raises(ValueError, match="give exactly one of vocab_size"):
        SequenceClassifier(None, 3)


def test_image_smaller_than_a_patch_and_low_precision_positions():
    # A small image failed inside Conv2d; the learned encodings turned bfloat16 x into float32 (audit).
    model = ImageClassifier(1, 2, patch_size=4, d_model=16, nhead=2, num_layers=1)
    with pytest.raises(ValueError, match=r"images must be at least patch_size = 4 on each side, got \[3, 8\]"):
        model([torch.randn(1, 8, 8), torch.randn(1, 3, 8)])
    # Channels-last input was reported as too small (the channel axis read as a side).
    with pytest.raises(ValueError, match=r"channels-first \[C, H, W\] with C = in_channels = 1, got .* \[8, 8, 1\]"):
        model(torch.randn(2, 8, 8, 1))
    with pytest.raises(ValueError, match=r"channels-first .* got an image of shape \[8, 8\]"):
        model([torch.randn(8, 8)])
    from graphattn.nn.positional import LearnedPositionalEncoding, LearnedPositionalEncoding2D

    x = torch.randn(6, 16, dtype=torch.bfloat16)
    assert LearnedPositionalEncoding(8, 16)(x).dtype == torch.bfloat16
    assert LearnedPositionalEncoding2D(4, 4, 16)(x, sizes=[[2, 3]]).dtype == torch.bfloat16
