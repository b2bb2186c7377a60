r"""Positional encodings for nodes that are tokens of sequences or pixels/patches of images.

Positions are **per example**: in a batch given by ``ptr [B + 1]`` (or image ``sizes [B, 2]``),
node ``n`` of example ``b`` has position ``n - ptr[b]``, so variable-length inputs need no padding.

* :class:`SinusoidalPositionalEncoding`: Vaswani et al. (2017), https://arxiv.org/abs/1706.03762,
  :math:`PE_{p, 2m} = \sin(p / 10000^{2m/d})`, :math:`PE_{p, 2m+1} = \cos(p / 10000^{2m/d})`.
* :class:`LearnedPositionalEncoding`: one learned vector per position (BERT, GPT).
* :class:`SinusoidalPositionalEncoding2D`: the first half of the channels encodes the row, the
  second half the column (each as the 1-D encoding with ``d / 2`` channels), as in DETR/MAE.
* :class:`LearnedPositionalEncoding2D`: learned row and column embeddings, summed (axial).

Every module returns ``x + PE`` (``[N, d]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._validation import check_float, check_int
from ..graph import check_ptr
from ..structure.grid import check_image_sizes

__all__ = [
    "positions",
    "image_positions",
    "sinusoidal_table",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEncoding",
    "SinusoidalPositionalEncoding2D",
    "LearnedPositionalEncoding2D",
]


def positions(num_nodes: int, ptr: Tensor | None = None, *, device: torch.device | None = None) -> Tensor:
    """``[N]`` position of each node inside its example (``ptr=None``: one example)."""
    if ptr is None:
        return torch.arange(num_nodes, device=device)
    ptr = check_ptr("ptr", ptr, num_nodes)
    counts = ptr[1:] - ptr[:-1]
    start = torch.repeat_interleave(ptr[:-1], counts, output_size=num_nodes)
    return torch.arange(num_nodes, device=ptr.device) - start


def image_positions(sizes: Tensor | Sequence[Sequence[int]], device: torch.device | None = None) -> Tensor:
    """``[N, 2]`` (row, column) of each node of a batch of row-major images of ``sizes [B, 2]``."""
    hw = check_image_sizes(None, None, sizes, 1).to(device)  # integer (height, width) pairs, >= 0
    counts = hw[:, 0] * hw[:, 1]
    n = int(counts.sum())
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.long, device=hw.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    pos = positions(n, ptr)
    width = torch.repeat_interleave(torch.clamp(hw[:, 1], min=1), counts, output_size=n)
    return torch.stack([pos // width, pos % width], 1)


def _check_features(x: Tensor, dim: int) -> None:
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"x must be [N, d] = [N, {dim}], got shape {list(x.shape)}")


def sinusoidal_table(pos: Tensor, dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[N, dim]`` sinusoidal encodings of integer positions ``pos [N]`` (``dim`` even), computed in
    ``dtype`` (float64 for float64 models: in float32 the angles of positions in the thousands
    are off by ~1e-4)."""
    if dim % 2 != 0:
        raise ValueError(f"dim must be even for sinusoidal encodings, got {dim}")
    freq = torch.exp(torch.arange(0, dim, 2, device=pos.device, dtype=dtype) * (-math.log(base) / dim))
    angle = pos.to(dtype)[:, None] * freq[None, :]
    return torch.stack([angle.sin(), angle.cos()], -1).reshape(pos.numel(), dim)  # interleave sin/cos


def _table_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class SinusoidalPositionalEncoding(nn.Module):
    """``x + PE(position in example)`` with the fixed sinusoidal table (no parameters).

    Args:
        dim: feature size ``d`` (even).
        base: the wavelength base (10000 in the paper).
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if check_int("dim", dim, minimum=2) % 2 != 0:
            raise ValueError(f"dim must be even, got {dim}")
        self.dim, self.base = dim, check_float("base", base, positive=True)

    def forward(self, x: Tensor, *, ptr: Tensor | None = None) -> Tensor:
        """``x [N, d]``, ``ptr [B + 1]`` -> ``[N, d]``."""
        _check_features(x, self.dim)
        pos = positions(x.shape[0], ptr, device=x.device)
        return x + sinusoidal_table(pos, self.dim, self.base, _table_dtype(x)).to(x.dtype)


class LearnedPositionalEncoding(nn.Module):
    """``x + P[position in example]`` with a learned table ``P [max_len, d]`` (init ``N(0, 0.02)``).

    Args:
        max_len: number of positions; longer examples raise ``ValueError``.
        dim: feature size ``d``.
    """

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.max_len = check_int("max_len", max_len, minimum=1)
        self.weight = nn.Parameter(torch.randn(max_len, check_int("dim", dim, minimum=1)) * 0.02)

    def forward(self, x: Tensor, *, ptr: Tensor | None = None) -> Tensor:
        _check_features(x, self.weight.shape[1])
        pos = positions(x.shape[0], ptr, device=x.device)
        if pos.numel() > 0 and int(pos.max()) >= self.max_len:
            raise ValueError(f"an example has {int(pos.max()) + 1} positions, more than max_len = {self.max_len}")
        return x + self.weight[pos].to(x.dtype)


class SinusoidalPositionalEncoding2D(nn.Module):
    """``x + [PE_d/2(row), PE_d/2(column)]`` for row-major images of ``sizes [B, 2]`` (``d % 4 == 0``)."""

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if check_int("dim", dim, minimum=4) % 4 != 0:
            raise ValueError(f"dim must be divisible by 4 for 2-D sinusoidal encodings, got {dim}")
        self.dim, self.base = dim, check_float("base", base, positive=True)

    def forward(self, x: Tensor, *, sizes: Tensor | Sequence[Sequence[int]]) -> Tensor:
        _check_features(x, self.dim)
        yx = image_positions(sizes, x.device)
        if yx.shape[0] != x.shape[0]:
            raise ValueError(f"sizes describe {yx.shape[0]} nodes, x has {x.shape[0]}")
        half, dt = self.dim // 2, _table_dtype(x)
        pe = torch.cat([sinusoidal_table(yx[:, i], half, self.base, dt) for i in (0, 1)], 1)
        return x + pe.to(x.dtype)


class LearnedPositionalEncoding2D(nn.Module):
    """``x + R[row] + C[column]`` with learned ``R [max_height, d]``, ``C [max_width, d]``."""

    def __init__(self, max_height: int, max_width: int, dim: int) -> None:
        super().__init__()
        max_height, max_width = (
            check_int("max_height", max_height, minimum=1),
            check_int("max_width", max_width, minimum=1),
        )
        dim = check_int("dim", dim, minimum=1)
        self.rows = nn.Parameter(torch.randn(max_height, dim) * 0.02)
        self.cols = nn.Parameter(torch.randn(max_width, dim) * 0.02)

    def forward(self, x: Tensor, *, sizes: Tensor | Sequence[Sequence[int]]) -> Tensor:
        _check_features(x, self.rows.shape[1])
        yx = image_positions(sizes, x.device)
        if yx.shape[0] != x.shape[0]:
            raise ValueError(f"sizes describe {yx.shape[0]} nodes, x has {x.shape[0]}")
        if yx.numel() > 0 and (int(yx[:, 0].max()) >= self.rows.shape[0] or int(yx[:, 1].max()) >= self.cols.shape[0]):
            raise ValueError(
                f"image larger than max_height x max_width = {self.rows.shape[0]} x {self.cols.shape[0]} nodes"
            )
        return x + (self.rows[yx[:, 0]] + self.cols[yx[:, 1]]).to(x.dtype)
