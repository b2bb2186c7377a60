r"""PyTorch Geometric adapter: :class:`GraphAttnConv`, a drop-in ``TransformerConv``, and :class:`ToGraph`.

This module imports ``torch_geometric``; ``import graphattn`` and ``import graphattn.nn`` never do.
Import it explicitly: ``from graphattn.nn.pyg import GraphAttnConv, ToGraph``.

Migration from PyG is swapping the class: the parameters carry ``TransformerConv``'s names and
shapes (``lin_key``, ``lin_query``, ``lin_value``, ``lin_edge``, ``lin_skip``, ``lin_beta``), so
``GraphAttnConv(...).load_state_dict(transformer_conv.state_dict(), strict=True)`` works and gives
the same outputs, gradients and attention weights (for ``TransformerConv``'s default ``aggr="add"`` and
``flow="source_to_target"``, the only ones this layer takes).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data, HeteroData
from torch_geometric.nn import Linear
from torch_geometric.nn.aggr import SumAggregation
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import softmax as pyg_softmax

from .._validation import check_feature_sizes, check_features, check_int, is_integer_tensor
from ..graph import Graph, cache_serves, check_edge_index_ranges
from ..ops import attention_weights, edge_attention
from ..structure.base import Structure, StructureOutput
from ._gate import dropout_gate

__all__ = ["GraphAttnConv", "ToGraph", "as_graph", "GRAPH_ATTR"]

GRAPH_ATTR = "attn_graph"
"""Default name of the attribute :class:`ToGraph` stores the :class:`graphattn.Graph` under."""

StructureFn = Callable[[Tensor, Graph], Graph]


class _Edges(NamedTuple):
    """The edges a layer call attends over, resolved from its inputs and its structure."""

    graph: Graph
    edge_attr: Tensor | None  # in edge-id order
    perm: Tensor | None  # edge e of graph is column perm[e] of the input edge_index (None: identity)
    input_order: bool  # graph's edges are the input edges (possibly reordered by perm)
    bias: Tensor | None  # [E, H] from a Structure module (0 on input edges), else None
    gate: Tensor | None  # [E, H] from a Structure module (1 on input edges), else None


# ---------------------------------------------------------------------------- edge_index -> Graph
# One-entry cache: the layers of one model called on the same ``edge_index`` tensor build its CSR
# once. Keyed on the tensor object (weakly) and its version counter, so an in-place change or a
# new tensor is never served a stale graph.
_LAST: dict[str, Any] = {}


def _sorted_by_dst(dst: Tensor) -> bool:
    return dst.numel() < 2 or bool((dst[1:] >= dst[:-1]).all())


def _sized(graph: Graph, num_src: int, num_dst: int) -> Graph:
    """``graph`` if it has ``num_src`` sources and ``num_dst`` destinations (traceable: no index work)."""
    if graph.num_src != num_src or graph.num_dst != num_dst:
        raise ValueError(
            f"edge_index is a Graph with (num_src, num_dst) = ({graph.num_src}, {graph.num_dst}), "
            f"but x has ({num_src}, {num_dst}) nodes"
        )
    return graph


@torch.compiler.disable
def as_graph(edge_index: Any, num_src: int, num_dst: int) -> tuple[Graph, Tensor | None]:
    """The :class:`graphattn.Graph` of ``edge_index`` and ``perm`` (``None`` when the identity).

    ``perm[e]`` is the column of ``edge_index`` that became edge ``e`` of the graph, so per-edge
    inputs are reordered with ``edge_attr[perm]``. Accepts a ``Graph`` (returned as is), a PyG
    ``EdgeIndex`` (its CSC is reused when it is sorted by destination) or an ``edge_index`` Tensor
    ``[2, E]`` (no sort when its destinations are already non-decreasing, as after
    :class:`ToGraph`). Index building never enters ``torch.compile`` graphs.

    The graph of the last ``edge_index`` tensor is cached (one entry, keyed on the tensor and its
    version counter; not for inference tensors, which have none), so the layers of one model build
    it once; edits that bypass the version counter (``.data``, a NumPy array sharing the memory)
    are not seen. The graph of an ``edge_index`` Tensor does not share its memory (an
    ``EdgeIndex``'s own CSC is reused as is).

    Args:
        edge_index: the edges (row 0 sources ``j``, row 1 destinations ``i``).
        num_src: number of source nodes ``N_src``.
        num_dst: number of destination nodes ``N_dst``.
    """
    if isinstance(edge_index, Graph):
        return _sized(edge_index, num_src, num_dst), None
    if not isinstance(edge_index, Tensor):
        raise TypeError(
            "edge_index must be a Tensor [2, E], a torch_geometric EdgeIndex or a graphattn.Graph, "
            f"got {type(edge_index).__name__}"
        )
    if edge_index.is_sparse or edge_index.layout != torch.strided:
        raise TypeError("edge_index must be a dense [2, E] index tensor here; sparse layouts use the per-edge path")
    if not is_integer_tensor(edge_index):
        # ValueError, as PyG's MessagePassing (and so this layer's per-edge path) raises for it.
        raise ValueError(
            f"edge_index must be of integer type (e.g. torch.int64 or torch.int32), got {edge_index.dtype}"
        )
    cacheable = not edge_index.is_inference()  # an inference tensor has no version counter to key on
    ref = _LAST.get("ref")
    if (
        cacheable
        and ref is not None
        and ref() is edge_index
        and _LAST["version"] == edge_index._version
        and _LAST["sizes"] == (num_src, num_dst)
        and cache_serves(_LAST["inference"])
    ):
        return _LAST["graph"], _LAST["perm"]

    graph: Graph | None = None
    perm: Tensor | None = None
    if type(edge_index).__name__ == "EdgeIndex" and getattr(edge_index, "is_sorted_by_col", False):
        (colptr, row), _ = edge_index.get_csc()
        colptr, row = colptr.as_subclass(Tensor), row.as_subclass(Tensor)
        if colptr.numel() == num_dst + 1:
            if row.numel() > 0:  # the sources against x's rows, named as edge_index[0] (first)
                check_edge_index_ranges(num_src, num_dst, tuple(torch.stack(torch.aminmax(row)).tolist()))
            graph = Graph(colptr.long(), row.long(), num_src)  # and the offsets (an EdgeIndex is unvalidated)
    if graph is None:
        plain = edge_index.as_subclass(Tensor) if type(edge_index) is not Tensor else edge_index
        if plain.dim() != 2 or plain.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, E], got shape {list(plain.shape)}")
        plain = plain.long()
        dst = plain[1]
        if _sorted_by_dst(dst):
            # Already grouped by destination: the CSR is a histogram away, no sort needed. The
            # destinations' range is their first and last; the sources' a reduction (one host sync).
            empty = dst.numel() == 0
            ranges = [0, -1, 0, -1] if empty else torch.stack([*torch.aminmax(plain[0]), dst[0], dst[-1]]).tolist()
            check_edge_index_ranges(num_src, num_dst, (ranges[0], ranges[1]), (ranges[2], ranges[3]))
            rowptr = torch.zeros(num_dst + 1, dtype=torch.long, device=dst.device)
            torch.cumsum(torch.bincount(dst, minlength=num_dst), 0, out=rowptr[1:])
            # Valid by the checks above; col a copy, so later edits of edge_index stay out.
            graph = Graph._unchecked(rowptr, plain[0].clone(), num_src)
        else:
            graph, perm = Graph.from_edge_index(plain, num_src=num_src, num_dst=num_dst, return_perm=True)
    if not cacheable:
        return graph, perm
    try:
        _LAST.update(ref=weakref.ref(edge_index), version=edge_index._version, sizes=(num_src, num_dst))
        _LAST.update(graph=graph, perm=perm, inference=torch.is_inference_mode_enabled())
    except TypeError:  # pragma: no cover - tensors support weak references; be safe anyway
        _LAST.clear()
    return graph, perm


def _union(first: Graph, second: Graph) -> tuple[Graph, Tensor]:
    """Edges of ``first`` then of ``second`` as one graph; ``perm`` indexes ``cat([first, second])``."""
    edge_index = torch.cat([first.to_edge_index(), second.to_edge_index()], dim=1)
    graph, perm = Graph.from_edge_index(edge_index, num_src=first.num_src, num_dst=first.num_dst, return_perm=True)
    return graph, perm


# ---------------------------------------------------------------------------- the layer
class GraphAttnConv(MessagePassing):
    r"""The graph transformer operator of PyG's ``TransformerConv`` on graphattn's fused edge attention.

    From the `"Masked Label Prediction: Unified Message Passing Model for Semi-Supervised
    Classification" <https://arxiv.org/abs/2009.03509>`_ paper:

    .. math::
        \mathbf{x}^{\prime}_i = \mathbf{W}_1 \mathbf{x}_i +
        \sum_{j \in \mathcal{N}(i)} \alpha_{i,j} \left(\mathbf{W}_2 \mathbf{x}_{j}
        + \mathbf{W}_6 \mathbf{e}_{ij}\right),
        \qquad
        \alpha_{i,j} = \operatorname{softmax}_{j \in \mathcal{N}(i)} \left(
        \frac{(\mathbf{W}_3\mathbf{x}_i)^{\top} (\mathbf{W}_4\mathbf{x}_j + \mathbf{W}_6 \mathbf{e}_{ij})}
        {\sqrt{d}} \right)

    per head, where the :math:`\mathbf{W}_6 \mathbf{e}_{ij}` terms appear only with ``edge_dim``.
    With ``beta=True`` the skip and the aggregate are mixed as
    :math:`\mathbf{x}^{\prime}_i = \beta_i \mathbf{W}_1 \mathbf{x}_i + (1 - \beta_i) \mathbf{m}_i`,
    :math:`\beta_i = \operatorname{sigmoid}(\mathbf{w}_5^{\top}[\mathbf{m}_i, \mathbf{W}_1 \mathbf{x}_i,
    \mathbf{m}_i - \mathbf{W}_1 \mathbf{x}_i])`.

    How it runs: scores, softmax and aggregation are one call of :func:`graphattn.ops.edge_attention`
    (no per-edge attention tensors are stored). Edge features enter that call as its per-edge key and
    value terms: the projected :math:`e_{ij} = \mathbf{W}_6 \mathbf{e}_{ij}` (``[E, H, d]``, which
    exists anyway) is passed as both ``edge_key`` and ``edge_value``, so the op computes
    :math:`q_i^\top(k_j + e_{ij})` and :math:`\sum_j \alpha_{ij}(v_j + e_{ij})` reading :math:`k_j`,
    :math:`v_j` and :math:`e_{ij}` in place; no per-edge copies of keys or values are gathered.
    Attention weights are recomputed from the op's log-sum-exp only when asked for. Attention
    dropout is the op's ``gate`` (a scaled Bernoulli mask). The layers of a model called on one
    ``edge_index`` tensor share its CSR (:func:`as_graph`'s cache); it sees in-place edits that
    PyTorch records (``edge_index[...] = ...``, ``copy_``), as autograd does, but not writes that
    bypass them (through ``.data`` or a NumPy array sharing the memory): pass a new tensor then.
    The per-edge :meth:`message` path is kept and used whenever PyG tooling needs it: explainers
    (``explain=True``), registered message/aggregate/propagate hooks, or a ``SparseTensor`` adjacency.

    Args:
        in_channels (int or tuple): size of each input sample, ``-1`` for lazy; a tuple gives the
            (source, destination) sizes of a bipartite graph.
        out_channels (int): size of each output sample per head (:math:`d`).
        heads (int, optional): number of heads :math:`H`. (default: ``1``)
        concat (bool, optional): concatenate the heads (``True``) or average them. (default: ``True``)
        beta (bool, optional): gate skip and aggregate with :math:`\beta_i`. (default: ``False``)
        dropout (float, optional): dropout probability of the normalized attention coefficients.
            (default: ``0.``)
        edge_dim (int, optional): edge feature size; ``None`` for no edge features. (default: ``None``)
        bias (bool, optional): learn additive biases in the linear maps. (default: ``True``)
        root_weight (bool, optional): add the transformed root features (``lin_skip``); ``False``
            also turns ``beta`` off. (default: ``True``)
        structure (Structure or callable, optional): where extra edges come from, either a
            :class:`graphattn.structure.Structure` module (``Window(8)``, ``SAC(...)``, ...),
            called as ``structure(query, key, ptr=graph.ptr, src_ptr=graph.src_ptr, graph=graph)``
            with the projected queries / keys ``[N, H, d]``, or a callable
            ``structure(x_dst, graph) -> graphattn.Graph`` called with the destination features
            ``[N_dst, F]``; ``graph`` is the input :class:`graphattn.Graph` (its ``ptr`` says where
            each example of a batch starts when the caller set it). The new edges are added to the
            input edges (``structure_mode="add"``; they carry zero edge features, and input edges
            get bias 0 and gate 1 next to a structure's ``bias`` / ``gate``) or replace them
            (``"replace"``; then ``edge_attr`` must be ``None``). A module's ``bias`` / ``gate`` enter
            the fused op, its ``aux_loss`` is kept in :attr:`aux_loss` until the next call; per-head
            structures and structures with extra source nodes (``Combiner``) need
            :class:`graphattn.nn.GraphAttention` instead. A structure with parameters adds them to
            the state dict. (default: ``None``)
        structure_mode (str, optional): ``"add"`` or ``"replace"``. (default: ``"add"``)
        backend (str, optional): backend of :func:`graphattn.ops.edge_attention`; ``None`` picks the
            fastest that can run. (default: ``None``)
        **kwargs (optional): additional arguments of :class:`torch_geometric.nn.conv.MessagePassing`;
            ``aggr`` must be ``"add"`` (the attention-weighted sum) and ``flow``
            ``"source_to_target"``, their defaults.

    No self-loops are added (as in ``TransformerConv``; ``GATConv`` adds them by default): a
    destination without in-edges gets the root term alone (``lin_skip``; zero with
    ``root_weight=False``). Add them to ``edge_index`` with
    :func:`torch_geometric.utils.add_self_loops` if wanted.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V_s}|, F_{s}), (|\mathcal{V_t}|, F_{t}))` if bipartite,
          ``edge_index`` :math:`(2, |\mathcal{E}|)` Tensor / ``EdgeIndex``, or a :class:`graphattn.Graph`,
          edge features :math:`(|\mathcal{E}|, D)` *(optional; in the graph's edge-id order when a
          Graph is given)*
        - **output:** node features :math:`(|\mathcal{V}_t|, H * F_{out})` or
          :math:`(|\mathcal{V}_t|, F_{out})` if ``concat=False``; with ``return_attention_weights``
          also ``(edge_index, alpha)``, ``alpha`` :math:`(|\mathcal{E}|, H)` in the order of the
          given ``edge_index`` (edge-id order for a Graph or when ``structure`` adds edges).
    """

    _alpha: Tensor | None

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        beta: bool = False,
        dropout: float = 0.0,
        edge_dim: int | None = None,
        bias: bool = True,
        root_weight: bool = True,
        *,
        structure: Structure | StructureFn | None = None,
        structure_mode: Literal["add", "replace"] = "add",
        backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        # The fused op sums over in-edges; other settings would hold only on the per-edge path.
        if not isinstance(self.aggr_module, SumAggregation):
            raise ValueError(
                f"aggr must be 'add' (attention is the weighted sum over a node's in-edges), got {kwargs['aggr']!r}; "
                "torch_geometric.nn.TransformerConv takes other aggregations"
            )
        if self.flow != "source_to_target":
            raise ValueError(
                f"flow must be 'source_to_target' (edge_index[0] holds sources, edge_index[1] destinations), "
                f"got {self.flow!r}; pass edge_index.flip(0) to attend along the other direction"
            )
        out_channels = check_int("out_channels", out_channels, minimum=1)
        heads = check_int("heads", heads, minimum=1)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if structure is not None and not callable(structure):
            raise TypeError(
                "structure must be a graphattn Structure module, a callable (x_dst, graph) -> Graph, or None, "
                f"got {type(structure).__name__}"
            )
        if structure_mode not in ("add", "replace"):
            raise ValueError(f"structure_mode must be 'add' or 'replace', got {structure_mode!r}")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.beta = beta and root_weight
        self.root_weight = root_weight
        self.concat = concat
        self.dropout = dropout
        self.edge_dim = edge_dim
        self.structure = structure
        self.structure_mode = structure_mode
        self.backend = backend
        self._alpha = None
        self.aux_loss: Tensor | None = None  # the Structure module's aux_loss of the last call

        src_channels, dst_channels = check_feature_sizes("in_channels", in_channels, lazy=True)
        if edge_dim is not None:
            edge_dim = self.edge_dim = check_int("edge_dim", edge_dim, minimum=1)
        width = heads * out_channels
        self.lin_key = Linear(src_channels, width, bias=bias)
        self.lin_query = Linear(dst_channels, width, bias=bias)
        self.lin_value = Linear(src_channels, width, bias=bias)
        if edge_dim is not None:
            self.lin_edge = Linear(edge_dim, width, bias=False)
        else:
            self.register_parameter("lin_edge", None)
        # lin_skip exists even with root_weight=False: TransformerConv's state dict has it.
        skip_width = width if concat else out_channels
        self.lin_skip = Linear(dst_channels, skip_width, bias=bias)
        if self.beta:
            self.lin_beta = Linear(3 * skip_width, 1, bias=False)
        else:
            self.register_parameter("lin_beta", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for lin in (self.lin_key, self.lin_query, self.lin_value, self.lin_edge, self.lin_skip, self.lin_beta):
            if lin is not None:
                lin.reset_parameters()

    # ------------------------------------------------------------------ dispatch between the two paths
    def _needs_per_edge_path(self, edge_index: Any) -> bool:
        """PyG tooling observes ``message``: explainers, hooks and SparseTensor inputs run it."""
        if self._explain:
            return True
        hooks = (
            self._propagate_forward_pre_hooks,
            self._propagate_forward_hooks,
            self._message_forward_pre_hooks,
            self._message_forward_hooks,
            self._aggregate_forward_pre_hooks,
            self._aggregate_forward_hooks,
        )
        if any(len(h) > 0 for h in hooks):
            return True
        return not isinstance(edge_index, (Tensor, Graph)) or (
            isinstance(edge_index, Tensor) and edge_index.layout != torch.strided
        )

    def _structure_edges(
        self, x_dst: Tensor, query: Tensor, key: Tensor, graph: Graph
    ) -> tuple[Graph, Tensor | None, Tensor | None]:
        """The structure's ``(graph, bias, gate)``; a callable gives no bias or gate."""
        if not isinstance(self.structure, Structure):
            extra = self.structure(x_dst, graph)
            if not isinstance(extra, Graph):
                raise TypeError(f"structure must return a graphattn.Graph, got {type(extra).__name__}")
            return extra, None, None
        out = self.structure(query, key, ptr=graph.ptr, src_ptr=graph.src_ptr, graph=graph)
        if isinstance(out, Graph):
            out = StructureOutput(out)
        if not isinstance(out, StructureOutput):
            raise TypeError(f"structure must return a StructureOutput or a Graph, got {type(out).__name__}")
        name = type(self.structure).__name__
        if out.per_head or out.sources is not None:
            raise ValueError(
                f"structure {name} returns a per-head graph or extra source nodes, which GraphAttnConv does not "
                "support; use graphattn.nn.GraphAttention for it"
            )
        for term, t in (("bias", out.bias), ("gate", out.gate)):
            if t is not None and tuple(t.shape) != (out.graph.num_edges, self.heads):
                raise ValueError(
                    f"structure {name} returned {term} of shape {list(t.shape)}, expected "
                    f"[E, H] = [{out.graph.num_edges}, {self.heads}]"
                )
        self.aux_loss = out.aux_loss
        return out.graph, out.bias, out.gate

    def _resolve_edges(
        self, x_dst: Tensor, query: Tensor, key: Tensor, edge_index: Any, edge_attr: Tensor | None, num_src: int
    ) -> _Edges:
        """The graph to attend over, with its edge features, bias and gate in edge-id order."""
        if isinstance(edge_index, Graph):  # outside as_graph, which torch.compile does not trace
            graph, perm = _sized(edge_index, num_src, x_dst.size(0)), None
        else:
            graph, perm = as_graph(edge_index, num_src, x_dst.size(0))
        if edge_attr is not None:
            if edge_attr.size(0) != graph.num_edges:
                raise ValueError(
                    f"edge_attr must have one row per edge (E = {graph.num_edges}), got shape {list(edge_attr.shape)}"
                )
            if perm is not None:
                edge_attr = edge_attr.index_select(0, perm)
        if self.structure is None:
            return _Edges(graph, edge_attr, perm, True, None, None)
        self.aux_loss = None
        extra, bias, gate = self._structure_edges(x_dst, query, key, graph)
        if extra.num_src != graph.num_src or extra.num_dst != graph.num_dst:
            raise ValueError(
                f"structure returned a graph with (num_src, num_dst) = ({extra.num_src}, {extra.num_dst}), "
                f"expected ({graph.num_src}, {graph.num_dst})"
            )
        if self.structure_mode == "replace":
            if edge_attr is not None:
                raise ValueError("edge_attr must be None with structure_mode='replace' (the input edges are dropped)")
            return _Edges(extra, None, None, False, bias, gate)
        merged, order = _union(graph, extra)
        if edge_attr is not None:
            # Structural edges have no features: zeros, which lin_edge (no bias) maps to zero.
            pad = edge_attr.new_zeros((extra.num_edges, *edge_attr.shape[1:]))
            edge_attr = torch.cat([edge_attr, pad], dim=0).index_select(0, order)
        # Input edges keep plain attention next to the structure's terms: bias 0, gate 1.
        if bias is not None:
            bias = torch.cat([bias.new_zeros((graph.num_edges, self.heads)), bias]).index_select(0, order)
        if gate is not None:
            gate = torch.cat([gate.new_ones((graph.num_edges, self.heads)), gate]).index_select(0, order)
        return _Edges(merged, edge_attr, None, False, bias, gate)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: Tensor | tuple[Tensor, Tensor],
        edge_index: Any,
        edge_attr: Tensor | None = None,
        return_attention_weights: bool | None = None,
    ) -> Tensor | tuple[Tensor, tuple[Any, Tensor]]:
        r"""Run the layer.

        Args:
            x (Tensor or (Tensor, Tensor)): node features, or (source, destination) features.
            edge_index (Tensor, EdgeIndex or graphattn.Graph): the edges; a Graph built once per
                batch (see :class:`ToGraph`) is reused by every layer without re-sorting.
            edge_attr (Tensor, optional): edge features ``[E, edge_dim]``.
            return_attention_weights (bool, optional): if set (``True`` or ``False``, as in PyG),
                also return ``(edge_index, alpha)`` with ``alpha [E, H]`` the attention weights
                before dropout.
        """
        H, C = self.heads, self.out_channels
        x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
        self._check_inputs(isinstance(x, Tensor), x_src, x_dst, edge_index)
        query = self.lin_query(x_dst).view(-1, H, C)
        key = self.lin_key(x_src).view(-1, H, C)
        value = self.lin_value(x_src).view(-1, H, C)
        if self.lin_edge is not None and edge_attr is None and self.structure_mode != "replace":
            raise ValueError(f"edge_attr is required: the layer was built with edge_dim={self.edge_dim}")
        if self.lin_edge is None and edge_attr is not None:
            raise ValueError("edge_attr was given but the layer has edge_dim=None; pass edge_dim to use edge features")

        if self._needs_per_edge_path(edge_index):
            out, returned_index, alpha = self._per_edge(x_dst, query, key, value, edge_index, edge_attr, x_src.size(0))
        else:
            out, returned_index, alpha = self._fused(
                x_dst, query, key, value, edge_index, edge_attr, x_src.size(0), return_attention_weights
            )

        out = out.reshape(-1, H * C) if self.concat else out.mean(dim=1)
        if self.root_weight:
            x_r = self.lin_skip(x_dst)
            if self.lin_beta is not None:
                b = self.lin_beta(torch.cat([out, x_r, out - x_r], dim=-1)).sigmoid()
                out = b * x_r + (1 - b) * out
            else:
                out = out + x_r

        if isinstance(return_attention_weights, bool):
            return out, (returned_index, alpha)
        return out

    def _check_inputs(self, single: bool, x_src: Any, x_dst: Any, edge_index: Any) -> None:
        """Errors that name ``x`` / ``edge_index`` (the op's own would name ``q`` and ``graph``)."""
        sizes = (self.lin_key.in_channels, self.lin_query.in_channels)  # -1 until a lazy Linear's first call
        check_features("x", not single, (x_src, x_dst), sizes, "in_channels")
        device = getattr(edge_index, "device", None)  # SparseTensor's is a method: its own checks apply
        if isinstance(device, torch.device) and device != x_dst.device:
            raise ValueError(f"edge_index is on {device} but x is on {x_dst.device}; move it with .to(x.device)")

    def _fused(
        self,
        x_dst: Tensor,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        edge_index: Any,
        edge_attr: Tensor | None,
        num_src: int,
        return_attention_weights: bool | None,
    ) -> tuple[Tensor, Any, Tensor | None]:
        H, C = self.heads, self.out_channels
        graph, edge_attr, perm, input_order, bias, gate = self._resolve_edges(
            x_dst, query, key, edge_index, edge_attr, num_src
        )
        scale = 1.0 / math.sqrt(C)
        gate = dropout_gate(gate, self.dropout, self.training, graph.num_edges, H, query)
        want_alpha = isinstance(return_attention_weights, bool)
        # q_i . (k_j + e_ij) and sum_e p_e (v_j + e_ij): the projected edge features are the op's
        # per-edge key and value terms (one tensor for both; its gradient is the sum of the two).
        e = None if edge_attr is None or self.lin_edge is None else self.lin_edge(edge_attr).view(-1, H, C)
        out, lse = edge_attention(
            query,
            key,
            value,
            graph,
            bias=bias,
            gate=gate,
            edge_key=e,
            edge_value=e,
            scale=scale,
            return_lse=True,
            backend=self.backend,
        )
        # Weights on demand only, recomputed from the saved log-sum-exp (never kept by the op).
        alpha = attention_weights(query, key, graph, lse, bias=bias, edge_key=e, scale=scale) if want_alpha else None
        if not want_alpha:
            return out, None, None
        if input_order and not isinstance(edge_index, Graph):
            if perm is not None:
                alpha = torch.empty_like(alpha).index_copy_(0, perm, alpha)
            return out, edge_index, alpha
        return out, graph.to_edge_index(), alpha

    def _per_edge(
        self,
        x_dst: Tensor,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        edge_index: Any,
        edge_attr: Tensor | None,
        num_src: int,
    ) -> tuple[Tensor, Any, Tensor | None]:
        size = (num_src, x_dst.size(0))
        returned = edge_index
        if isinstance(edge_index, Graph) or self.structure is not None:
            graph, edge_attr, _, input_order, bias, gate = self._resolve_edges(
                x_dst, query, key, edge_index, edge_attr, num_src
            )
            if bias is not None or gate is not None:
                raise ValueError(
                    f"structure {type(self.structure).__name__} returns a per-edge bias / gate, which the per-edge "
                    "message() path (explainers, message hooks, SparseTensor inputs) does not apply"
                )
            if not input_order or isinstance(edge_index, Graph):
                edge_index = returned = graph.to_edge_index()
            if isinstance(returned, Graph):  # pragma: no cover - converted above
                returned = graph.to_edge_index()
        out = self.propagate(edge_index, query=query, key=key, value=value, edge_attr=edge_attr, size=size)
        alpha, self._alpha = self._alpha, None
        if alpha is not None and not isinstance(edge_index, Tensor):
            # SparseTensor adjacency: PyG returns the weights as the adjacency's values.
            returned = edge_index.set_value(alpha, layout="coo")
        return out, returned, alpha

    def message(
        self,
        query_i: Tensor,
        key_j: Tensor,
        value_j: Tensor,
        edge_attr: Tensor | None,
        index: Tensor,
        ptr: Tensor | None,
        size_i: int | None,
    ) -> Tensor:
        """Per-edge messages ``alpha_ij (v_j + e_ij)``: the path explainers and hooks observe."""
        if self.lin_edge is not None and edge_attr is not None:
            e = self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)
            key_j = key_j + e
            value_j = value_j + e
        scores = (query_i * key_j).sum(dim=-1) / math.sqrt(self.out_channels)
        alpha = pyg_softmax(scores, index, ptr, size_i)
        # propagate() returns only the aggregate; the weights are handed to forward() here and
        # cleared there at once.
        self._alpha = alpha
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        return value_j * alpha.unsqueeze(-1)

    def __repr__(self) -> str:
        # PyG's one-line form (its convs print no children), plus what changes the edges attended over.
        extra = ""
        if self.structure is not None:
            text = repr(self.structure)
            if not isinstance(self.structure, torch.nn.Module):  # a function (x_dst, graph) -> Graph
                text = getattr(self.structure, "__qualname__", type(self.structure).__name__)
            elif "\n" in text:
                text = f"{type(self.structure).__name__}(...)"
            extra = f", structure={text}, structure_mode={self.structure_mode!r}"
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads}{extra})"


# ---------------------------------------------------------------------------- the transform
class ToGraph(BaseTransform):
    r"""Store the destination-sorted CSR of ``edge_index`` on a ``Data`` once, for every layer to reuse.

    Sorts ``edge_index`` by destination (stably) and permutes every edge-level attribute
    (``edge_attr``, edge labels, ...) along, then, with ``store=True``, sets
    ``data[attr]`` (default ``data.attn_graph``) to the :class:`graphattn.Graph` whose edge ``e`` is
    column ``e`` of the new ``edge_index``. Call layers with ``conv(x, data.attn_graph, data.edge_attr)``.

    * Single graphs (Cora): ``ToGraph()`` as the dataset transform; the Graph is built once.
    * Mini-batches: use ``ToGraph(store=False)`` as ``pre_transform`` / ``transform`` so each example
      is destination-sorted; PyG's batching keeps that order (block offsets increase), so passing
      ``batch.edge_index`` builds the CSR without sorting, once per batch (the layers of one model
      share it). Or apply ``ToGraph()`` to the collated ``Batch`` to store the Graph on it. A
      ``Graph`` stored on examples would be collated into a list, so do not store before batching.

    ``data.to(device)`` moves the stored Graph along (:meth:`graphattn.Graph.to`).

    Args:
        attr (str, optional): attribute name of the Graph. (default: ``"attn_graph"``)
        store (bool, optional): store the Graph (``True``) or only sort the edges. (default: ``True``)
    """

    def __init__(self, attr: str = GRAPH_ATTR, store: bool = True) -> None:
        if not isinstance(attr, str) or not attr.isidentifier():
            raise ValueError(f"attr must be a valid attribute name, got {attr!r}")
        self.attr = attr
        self.store = store

    def forward(self, data: Data) -> Data:
        if isinstance(data, HeteroData):
            raise TypeError("ToGraph supports homogeneous Data / Batch objects, got HeteroData")
        if data.edge_index is None:
            raise ValueError("data must have an edge_index to build a Graph from")
        num_nodes = data.num_nodes
        edge_index = data.edge_index.as_subclass(Tensor)
        graph, perm = Graph.from_edge_index(edge_index, num_src=num_nodes, num_dst=num_nodes, return_perm=True)
        num_edges = edge_index.size(1)
        for key, value in list(data.items()):
            if key == "edge_index" or not isinstance(value, Tensor):
                continue
            if data.is_edge_attr(key) and value.size(0) == num_edges:
                data[key] = value.index_select(0, perm)
        data.edge_index = edge_index.index_select(1, perm)
        if self.store:
            data[self.attr] = graph
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(attr={self.attr!r}, store={self.store})"
