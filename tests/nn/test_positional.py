"""Positional encodings restart at every example and follow their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from graphattn.nn import (
    LearnedPositionalEncoding,
    LearnedPositionalEncoding2D,
    SinusoidalPositionalEncoding,
    SinusoidalPositionalEncoding2D,
    image_positions,
    positions,
)


def test_positions_restart_per_example():
    assert positions(6, torch.tensor([0, 2, 2, 6])).tolist() == [0, 1, 0, 1, 2, 3]
    assert image_positions([(2, 3), (1, 2)]).tolist() == [
        [0, 0],
        [0, 1],
        [0, 2],
        [1, 0],
        [1, 1],
        [1, 2],
        [0, 0],
        [0, 1],
    ]


def test_sinusoidal_values():
    pe = SinusoidalPositionalEncoding(4)
    out = pe(torch.zeros(5, 4), ptr=torch.tensor([0, 3, 5]))
    p = 2.0  # node 2 is position 2 of example 0
    assert torch.allclose(out[2], torch.tensor([math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)]))
    assert torch.allclose(out[3], out[0])  # node 3 is position 0 again


def test_learned_and_2d():
    pe = LearnedPositionalEncoding(4, 3)
    out = pe(torch.zeros(5, 3), ptr=torch.tensor([0, 2, 5]))
    assert torch.equal(out[2], pe.weight[0].detach()) and torch.equal(out[4], pe.weight[2].detach())
    with pytest.raises(ValueError, match="more than max_len = 4"):
        pe(torch.zeros(5, 3))
    s2 = SinusoidalPositionalEncoding2D(8)
    out = s2(torch.zeros(6, 8), sizes=[(2, 3)])
    assert torch.allclose(out[4, :4], out[3, :4]) and torch.allclose(out[4, 4:], out[1, 4:])  # same row / column
    l2 = LearnedPositionalEncoding2D(2, 3, 4)
    out = l2(torch.zeros(6, 4), sizes=[(2, 3)])
    assert torch.allclose(out[5], (l2.rows[1] + l2.cols[2]).detach())
    with pytest.raises(ValueError, match="dim must be divisible by 4"):
        SinusoidalPositionalEncoding2D(6)


@pytest.mark.parametrize(
    ("ptr", "error", "match"),
    [
        (torch.tensor([0, 4, 2, 6]), ValueError, r"ptr must be non-decreasing, but ptr\[2\] = 2 < ptr\[1\] = 4"),
        (torch.tensor([2, 6]), ValueError, r"ptr must start at 0, got ptr\[0\] = 2"),
        ([0, 6], TypeError, r"ptr must be a torch.Tensor, got list"),
    ],
)
def test_positions_rejects_a_bad_ptr(ptr, error, match):
    with pytest.raises(error, match=match):
        positions(6, ptr)
    with pytest.raises(error, match=match):
        SinusoidalPositionalEncoding(4)(torch.randn(6, 4), ptr=ptr)


def test_encodings_check_their_input():
    """Negative sizes whose product is positive gave positions, and a 1-D x broadcast into
    [d, d] (API audit)."""
    from graphattn.nn.positional import (
        LearnedPositionalEncoding,
        LearnedPositionalEncoding2D,
        SinusoidalPositionalEncoding,
        SinusoidalPositionalEncoding2D,
        image_positions,
    )

    with pytest.raises(ValueError, match="sizes must be >= 0, got min -3"):
        image_positions([[-2, -3]])
    with pytest.raises(ValueError, match="max_len must be >= 1, got -1"):  # torch's "negative dimension" before
        LearnedPositionalEncoding(-1, 16)
    with pytest.raises(TypeError, match="sizes must hold integers"):
        image_positions(torch.tensor([[2.0, 3.0]]))
    for enc in (SinusoidalPositionalEncoding(16), LearnedPositionalEncoding(8, 16)):
        with pytest.raises(ValueError, match=r"x must be \[N, d\] = \[N, 16\], got shape \[16\]"):
            enc(torch.rand(16))
    for enc in (SinusoidalPositionalEncoding2D(16), LearnedPositionalEncoding2D(4, 4, 16)):
        with pytest.raises(ValueError, match=r"x must be \[N, d\] = \[N, 16\], got shape \[6, 8\]"):
            enc(torch.rand(6, 8), sizes=[[2, 3]])
        with pytest.raises(ValueError, match="sizes must be >= 0"):
            enc(torch.rand(6, 16), sizes=[[-2, -3]])


def test_sinusoidal_sizes_and_float64_precision():
    # Sizes and bases were unchecked (0, a bool, base 0 failed at forward with a math error), and a
    # float64 model got a float32 table, ~2e-4 off at positions in the thousands (audit).
    from graphattn.nn.positional import LearnedPositionalEncoding2D, SinusoidalPositionalEncoding

    for bad, error in ((0, ValueError), (True, TypeError)):
        with pytest.raises(error, match="dim must be"):
            SinusoidalPositionalEncoding(bad)
    with pytest.raises(ValueError, match="base must be > 0"):
        SinusoidalPositionalEncoding(4, base=0.0)
    with pytest.raises(TypeError, match="max_height must be an int, got bool"):
        LearnedPositionalEncoding2D(True, 2, 4)
    x = torch.zeros(5000, 8, dtype=torch.float64)
    got = SinusoidalPositionalEncoding(8)(x)
    pos = torch.arange(5000, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, 8, 2, dtype=torch.float64) * (-math.log(10000.0) / 8))
    want = torch.stack([(pos * freq).sin(), (pos * freq).cos()], -1).reshape(5000, 8)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
