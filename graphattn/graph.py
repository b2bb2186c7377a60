"""The one graph structure of graphattn: a destination-sorted edge list (CSR).

Convention (PyG's): an edge ``j -> i`` carries a message from source ``j`` to
destination ``i``; destination ``i`` attends over its in-edges. Edges are grouped
by destination, so the in-edges of ``i`` are ``col[rowptr[i]:rowptr[i + 1]]`` and an
edge's id is its position in ``col``. Sources and destinations may be different
node sets (``num_src != num_dst``): that is how cross-attention, global tokens and
summary nodes are expressed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._alloc import large_empty
from ._keys import stable_argsort
from ._validation import check_int, is_integer_tensor

__all__ = ["Graph", "Transpose"]


class Transpose(NamedTuple):
    """The same edges grouped by source (CSC), for passes that scatter to sources.

    ``colptr [N_src + 1]`` delimits each source's out-edges; ``row [E]`` holds their
    destinations; ``perm [E]`` maps a position in this order to the edge id, so
    ``row[t] == dst[perm[t]]`` and ``graph.col[perm[t]]`` is the source of slot ``t``.
    Within one source, edges keep increasing edge id (the sort is stable).
    """

    colptr: Tensor
    row: Tensor
    perm: Tensor


def _check_index_tensor(name: str, t: object, ndim: int) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.int64:
        raise TypeError(f"{name} must have dtype torch.int64, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {list(t.shape)}")
    return t


def check_ptr(name: str, ptr: object, total: int | None, total_name: str = "N") -> Tensor:
    """``ptr`` checked as offsets ``int64 [B + 1]`` into ``total`` items; ``TypeError``/``ValueError`` naming ``name``.

    Offsets (a graph's ``rowptr``, the example offsets ``ptr``/``src_ptr``) are 1-D int64 with at
    least one entry, start at 0, are non-decreasing and end at ``total`` (called ``total_name`` in
    the error; ``None``: any end). Costs one host sync.
    """
    ptr = _check_ptr_shape(name, ptr)
    _check_ptr_values(name, ptr, _ptr_stats(ptr).tolist(), total, total_name)
    return ptr


def _check_ptr_shape(name: str, ptr: object) -> Tensor:
    """:func:`check_ptr`'s checks that need no host sync: a 1-D int64 tensor with at least one entry."""
    ptr = _check_index_tensor(name, ptr, 1)
    if ptr.numel() < 1:
        raise ValueError(f"{name} must have B + 1 >= 1 entries, got an empty tensor")
    return ptr


def _ptr_stats(ptr: Tensor) -> Tensor:
    """``[first, last, non-decreasing]`` of non-empty offsets, on their device (no sync): what
    :func:`check_ptr` checks, so that callers can fetch the stats of several tensors in one sync."""
    return torch.stack([ptr[0], ptr[-1], (ptr[1:] >= ptr[:-1]).all().long()])


def _check_ptr_values(name: str, ptr: Tensor, stats: list[int], total: int | None, total_name: str = "N") -> None:
    """Raise :func:`check_ptr`'s errors from ``stats`` (:func:`_ptr_stats` of ``ptr``, on the host)."""
    first, last, steps_ok = stats
    if first != 0:
        raise ValueError(f"{name} must start at 0, got {name}[0] = {first}")
    if total is not None and last != total:
        raise ValueError(f"{name} must end at {total_name} = {total}, got {name}[-1] = {last}")
    if not steps_ok:
        bad = int(torch.nonzero(ptr[1:] < ptr[:-1])[0, 0])
        raise ValueError(
            f"{name} must be non-decreasing, but "
            f"{name}[{bad + 1}] = {int(ptr[bad + 1])} < {name}[{bad}] = {int(ptr[bad])}"
        )


def cache_serves(made_in_inference: bool) -> bool:
    """Whether a cached value may serve the current call: one made under ``torch.inference_mode``
    holds inference tensors, which autograd cannot save for backward, so it serves only calls in
    inference mode; one made outside serves every call. The graph caches (a ``Graph``'s views, the
    fixed structures', Combiner's, the PyG layer's ``edge_index`` cache) follow this rule, so an
    evaluation under ``inference_mode`` does not break the training step after it."""
    return not made_in_inference or torch.is_inference_mode_enabled()


class LastBuilt:
    """A one-entry cache: the value built for the last ``key``, rebuilt when the key changes or
    when :func:`cache_serves` refuses it (built under ``torch.inference_mode``, asked outside).
    The graphs of a batch layout (fixed structures, Combiner, ImageClassifier) are kept in one."""

    def __init__(self) -> None:
        self._key: Any = None
        self._value: Any = None
        self._inference = False

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        if self._value is None or self._key != key or not cache_serves(self._inference):
            self._value = build()
            self._key, self._inference = key, torch.is_inference_mode_enabled()
        return self._value


def check_edge_index(edge_index: object) -> Tensor:
    """``edge_index`` checked as an integer ``[2, E]`` tensor (``TypeError``/``ValueError`` naming it)."""
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
    if not is_integer_tensor(edge_index):
        raise TypeError(f"edge_index must have an integer dtype, got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must be [2, E], got shape {list(edge_index.shape)}")
    return edge_index


def check_edge_index_ranges(
    num_src: int, num_dst: int, src: tuple[int, int] | None, dst: tuple[int, int] | None = None
) -> None:
    """Raise ``ValueError`` naming the row of ``edge_index`` whose ``(min, max)`` (``src`` for row 0,
    ``dst`` for row 1; ``None``: not checked) leaves ``[0, num_src)`` / ``[0, num_dst)``."""
    for row, name, size, bounds, total in (
        (1, "destinations", "num_dst", dst, num_dst),
        (0, "sources", "num_src", src, num_src),
    ):
        if bounds is not None and (bounds[0] < 0 or bounds[1] >= total):
            bad = f"min {bounds[0]}" if bounds[0] < 0 else f"max {bounds[1]}"
            raise ValueError(f"edge_index[{row}] ({name}) must be in [0, {size}) = [0, {total}), got {bad}")


@dataclass(frozen=True, eq=False)
class Graph:
    """Destination-sorted edge list (CSR) that every attention op runs over.

    Args:
        rowptr: ``int64 [N_dst + 1]``, non-decreasing, ``rowptr[0] == 0`` and
            ``rowptr[-1] == E``; the in-edges of destination ``i`` are the edge ids
            ``rowptr[i] .. rowptr[i + 1] - 1``.
        col: ``int64 [E]``, the source node of each edge, in ``[0, num_src)``.
        num_src: number of source nodes ``N_src``.
        ptr: optional ``int64 [B + 1]`` offsets of the examples of a batch in the
            destination nodes (set by :func:`graphattn.structure.batch`).
        src_ptr: optional ``int64 [B + 1]`` offsets of the examples in the source
            nodes; ``None`` means the same as ``ptr``.

    Construction validates everything above, with one device-to-host copy for all the value
    checks. Duplicate edges are allowed and count separately; self loops are ordinary edges.
    The transpose (:attr:`transpose`) is built on first use and cached, so one graph
    built per batch serves the forward and backward passes of every layer. Editing ``rowptr``
    or ``col`` in place afterwards drops the cache (it is keyed on the tensors' in-place
    version counters), so the views are rebuilt from the edited edges.

    Example:
        >>> g = Graph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]))
        >>> g.rowptr.tolist(), g.col.tolist()
        ([0, 1, 2, 3], [2, 0, 1])
    """

    rowptr: Tensor
    col: Tensor
    num_src: int
    ptr: Tensor | None = None
    src_ptr: Tensor | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rowptr = _check_index_tensor("rowptr", self.rowptr, 1)
        col = _check_index_tensor("col", self.col, 1)
        num_src = check_int("num_src", self.num_src, minimum=0)
        object.__setattr__(self, "num_src", num_src)
        if rowptr.numel() < 1:
            raise ValueError("rowptr must have N_dst + 1 >= 1 entries, got an empty tensor")
        if col.device != rowptr.device:
            raise ValueError(f"col and rowptr must be on the same device, got {col.device} and {rowptr.device}")
        e = col.numel()
        # Every value check in one host sync: the offsets' stats and col's range, fetched together.
        offsets = [("rowptr", rowptr, e, "E = col.numel()")]
        sizes = {"ptr": (self.num_dst, "N_dst"), "src_ptr": (num_src, "num_src")}
        for name, (total, total_name) in sizes.items():
            p = getattr(self, name)
            if p is not None:
                _check_ptr_shape(name, p)
                if p.device != rowptr.device:
                    raise ValueError(f"{name} must be on {rowptr.device}, got {p.device}")
                offsets.append((name, p, total, total_name))
        if self.ptr is not None and self.src_ptr is not None and self.src_ptr.numel() != self.ptr.numel():
            raise ValueError(
                f"src_ptr must have one entry per entry of ptr (B + 1 = {self.ptr.numel()}), "
                f"got {self.src_ptr.numel()} entries"
            )
        stats = [_ptr_stats(t) for _, t, _, _ in offsets]
        if e > 0:
            stats.append(torch.stack(torch.aminmax(col)))
        values = torch.cat(stats).tolist()
        for i, (name, t, total, total_name) in enumerate(offsets):
            _check_ptr_values(name, t, values[3 * i : 3 * i + 3], total, total_name)
        if e > 0:
            lo, hi = values[-2:]
            if lo < 0 or hi >= num_src:
                raise ValueError(
                    f"col must hold source indices in [0, num_src) = [0, {num_src}), got values in [{lo}, {hi}]"
                )
        # The native ops need contiguous index tensors (a no-op when they already are).
        for name in ("rowptr", "col", "ptr", "src_ptr"):
            t = getattr(self, name)
            if t is not None:
                object.__setattr__(self, name, t.contiguous())

    # ------------------------------------------------------------------ constructors
    @classmethod
    def _unchecked(
        cls, rowptr: Tensor, col: Tensor, num_src: int, ptr: Tensor | None = None, src_ptr: Tensor | None = None
    ) -> Graph:
        """Skip validation, for tensors already known valid (e.g. a validated graph moved to another device)."""
        graph = object.__new__(cls)
        for name, value in zip(Graph.__dataclass_fields__, (rowptr, col, num_src, ptr, src_ptr, {}), strict=True):
            object.__setattr__(graph, name, value)
        return graph

    @classmethod
    def from_edge_index(
        cls,
        edge_index: Tensor,
        num_src: int | None = None,
        num_dst: int | None = None,
        *,
        return_perm: bool = False,
    ) -> Graph | tuple[Graph, Tensor]:
        """Build from a PyG ``edge_index [2, E]`` (row 0 = source, row 1 = destination).

        Edges may come in any order; they are stably sorted by destination, so edges
        into one destination keep their input order. If neither size is given both
        default to ``max(edge_index) + 1`` (a square graph, as in PyG); if one is
        given, the other defaults to it.

        Args:
            edge_index: integer tensor ``[2, E]``.
            num_src: number of source nodes.
            num_dst: number of destination nodes.
            return_perm: also return ``perm [E]`` with ``perm[e]`` = the column of
                ``edge_index`` that became edge ``e`` (use ``edge_attr[perm]`` to carry
                per-edge features along).
        """
        edge_index = check_edge_index(edge_index).long()
        src, dst = edge_index[0], edge_index[1]
        if num_src is not None:
            num_src = check_int("num_src", num_src, minimum=0)
        if num_dst is not None:
            num_dst = check_int("num_dst", num_dst, minimum=0)
        # Both rows' ranges in the one host sync of the build (the Graph is made unchecked below).
        empty = edge_index.numel() == 0
        src_lo, src_hi, dst_lo, dst_hi = (
            [0, -1, 0, -1] if empty else torch.stack([*torch.aminmax(src), *torch.aminmax(dst)]).tolist()
        )
        if num_src is None and num_dst is None:
            num_src = num_dst = max(src_hi, dst_hi, -1) + 1
        elif num_src is None:
            num_src = num_dst
        elif num_dst is None:
            num_dst = num_src
        check_edge_index_ranges(num_src, num_dst, (src_lo, src_hi), (dst_lo, dst_hi))
        perm = stable_argsort(dst, num_dst)
        counts = torch.bincount(dst, minlength=num_dst)
        rowptr = torch.zeros(num_dst + 1, dtype=torch.long, device=dst.device)
        torch.cumsum(counts, 0, out=rowptr[1:])
        graph = cls._unchecked(rowptr, src[perm].contiguous(), num_src)  # valid by construction and the checks
        return (graph, perm) if return_perm else graph

    @classmethod
    def from_dense(cls, mask: Tensor) -> Graph:
        """Build from a boolean adjacency ``mask [N_dst, N_src]`` (``mask[i, j]``: ``j -> i``)."""
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must have dtype torch.bool, got {mask.dtype}")
        if mask.dim() != 2:
            raise ValueError(f"mask must be [N_dst, N_src], got shape {list(mask.shape)}")
        counts = mask.sum(1)
        rowptr = torch.zeros(mask.shape[0] + 1, dtype=torch.long, device=mask.device)
        torch.cumsum(counts, 0, out=rowptr[1:])
        # nonzero is row-major, i.e. already grouped by destination.
        col = torch.nonzero(mask)[:, 1].contiguous()
        return cls(rowptr, col, mask.shape[1])

    # ------------------------------------------------------------------ views
    @property
    def num_dst(self) -> int:
        """Number of destination nodes ``N_dst``."""
        return self.rowptr.numel() - 1

    @property
    def num_edges(self) -> int:
        """Number of edges ``E`` (duplicates counted)."""
        return self.col.numel()

    @property
    def device(self) -> torch.device:
        return self.rowptr.device

    @property
    def is_square(self) -> bool:
        """Whether sources and destinations are one node set of equal size."""
        return self.num_src == self.num_dst

    def in_degree(self) -> Tensor:
        """``int64 [N_dst]``: number of in-edges of each destination."""
        return self.rowptr[1:] - self.rowptr[:-1]

    def out_degree(self) -> Tensor:
        """``int64 [N_src]``: number of out-edges of each source."""
        colptr = self.transpose.colptr
        return colptr[1:] - colptr[:-1]

    def dst(self) -> Tensor:
        """``int64 [E]``: the destination of each edge (cached)."""
        self._check_cache()
        if "dst" not in self._cache:
            if self.device.type == "cpu":  # NumPy's repeat: several times faster, output in huge pages
                dst = np.repeat(np.arange(self.num_dst, dtype=np.int64), self.in_degree().numpy())
                self._store("dst", torch.from_numpy(dst))
            else:
                self._store(
                    "dst",
                    torch.repeat_interleave(
                        torch.arange(self.num_dst, device=self.device), self.in_degree(), output_size=self.num_edges
                    ),
                )
        return self._cache["dst"]

    @property
    def transpose(self) -> Transpose:
        """The source-grouped view (CSC) of the same edges, built once and cached."""
        self._check_cache()
        if "transpose" not in self._cache:
            e, dev = self.num_edges, self.device
            perm = stable_argsort(self.col, self.num_src)
            counts = torch.bincount(self.col, minlength=self.num_src)
            colptr = torch.zeros(self.num_src + 1, dtype=torch.long, device=dev)
            torch.cumsum(counts, 0, out=colptr[1:])
            row = torch.index_select(self.dst(), 0, perm, out=large_empty(e, device=dev))
            self._store("transpose", Transpose(colptr, row, perm))
        return self._cache["transpose"]

    def _store(self, key: str, value: Any) -> None:
        self._cache[key] = value
        if torch.is_inference_mode_enabled():
            self._cache["inference"] = True  # see cache_serves

    def _check_cache(self) -> None:
        """Drop the cached views if ``rowptr`` or ``col`` was edited in place since they were built,
        or if they were built under ``torch.inference_mode`` and this call is not (:func:`cache_serves`).

        The edits are not checked under ``torch.compile``, which traces version counters as
        data-dependent values, nor for inference tensors, which have none (nor can they serve
        autograd, so their views may as well be inference tensors too)."""
        if torch.compiler.is_compiling() or self.rowptr.is_inference() or self.col.is_inference():
            return
        versions = (self.rowptr._version, self.col._version)
        if self._cache.get("versions") != versions or not cache_serves(self._cache.get("inference", False)):
            self._cache.clear()
            self._cache["versions"] = versions

    def to_edge_index(self) -> Tensor:
        """``int64 [2, E]`` in edge-id order: row 0 = sources, row 1 = destinations."""
        return torch.stack([self.col, self.dst()])

    def to_dense(self) -> Tensor:
        """``int64 [N_dst, N_src]`` edge multiplicities (for tests and small pictures)."""
        counts = torch.zeros(self.num_dst * self.num_src, dtype=torch.long, device=self.device)
        counts.index_add_(0, self.dst() * self.num_src + self.col, torch.ones_like(self.col))
        return counts.view(self.num_dst, self.num_src)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Graph:
        """A copy on ``device`` (cached views move along); ``self`` if it is there already.

        ``non_blocking`` as in :meth:`torch.Tensor.to`. The signature is the one PyG's
        ``Data.to(device)`` calls, so a Graph stored on a ``Data`` (:class:`graphattn.nn.pyg.ToGraph`)
        moves with it."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # the current device, as Tensor.to reads it
            device = torch.device("cuda", torch.cuda.current_device())
        if device == self.device:
            return self

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        out = Graph._unchecked(move(self.rowptr), move(self.col), self.num_src, move(self.ptr), move(self.src_ptr))
        self._check_cache()
        out._check_cache()  # stamps the copy's own versions
        for key, value in self._cache.items():
            if key not in ("versions", "inference"):  # copies made now: _store stamps them
                out._store(key, type(value)(*map(move, value)) if isinstance(value, tuple) else move(value))
        return out

    def cpu(self) -> Graph:
        """:meth:`to` the CPU (what PyG's ``Data.cpu()`` calls)."""
        return self.to("cpu")

    def cuda(self, device: int | str | torch.device | None = None, non_blocking: bool = False) -> Graph:
        """:meth:`to` a CUDA device, the current one by default (what PyG's ``Data.cuda()`` calls)."""
        if isinstance(device, int):
            device = torch.device("cuda", device)
        return self.to("cuda" if device is None else device, non_blocking=non_blocking)

    def __repr__(self) -> str:
        batch = "" if self.ptr is None else f", batch_size={self.ptr.numel() - 1}"
        return (
            f"Graph(num_dst={self.num_dst}, num_src={self.num_src}, num_edges={self.num_edges}"
            f"{batch}, device={self.device})"
        )
