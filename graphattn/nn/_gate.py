"""Attention dropout as the fused op's per-edge ``gate`` (shared by the layers and the adapters)."""

from __future__ import annotations

import torch
from torch import Tensor


def dropout_gate(gate: Tensor | None, p: float, training: bool, rows: int, width: int, like: Tensor) -> Tensor | None:
    r"""``gate`` times inverted dropout of the normalized attention weights, or ``gate`` as is when
    not ``training`` or ``p == 0``.

    Dropping weight :math:`a_{ij}` with probability :math:`p` and scaling the rest by
    :math:`1 / (1 - p)` (``F.dropout`` on the weights, as PyG and DGL apply it) is the gate
    :math:`m_{ij} \sim \mathrm{Bernoulli}(1 - p) / (1 - p)` of :func:`graphattn.ops.edge_attention`,
    which multiplies the weights after the softmax: ``[rows, width]`` (edges, heads), in ``like``'s
    dtype and device.
    """
    if not training or p == 0.0:
        return gate
    mask = torch.empty(rows, width, dtype=like.dtype, device=like.device).bernoulli_(1.0 - p) / (1.0 - p)
    return mask if gate is None else gate * mask
