"""Clustered attention: Roy et al., "Efficient Content-Based Sparse Attention with Routing Transformers" (TACL 2021).

https://arxiv.org/abs/2003.05997 -- queries and keys are routed to ``C`` centroids per head
(online k-means); a query attends to the keys routed to the same centroid. Here:

* **Routing vectors**: ``r = LayerNorm(x)`` over the head dim without scale or shift, for the
  layer's projected queries and keys (the paper's shared query/key routing, Section 4.1).
* **Balanced routing** (the paper's Section 4.2 top-``w`` variant): in every example of length
  ``L``, each centroid takes its ``w = ceil(L / C)`` nearest queries and nearest keys, so every
  cluster window has the same size and ``C·w >= L``. Edges are all
  (query, key) pairs inside each window: ``C·w²`` per head and example, ``~L·w``. With
  ``C ~ sqrt(L)`` that is the paper's ``O(L^1.5)``. No ``L x L`` tensor is formed: the scores
  are ``[H, C, L]``.
* **Centroids** are a buffer ``[H, C, D]`` updated inside ``forward`` when training, by an
  exponential moving average (``decay``, 0.999 by default) of the routing vectors assigned to
  each centroid, queries and keys together (Eq. 9 of the paper). A vector is assigned to its
  nearest centroid. "Nearest" is Euclidean distance everywhere (windows, EMA, commitment), scored
  as ``r·mu - |r|²/2`` or ``r·mu - |mu|²/2``: the averages shrink the centroids unevenly (they start
  on the sphere of radius ``sqrt(D)``), and the largest inner product would favour the longer ones. The buffer
  keeps the module's dtype: in bfloat16 / float16 a step of ``1 - decay`` of a centroid is below
  half its ulp, so the centroids barely move; keep a routed model in float32 while it trains.
* **Commitment loss** (the auxiliary loss, ``commitment`` = 1e-4 by default): the mean squared
  distance of each routing vector to its centroid, which pulls the projections toward the
  clusters; it is the only gradient path into the routing.
* **Local edges**: a window of width ``window`` (symmetric, or causal) is added to every head's
  graph. Softmax semantics (our default): **one softmax over the union** of routed and local
  edges, each edge once (duplicates from overlapping windows are removed). The paper instead
  gives routing and local attention separate heads; set ``window=0`` to get routed edges only.
  A token routed nowhere keeps its local edges; with ``window=0`` it keeps a self loop unless
  ``allow_empty_rows=True``.
* **Causal**: routed edges ``j -> i`` are kept only when ``j <= i`` in true positions. This is a
  filter on edges: which tokens share a cluster window is still decided over the whole example,
  so a later token can move an earlier pair apart and the earlier outputs depend on it (not
  autoregressive; Combiner's causal variants are).

Per-head graphs are folded (node ``h·N + n``, see :mod:`graphattn.structure.heads`). Clusters
never mix examples: routing runs per example of the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_bool, check_float
from ..graph import Graph
from ._adaptive import graph_from_edges, self_attention_ptr
from ._segments import check_int
from .base import Structure, StructureOutput
from .window import window as window_graph

__all__ = ["Routing"]


class Routing(Structure):
    r"""Content-based routing of queries and keys to ``num_clusters`` centroids per head.

    Args:
        num_heads: attention heads ``H`` (one set of centroids each).
        head_dim: head dim ``D`` of the projected queries and keys.
        num_clusters: centroids ``C`` per head; about ``sqrt(L)`` for inputs of length ``L``.
        window: width of the local window added to every head (``0``: routed edges only).
        causal: keep only edges ``j -> i`` with ``j <= i``.
        decay: EMA decay of the centroids.
        commitment: weight of the commitment auxiliary loss.
        allow_empty_rows: with ``window=0``, leave tokens routed nowhere without edges
            instead of giving them a self loop.

    Returns from ``forward``: a :class:`StructureOutput` with a per-head (folded) graph and
    ``aux_loss = commitment · mean ||r - mu_assigned||²``.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        num_clusters: int,
        *,
        window: int = 16,
        causal: bool = False,
        decay: float = 0.999,
        commitment: float = 1e-4,
        allow_empty_rows: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = check_int("num_heads", num_heads, minimum=1)
        self.head_dim = check_int("head_dim", head_dim, minimum=1)
        self.num_clusters = check_int("num_clusters", num_clusters, minimum=1)
        self.window = check_int("window", window, minimum=0)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        commitment = check_float("commitment", commitment, minimum=0.0)
        self.causal, self.decay, self.commitment = check_bool("causal", causal), decay, commitment
        self.allow_empty_rows = allow_empty_rows
        # Layer-normalized vectors have norm sqrt(D): start the centroids on that sphere.
        mu = F.normalize(torch.randn(num_heads, num_clusters, head_dim), dim=-1) * math.sqrt(head_dim)
        self.register_buffer("centroids", mu)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, num_clusters={self.num_clusters}, "
            f"window={self.window}, causal={self.causal}, decay={self.decay}, commitment={self.commitment}"
        )

    def _route(self, r: Tensor, w: int) -> Tensor:
        """Indices ``[H, C, w]`` of the ``w`` tokens (of ``r [L, H, D]``) nearest each centroid:
        the largest ``r·mu - |r|²/2`` (``-|r - mu|²/2`` up to ``|mu|²``, the same for all tokens),
        in float32 at least (the terms cancel: in bfloat16 the ranking slips)."""
        r = r.to(torch.promote_types(r.dtype, torch.float32))
        dots = torch.einsum("lhd,hcd->hcl", r, self.centroids.to(r.dtype))
        return (dots - 0.5 * r.pow(2).sum(-1).T[:, None, :]).topk(w, dim=-1).indices

    def _assign(self, r: Tensor) -> Tensor:
        """The nearest centroid ``[M, H]`` of each vector of ``r [M, H, D]``: the largest
        ``r·mu - |mu|²/2`` (``-|r - mu|²/2`` up to ``|r|²``), in float32 at least."""
        r = r.to(torch.promote_types(r.dtype, torch.float32))
        mu = self.centroids.to(r.dtype)
        return (torch.einsum("mhd,hcd->mhc", r, mu) - 0.5 * mu.pow(2).sum(-1)).argmax(-1)

    @torch.no_grad()
    def _ema_update(self, r: Tensor, assign: Tensor) -> None:
        """Move each centroid toward the mean of the vectors assigned to it (``r [M, H, D]``)."""
        h, c, d = self.centroids.shape
        flat = (torch.arange(h, device=r.device) * c + assign).reshape(-1)  # [M·H] cluster ids
        sums = torch.zeros(h * c, d, dtype=r.dtype, device=r.device).index_add_(0, flat, r.reshape(-1, d))
        counts = torch.bincount(flat, minlength=h * c).to(r.dtype)
        used = counts > 0
        means = sums[used] / counts[used, None]
        mu = self.centroids.view(h * c, d)
        mu[used] = self.decay * mu[used] + (1.0 - self.decay) * means.to(mu.dtype)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        *,
        ptr: Tensor | None = None,
        src_ptr: Tensor | None = None,
        graph: Graph | None = None,
    ) -> StructureOutput:
        n, h, d = q.shape
        ptr = self_attention_ptr("Routing", q, k, ptr, src_ptr, graph, self.num_heads, self.head_dim)
        lengths = (ptr[1:] - ptr[:-1]).tolist()

        r_q = F.layer_norm(q, (d,))
        r_k = F.layer_norm(k, (d,))
        dst_parts, src_parts = [], []
        with torch.no_grad():
            heads = torch.arange(h, device=q.device)[:, None, None, None] * n  # fold offset h·N
            start = 0
            for length in lengths:  # a loop over examples; each step is vectorized over H, C, L
                if length > 0:
                    w = min(length, math.ceil(length / self.num_clusters))
                    iq = self._route(r_q[start : start + length].detach(), w)  # [H, C, w]
                    ik = self._route(r_k[start : start + length].detach(), w)
                    dst = iq[..., :, None].expand(-1, -1, w, w)
                    src = ik[..., None, :].expand(-1, -1, w, w)
                    if self.causal:
                        keep = src <= dst
                        dst, src = dst[keep], src[keep]
                        hh = heads.expand(-1, iq.shape[1], w, w)[keep]
                    else:
                        hh = heads
                    dst_parts.append((dst + start + hh).reshape(-1))
                    src_parts.append((src + start + hh).reshape(-1))
                start += length
            local = self._local_edges(n, ptr)
            if local is not None:
                dst_parts.append(local[1])
                src_parts.append(local[0])
            empty = q.new_zeros(0, dtype=torch.long)
            dst, src = (torch.cat(parts) if parts else empty for parts in (dst_parts, src_parts))
            folded = graph_from_edges(dst, src, n, ptr, num_heads=h)

        # Nearest-centroid assignment, for the commitment loss and the EMA.
        mu = self.centroids.to(q.dtype)
        r_all = torch.cat([r_q, r_k])  # [2N, H, D]
        assign = self._assign(r_all.detach())  # [2N, H]
        nearest = mu[torch.arange(h, device=q.device), assign]  # [2N, H, D]
        aux = self.commitment * (r_all - nearest).pow(2).sum(-1).mean() if r_all.numel() else r_all.sum()
        if self.training and r_all.numel():
            self._ema_update(r_all.detach(), assign)
        return StructureOutput(folded, aux_loss=aux, per_head=True)

    def _local_edges(self, n: int, ptr: Tensor) -> tuple[Tensor, Tensor] | None:
        """Folded ``(src, dst)`` of the local window (or self loops), repeated for every head."""
        h = self.num_heads
        if self.window > 0:
            g = window_graph(None, self.window, causal=self.causal, lengths=ptr[1:] - ptr[:-1])
            src, dst = g.col, g.dst()
        elif not self.allow_empty_rows:
            src = dst = torch.arange(n, device=ptr.device)
        else:
            return None
        off = (torch.arange(h, device=ptr.device) * n)[:, None]
        return (src[None] + off).reshape(-1), (dst[None] + off).reshape(-1)
