"""Estimated attention: Lee et al., "SEA: Sparse Linear Attention with Estimated Attention Mask" (ICLR 2024).

https://arxiv.org/abs/2310.01777 -- estimate each query's attention row cheaply with a linear
(kernelized) attention, keep the ``k`` most promising keys per query, and run exact sparse
attention over the kept (query, key) pairs with the fused op. Here, per head:

* **Estimator**: a learned per-head linear map (initialized to the identity) followed by
  Performer positive random features (Choromanski et al. 2021, "Rethinking Attention with
  Performers", https://arxiv.org/abs/2009.14794): ``phi(x) = exp(W x - |x|²/2) / sqrt(r)``
  with ``r`` fixed Gaussian directions, so ``phi(q)·phi(k) ≈ exp(scale · q·k)`` in expectation.
* **Compression to a fixed width**: the keys of an example are grouped into ``width`` bins of
  consecutive positions; the estimated attention mass of a bin is ``phi(q_i) · sum_{j in bin}
  phi(k_j)``. This is the ``[N, width]`` compressed estimate (SEA's compressed mask, without
  the paper's learned CNN decoder): ``O(N·width·r)``, no ``N x N`` tensor.
* **Top-k**: a beam search down a tree of key bins finds each query's candidates: the
  ``width`` coarse bins are scored (the compressed estimate), the best split into 4 children
  each, every child scored, the best ``oversample · k`` kept, down to single keys
  (``O(k log L)`` bins per query, so the cost stays near-linear in ``L``); the candidates are
  re-scored one by one with the estimator and the top ``k`` kept (``k >= L`` keeps every key:
  exact full attention). ``budget="shared"`` instead spends ``k · L`` edges per head and
  example on the highest-scoring (query, key) pairs of the candidate set, so some queries get
  more keys than others. ``k`` is an attribute and can be changed at inference time.
* **Distillation** (:func:`graphattn.structure.sea_distill.distill`): the estimator is trained
  against a dense teacher's attention rows (KL + MSE on the compressed rows) without forming
  the teacher's ``N x N`` matrix (query chunks).

The graph is per head (folded). Selection runs under ``no_grad``; the estimator's parameters
learn only through distillation (:meth:`SEA.estimate_bins` is differentiable).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._alloc import large_empty
from .._validation import check_float
from ..graph import Graph
from ._adaptive import graph_from_edges, self_attention_ptr
from ._segments import check_int
from .base import Structure, StructureOutput

__all__ = ["SEA"]

_BUDGETS = ("per_query", "shared")
_SPLIT = 4  # children per bin in the refinement


class SEA(Structure):
    r"""Keep the ``k`` keys per query that a linear-attention estimate ranks highest.

    Args:
        num_heads: attention heads ``H``.
        head_dim: head dim ``D``.
        k: keys kept per query (on average, with ``budget="shared"``).
        features: random features ``r`` of the estimator.
        width: bins of the compressed estimate per example.
        oversample: candidate keys per kept key in the re-scoring step.
        budget: ``"per_query"`` or ``"shared"`` (see the module docstring).
        scale: logit scale the estimate approximates (default ``D ** -0.5``, as the op).
        seed: seed of the random feature directions.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        k: int = 64,
        *,
        features: int = 64,
        width: int = 64,
        oversample: int = 2,
        budget: str = "per_query",
        scale: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_heads = check_int("num_heads", num_heads, minimum=1)
        self.head_dim = check_int("head_dim", head_dim, minimum=1)
        self.k = check_int("k", k, minimum=1)
        self.width = check_int("width", width, minimum=1)
        self.oversample = check_int("oversample", oversample, minimum=1)
        check_int("features", features, minimum=1)
        if budget not in _BUDGETS:
            raise ValueError(f"budget must be one of {_BUDGETS}, got {budget!r}")
        self.budget = budget
        self.scale = head_dim**-0.5 if scale is None else check_float("scale", scale, positive=True)
        self.proj = nn.Parameter(torch.eye(head_dim).repeat(num_heads, 1, 1))  # [H, D, D]
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("omega", torch.randn(num_heads, features, head_dim, generator=gen))

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, k={self.k}, width={self.width}, "
            f"features={self.omega.shape[1]}, budget={self.budget!r}"
        )

    # ------------------------------------------------------------------ the estimator
    def log_features(self, x: Tensor) -> Tensor:
        """``log phi(x)``: ``[N, H, r]`` for ``x [N, H, D]`` (the scale split between q and k)."""
        x = torch.einsum("nhd,hed->nhe", x, self.proj) * math.sqrt(self.scale)
        r = self.omega.shape[1]
        return (
            torch.einsum("nhd,hrd->nhr", x, self.omega.to(x.dtype))
            - 0.5 * (x * x).sum(-1, keepdim=True)
            - 0.5 * math.log(r)
        )

    @staticmethod
    def _bins(length: int, width: int) -> tuple[int, int]:
        """``(number of bins, bin size)`` for an example of ``length`` keys."""
        size = max(1, math.ceil(length / width))
        return math.ceil(length / size) if length else 0, size

    def estimate_bins(self, q: Tensor, k: Tensor) -> Tensor:
        """Compressed log-estimate ``[L, H, T]`` of one example's attention mass per key bin.

        ``log sum_{j in bin} phi(q_i)·phi(k_j)`` in a numerically safe form: features are shifted
        by their maxima before the matrix product and the shifts added back.
        """
        length = q.shape[0]
        t, size = self._bins(length, self.width)
        lq, lk = self.log_features(q), self.log_features(k)  # [L, H, r]
        pad = t * size - length
        lk = torch.cat([lk, lk.new_full((pad, *lk.shape[1:]), float("-inf"))]) if pad else lk
        return _log_mass(lq, torch.logsumexp(lk.reshape(t, size, *lk.shape[1:]), dim=1))

    @staticmethod
    @torch.no_grad()
    def _gather_scores(lq: Tensor, lk: Tensor, idx: Tensor, max_elements: int = 2**24) -> Tensor:
        """``log phi(q_i)·(sum of phi over item idx)`` for ``idx [L, H, C]`` rows of ``lk [T, H, r]``.

        ``lk`` holds log-features of keys, or log-sums of them over bins. Computed as
        :func:`_log_mass` does (shifted exponentials, one dot product per pair), reading the
        items' rows with one ``index_select`` per query chunk: each chunk holds ``[c, H, C, r]``
        features, ``c`` keeping that under ``max_elements``. Selection only: no gradient.
        """
        length, h, c = idx.shape
        t, r = lk.shape[0], lq.shape[-1]
        eq, mq, ek, mk = _shifted_exp(lq, lk)
        ek = ek.transpose(0, 1).reshape(h * t, r)  # row h·T + item
        shift = torch.arange(h, device=lq.device)[None, :, None] * t
        rows = max(1, max_elements // max(1, h * c * r))
        out = []
        for a in range(0, length, rows):  # a loop over query chunks, bounded memory
            b = min(length, a + rows)
            flat = (idx[a:b] + shift).reshape(-1)
            items = torch.index_select(
                ek, 0, flat, out=large_empty((flat.numel(), r), dtype=ek.dtype, device=ek.device)
            )
            items = items.view(b - a, h, c, r)
            mass = torch.einsum("ahr,ahcr->ahc", eq[a:b], items)
            out.append(mass.clamp_min(1e-30).log() + mq[a:b] + mk)
        return torch.cat(out)

    def _levels(self, length: int) -> tuple[int, int, int]:
        """``(coarse bins, coarse bin size, levels)`` of the bin tree over ``length`` keys."""
        t, size = self._bins(length, self.width)
        if size <= 1:
            return t, size, 0
        levels = math.ceil(math.log(size, _SPLIT) - 1e-9)  # bin sizes SPLIT^(levels - l), nested exactly
        size = _SPLIT**levels
        return math.ceil(length / size), size, levels

    def _beam_items(self, length: int, kk: int) -> int:
        """Items (bins and keys) one query scores in the beam search, re-scoring included."""
        t, _, levels = self._levels(length)
        budget = self.oversample * kk
        return t + levels * budget * _SPLIT + budget

    def _candidate_keys(self, lq: Tensor, lk: Tensor, kk: int) -> Tensor:
        """``[L, H, C]`` candidate key positions per query (``>= L``: padding, not a key).

        A beam search down a tree of key bins: the ``width`` coarse bins are all scored (their
        keys' summed features against the query's), the best ones are split into ``_SPLIT``
        children each, every child is scored, and the best ``B = oversample · kk`` survive, down
        to single keys, which are the candidates. A query scores ``width + levels · B · _SPLIT``
        bins, ``levels = O(log(L / width))``: ``O(L · (width + k log L) · r)`` per head. (Keeping
        whole coarse bins instead would re-score ``L / width`` keys per query: quadratic in
        ``L``.) On random inputs at ``L = 1024`` (``k = 16``, ``B = 32``) the candidates hold
        99.9% of the estimator's own top-16 keys; the 2 best bins of 16 keys held 16%.
        """
        length = lq.shape[0]
        budget = self.oversample * kk
        t, size, levels = self._levels(length)
        pad = t * size - length
        sums = [torch.cat([lk, lk.new_full((pad, *lk.shape[1:]), float("-inf"))]) if pad else lk]  # single keys
        for _ in range(levels):
            sums.append(torch.logsumexp(sums[-1].reshape(-1, _SPLIT, *lk.shape[1:]), dim=1))
        sums.reverse()  # sums[l]: [T_l, H, r], sums[0] the coarsest (t bins of ``size``)
        est = _log_mass(lq, sums[0])  # [L, H, t]: every coarse bin
        keep = est.topk(min(t, budget), dim=-1).indices
        for level in range(1, levels + 1):
            children = (keep[..., None] * _SPLIT + torch.arange(_SPLIT, device=lq.device)).flatten(-2)
            score = self._gather_scores(lq, sums[level], children)
            keep = children.gather(-1, score.topk(min(budget, children.shape[-1]), dim=-1).indices)
        return keep

    def _select(self, q: Tensor, k: Tensor, kk: int) -> tuple[Tensor, Tensor, Tensor]:
        """Kept ``(head, dst, src)`` of one example (positions local to the example)."""
        length, h = q.shape[:2]
        if kk >= length:  # every key: exact full attention
            d = torch.arange(length, device=q.device).repeat_interleave(length).repeat(h)
            s = torch.arange(length, device=q.device).repeat(length * h)
            return torch.arange(h, device=q.device).repeat_interleave(length * length), d, s
        lq, lk = self.log_features(q), self.log_features(k)  # [L, H, r]
        if length <= self._beam_items(length, kk):
            # The beam would score more items than there are keys (k is a large share of L):
            # score every key instead, by matrix products in query chunks.
            cand = torch.arange(length, device=q.device).expand(length, h, length)
            rows = max(1, 2**24 // max(1, h * length))
            score = torch.cat([_log_mass(lq[a : a + rows], lk) for a in range(0, length, rows)])  # [L, H, L]
        else:
            cand = self._candidate_keys(lq, lk, kk)
            ok = cand < length
            cand = cand.clamp(max=length - 1)
            score = self._gather_scores(lq, lk, cand).masked_fill(~ok, float("-inf"))  # [L, H, C]
        if self.budget == "per_query":
            keep = score.topk(min(kk, score.shape[-1]), dim=-1)
            idx, valid = keep.indices, torch.isfinite(keep.values)
            src = torch.gather(cand, -1, idx)
            dst = torch.arange(length, device=q.device)[:, None, None].expand_as(src)
            head = torch.arange(h, device=q.device)[None, :, None].expand_as(src)
            return head[valid], dst[valid], src[valid]
        # Shared budget: k·L best (query, key) pairs per head.
        flat = score.transpose(0, 1).reshape(h, -1)  # [H, L·C]
        keep = flat.topk(min(kk * length, flat.shape[1]), dim=-1)
        valid = torch.isfinite(keep.values)
        c = score.shape[-1]
        dst = keep.indices // c
        src = cand.transpose(0, 1).reshape(h, -1).gather(1, keep.indices)
        head = torch.arange(h, device=q.device)[:, None].expand_as(dst)
        return head[valid], dst[valid], src[valid]

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        *,
        ptr: Tensor | None = None,
        src_ptr: Tensor | None = None,
        graph: Graph | None = None,
    ) -> StructureOutput:
        n, h = q.shape[:2]
        ptr = self_attention_ptr("SEA", q, k, ptr, src_ptr, graph, self.num_heads, self.head_dim)
        heads, dsts, srcs = [], [], []
        with torch.no_grad():
            for start, end in zip(ptr[:-1].tolist(), ptr[1:].tolist(), strict=True):  # per example
                if end > start:
                    hd, d, s = self._select(q[start:end].detach(), k[start:end].detach(), self.k)
                    heads.append(hd)
                    dsts.append(hd * n + d + start)
                    srcs.append(hd * n + s + start)
            empty = torch.zeros(0, dtype=torch.long, device=q.device)
            dst = torch.cat(dsts) if dsts else empty
            src = torch.cat(srcs) if srcs else empty
            g = graph_from_edges(dst, src, n, ptr, num_heads=h)
        return StructureOutput(g, per_head=True)

    @torch.no_grad()
    def estimated_attention(self, q: Tensor, k: Tensor, *, ptr: Tensor | None = None) -> tuple[Graph, Tensor]:
        """The sparse estimate: the kept edges (folded per head) and their estimated weights ``[E]``.

        Weights are the estimator's softmax over each query's kept keys; the exact weights of
        the same edges come from :func:`graphattn.ops.attention_weights`.
        """
        g = self(q, k, ptr=ptr).graph
        n = q.shape[0]
        dst, src = g.dst(), g.col
        head, i, j = dst // n, dst % n, src % n
        lq, lk = self.log_features(q), self.log_features(k)
        s = torch.logsumexp(lq[i, head] + lk[j, head], -1)
        row_max = torch.full((g.num_dst,), float("-inf"), dtype=s.dtype, device=s.device).scatter_reduce(
            0, dst, s, "amax"
        )
        e = (s - row_max[dst]).exp()
        denom = torch.zeros(g.num_dst, dtype=s.dtype, device=s.device).index_add(0, dst, e)
        return g, e / denom[dst]


def _log_mass(lq: Tensor, kb: Tensor) -> Tensor:
    """``log sum_r exp(lq[i, h, r] + kb[t, h, r])``: ``[L, H, T]`` from ``[L, H, r]`` and ``[T, H, r]``.

    One matrix product in a numerically safe form: features are shifted by their maxima (per
    query; per head for the bins) and the shifts added back.
    """
    eq, mq, ek, mk = _shifted_exp(lq, kb)
    mass = torch.einsum("lhr,thr->lht", eq, ek)
    return mass.clamp_min(1e-30).log() + mq + mk


def _shifted_exp(lq: Tensor, lk: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(exp(lq - mq), mq, exp(lk - mk), mk)``: shifts per query and per head (over items and features)."""
    mq = lq.amax(-1, keepdim=True)
    mk = lk.amax(0, keepdim=True).amax(-1, keepdim=True).clamp_min(torch.finfo(lk.dtype).min)
    return (lq - mq).exp(), mq, (lk - mk).exp(), mk


# ---------------------------------------------------------------------- distillation
def _dense_qkv(teacher: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``q, k, v [N, H, D]`` of a teacher with ``nn.MultiheadAttention``'s packed projection."""
    w, b = teacher.in_proj_weight, teacher.in_proj_bias
    if w is None:
        raise TypeError("the teacher must use a packed in_proj_weight (kdim == vdim == embed_dim)")
    h = teacher.num_heads
    q, k, v = torch.nn.functional.linear(x, w, b).chunk(3, dim=-1)
    return q.reshape(x.shape[0], h, -1), k.reshape(x.shape[0], h, -1), v.reshape(x.shape[0], h, -1)


def teacher_rows(teacher: nn.Module, x: Tensor, sea: SEA, *, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """The teacher's attention compressed to SEA's bins ``[L, H, T]`` and its output ``[L, E]``, for one example.

    Rows are computed ``chunk`` queries at a time, so at most ``chunk x L`` weights exist at once.
    """
    q, k, v = _dense_qkv(teacher, x)
    length = x.shape[0]
    t, size = sea._bins(length, sea.width)
    scale = q.shape[-1] ** -0.5
    bins, outs = [], []
    for a in range(0, length, chunk):  # query chunks: never the full L x L matrix
        p = torch.softmax(torch.einsum("chd,lhd->chl", q[a : a + chunk], k) * scale, -1)
        pad = t * size - length
        pp = torch.nn.functional.pad(p, (0, pad)) if pad else p
        bins.append(pp.reshape(*p.shape[:2], t, size).sum(-1))
        outs.append(torch.einsum("chl,lhd->chd", p, v).reshape(p.shape[0], -1))
    return torch.cat(bins), teacher.out_proj(torch.cat(outs))


def distill(
    student: nn.Module,
    teacher: nn.Module,
    examples: list[Tensor],
    *,
    steps: int = 200,
    lr: float = 1e-2,
    output_weight: float = 0.0,
    chunk: int = 256,
) -> list[float]:
    """Train ``student``'s SEA estimator against a frozen dense ``teacher``; returns the losses.

    Args:
        student: a :class:`graphattn.nn.GraphAttention` with ``structure=SEA(...)`` (for example
            from :func:`to_sea`).
        teacher: ``nn.MultiheadAttention`` or a :class:`~graphattn.nn.GraphAttention` over full
            attention, with a packed ``in_proj_weight``; never updated.
        examples: node features ``[L, embed_dim]``, one tensor per example (cycled over).
        steps: optimizer steps (one example each).
        lr: Adam learning rate.
        output_weight: weight of the MSE between the student's sparse output and the teacher's.
            The selection is not differentiable, so this term trains the student's projections
            (``in_proj``/``out_proj``), which then drift from the teacher's: ``0`` (default)
            trains the estimator alone and leaves the layer's weights equal to the teacher's.
            (Measured on the MNIST experiment of ``benchmarks/structures/sea_distillation.py``:
            with weight 1 and this learning rate, test accuracy fell from 43% to 34% while the
            estimator's top-k recall rose from 0.77 to 0.92.)
        chunk: query chunk of the teacher's rows.

    Loss per step: ``KL(teacher bins || estimate) + MSE(bins) + output_weight · MSE(output)``, where
    the estimate is ``softmax`` of :meth:`SEA.estimate_bins` over the bins.
    """
    sea = getattr(student, "structure", None)
    if not isinstance(sea, SEA):
        raise TypeError(f"student.structure must be an SEA, got {type(sea).__name__}")
    if len(examples) == 0:
        raise ValueError("examples must hold at least one [L, embed_dim] tensor")
    teacher.requires_grad_(False)
    params = student.parameters() if output_weight else sea.parameters()
    opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=lr)
    losses = []
    for step in range(steps):
        x = examples[step % len(examples)]
        with torch.no_grad():
            target_bins, target_out = teacher_rows(teacher, x, sea, chunk=chunk)
        q, k, _ = _dense_qkv(student, x)
        log_est = torch.log_softmax(sea.estimate_bins(q, k), -1)
        kl = torch.nn.functional.kl_div(log_est, target_bins, reduction="batchmean", log_target=False)
        mse = (log_est.exp() - target_bins).pow(2).mean()
        loss = kl + mse
        if output_weight:
            loss = loss + output_weight * (student(x).output - target_out).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def to_sea(teacher: nn.Module, k: int, **sea_kwargs) -> nn.Module:
    """A :class:`graphattn.nn.GraphAttention` with the teacher's weights and an :class:`SEA` structure."""
    from ..nn import GraphAttention

    e, h = teacher.embed_dim, teacher.num_heads
    student = GraphAttention(e, h, structure=SEA(h, e // h, k, **sea_kwargs), bias=teacher.in_proj_bias is not None)
    own = {name: t for name, t in teacher.state_dict().items() if not name.startswith("structure.")}
    missing, unexpected = student.load_state_dict(own, strict=False)
    if unexpected or any(not m.startswith("structure.") for m in missing):
        raise ValueError(f"teacher weights do not fit: missing {missing}, unexpected {unexpected}")
    return student


@torch.no_grad()
def topk_recall(student: nn.Module, teacher: nn.Module, x: Tensor, k: int, *, chunk: int = 256) -> float:
    """Mean fraction of each query's true top-``k`` teacher keys that the student's SEA keeps."""
    sea = student.structure
    q, kk, _ = _dense_qkv(teacher, x)
    qs, ks, _ = _dense_qkv(student, x)
    g = sea(qs, ks).graph
    length, h = x.shape[0], q.shape[1]
    dst = g.dst()
    hits = 0.0
    for a in range(0, length, chunk):  # query chunks: at most chunk x L at once
        b = min(a + chunk, length)
        top = torch.einsum("chd,lhd->hcl", q[a:b], kk).topk(min(k, length), -1).indices  # [H, c, k]
        for hd in range(h):  # a loop over heads
            lo, hi = int(g.rowptr[hd * length + a]), int(g.rowptr[hd * length + b])  # this chunk's edges
            mask = torch.zeros(b - a, length, dtype=torch.bool, device=top.device)
            mask[dst[lo:hi] - hd * length - a, g.col[lo:hi] - hd * length] = True
            hits += float(mask.gather(1, top[hd]).sum())
    return hits / (length * h * min(k, length))
