"""Learned edges (SAC): Li et al., "Accelerating and Structuring Self-Attention via Sparse Adaptive Connection" (2020).

https://arxiv.org/abs/2003.09833 -- an edge predictor chooses which links attention runs over,
and is trained with the task. Here:

* **Candidates** (our change; the paper scores all ``L²`` pairs with an LSTM): each destination
  scores a candidate set of size ``O(c)``: its local window, ``random`` uniform sources, and
  ``projection`` neighbours in each of ``rounds`` random directions of the scorer's own space:
  the unit vectors ``A q̄_i / |A q̄_i|`` and ``B k̄_j / |B k̄_j|`` are projected onto a fixed
  random direction and sorted per example, and the keys ranked next to a query are its
  candidates (angular LSH by random projections, one sort per round). Because they live in
  the scorer's space, the candidates are an approximate search for the sources the predictor
  itself scores highest among all ``L``, and they follow it as it learns, as the paper's
  all-pairs scorer would. Candidate cost is ``O(N·c + rounds·N log N)``; no ``N x N`` tensor
  is formed.
* **Scores** ``s_ij = <A q̄_i, B k̄_j> / sqrt(d)`` with ``q̄``, ``k̄`` the head-averaged projected
  queries and keys, and ``A``, ``B`` learned; softmax over each destination's candidates.
* **Choice**: ``edges_per_node`` sources per destination (``alpha`` in the paper, ``alpha·N``
  edges per layer; one graph shared by all heads). Training samples them without replacement by
  Gumbel-top-k (Kool et al. 2019); evaluation takes the top-scoring ones (argmax, deterministic:
  the random candidates are then drawn from a fixed seed).
* **Training signal**, two modes:

  - ``"reinforce"`` (the paper's): the graph is discrete; :meth:`SAC.policy_loss` turns a
    reward (the negative task loss, passed by the training loop) into the REINFORCE surrogate
    ``-sum_b (r_b - baseline) · log p(chosen edges of example b)`` with a moving-average
    baseline (``log p`` of a Gumbel-top-k draw is approximated by the sum of the chosen edges'
    log softmax probabilities). The reward is one per example of the batch (``r_b``, its own
    loss: each example's graph is credited with its own outcome) or one for the whole batch.
    :func:`policy_losses` collects it from every SAC module in a model.
  - ``"straight_through"``: each chosen edge carries a ``gate`` whose value is 1 and whose
    gradient (clipped to [-1, 1], as SBM-Transformer does) flows into its softmax probability,
    so the predictor trains by backprop.

  In both modes the auxiliary loss is ``-entropy_weight`` times the mean entropy of the
  candidate softmax, a bonus against collapse onto a few edges.
* **Input edges**: when the layer is given a graph (graph data), ``keep_input=True`` keeps its
  edges and adds the learned ones on top, as the paper does on Cora.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._validation import check_float, check_generator
from ..graph import Graph
from ._adaptive import edge_dot, self_attention_ptr, straight_through_ones
from ._segments import check_int, expand_rows, filter_edges, graph_from_rows
from .base import Structure, StructureOutput
from .batch import example_ids
from .random import random as random_graph
from .setops import union
from .window import window as window_graph

__all__ = ["SAC", "policy_losses"]

_MODES = ("reinforce", "straight_through")


def _segment_top(scores: Tensor, rowptr: Tensor, k: int) -> Tensor:
    """Mask ``[E]`` of the ``k`` highest ``scores`` within each destination's edges (CSR ``rowptr``).

    One ``topk`` over the rows padded to the widest one (``[N, max degree]``, ``-inf`` pads),
    instead of sorting all ``E`` scores: the candidate rows it serves are short and of bounded
    width (window + random + projection candidates).
    """
    deg = rowptr[1:] - rowptr[:-1]
    width = int(deg.max()) if deg.numel() else 0
    keep = torch.zeros_like(scores, dtype=torch.bool)
    if width == 0:
        return keep
    _, row, slot = expand_rows(deg)
    padded = scores.new_full((deg.numel(), width), float("-inf"))
    padded[row, slot] = scores
    slots = torch.topk(padded, min(k, width), dim=1, sorted=False).indices
    keep[(rowptr[:-1, None] + slots)[slots < deg[:, None]]] = True
    return keep


def _segment_log_softmax(scores: Tensor, dst: Tensor, num_dst: int) -> Tensor:
    """Log softmax of ``scores [E]`` over the edges of each destination."""
    row_max = torch.full((num_dst,), float("-inf"), dtype=scores.dtype, device=scores.device)
    row_max = row_max.scatter_reduce(0, dst, scores.detach(), "amax")
    shifted = scores - row_max[dst]
    denom = torch.zeros(num_dst, dtype=scores.dtype, device=scores.device).index_add(0, dst, shifted.exp())
    return shifted - denom.log()[dst]


class SAC(Structure):
    r"""A learned edge predictor choosing ``edges_per_node`` sources per destination.

    Args:
        num_heads: attention heads ``H`` of the layer (the graph is shared by all heads).
        head_dim: head dim ``D`` of the projected queries and keys.
        edges_per_node: sources chosen per destination (``alpha``).
        window: local candidates: sources with ``|i - j| < window``.
        random: uniformly random candidates per destination.
        projection: candidates nearest in rank along each random direction (see the module docstring).
        rounds: random directions for the projection candidates.
        hidden: width of the scorer projections ``A``, ``B`` (default ``D``).
        mode: ``"reinforce"`` or ``"straight_through"`` (see the module docstring).
        entropy_weight: weight of the entropy bonus (the auxiliary loss is ``-weight · entropy``).
        baseline_decay: decay of the REINFORCE moving-average baseline.
        keep_input: keep the edges of a graph given to the layer and add learned ones on top.
        generator: a ``torch.Generator`` for reproducible candidates and samples.

    .. math::
        s_{ij} = \frac{\langle A\bar q_i, B\bar k_j\rangle}{\sqrt{d}}, \qquad
        \pi(j \mid i) = \operatorname{softmax}_{j \in \mathcal{C}(i)} s_{ij}
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        edges_per_node: int = 8,
        *,
        window: int = 4,
        random: int = 16,
        projection: int = 16,
        rounds: int = 4,
        hidden: int | None = None,
        mode: str = "reinforce",
        entropy_weight: float = 1e-3,
        baseline_decay: float = 0.9,
        keep_input: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = check_int("num_heads", num_heads, minimum=1)
        self.head_dim = check_int("head_dim", head_dim, minimum=1)
        self.edges_per_node = check_int("edges_per_node", edges_per_node, minimum=1)
        self.window = check_int("window", window, minimum=1)
        self.random = check_int("random", random, minimum=0)
        self.projection = check_int("projection", projection, minimum=0)
        self.rounds = check_int("rounds", rounds, minimum=1)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
        hidden = head_dim if hidden is None else check_int("hidden", hidden, minimum=1)
        self.mode, self.baseline_decay = mode, baseline_decay
        self.entropy_weight = check_float("entropy_weight", entropy_weight, minimum=0.0)
        self.keep_input, self.generator = keep_input, check_generator("generator", generator)
        self.score_q = nn.Linear(head_dim, hidden, bias=False)
        self.score_k = nn.Linear(head_dim, hidden, bias=False)
        # Fixed random directions in the scorer's space for the projection candidates (not learned).
        self.register_buffer("directions", torch.nn.functional.normalize(torch.randn(rounds, hidden), dim=1))
        self.register_buffer("baseline", torch.zeros(()))
        self.register_buffer("baseline_ready", torch.zeros((), dtype=torch.bool))
        self._log_prob: Tensor | None = None

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, edges_per_node={self.edges_per_node}, "
            f"window={self.window}, random={self.random}, projection={self.projection}, rounds={self.rounds}, "
            f"mode={self.mode!r}"
        )

    # ------------------------------------------------------------------ candidates
    def _projection_candidates(self, sq: Tensor, sk: Tensor, ptr: Tensor) -> list[Graph]:
        """Per direction, a graph: each query's ``projection`` keys of its example nearest to it in
        rank. ``sq``, ``sk``: the scorer's embeddings of the head-averaged queries and keys."""
        n = sq.shape[0]
        lengths = ptr[1:] - ptr[:-1]
        example = example_ids(ptr, n)
        qs = torch.nn.functional.normalize(sq, dim=1) @ self.directions.T  # [N, rounds] in [-1, 1]
        ks = torch.nn.functional.normalize(sk, dim=1) @ self.directions.T
        p = min(self.projection, int(lengths.max()) if lengths.numel() else 0)
        deg = torch.minimum(torch.full((n,), p, dtype=torch.long, device=sq.device), lengths[example])
        _, row, slot = expand_rows(deg)
        lo, hi = ptr[example[row]], ptr[example[row] + 1]  # the example's key ranks are [lo, hi)
        offset = 4.0 * example.double()  # keeps examples apart in one sort
        graphs = []
        for r in range(self.rounds):
            kv, qv = ks[:, r].double() + offset, qs[:, r].double() + offset
            order = torch.argsort(kv)  # keys sorted, example-major
            rank = torch.searchsorted(kv[order], qv)  # where each query falls among the keys
            start = torch.minimum(torch.clamp(rank[row] - deg[row] // 2, min=lo), hi - deg[row])
            graphs.append(graph_from_rows(row, order[start + slot], n, n, ptr=ptr))
        return graphs

    def candidates(self, qb: Tensor, kb: Tensor, ptr: Tensor) -> Graph:
        """The candidate graph of head-averaged queries / keys ``qb``, ``kb`` ``[N, D]``: local
        window, random and projection neighbours (each edge once)."""
        with torch.no_grad():
            return self._candidates(self.score_q(qb), self.score_k(kb), ptr)

    def _candidates(self, sq: Tensor, sk: Tensor, ptr: Tensor) -> Graph:
        lengths = ptr[1:] - ptr[:-1]
        parts = [window_graph(None, self.window, lengths=lengths)]
        if self.random > 0:
            # In evaluation the random candidates come from a fixed seed, so that the top-scoring
            # pick is deterministic as documented (a fresh draw each call changed eval outputs).
            gen = self.generator if self.training else torch.Generator(lengths.device).manual_seed(0)
            parts.append(random_graph(None, self.random, lengths=lengths, generator=gen))
        if self.projection > 0:
            parts.extend(self._projection_candidates(sq, sk, ptr))
        return union(*parts)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        q: Tensor,
        k: Tensor,
        *,
        ptr: Tensor | None = None,
        src_ptr: Tensor | None = None,
        graph: Graph | None = None,
    ) -> StructureOutput:
        n = q.shape[0]
        ptr = self_attention_ptr("SAC", q, k, ptr, src_ptr, graph, self.num_heads, self.head_dim)
        # The scorer's embeddings of the head-averaged q, k ([N, D]: one graph for all heads) rank
        # the candidates and, detached, place them (the projection candidates).
        sq, sk = self.score_q(q.mean(1)), self.score_k(k.mean(1))
        with torch.no_grad():
            cand = self._candidates(sq.detach(), sk.detach(), ptr)
        dst = cand.dst()
        scores = edge_dot(sq, sk, cand) / math.sqrt(self.score_q.out_features)
        log_p = _segment_log_softmax(scores, dst, n)
        entropy = -(log_p.exp() * log_p).sum() / max(n, 1)
        with torch.no_grad():
            pick = scores.detach()
            if self.training:  # Gumbel-top-k: k samples without replacement from the softmax
                u = torch.rand(pick.shape, generator=self.generator, device=pick.device, dtype=pick.dtype)
                pick = pick - torch.log(-torch.log(u.clamp_min(1e-20)))
            chosen = _segment_top(pick, cand.rowptr, self.edges_per_node)
        gate = None
        if self.training and self.mode == "reinforce":
            # Per example: the sum of its chosen edges' log-probabilities (scaled by 1 / N, so the
            # batch's total is the mean over destinations whatever the batch size).
            example = example_ids(ptr, n)[dst[chosen]]
            self._log_prob = log_p.new_zeros(ptr.numel() - 1).index_add(0, example, log_p[chosen]) / max(n, 1)
        elif self.mode == "straight_through":
            gate = straight_through_ones(log_p[chosen].exp())[:, None].expand(-1, self.num_heads)
        learned = filter_edges(cand, chosen)
        if self.keep_input and graph is not None:
            learned, gate = self._add_input_edges(learned, graph, gate)
        return StructureOutput(learned, gate=gate, aux_loss=-self.entropy_weight * entropy)

    def _add_input_edges(self, learned: Graph, graph: Graph, gate: Tensor | None) -> tuple[Graph, Tensor | None]:
        """Union of the input graph's edges (gate 1, no gradient) and the learned ones."""
        if (graph.num_dst, graph.num_src) != (learned.num_dst, learned.num_src):
            raise ValueError(
                f"the input graph must be over the same {learned.num_dst} nodes to keep its edges, got "
                f"(num_dst, num_src) = ({graph.num_dst}, {graph.num_src})"
            )
        n = learned.num_dst
        keys = torch.cat([graph.dst() * n + graph.col, learned.dst() * n + learned.col])
        unique, inverse = torch.unique(keys, return_inverse=True)
        merged = graph_from_rows(unique // max(n, 1), unique % max(n, 1), n, n, ptr=learned.ptr)
        if gate is None:
            return merged, None
        # An edge both given and learned takes the learned gate (same value 1, with gradient).
        merged_gate = gate.new_ones(unique.numel(), gate.shape[1])
        merged_gate = merged_gate.index_copy(0, inverse[graph.num_edges :], gate)
        return merged, merged_gate

    # ------------------------------------------------------------------ REINFORCE
    def policy_loss(self, reward: float | Tensor) -> Tensor:
        r"""REINFORCE surrogate for the last training ``forward``; add it to the task loss.

        ``reward``: one per example of that forward's batch (``[B]``, in the order of its
        ``ptr``; typically the negative per-example task losses) or a scalar for the whole batch
        (``-task_loss.detach()``). The moving-average baseline follows the batch's mean reward.
        Clears the stored log-probabilities. In ``straight_through`` mode, or when no training
        forward happened since the last call, returns 0.

        .. math::
            \mathcal{L} = -\sum_b (r_b - \bar r)\, \frac{1}{N} \sum_{(i, j) \in E_b} \log \pi(j \mid i)

        with :math:`\bar r` the baseline, :math:`E_b` the chosen edges of example :math:`b` and
        :math:`N` the destinations of the whole batch.
        """
        if self._log_prob is None:
            return self.baseline.new_zeros(())
        reward = torch.as_tensor(reward, dtype=self.baseline.dtype, device=self.baseline.device).detach()
        examples = self._log_prob.numel()
        if reward.dim() > 1 or (reward.dim() == 1 and reward.numel() != examples):
            raise ValueError(
                f"reward must be a scalar or one value per example ([{examples}] for the last forward), "
                f"got shape {list(reward.shape)}"
            )
        if not bool(self.baseline_ready):
            self.baseline.copy_(reward.mean())
            self.baseline_ready.fill_(True)
        advantage = reward - self.baseline
        loss = -(advantage * self._log_prob).sum()
        self.baseline.mul_(self.baseline_decay).add_((1 - self.baseline_decay) * reward.mean())
        self._log_prob = None
        return loss


def policy_losses(model: nn.Module, reward: float | Tensor) -> Tensor:
    """The sum of :meth:`SAC.policy_loss` over every :class:`SAC` in ``model`` (0 if none);
    ``reward`` as there (a scalar, or one per example)."""
    losses = [m.policy_loss(reward) for m in model.modules() if isinstance(m, SAC)]
    if not losses:
        return torch.zeros(())
    return torch.stack(losses).sum()
