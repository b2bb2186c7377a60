"""Benchmark of edge attention: graphattn native vs reference, PyG, DGL, FlexAttention, dense SDPA.

    .venv/bin/python benchmarks/ops/bench_edge_attention.py            # full run (~30-40 min, 2 cores)
    .venv/bin/python benchmarks/ops/bench_edge_attention.py --quick    # N <= 16384, fewer repeats

Each (implementation, workload) pair runs in its own process. Reported per pair: median wall ms
of the forward (no grad) and of forward + backward (grads of q, k, v), peak RSS of the process,
and forward GFLOP/s counting the op's useful work 4 * E * H * D, next to the same run's fp32
sgemm GFLOP/s. Results go to ``benchmarks/results/edge_attention.jsonl`` (one JSON object per
line, a ``run`` id per invocation) and a PNG plot next to it; a markdown table is printed.

Implementations (all compute softmax_{j -> i}(<q_i, k_j> / sqrt(D)) v_j per head):
    native     graphattn.ops.edge_attention(backend="native"): fused C++ kernels
    reference  graphattn.ops.edge_attention(backend="reference"): gather + scatter softmax
    pyg        the PyG recipe: gather q[dst], k[src], v[src]; torch_geometric.utils.softmax; scatter
    dgl        dgl.ops.u_dot_v -> dgl.ops.edge_softmax -> dgl.ops.u_mul_e_sum (DGL 2.1)
    flex       torch.compile(flex_attention) with a block mask; forward only (no CPU backward)
    sdpa       F.scaled_dot_product_attention with a dense boolean mask (N <= 16384)
An implementation whose estimated memory exceeds what is free is skipped with the reason.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_utils import (
    RESULTS,
    available_memory_gb,
    median_ms,
    peak_rss_mb,
    run_worker,
    sgemm_gflops,
    write_jsonl,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
HEADS, DIM = 4, 64
IMPLS = ["native", "reference", "pyg", "dgl", "flex", "sdpa"]
# Bytes of memory per E * H * D element (fp32) beyond the inputs, measured order of magnitude:
# the gather-based recipes hold several [E, H, D] tensors for the backward.
MEMORY_FACTOR = {"reference": 8 * 4, "pyg": 8 * 4}


# ============================================================================ workloads


def window_edges(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Each node attends to K consecutive nodes around it (shifted inward at the ends)."""
    start = (torch.arange(n) - k // 2).clamp(0, n - k)
    src = (start[:, None] + torch.arange(k)).reshape(-1)
    return src, torch.arange(n).repeat_interleave(k), n, n


def random_edges(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (n * k,), generator=gen)
    return src, torch.arange(n).repeat_interleave(k), n, n


def _csv_ints(path: Path) -> np.ndarray:
    with gzip.open(path, "rt") as f:
        return np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)


def molhiv_edges(graphs: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The first ``graphs`` ogbg-molhiv molecules as one block-diagonal batch: bonds both ways plus
    self loops (as a GAT layer would use them). Read from the raw OGB CSVs."""
    raw = DATA / "ogb" / "ogbg_molhiv" / "raw"
    nodes = _csv_ints(raw / "num-node-list.csv.gz")[:graphs, 0]
    bonds = _csv_ints(raw / "num-edge-list.csv.gz")[:graphs, 0]
    edges = _csv_ints(raw / "edge.csv.gz")[: bonds.sum()]
    node_off = np.repeat(np.concatenate([[0], np.cumsum(nodes)[:-1]]), bonds)
    a, b = edges[:, 0] + node_off, edges[:, 1] + node_off
    n = int(nodes.sum())
    loops = np.arange(n)
    src = torch.from_numpy(np.concatenate([a, b, loops]))
    dst = torch.from_numpy(np.concatenate([b, a, loops]))
    return src, dst, n, n


def cora_edges() -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Cora citation graph (PyG Planetoid from the local raw files) plus self loops."""
    from torch_geometric.datasets import Planetoid

    with tempfile.TemporaryDirectory() as root:
        shutil.copytree(DATA / "planetoid" / "Cora", Path(root) / "Cora")
        data = Planetoid(root, "Cora")[0]
    n = data.num_nodes
    loops = torch.arange(n)
    return torch.cat([data.edge_index[0], loops]), torch.cat([data.edge_index[1], loops]), n, n


def workloads(quick: bool) -> dict[str, dict]:
    ns = [4096, 16384] if quick else [4096, 16384, 65536]
    out = {}
    for k in (32, 64):
        for n in ns:
            out[f"window_n{n}_k{k}"] = {"kind": "window", "n": n, "k": k}
    out["random_n16384_k64"] = {"kind": "random", "n": 16384, "k": 64}
    out["molhiv_1024_graphs"] = {"kind": "molhiv", "graphs": 1024}
    out["cora"] = {"kind": "cora"}
    return out


def build_edges(spec: dict) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    kind = spec["kind"]
    if kind == "window":
        return window_edges(spec["n"], spec["k"])
    if kind == "random":
        return random_edges(spec["n"], spec["k"])
    if kind == "molhiv":
        return molhiv_edges(spec["graphs"])
    if kind == "cora":
        return cora_edges()
    raise ValueError(f"unknown workload kind {kind!r}")


# ============================================================================ implementations


def make_native(src, dst, n_src, n_dst, backend):
    from graphattn import Graph
    from graphattn.ops import edge_attention

    graph = Graph.from_edge_index(torch.stack([src, dst]), n_src, n_dst)
    graph.transpose  # noqa: B018  built once per batch, as in training

    def fn(q, k, v):
        return edge_attention(q, k, v, graph, backend=backend)

    return fn


def make_pyg(src, dst, n_src, n_dst):
    from torch_geometric.utils import scatter, softmax

    scale = DIM**-0.5

    def fn(q, k, v):
        alpha = (q[dst] * k[src]).sum(-1) * scale  # [E, H]
        alpha = softmax(alpha, dst, num_nodes=n_dst)
        return scatter(alpha.unsqueeze(-1) * v[src], dst, dim=0, dim_size=n_dst, reduce="sum")

    return fn


def import_dgl():
    """dgl 2.1 with torch 2.13: its graphbolt library for this torch is missing; stub the module."""
    import importlib.util

    if "dgl" not in sys.modules:
        spec = importlib.util.find_spec("dgl")
        gb = Path(spec.origin).parent / "graphbolt"
        if not list(gb.glob(f"libgraphbolt_pytorch_{torch.__version__.split('+')[0]}.so")):
            sys.modules["dgl.graphbolt"] = types.ModuleType("dgl.graphbolt")
    import dgl

    return dgl


def make_dgl(src, dst, n_src, n_dst):
    dgl = import_dgl()
    assert n_src == n_dst, "the workloads here are square graphs"
    g = dgl.graph((src, dst), num_nodes=n_dst)
    scale = DIM**-0.5

    def fn(q, k, v):
        s = dgl.ops.u_dot_v(g, k, q) * scale  # [E, H, 1]
        a = dgl.ops.edge_softmax(g, s)
        return dgl.ops.u_mul_e_sum(g, v, a)

    return fn


def make_flex(spec, src, dst, n_src, n_dst):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if spec["kind"] == "window":
        n, k = spec["n"], spec["k"]

        def mask_mod(b, h, qi, kv):
            start = (qi - k // 2).clamp(0, n - k)
            return (kv >= start) & (kv < start + k)

    else:
        if n_dst * n_src > 2**28:
            raise MemoryError("a graph without closed-form mask needs a dense lookup; too large")
        dense = torch.zeros(n_dst, n_src, dtype=torch.bool)
        dense[dst, src] = True

        def mask_mod(b, h, qi, kv):
            return dense[qi, kv]

    block_mask = create_block_mask(mask_mod, None, None, n_dst, n_src, device="cpu")
    compiled = torch.compile(flex_attention)

    def fn(q, k, v):  # [N, H, D] -> [1, H, N, D] and back
        out = compiled(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], block_mask=block_mask)
        return out[0].transpose(0, 1)

    return fn


def make_sdpa(src, dst, n_src, n_dst):
    import torch.nn.functional as F

    mask = torch.zeros(n_dst, n_src, dtype=torch.bool)
    mask[dst, src] = True

    def fn(q, k, v):
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask
        )
        return out[0].transpose(0, 1)

    return fn


def estimate_gb(impl: str, edges: int, n: int) -> float:
    if impl == "sdpa":
        return 4 * HEADS * n * n * 4 / 2**30  # scores, probabilities and their gradients, fp32
    return MEMORY_FACTOR.get(impl, 0) * edges * HEADS * DIM / 2**30


def worker(impl: str, name: str, spec: dict, repeats: int) -> dict:
    torch.manual_seed(0)
    src, dst, n_src, n_dst = build_edges(spec)
    edges = src.numel()
    row = {"impl": impl, "workload": name, "n_dst": n_dst, "edges": edges, "heads": HEADS, "dim": DIM}
    if impl == "sdpa" and n_dst > 16384:
        return {**row, "skipped": "dense N x N beyond N = 16384"}
    if impl == "flex" and n_dst * n_src > 2**31:
        # create_block_mask evaluates mask_mod on the full N x N grid (34 GB of bools at N = 65536).
        return {**row, "skipped": "create_block_mask materializes N x N (> 2 GB)"}
    need, free = estimate_gb(impl, edges, n_dst), available_memory_gb()
    if need > 0.8 * free:
        return {**row, "skipped": f"needs ~{need:.1f} GB, {free:.1f} GB free"}
    if impl in ("native", "reference"):
        fn = make_native(src, dst, n_src, n_dst, impl)
    elif impl == "pyg":
        fn = make_pyg(src, dst, n_src, n_dst)
    elif impl == "dgl":
        fn = make_dgl(src, dst, n_src, n_dst)
    elif impl == "flex":
        try:
            fn = make_flex(spec, src, dst, n_src, n_dst)
        except MemoryError as exc:
            return {**row, "skipped": str(exc)}
    elif impl == "sdpa":
        fn = make_sdpa(src, dst, n_src, n_dst)
    else:
        raise ValueError(impl)
    q, k, v = (torch.randn(n, HEADS, DIM) for n in (n_dst, n_src, n_src))
    slow = impl in ("pyg", "sdpa", "reference") and edges * HEADS * DIM > 2**27
    reps = max(3, repeats // 2) if slow else repeats
    t0 = time.perf_counter()
    with torch.no_grad():
        fwd = median_ms(lambda: fn(q, k, v), reps, warmup=2 if impl == "flex" else 1)
    row["warmup_s"] = round(time.perf_counter() - t0, 1)
    if impl != "flex":  # FlexAttention has no CPU backward
        qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
        grad = torch.randn(n_dst, HEADS, DIM)

        def fwd_bwd():
            out = fn(qg, kg, vg)
            torch.autograd.grad(out, (qg, kg, vg), grad)

        row["fwd_bwd_ms"] = median_ms(fwd_bwd, reps)
    row["fwd_ms"] = fwd
    row["fwd_gflops"] = 4 * edges * HEADS * DIM / (fwd * 1e-3) / 1e9
    row["peak_rss_mb"] = peak_rss_mb()
    # sgemm measured in this process right after the timings (after reading the peak RSS): the
    # load of a shared machine changes within a run, so each row carries the rate of its moment.
    row["sgemm_gflops"] = sgemm_gflops(repeats=3)
    row["repeats"] = reps
    row["threads"] = torch.get_num_threads()
    return row


# ============================================================================ report


def table(rows: list[dict], sgemm: str) -> str:
    lines = [
        f"sgemm (fp32, 4096^3) at start / end of the run: {sgemm}; H = {HEADS}, D = {DIM}, fp32; median wall ms;",
        "% sgemm: forward GFLOP/s over the sgemm GFLOP/s measured in the same process right after (in brackets)",
        "",
        "| workload | E | impl | forward ms | fwd+bwd ms | fwd GFLOP/s | % sgemm (sgemm GFLOP/s) | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "fwd_ms" not in r:
            why = r.get("skipped") or r.get("error", "?")
            lines.append(f"| {r['workload']} | {r.get('edges', '')} | {r['impl']} | {why} | | | | |")
            continue
        fb = f"{r['fwd_bwd_ms']:.1f}" if "fwd_bwd_ms" in r else "n/a (no CPU backward)"
        lines.append(
            f"| {r['workload']} | {r['edges']} | {r['impl']} | {r['fwd_ms']:.1f} | {fb} | {r['fwd_gflops']:.1f} | "
            f"{100 * r['fwd_gflops'] / r['sgemm_gflops']:.0f}% ({r['sgemm_gflops']:.0f}) | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["workload"] for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(16, 6), sharey=True)
    width = 0.8 / max(len(impls), 1)
    for ax, key, title in zip(axes, ("fwd_ms", "fwd_bwd_ms"), ("forward", "forward + backward"), strict=True):
        for j, impl in enumerate(impls):
            xs, ys = [], []
            for i, name in enumerate(names):
                r = next((r for r in rows if r["workload"] == name and r["impl"] == impl), None)
                if r is not None and key in r:
                    xs.append(i + j * width)
                    ys.append(r[key])
            ax.bar(xs, ys, width, label=impl)
        ax.set_yscale("log")
        ax.set_title(f"edge attention, {title} (median ms, lower is better)")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))])
        ax.set_xticklabels(names, rotation=45, ha="right")
    axes[0].set_ylabel("ms")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N <= 16384 and fewer repeats")
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma-separated subset of " + ",".join(IMPLS))
    parser.add_argument("--workloads", default="", help="comma-separated substrings selecting workloads")
    parser.add_argument("--repeats", type=int, default=0, help="timed runs per measurement (median)")
    parser.add_argument("--out", type=Path, default=RESULTS / "edge_attention.jsonl")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per (impl, workload) process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)

    if args.worker:
        result = (
            {"gflops": sgemm_gflops()}
            if args.impl == "sgemm"
            else worker(args.impl, args.name, json.loads(args.spec), repeats)
        )
        print(json.dumps(result))
        return

    selected = {
        k: v
        for k, v in workloads(args.quick).items()
        if not args.workloads or any(s in k for s in args.workloads.split(","))
    }
    impls = [i for i in args.impls.split(",") if i]
    run_id = time.strftime("%Y%m%dT%H%M%S")
    sgemm_before = run_worker(Path(__file__), ["--impl", "sgemm", "--name", "-", "--spec", "{}"], 300)
    rows = []
    for name, spec in selected.items():
        for impl in impls:
            if impl in ("flex", "sdpa") and spec["kind"] not in ("window", "random", "cora"):
                continue
            t0 = time.perf_counter()
            row = run_worker(
                Path(__file__),
                ["--impl", impl, "--name", name, "--spec", json.dumps(spec), "--repeats", str(repeats)],
                args.timeout,
            )
            row.setdefault("impl", impl)
            row.setdefault("workload", name)
            row["run"] = run_id
            rows.append(row)
            shown = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items() if k != "run"}
            print(f"[{time.perf_counter() - t0:6.1f} s] {shown}", flush=True)
    sgemm_after = run_worker(Path(__file__), ["--impl", "sgemm", "--name", "-", "--spec", "{}"], 300)
    sgemm = [r["gflops"] for r in (sgemm_before, sgemm_after) if "gflops" in r]
    rows.append({"impl": "sgemm", "run": run_id, "gflops_start_end": sgemm})
    write_jsonl(args.out, rows)
    plot([r for r in rows if r["impl"] != "sgemm"], args.out.with_name(f"edge_attention_{run_id}.png"))
    print()
    print(table([r for r in rows if r["impl"] != "sgemm"], " / ".join(f"{g:.0f}" for g in sgemm) + " GFLOP/s"))
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
