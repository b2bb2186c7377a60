"""GPU benchmark of edge attention: the native CUDA kernel vs the reference, FlexAttention and dense SDPA.

    python benchmarks/ops/bench_cuda.py                  # needs a CUDA device (~3 min on an H100)
    python benchmarks/ops/bench_cuda.py --quick          # N <= 65536, fp32 only
    python benchmarks/ops/bench_cuda.py --quick --dtypes fp32,bf16 --impls native

The CPU benchmark (bench_edge_attention.py) runs each implementation in its own process to read
its peak RSS; here one process suffices: CUDA memory is read per measurement with
``torch.cuda.reset_peak_memory_stats`` / ``max_memory_allocated`` (bytes beyond the inputs).
Reported per (implementation, workload, dtype): median ms over ``--repeats`` CUDA-event-timed runs
of the forward (no grad) and of forward + backward (grads of q, k, v), peak extra MiB of the
forward + backward, and forward TFLOP/s counting the op's useful work 4 * E * H * D. Each
implementation takes inputs in its own layout ([N, H, D] for graphattn, [1, H, N, D] for
FlexAttention and SDPA), so no timed run includes a transpose.

Implementations (softmax_{j -> i}(<q_i, k_j> / sqrt(D)) v_j per head, H = 4, D = 64):
    native     graphattn.ops.edge_attention(backend="native"): the CUDA kernel
    reference  graphattn.ops.edge_attention(backend="reference"): gather + scatter softmax
    flex       torch.compile(flex_attention) with a block mask (window graphs: closed-form mask)
    sdpa       F.scaled_dot_product_attention with a dense boolean mask (N <= 16384)
Results go to ``benchmarks/results/edge_attention_cuda.jsonl`` (or ``--out``); a markdown table
is printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_utils import RESULTS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_edge_attention import DIM, HEADS, random_edges, window_edges

IMPLS = ["native", "reference", "flex", "sdpa"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def workloads(quick: bool) -> dict[str, dict]:
    ns = [16384, 65536] if quick else [16384, 65536, 262144]
    out = {f"window_n{n}_k64": {"kind": "window", "n": n, "k": 64} for n in ns}
    out["random_n65536_k64"] = {"kind": "random", "n": 65536, "k": 64}
    return out


def cuda_ms(fn, repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` runs, timed by CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def make_impl(impl: str, spec: dict, src, dst, n: int):
    """(forward function, its inputs q, k, v) for one implementation, on the GPU."""
    from graphattn import Graph
    from graphattn.ops import edge_attention

    if impl in ("native", "reference"):
        graph = Graph.from_edge_index(torch.stack([src, dst]), n).to("cuda")
        graph.transpose  # noqa: B018  (cached once, as a layer does)
        return (lambda q, k, v: edge_attention(q, k, v, graph, backend=impl)), (n, HEADS, DIM)
    if impl == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        if spec["kind"] != "window":
            raise NotImplementedError("flex: only window graphs have a closed-form mask")
        k = spec["k"]

        def mask_mod(b, h, qi, kv):
            start = (qi - k // 2).clamp(0, n - k)
            return (kv >= start) & (kv < start + k)

        # A fresh, static-shape compile per workload: a recompile for a new N would otherwise turn
        # dynamic and fall back to the dense math path (an N x N score tensor). The mask is built
        # compiled too (torch 2.11's eager create_block_mask materializes N x N: 64 GiB at 65536).
        torch._dynamo.reset()
        block_mask = torch.compile(create_block_mask)(mask_mod, None, None, n, n, device="cuda")
        compiled = torch.compile(flex_attention, dynamic=False)
        return (lambda q, k_, v: compiled(q, k_, v, block_mask=block_mask)), (1, HEADS, n, DIM)
    if impl == "sdpa":
        if n > 16384:
            raise NotImplementedError("sdpa: dense N x N mask only up to N = 16384")
        import torch.nn.functional as F

        mask = torch.zeros(n, n, dtype=torch.bool, device="cuda")
        mask[dst.cuda(), src.cuda()] = True
        return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)), (1, HEADS, n, DIM)
    raise ValueError(impl)


def measure(impl: str, name: str, spec: dict, dtype_name: str, repeats: int) -> dict:
    make = window_edges if spec["kind"] == "window" else random_edges
    src, dst, n, _ = make(spec["n"], spec["k"])
    edges = src.numel()
    row = {"impl": impl, "workload": name, "dtype": dtype_name, "n": n, "edges": edges}
    try:
        fn, shape = make_impl(impl, spec, src, dst, n)
    except NotImplementedError as exc:
        return {**row, "skipped": str(exc)}
    dtype = DTYPES[dtype_name]
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(shape, generator=gen, device="cuda", dtype=dtype) for _ in range(3))
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

    def fwd():
        with torch.no_grad():
            fn(q, k, v)

    def fwd_bwd():
        torch.autograd.grad(fn(qg, kg, vg), (qg, kg, vg), grad)

    try:
        grad = torch.randn_like(fn(q, k, v))
        fwd_ms = cuda_ms(fwd, repeats)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fb_ms = cuda_ms(fwd_bwd, repeats)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    except torch.OutOfMemoryError as exc:
        return {**row, "skipped": "out of memory: " + str(exc).split(". ")[1]}
    tflops = 4 * edges * HEADS * DIM / (fwd_ms * 1e-3) / 1e12
    return {**row, "fwd_ms": fwd_ms, "fwd_bwd_ms": fb_ms, "peak_extra_mib": peak, "fwd_tflops": tflops}


def table(rows: list[dict]) -> str:
    lines = [
        "| workload | dtype | impl | forward ms | fwd+bwd ms | peak extra MiB | fwd TFLOP/s | fwd vs native |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    native = {(r["workload"], r["dtype"]): r for r in rows if r["impl"] == "native" and "fwd_ms" in r}
    for r in rows:
        key = f"| {r['workload']} | {r['dtype']} | {r['impl']} |"
        if "skipped" in r:
            lines.append(f"{key} skipped: {r['skipped']} | | | | |")
            continue
        nat = native.get((r["workload"], r["dtype"]))
        ratio = f"{r['fwd_ms'] / nat['fwd_ms']:.2f}x" if nat else ""
        lines.append(
            f"{key} {r['fwd_ms']:.3f} | {r['fwd_bwd_ms']:.3f} | {r['peak_extra_mib']:.0f} | "
            f"{r['fwd_tflops']:.2f} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N <= 65536, fp32 only (unless --dtypes)")
    parser.add_argument("--dtypes", default=None, help="comma-separated subset of " + ",".join(DTYPES))
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma-separated subset of " + ",".join(IMPLS))
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (median)")
    parser.add_argument("--out", type=Path, default=RESULTS / "edge_attention_cuda.jsonl")
    args = parser.parse_args()
    dtypes = args.dtypes.split(",") if args.dtypes else ["fp32"] if args.quick else list(DTYPES)
    unknown = set(dtypes) - set(DTYPES)
    if unknown:
        parser.error(f"--dtypes: unknown {sorted(unknown)}, expected a subset of {list(DTYPES)}")
    if not torch.cuda.is_available():
        raise SystemExit("bench_cuda.py needs a CUDA device (torch.cuda.is_available() is False)")
    run_id = time.strftime("%Y%m%dT%H%M%S")
    env = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    rows = []
    for name, spec in workloads(args.quick).items():
        for dtype_name in dtypes:
            for impl in args.impls.split(","):
                row = measure(impl, name, spec, dtype_name, args.repeats)
                rows.append({**row, "run": run_id, **env})
                print(json.dumps(rows[-1]), flush=True)
                torch.cuda.empty_cache()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"\n{env['device']}, torch {env['torch']}, H = {HEADS}, D = {DIM}, median of {args.repeats}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
