"""Images as graphs: pixel/patch neighbourhoods (Parmar et al., "Image Transformer", 2018; Ramachandran
et al., "Stand-Alone Self-Attention in Vision Models", 2019) and axial attention (Ho et al., "Axial
Attention in Multidimensional Transformers", 2019).

https://arxiv.org/abs/1906.05909, https://arxiv.org/abs/1912.12180 -- nodes are the pixels (or
``patch_size x patch_size`` patches, ``floor(H / P) x floor(W / P)`` of them, as a stride-``P``
convolution cuts them) of each image in **row-major** order: node ``y·W + x``.

* :func:`grid`: ``(y', x') -> (y, x)`` when ``(y' - y, x' - x) = d·(a, b)`` with
  ``max(|a|, |b|) <= radius`` (8-connectivity, a square) or ``|a| + |b| <= radius`` (4-connectivity, a
  diamond), ``d`` the dilation; ``loop`` keeps ``(0, 0)``. Interior in-degree: ``(2r + 1)^2`` or
  ``2r(r + 1) + 1`` (minus 1 without loops); borders have fewer. With ``r = 1``: corners 4 / 3,
  edges 6 / 4, interior 9 / 5 (8- / 4-connectivity, with loops).
* :func:`axial`: every pixel of the same row and of the same column (itself once): in-degree
  ``H + W - 1``.

Images of several sizes batch without padding: ``sizes=[(H1, W1), (H2, W2), ...]``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from .._validation import is_integer_tensor
from ..graph import Graph
from ._segments import Part, assemble_rows, check_int, segments, trusted_graph
from .base import StaticStructure

__all__ = ["grid", "axial", "Grid", "Axial"]


def check_image_sizes(
    height: int | None, width: int | None, sizes: Tensor | Sequence[Sequence[int]] | None, patch_size: int
) -> Tensor:
    """``[B, 2]`` node-grid sizes (after patching)."""
    p = check_int("patch_size", patch_size, minimum=1)
    if sizes is None:
        if height is None or width is None:
            raise TypeError("pass height and width, or sizes=[(H, W), ...]")
        hw = torch.tensor([[check_int("height", height, minimum=0), check_int("width", width, minimum=0)]])
    else:
        if height is not None or width is not None:
            raise ValueError("pass height and width, or sizes, not both")
        if isinstance(sizes, Tensor):
            if not is_integer_tensor(sizes):
                raise TypeError(f"sizes must hold integers, got dtype {sizes.dtype}")
            hw = sizes.long()
        else:
            rows = [list(s) for s in sizes]
            if any(len(r) != 2 for r in rows) or any(
                isinstance(v, bool) or not isinstance(v, numbers.Integral) for r in rows for v in r
            ):
                raise ValueError(f"sizes must be [B, 2] (height, width) pairs of ints, got {rows}")
            hw = torch.tensor(rows, dtype=torch.long)
        if hw.numel() == 0:
            hw = hw.reshape(0, 2)
        if hw.dim() != 2 or hw.shape[1] != 2:
            raise ValueError(f"sizes must be [B, 2] (height, width) pairs, got shape {list(hw.shape)}")
        if hw.numel() > 0 and int(hw.min()) < 0:
            raise ValueError(f"sizes must be >= 0, got min {int(hw.min())}")
    return hw // p


def _pixels(hw: Tensor) -> tuple:
    seg = segments(None, lengths=hw[:, 0] * hw[:, 1], device=hw.device)
    w = hw[seg.example, 1]
    h = hw[seg.example, 0]
    return seg, seg.pos // torch.clamp(w, min=1), seg.pos % torch.clamp(w, min=1), h, w


def grid(
    height: int | None = None,
    width: int | None = None,
    *,
    radius: int = 1,
    connectivity: int = 8,
    dilation: int = 1,
    patch_size: int = 1,
    loop: bool = True,
    sizes: Tensor | Sequence[Sequence[int]] | None = None,
) -> Graph:
    """Neighbourhood graph of an image (or a batch of images) of pixels or patches.

    Args:
        height, width: image size in pixels (one image), or ``None`` with ``sizes``.
        radius: neighbourhood radius ``r >= 0`` in (dilated) steps.
        connectivity: ``8`` (square neighbourhood, Chebyshev distance) or ``4`` (diamond, Manhattan).
        dilation: step ``d >= 1`` between neighbours.
        patch_size: ``P >= 1``; nodes are ``P x P`` patches (``floor(H / P) x floor(W / P)``).
        loop: include each node's edge to itself.
        sizes: ``[B, 2]`` image sizes ``(H, W)`` of a batch.

    Returns:
        :class:`~graphattn.Graph` with ``ptr`` over images; sources ascending (row-major).
    """
    radius = check_int("radius", radius, minimum=0)
    d = check_int("dilation", dilation, minimum=1)
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    hw = check_image_sizes(height, width, sizes, patch_size)
    seg, y, x, h, w = _pixels(hw)
    a = torch.arange(-radius, radius + 1)
    ay, ax = torch.meshgrid(a, a, indexing="ij")
    ay, ax = ay.reshape(-1), ax.reshape(-1)
    keep = (ay.abs() + ax.abs() <= radius) if connectivity == 4 else torch.ones_like(ay, dtype=torch.bool)
    if not loop:
        keep &= (ay != 0) | (ax != 0)
    dy, dx = ay[keep] * d, ax[keep] * d  # the stencil, row-major
    yy, xx = y[:, None] + dy, x[:, None] + dx
    inside = (yy >= 0) & (yy < h[:, None]) & (xx >= 0) & (xx < w[:, None])  # [N, K]
    node, tap = torch.nonzero(inside, as_tuple=True)  # grouped by node, taps in stencil order
    rowptr = torch.zeros(seg.num_nodes + 1, dtype=torch.long)
    torch.cumsum(inside.sum(1), 0, out=rowptr[1:])
    col = seg.start[node] + yy[node, tap] * w[node] + xx[node, tap]
    return Graph(rowptr, col, seg.num_nodes, ptr=seg.ptr)


def axial(
    height: int | None = None,
    width: int | None = None,
    *,
    patch_size: int = 1,
    sizes: Tensor | Sequence[Sequence[int]] | None = None,
) -> Graph:
    """Row + column attention: each pixel attends to its whole row and its whole column.

    Args:
        height: image height in pixels (one image), or ``None`` with ``sizes``.
        width: image width in pixels (one image), or ``None`` with ``sizes``.
        patch_size: ``P >= 1``; nodes are ``P x P`` patches.
        sizes: ``[B, 2]`` image sizes ``(H, W)`` of a batch.

    Row order: the row (left to right), then the column without the pixel itself (top to bottom).
    """
    hw = check_image_sizes(height, width, sizes, patch_size)
    seg, y, x, h, w = _pixels(hw)
    rowptr, col = assemble_rows(
        [
            Part(w, seg.start + y * w),  # the pixel's row, left to right
            Part(y, seg.start + x, w),  # its column above it, top to bottom
            Part(h - 1 - y, seg.start + (y + 1) * w + x, w),  # and below it
        ],
        shift=(0, 1, 1),  # the pixels of an image row: the same row, the next column (2-D blocks)
    )
    return trusted_graph(rowptr, col, seg.num_nodes, ptr=seg.ptr)


class _ImageStructure(StaticStructure):
    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height = check_int("height", height, minimum=0)
        self.width = check_int("width", width, minimum=0)

    def _sizes(self, lengths: Tensor) -> Tensor:
        n = self.height * self.width
        if bool((lengths != n).any()):
            raise ValueError(
                f"{type(self).__name__}({self.height}, {self.width}) needs every example to have "
                f"{n} nodes, got lengths {lengths.tolist()}; build grid(sizes=...) and pass graph= for mixed sizes"
            )
        return torch.tensor([[self.height, self.width]] * lengths.numel(), dtype=torch.long).reshape(-1, 2)


class Grid(_ImageStructure):
    """:func:`grid` as a structure over images of one node-grid size ``height x width``."""

    def __init__(
        self, height: int, width: int, *, radius: int = 1, connectivity: int = 8, dilation: int = 1, loop: bool = True
    ) -> None:
        super().__init__(height, width)
        self.kwargs = {"radius": radius, "connectivity": connectivity, "dilation": dilation, "loop": loop}
        grid(1, 1, **self.kwargs)  # validate the arguments now

    def build(self, lengths: Tensor) -> Graph:
        return grid(sizes=self._sizes(lengths), **self.kwargs).to(lengths.device)

    def extra_repr(self) -> str:
        return f"height={self.height}, width={self.width}, " + ", ".join(f"{k}={v}" for k, v in self.kwargs.items())


class Axial(_ImageStructure):
    """:func:`axial` as a structure over images of one node-grid size ``height x width``."""

    def build(self, lengths: Tensor) -> Graph:
        return axial(sizes=self._sizes(lengths)).to(lengths.device)

    def extra_repr(self) -> str:
        return f"height={self.height}, width={self.width}"
