"""Pre-norm Transformer encoder blocks over graphs.

Vaswani et al. (2017), https://arxiv.org/abs/1706.03762, in the pre-norm arrangement of Xiong et
al., "On Layer Normalization in the Transformer Architecture" (2020),
https://arxiv.org/abs/2002.04745:

.. math::
    x \\leftarrow x + \\text{Dropout}(\\text{Attn}(\\text{LN}_1(x), G)), \\qquad
    x \\leftarrow x + \\text{Dropout}(W_2\\, \\text{Dropout}(\\sigma(W_1 \\text{LN}_2(x))))

with :class:`~graphattn.nn.GraphAttention` as ``Attn``. The encoder stacks deep copies of one layer
(as :class:`torch.nn.TransformerEncoder` does) and ends with a LayerNorm. Each layer with a
structure builds its own edges (learned structures differ per layer; fixed ones are cached); a
``graph`` argument without structures is shared by every layer (its cached transpose too).
Auxiliary losses of all layers are summed into :attr:`EncoderOutput.aux_loss`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_int
from ..graph import Graph
from ..structure.base import Structure
from .attention import GraphAttention

__all__ = ["GraphTransformerLayer", "GraphTransformerEncoder", "EncoderOutput"]


class EncoderOutput(NamedTuple):
    """``output [N, d_model]`` and the summed structure ``aux_loss`` (a scalar, 0 if none)."""

    output: Tensor
    aux_loss: Tensor


_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


class GraphTransformerLayer(nn.Module):
    """One pre-norm block: graph attention and a feed-forward network, each with a residual.

    Args:
        d_model: feature size.
        nhead: attention heads.
        dim_feedforward: hidden size of the FFN (default ``4 * d_model``).
        dropout: dropout on attention weights, after attention, inside and after the FFN.
        activation: ``"gelu"``, ``"relu"`` or a callable (``nn.TransformerEncoderLayer``'s choices).
        structure: edge builder for the attention (see :class:`GraphAttention`).
        layer_norm_eps: LayerNorm epsilon.
        bias: biases in the linear layers.
        backend: ``edge_attention`` backend.

    Shapes:
        ``x [N, d_model]`` -> :class:`EncoderOutput` with ``output [N, d_model]``.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        *,
        activation: str | Callable[[Tensor], Tensor] = "gelu",
        structure: Structure | None = None,
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(activation, str) and activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)} or a callable, got {activation!r}")
        if not isinstance(activation, str) and not callable(activation):
            raise TypeError(f"activation must be a str or a callable, got {type(activation).__name__}")
        check_int("d_model", d_model, minimum=1)
        if check_int("nhead", nhead, minimum=1) and d_model % nhead:  # GraphAttention's own error names embed_dim
            raise ValueError(f"d_model must be divisible by nhead, got {d_model} and {nhead}")
        ff = 4 * d_model if dim_feedforward is None else check_int("dim_feedforward", dim_feedforward, minimum=1)
        self.self_attn = GraphAttention(
            d_model, nhead, structure=structure, bias=bias, dropout=dropout, backend=backend
        )
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.linear1 = nn.Linear(d_model, ff, bias=bias)
        self.linear2 = nn.Linear(ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _ACTIVATIONS[activation] if isinstance(activation, str) else activation

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if isinstance(self.activation, str):  # a layer pickled whole when it kept the activation's name
            self.activation = _ACTIVATIONS[self.activation]

    def forward(self, x: Tensor, graph: Graph | None = None, *, ptr: Tensor | None = None) -> EncoderOutput:
        """``x [N, d_model]``; ``graph`` and ``ptr`` as in :meth:`GraphAttention.forward`."""
        att = self.self_attn(self.norm1(x), graph, ptr=ptr)
        x = x + self.dropout1(att.output)
        h = self.linear2(self.dropout(self.activation(self.linear1(self.norm2(x)))))
        return EncoderOutput(x + self.dropout2(h), att.aux_loss)


class GraphTransformerEncoder(nn.Module):
    """``num_layers`` deep copies of ``encoder_layer`` and a final LayerNorm (pre-norm needs it).

    Args:
        encoder_layer: the block to copy (its structure is copied too: learned ones get
            independent parameters per layer).
        num_layers: number of blocks.
        final_norm: apply a LayerNorm to the output.
    """

    def __init__(self, encoder_layer: GraphTransformerLayer, num_layers: int, *, final_norm: bool = True) -> None:
        super().__init__()
        num_layers = check_int("num_layers", num_layers, minimum=1)
        # A structure's torch.Generator is shared by the copies, not copied: one stream for the
        # whole encoder, so reseeding it reproduces the encoder and the layers draw different
        # numbers (deep copies each restarted the same stream, and ignored a reseed).
        generators = {
            id(g): g for m in encoder_layer.modules() if isinstance(g := getattr(m, "generator", None), torch.Generator)
        }
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer, dict(generators)) for _ in range(num_layers)])
        d_model = encoder_layer.self_attn.embed_dim
        self.norm = nn.LayerNorm(d_model, eps=encoder_layer.norm1.eps) if final_norm else nn.Identity()

    def forward(self, x: Tensor, graph: Graph | None = None, *, ptr: Tensor | None = None) -> EncoderOutput:
        """``x [N, d_model]`` through every layer; aux losses summed."""
        aux = x.new_zeros(())
        for layer in self.layers:
            x, a = layer(x, graph, ptr=ptr)
            aux = aux + a
        return EncoderOutput(self.norm(x), aux)
