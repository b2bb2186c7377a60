r"""Multi-head attention over a graph, in the :class:`torch.nn.MultiheadAttention` dialect.

Vaswani et al., "Attention Is All You Need" (2017), https://arxiv.org/abs/1706.03762, with the
dense ``L x S`` score matrix replaced by the edges of a :class:`~graphattn.Graph`: for destination
:math:`i` and head :math:`h`,

.. math::
    \text{out}_i = W_o \big\Vert_{h} \sum_{e = (j \to i)} g_{e,h}\,
    \operatorname{softmax}_{e \to i}\!\Big(\tfrac{\langle W_q^h x_i, W_k^h x_j \rangle}{\sqrt{d}} + b_{e,h}\Big)\,
    W_v^h x_j

where :math:`b` is the structure's bias plus ``edge_bias`` and :math:`g` is the structure's gate
times the dropout mask. On the complete graph this is ``nn.MultiheadAttention`` exactly (same
parameters, same initialization, same outputs).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_int
from ..graph import Graph
from ..ops import attention_weights, edge_attention
from ..ops._checks import check_edge_tensor, check_graph
from ..structure.base import Structure, StructureOutput
from ..structure.heads import fold, unfold
from ._gate import dropout_gate

__all__ = ["GraphAttention", "AttentionOutput"]


class AttentionOutput(NamedTuple):
    """What :class:`GraphAttention` returns.

    Attributes:
        output: ``[N_dst, embed_dim]``.
        weights: ``[E, H]`` per-edge attention weights (softmax times the structure's gate, without
            dropout) when ``need_weights=True``, else ``None``; for a per-head structure
            ``[E_folded, 1]`` over :attr:`graph`'s folded edges.
        graph: the graph the attention ran over (the structure's, or the one passed in).
        aux_loss: the structure's auxiliary loss (a scalar), ``0`` when it has none; add it to the
            task loss.
    """

    output: Tensor
    weights: Tensor | None
    graph: Graph
    aux_loss: Tensor


class GraphAttention(nn.Module):
    r"""Multi-head attention of each node over its in-edges (see the module docstring).

    The parameters have the names, shapes and initialization of :class:`torch.nn.MultiheadAttention`
    (``in_proj_weight``, or ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when
    ``kdim``/``vdim`` differ from ``embed_dim``; ``in_proj_bias``; ``out_proj``), so
    ``layer.load_state_dict(mha.state_dict())`` works both ways.

    **Edges.** With ``structure`` (a :class:`~graphattn.structure.Structure`, e.g.
    ``Window(8)``, or a learned one) the layer asks it for the edges at every call, passing the
    projected ``q``, ``k``, the example offsets and the ``graph`` argument (input edges, may be
    ``None``); the structure's ``bias``/``gate`` go to the op and its ``aux_loss`` is returned.
    Without ``structure``, ``graph`` is required. A node with no in-edges attends over nothing: its
    attention output is zero, so its row is ``out_proj``'s bias (``nn.MultiheadAttention`` gives
    NaN for a fully masked row).

    **Dropout** (``dropout > 0``, training only) drops attention weights as
    ``nn.MultiheadAttention`` does: the op's ``gate`` is multiplied by a Bernoulli mask scaled by
    ``1 / (1 - p)``, i.e. :math:`g_e \, p_e` becomes :math:`g_e m_e p_e / (1 - p)` after the softmax,
    without storing any ``[E, H]`` probabilities.

    **Weights** are never stored on the module: ``need_weights=True`` recomputes them from the op's
    ``lse`` with :func:`graphattn.ops.attention_weights` (per head, not averaged: ``[E, H]``).

    Args:
        embed_dim: model dimension ``E`` (split over heads).
        num_heads: number of heads ``H``; ``embed_dim`` must be divisible by it.
        structure: a :class:`~graphattn.structure.Structure` that builds the edges, or ``None``.
        bias: add biases to the input/output projections.
        dropout: attention-weight dropout probability.
        kdim: key feature size (default ``embed_dim``); used with ``x_src``.
        vdim: value feature size (default ``embed_dim``); must equal ``kdim``, since ``x_src``
            gives both the keys and the values.
        backend: ``edge_attention`` backend (``None``: automatic).

    Shapes:
        - **input:** ``x [N_dst, embed_dim]``, optional ``x_src [N_src, kdim]`` (cross-attention:
          the keys and the values), ``edge_bias [E, H]``.
        - **output:** :class:`AttentionOutput` with ``output [N_dst, embed_dim]``.

    Example:
        >>> from graphattn.structure import Window
        >>> attn = GraphAttention(64, 4, structure=Window(8))
        >>> out = attn(torch.randn(100, 64), ptr=torch.tensor([0, 40, 100])).output
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        structure: Structure | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        kdim: int | None = None,
        vdim: int | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        embed_dim = check_int("embed_dim", embed_dim, minimum=1)
        num_heads = check_int("num_heads", num_heads, minimum=1)
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim must be divisible by num_heads, got {embed_dim} and {num_heads}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"dropout must be a float, got {type(dropout).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if structure is not None and not isinstance(structure, nn.Module):
            raise TypeError(
                f"structure must be a graphattn.structure.Structure module (e.g. Window(8)), got "
                f"{type(structure).__name__}; wrap a builder function in a StaticStructure"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else check_int("kdim", kdim, minimum=1)
        self.vdim = embed_dim if vdim is None else check_int("vdim", vdim, minimum=1)
        if self.kdim != self.vdim:  # one x_src feeds both: no call could ever pass (audit)
            raise ValueError(
                f"kdim and vdim must be equal (x_src gives the keys and the values), got {self.kdim} and {self.vdim}"
            )
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout = dropout
        self.backend = backend
        self.structure = structure
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.MultiheadAttention``'s initialization: Xavier-uniform projections, zero biases."""
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            nn.init.xavier_uniform_(self.q_proj_weight)
            nn.init.xavier_uniform_(self.k_proj_weight)
            nn.init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.constant_(self.in_proj_bias, 0.0)
            nn.init.constant_(self.out_proj.bias, 0.0)  # out_proj.weight keeps nn.Linear's init, as in MHA

    # ------------------------------------------------------------------ projections
    def _project(self, x: Tensor, x_src: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        e = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e : 2 * e], b[2 * e :])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            wq, wk, wv = w[:e], w[e : 2 * e], w[2 * e :]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        if x_src is x and self._qkv_same_embed_dim:
            q, k, v = F.linear(x, self.in_proj_weight, b).chunk(3, dim=-1)  # one GEMM for self-attention
        else:
            q, k, v = F.linear(x, wq, bq), F.linear(x_src, wk, bk), F.linear(x_src, wv, bv)
        h, d = self.num_heads, self.head_dim
        return q.reshape(-1, h, d), k.reshape(-1, h, d), v.reshape(-1, h, d)

    def _edges(
        self, q: Tensor, k: Tensor, graph: Graph | None, ptr: Tensor | None, src_ptr: Tensor | None
    ) -> StructureOutput:
        if self.structure is None:
            if graph is None:
                raise ValueError("graph is required when the layer has no structure (pass graph= or structure=)")
            return StructureOutput(graph)
        out = self.structure(q, k, ptr=ptr, src_ptr=src_ptr, graph=graph)
        if not isinstance(out, StructureOutput):
            if isinstance(out, Graph):
                return StructureOutput(out)
            raise TypeError(f"structure must return a StructureOutput or a Graph, got {type(out).__name__}")
        return out

    def forward(
        self,
        x: Tensor,
        graph: Graph | None = None,
        *,
        x_src: Tensor | None = None,
        edge_bias: Tensor | None = None,
        need_weights: bool = False,
        ptr: Tensor | None = None,
        src_ptr: Tensor | None = None,
    ) -> AttentionOutput:
        """Attend from every node of ``x`` over its in-edges.

        Args:
            x: destination (query) features ``[N_dst, embed_dim]``.
            graph: the edges (required without a structure; with one, passed to it as input edges
                and batch layout).
            x_src: source (key/value) features ``[N_src, kdim]`` for cross-attention; default ``x``.
            edge_bias: ``[E, H]`` added to the logits (edges of the graph used; for a per-head
                structure ``[E_folded, 1]``).
            need_weights: also return the per-edge attention weights.
            ptr: ``[B + 1]`` example offsets for the structure (default ``graph.ptr``).
            src_ptr: ``[B + 1]`` example offsets of ``x_src`` (default ``graph.src_ptr``).
        """
        for name, t in (("x", x), ("x_src", x_src)):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if x.dim() != 2 or x.shape[1] != self.embed_dim:
            raise ValueError(f"x must be [N, embed_dim] = [N, {self.embed_dim}], got {list(x.shape)}")
        src_given = x_src is not None
        if x_src is None:
            if not self._qkv_same_embed_dim:
                raise ValueError(f"x_src is required when kdim/vdim ({self.kdim}/{self.vdim}) differ from embed_dim")
            x_src = x
        elif x_src.dim() != 2 or x_src.shape[1] != self.kdim:
            raise ValueError(f"x_src must be [N_src, kdim] = [N_src, {self.kdim}], got {list(x_src.shape)}")
        if graph is not None:
            check_graph(graph)  # before graph.ptr: an edge_index Tensor here gets a TypeError, not AttributeError
            if self.structure is None:  # the graph's nodes are x's rows (a structure checks its own)
                if x.shape[0] != graph.num_dst:
                    raise ValueError(f"x must have graph.num_dst = {graph.num_dst} rows, got {x.shape[0]}")
                if x_src.shape[0] != graph.num_src:
                    raise ValueError(
                        f"x_src must have graph.num_src = {graph.num_src} rows, got {x_src.shape[0]}"
                        if src_given
                        else f"graph has num_src = {graph.num_src} source nodes, x has {x.shape[0]} rows: "
                        "pass their features as x_src"
                    )
        if ptr is None and graph is not None:
            ptr = graph.ptr
        if src_ptr is None and graph is not None:
            src_ptr = graph.src_ptr
        q, k, v = self._project(x, x_src)
        st = self._edges(q, k, graph, ptr, src_ptr)
        g, bias, gate = st.graph, st.bias, st.gate
        if edge_bias is not None:
            edge_bias = check_edge_tensor("edge_bias", edge_bias, g, 1 if st.per_head else self.num_heads, q)
            bias = edge_bias if bias is None else bias + edge_bias
        width = 1 if st.per_head else self.num_heads
        att_gate = dropout_gate(gate, self.dropout, self.training, g.num_edges, width, q)
        if st.sources is not None:  # extra source nodes built from q, k, v (Combiner's summaries)
            k, v = st.sources(q, k, v)
        qq, kk, vv = (fold(q), fold(k), fold(v)) if st.per_head else (q, k, v)
        out, lse = edge_attention(qq, kk, vv, g, bias=bias, gate=att_gate, return_lse=True, backend=self.backend)
        weights = None
        if need_weights:
            weights = attention_weights(qq, kk, g, lse, bias=bias)
            if gate is not None:
                weights = weights * gate
        if st.per_head:
            out = unfold(out, self.num_heads)
        out = self.out_proj(out.reshape(x.shape[0], self.embed_dim))
        aux = st.aux_loss if st.aux_loss is not None else x.new_zeros(())
        return AttentionOutput(out, weights, g, aux)

    def extra_repr(self) -> str:
        s = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"
        if not self._qkv_same_embed_dim:
            s += f", kdim={self.kdim}, vdim={self.vdim}"
        return s
