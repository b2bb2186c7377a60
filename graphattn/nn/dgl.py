r"""DGL adapter: :class:`GraphAttnConv` speaks DGL (``forward(graph, feat)``) and runs graphattn's fused op.

DGL is imported through :func:`graphattn._compat.import_dgl` when this module is imported;
``import graphattn`` and ``import graphattn.nn`` never import it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._compat import import_dgl
from .._validation import check_feature_sizes, check_features, check_int
from ..graph import Graph
from ..ops import attention_weights, edge_attention
from ._gate import dropout_gate

dgl = import_dgl()

__all__ = ["GraphAttnConv", "graph_from_dgl"]

_DGLError: type[Exception] = getattr(dgl, "DGLError", None) or dgl.base.DGLError


def graph_from_dgl(graph: Any) -> tuple[Graph, Tensor]:
    """The :class:`graphattn.Graph` of a homogeneous DGL graph or block, and ``eids [E]``.

    Edge ``e`` of the returned graph is DGL edge ``eids[e]``: DGL's CSC of the adjacency
    (``graph.adj_tensors("csc")``) groups edges by destination, which is graphattn's CSR.
    """
    if not isinstance(graph, dgl.DGLGraph):
        raise TypeError(
            f"graph must be a DGLGraph or block (forward(graph, feat), DGL's order), got {type(graph).__name__}"
        )
    if len(graph.canonical_etypes) != 1:
        raise ValueError(
            f"graph must have one edge type (homogeneous graph or block), got {len(graph.canonical_etypes)}: "
            f"{graph.canonical_etypes}"
        )
    indptr, indices, eids = graph.adj_tensors("csc")
    return Graph(indptr.long(), indices.long(), graph.num_src_nodes()), eids.long()


class GraphAttnConv(nn.Module):
    r"""Multi-head dot-product graph attention (the graph transformer layer) for DGL graphs.

    From `"Masked Label Prediction: Unified Message Passing Model for Semi-Supervised
    Classification" <https://arxiv.org/abs/2009.03509>`_, for each head and destination :math:`i`:

    .. math::
        s_{ij} = \frac{(W_q h_i)^{\top} (W_k h_j + W_e f_{ij})}{\sqrt{d}}, \qquad
        a_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)} s_{ij}, \qquad
        h^{\prime}_i = \sum_{j \in \mathcal{N}(i)} a_{ij} \left(W_v h_j + W_e f_{ij}\right),

    with the :math:`W_e f_{ij}` terms only when ``edge_feats`` is set; then, as in DGL's ``GATConv``,
    :math:`h^{\prime}_i \leftarrow \sigma(h^{\prime}_i + W_r h_i)` with the residual term only when
    ``residual=True`` and :math:`\sigma` the ``activation``. ``feat_drop`` drops input features and
    ``attn_drop`` the normalized weights :math:`a_{ij}` (training only). No self-loops are added:
    a destination without in-edges raises unless ``allow_zero_in_degree=True``, and then gets zeros
    (plus its residual term). The layer is one call of
    :func:`graphattn.ops.edge_attention` over the graph's CSR; :math:`W_e f_{ij}` (``[E, H, d]``) is
    that call's ``edge_key`` and ``edge_value``, added to the keys and values in place (no per-edge
    copies of :math:`W_k h_j` or :math:`W_v h_j` are made).
    Attention weights are recomputed from the op's log-sum-exp only when ``get_attention=True``.

    Args:
        in_feats (int or tuple): input feature size, or (source, destination) sizes.
        out_feats (int): output size per head :math:`d`.
        num_heads (int): number of heads :math:`H`.
        edge_feats (int, optional): edge feature size; ``None`` for none. (default: ``None``)
        allow_zero_in_degree (bool, optional): DGL's policy: by default a destination with no
            in-edges raises (its output would be all zeros, usually a mistake); set ``True`` to
            allow it. (default: ``False``)
        bias (bool, optional): biases in the query/key/value maps. (default: ``True``)
        backend (str, optional): backend of :func:`graphattn.ops.edge_attention`. (default: ``None``)
        feat_drop (float, optional): dropout rate of the input features. (default: ``0.``)
        attn_drop (float, optional): dropout rate of the attention weights, applied as the fused
            op's ``gate`` (no per-edge weight tensor is made). (default: ``0.``)
        residual (bool, optional): add :math:`W_r h_i` (the identity when the destination feature
            size equals ``num_heads * out_feats``, else a linear map without bias). (default: ``False``)
        activation (callable, optional): applied to the output, e.g. ``F.elu``. (default: ``None``)

    Shapes:
        - **graph:** a homogeneous ``DGLGraph`` or block with :math:`N_s` sources, :math:`N_d`
          destinations and :math:`E` edges.
        - **feat:** :math:`(N, F)`, or :math:`((N_s, F_s), (N_d, F_d))`; for a block a single tensor
          holds the source nodes, whose first :math:`N_d` rows are the destinations (DGL's rule).
        - **edge_feat:** :math:`(E, F_e)` in DGL edge-id order.
        - **output:** :math:`(N_d, H, d)`; with ``get_attention=True`` also :math:`(E, H, 1)`, the
          weights after ``attn_drop`` (as DGL's ``GATConv``).
    """

    def __init__(
        self,
        in_feats: int | tuple[int, int],
        out_feats: int,
        num_heads: int,
        edge_feats: int | None = None,
        allow_zero_in_degree: bool = False,
        bias: bool = True,
        backend: str | None = None,
        *,
        feat_drop: float = 0.0,
        attn_drop: float = 0.0,
        residual: bool = False,
        activation: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        out_feats = check_int("out_feats", out_feats, minimum=1)
        num_heads = check_int("num_heads", num_heads, minimum=1)
        src_feats, dst_feats = check_feature_sizes("in_feats", in_feats)
        if edge_feats is not None:
            edge_feats = check_int("edge_feats", edge_feats, minimum=1)
        for name, rate in (("feat_drop", feat_drop), ("attn_drop", attn_drop)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate!r}")
        if activation is not None and not callable(activation):
            raise TypeError(f"activation must be callable or None, got {type(activation).__name__}")
        self._in_feats = in_feats
        self._out_feats = out_feats
        self._num_heads = num_heads
        self._edge_feats = edge_feats
        self._allow_zero_in_degree = allow_zero_in_degree
        self.backend = backend
        width = num_heads * out_feats
        self.fc_q = nn.Linear(dst_feats, width, bias=bias)
        self.fc_k = nn.Linear(src_feats, width, bias=bias)
        self.fc_v = nn.Linear(src_feats, width, bias=bias)
        self.fc_e = nn.Linear(edge_feats, width, bias=False) if edge_feats is not None else None
        self.feat_drop = feat_drop
        self.attn_drop = attn_drop
        self.res_fc: nn.Module | None = None
        if residual:
            self.res_fc = nn.Identity() if dst_feats == width else nn.Linear(dst_feats, width, bias=False)
        self.activation = activation
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal weights (as DGL's attention layers), zero biases."""
        gain = nn.init.calculate_gain("relu")
        for fc in (self.fc_q, self.fc_k, self.fc_v, self.fc_e, self.res_fc):
            if not isinstance(fc, nn.Linear):
                continue
            nn.init.xavier_normal_(fc.weight, gain=gain)
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A layer pickled whole before feat_drop / attn_drop / residual / activation existed: none of them.
        super().__setstate__(state)
        self.__dict__.setdefault("feat_drop", 0.0)
        self.__dict__.setdefault("attn_drop", 0.0)
        for name in ("activation", "res_fc"):  # a module (nn.ELU(), a Linear) lives in _modules
            if name not in self.__dict__ and name not in self._modules:
                self.__dict__[name] = None

    def set_allow_zero_in_degree(self, set_value: bool) -> None:
        """Set the zero-in-degree policy (as DGL's convolutions)."""
        self._allow_zero_in_degree = set_value

    def forward(
        self,
        graph: Any,
        feat: Tensor | tuple[Tensor, Tensor],
        edge_feat: Tensor | None = None,
        get_attention: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Run the layer on a DGL graph or block.

        Args:
            graph: a homogeneous ``DGLGraph`` or block.
            feat: node features ``[N, F]``, or the (source, destination) pair; for a block one tensor
                of the source nodes (its first ``N_d`` rows are the destinations).
            edge_feat: edge features ``[E, F_e]`` in DGL edge-id order; required exactly when the
                layer has ``edge_feats``.
            get_attention: also return the attention weights ``[E, H, 1]`` (in DGL edge-id order,
                after ``attn_drop``, the weights that aggregated, as DGL's ``GATConv`` returns them).
        """
        g, eids = graph_from_dgl(graph)  # first: a graph of several edge types gets its own error
        if not self._allow_zero_in_degree and bool((g.in_degree() == 0).any()):
            raise _DGLError(
                "There are 0-in-degree nodes in the graph, output for those nodes will be invalid. "
                "This is harmful for some applications, causing silent performance regression. "
                "Adding self-loop on the input graph by calling `g = dgl.add_self_loop(g)` will resolve "
                "the issue. Setting ``allow_zero_in_degree`` to be `True` when constructing this module "
                "will suppress the check and let the code run."
            )
        pair = isinstance(feat, tuple)
        h_src, h_dst = feat if pair else (feat, feat)
        sizes = (self.fc_k.in_features, self.fc_q.in_features)
        check_features("feat", pair, (h_src, h_dst), sizes, f"in_feats = {self._in_feats}")
        if graph.is_block and not pair:
            h_dst = h_src[: graph.num_dst_nodes()]
        if h_src.size(0) != graph.num_src_nodes() or h_dst.size(0) != graph.num_dst_nodes():
            raise ValueError(
                f"feat must have (N_src, N_dst) = ({graph.num_src_nodes()}, {graph.num_dst_nodes()}) rows, "
                f"got ({h_src.size(0)}, {h_dst.size(0)})"
            )
        if (edge_feat is None) != (self.fc_e is None):
            raise ValueError(
                f"edge_feat must be given exactly when the layer has edge_feats (edge_feats={self._edge_feats}), "
                f"got edge_feat={'None' if edge_feat is None else list(edge_feat.shape)}"
            )

        if self.feat_drop > 0.0 and self.training:
            if pair:
                h_src, h_dst = F.dropout(h_src, self.feat_drop), F.dropout(h_dst, self.feat_drop)
            else:  # one draw for the nodes that are sources and destinations (as DGL's GATConv)
                h_src = F.dropout(h_src, self.feat_drop)
                h_dst = h_src[: graph.num_dst_nodes()]
        H, C = self._num_heads, self._out_feats
        q = self.fc_q(h_dst).view(-1, H, C)
        k = self.fc_k(h_src).view(-1, H, C)
        v = self.fc_v(h_src).view(-1, H, C)
        scale = 1.0 / math.sqrt(C)
        e = None
        if self.fc_e is not None:
            if edge_feat.size(0) != g.num_edges:
                raise ValueError(f"edge_feat must be [E={g.num_edges}, F_e], got shape {list(edge_feat.shape)}")
            # Edge features in graphattn's (destination-grouped) edge order: the op's per-edge key
            # and value terms, giving q_i . (k_j + e_ij) scores and sum_j a_ij (v_j + e_ij).
            e = self.fc_e(edge_feat.index_select(0, eids)).view(-1, H, C)
        gate = dropout_gate(None, self.attn_drop, self.training, g.num_edges, H, q)
        out, lse = edge_attention(
            q, k, v, g, gate=gate, edge_key=e, edge_value=e, scale=scale, return_lse=True, backend=self.backend
        )
        if self.res_fc is not None:
            out = out + self.res_fc(h_dst).view(-1, H, C)
        if self.activation is not None:
            out = self.activation(out)
        if not get_attention:
            return out
        attn = attention_weights(q, k, g, lse, edge_key=e, scale=scale)  # recomputed from lse, on demand
        if gate is not None:
            attn = attn * gate  # the dropped weights, as they aggregated
        # Back to DGL's edge ids: position e holds DGL edge eids[e].
        attn_dgl = torch.empty_like(attn).index_copy_(0, eids, attn)
        return out, attn_dgl.unsqueeze(-1)

    def extra_repr(self) -> str:
        edge = f", edge_feats={self._edge_feats}" if self._edge_feats is not None else ""
        drop = "".join(f", {k}={v}" for k, v in (("feat_drop", self.feat_drop), ("attn_drop", self.attn_drop)) if v > 0)
        drop += ", residual=True" if self.res_fc is not None else ""
        if self.activation is not None:
            drop += f", activation={getattr(self.activation, '__name__', type(self.activation).__name__)}"
        return f"in_feats={self._in_feats}, out_feats={self._out_feats}, num_heads={self._num_heads}{edge}{drop}"
