"""The native backend: fused C++ (CPU) and CUDA kernels from ``cuda/``, built into ``graphattn/_C*.so``.

The library holds the attention ops ``graphattn::edge_attention_fwd`` and
``graphattn::edge_attention_bwd`` (and, CPU only, ``graphattn::sbm_table`` and
``graphattn::sbm_draw``, the SBM sampler's tables and endpoint draws, called by
:mod:`graphattn.structure.sbm`). This module loads it, gives both
attention ops fake (meta) kernels and wires the backward op as the forward's autograd formula,
so ``torch.compile`` and
``torch.library.opcheck`` see ordinary PyTorch ops. The forward saves only ``out`` and ``lse``
(with ``lse_lo``, its rounding error, so that rows of large scores keep exact gradients); the
backward recomputes the attention weights from them (never storing ``E x H x D`` tensors)
and needs the graph's cached transpose, which travels through the forward op's inputs. Optional
per-edge key / value terms (``edge_key`` / ``edge_value``, ``[E, H, D]`` / ``[E, H, Dv]``) are read
in place by both passes; their gradients (``scale * ds_e * q_i`` and ``gate_e * p_e * dO_i``) are
written per edge by the backward's destination pass.

CPU outputs of 1 MiB or more come from a cache of resident buffers (see :func:`empty_cache`).

If the library is missing (not built, or ``GRAPHATTN_NO_EXTENSION=1``), one warning is issued
and the backend reports itself unavailable, so dispatch falls back to the reference backend.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..graph import Graph
from .dispatch import Backend, register_backend

__all__ = ["available", "empty_cache", "load_error"]

_PACKAGE = Path(__file__).resolve().parent.parent


def _load() -> str | None:
    """Load the library; return why it could not be loaded, or ``None``."""
    if os.environ.get("GRAPHATTN_NO_EXTENSION", "0") not in ("", "0"):
        return "disabled by GRAPHATTN_NO_EXTENSION=1"
    if hasattr(torch.ops.graphattn, "edge_attention_fwd"):
        return None  # already loaded (module reloaded)
    candidates = sorted(_PACKAGE.glob("_C*.so")) + sorted(_PACKAGE.glob("_C*.pyd"))
    if not candidates:
        return (
            f"compiled library graphattn/_C*.so not found in {_PACKAGE}; "
            "build it with `pip install --no-build-isolation -e .`"
        )
    try:
        torch.ops.load_library(str(candidates[0]))
    except (OSError, RuntimeError) as exc:  # built against another torch, missing symbols, ...
        return f"could not load {candidates[0].name}: {exc}; rebuild with `pip install --no-build-isolation -e .`"
    return None


_LOAD_ERROR = _load()
if _LOAD_ERROR is not None:
    warnings.warn(f"graphattn native kernels unavailable ({_LOAD_ERROR}); using the reference backend", stacklevel=2)


def available() -> bool:
    """Whether the compiled kernels are loaded."""
    return _LOAD_ERROR is None


def load_error() -> str | None:
    """Why the compiled kernels are not loaded (``None`` when they are)."""
    return _LOAD_ERROR


def empty_cache() -> int:
    """Give the CPU kernels' cached output buffers back to the system; returns how many bytes.

    Outputs of 1 MiB or more (``out``, the gradients) are served from a cache of mappings whose
    pages stay resident after the tensor is freed, so that a loop calling the op does not pay a
    page fault per 4 KiB of every new output (``cuda/edge_attention_cpu.cpp``, ``OutputCache``).
    The cache holds at most ``GRAPHATTN_CPU_CACHE_MB`` (read at the first such output; default
    1024, 0 disables it) of freed buffers; like ``torch.cuda.empty_cache``, this releases them.
    """
    if _LOAD_ERROR is not None:
        return 0
    return int(torch.ops.graphattn.empty_cpu_cache())


def _has_cuda_kernels() -> bool:
    return _LOAD_ERROR is None and torch._C._dispatch_has_kernel_for_dispatch_key(
        "graphattn::edge_attention_fwd", "CUDA"
    )


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half inputs accumulate (and keep lse) in float32.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


if _LOAD_ERROR is None:

    @torch.library.register_fake("graphattn::edge_attention_fwd")
    def _fwd_fake(q, k, v, rowptr, col, colptr, row, perm, bias, gate, edge_key, edge_value, scale):
        out = q.new_empty((q.shape[0], q.shape[1], v.shape[2]))
        lse = q.new_empty((q.shape[0], q.shape[1]), dtype=_lse_dtype(q.dtype))
        return out, lse, torch.empty_like(lse)

    @torch.library.register_fake("graphattn::edge_attention_bwd")
    def _bwd_fake(
        grad_out,
        grad_lse,
        q,
        k,
        v,
        out,
        lse,
        lse_lo,
        rowptr,
        col,
        colptr,
        row,
        perm,
        bias,
        gate,
        edge_key,
        edge_value,
        scale,
        need_kv,
        need_bias,
        need_gate,
        need_edge_key,
        need_edge_value,
    ):
        def empty():  # a gradient that was not asked for
            return q.new_empty((0,))

        return (
            torch.empty_like(q),
            torch.empty_like(k) if need_kv else empty(),
            torch.empty_like(v) if need_kv else empty(),
            torch.empty_like(bias) if need_bias else empty(),
            torch.empty_like(gate) if need_gate else empty(),
            torch.empty_like(edge_key) if need_edge_key else empty(),
            torch.empty_like(edge_value) if need_edge_value else empty(),
        )

    def _setup_context(ctx, inputs, output):
        q, k, v, rowptr, col, colptr, row, perm, bias, gate, edge_key, edge_value, scale = inputs
        out, lse, lse_lo = output
        ctx.mark_non_differentiable(lse_lo)  # lse's rounding error, for the backward only
        ctx.save_for_backward(
            q, k, v, out, lse, lse_lo, rowptr, col, colptr, row, perm, bias, gate, edge_key, edge_value
        )
        ctx.scale = scale
        # lse is rarely differentiated: without this, autograd fills a zero grad_lse [N, H] per backward.
        ctx.set_materialize_grads(False)

    def _backward(ctx, grad_out, grad_lse, _grad_lse_lo):
        q, k, v, out, lse, lse_lo, rowptr, col, colptr, row, perm, bias, gate, edge_key, edge_value = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True: the kernels' gradients are not differentiable
            return _differentiable_backward(ctx, grad_out, grad_lse)
        need_kv = needs[1] or needs[2]
        if need_kv and colptr.numel() == 0:
            raise RuntimeError(
                "native edge_attention: the forward ran without the graph transpose (no input required grad "
                "then), so it cannot be differentiated; run it with inputs that require grad"
            )
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        if grad_lse is not None:
            grad_lse = grad_lse.to(lse.dtype).contiguous()
        # One tensor passed as both edge_key and edge_value gets both gradients; autograd adds them.
        dq, dk, dv, dbias, dgate, dedge_key, dedge_value = torch.ops.graphattn.edge_attention_bwd(
            grad_out.contiguous(),
            grad_lse,
            q,
            k,
            v,
            out,
            lse,
            lse_lo,
            rowptr,
            col,
            colptr,
            row,
            perm,
            bias,
            gate,
            edge_key,
            edge_value,
            ctx.scale,
            need_kv,
            bool(needs[8]),
            bool(needs[9]),
            bool(needs[10]),
            bool(needs[11]),
        )
        return (
            dq if needs[0] else None,
            dk if needs[1] else None,
            dv if needs[2] else None,
            None,
            None,
            None,
            None,
            None,
            dbias if needs[8] else None,
            dgate if needs[9] else None,
            dedge_key if needs[10] else None,
            dedge_value if needs[11] else None,
            None,
        )

    def _differentiable_backward(ctx, grad_out, grad_lse):
        """The same gradients through the reference implementation's autograd graph, so that a
        second derivative (gradient penalties, meta-learning) exists; only under create_graph."""
        from .reference import edge_attention as edge_attention_reference

        q, k, v, _, _, _, rowptr, col, *_, bias, gate, edge_key, edge_value = ctx.saved_tensors
        graph = Graph._unchecked(rowptr, col, k.shape[0])
        inputs = {0: q, 1: k, 2: v, 8: bias, 9: gate, 10: edge_key, 11: edge_value}
        wanted = [i for i, t in inputs.items() if t is not None and ctx.needs_input_grad[i]]
        # One tensor passed twice (edge_key and edge_value) gets its whole gradient once; autograd
        # adds what is returned for each argument.
        firsts = {id(inputs[i]): i for i in reversed(wanted)}
        ref_out, ref_lse = edge_attention_reference(q, k, v, graph, bias, gate, ctx.scale, edge_key, edge_value)
        outputs, grads = [ref_out], [torch.zeros_like(ref_out) if grad_out is None else grad_out]
        if grad_lse is not None:
            outputs.append(ref_lse)
            grads.append(grad_lse)
        found = torch.autograd.grad(outputs, [inputs[i] for i in wanted], grads, create_graph=True, allow_unused=True)
        result: list[Tensor | None] = [None] * 13
        for i, g in zip(wanted, found, strict=True):
            result[i] = torch.zeros_like(inputs[i]) if g is None or firsts[id(inputs[i])] != i else g
        return tuple(result)

    torch.library.register_autograd("graphattn::edge_attention_fwd", _backward, setup_context=_setup_context)


def _contiguous(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def _forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: Graph,
    bias: Tensor | None,
    gate: Tensor | None,
    scale: float,
    edge_key: Tensor | None = None,
    edge_value: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Backend entry point: ``(out, lse)`` from the fused kernels."""
    tensors = (q, k, v, bias, gate, edge_key, edge_value)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        colptr, row, perm = graph.transpose  # built once per graph, cached on it
    else:
        colptr = row = perm = graph.rowptr.new_empty((0,))
    if edge_value is edge_key and edge_key is not None:
        edge_key = edge_value = edge_key.contiguous()  # one copy (if any) for both arguments
    out, lse, _ = torch.ops.graphattn.edge_attention_fwd(  # _: lse's rounding error, saved for the backward
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        graph.rowptr,
        graph.col,
        colptr,
        row,
        perm,
        _contiguous(bias),
        _contiguous(gate),
        _contiguous(edge_key),
        _contiguous(edge_value),
        scale,
    )
    return out, lse


register_backend(
    Backend(
        name="native",
        description="fused C++/OpenMP (blocked AVX-512 / AVX2) and CUDA kernels, streaming softmax, lse-based backward",
        # CUDA only where the library has CUDA kernels: a CPU-only build (no CUDA toolkit at install)
        # under a CUDA torch must let dispatch fall back to the reference backend for CUDA tensors.
        devices=("cpu", "cuda") if _has_cuda_kernels() else ("cpu",),
        dtypes=(torch.float16, torch.bfloat16, torch.float32, torch.float64),
        # The CUDA kernel keeps a row of up to 8 values per lane in registers (8 x 32 = 256).
        max_head_dim=256,
        # No atomics: every output row is written by one thread (CPU) or one warp (CUDA), and the
        # split of hub rows into segments is fixed, not a function of the thread count.
        deterministic_devices=("cpu", "cuda"),
        forward=_forward,
        unavailable=load_error,
    ),
    first=True,
)
