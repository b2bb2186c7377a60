"""Scaling of the input-dependent structures: build + forward + backward for N = 1k ... 64k.

Each (structure, N) runs in its own process, so peak RSS is that configuration's alone. One
step is what a layer does: the structure builds its graph from random projected queries and
keys (H = 4, D = 32, training mode), ``edge_attention`` runs over it (folded per head, with the
structure's gate, bias and extra sources), and the backward goes through the output and the
auxiliary loss. Reports the median of at least ``--repeats`` steps (and of at least 2 s of
steps, so that the small sizes, every ratio's denominator, get more) and the peak RSS (VmHWM)
above the process's RSS after set-up.

    python benchmarks/structures/bench_adaptive.py            # N = 1k .. 64k, all structures
    python benchmarks/structures/bench_adaptive.py --quick    # N = 1k, 4k
    python benchmarks/structures/bench_adaptive.py --structures sea   # re-measure one; other rows kept
    python benchmarks/structures/bench_adaptive.py --malloc retain     # glibc keeps freed blocks

``--malloc retain`` calls :func:`graphattn.train.engine.retain_freed_memory` first (as
``GRAPHATTN_MALLOC=retain graphattn train`` does): large freed buffers are reused instead of
unmapped, so a step's fresh tensors do not fault in their pages. Its rows are kept apart from
``system`` rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STRUCTURES = ("routing", "sbm", "sac", "combiner", "combiner-logsparse", "sea")


def _rss_mib() -> float:
    from graphattn.train.engine import peak_rss_mib

    return peak_rss_mib()


def _build(name: str, n: int, h: int, d: int):
    import torch

    from graphattn.structure import SAC, SBM, SEA, Combiner, Routing

    if name.startswith("combiner"):
        return Combiner("logsparse" if name.endswith("logsparse") else "fixed")
    if name == "sea":
        return SEA(h, d, k=16, width=64)
    if name == "routing":
        return Routing(h, d, num_clusters=max(1, round(math.sqrt(n))), window=16)
    if name == "sbm":
        # Density 16 / N: about 16 sampled edges per row, the budget of the other two.
        return SBM(h, d, num_clusters=32, init_density=min(1.0, 16 / n), generator=torch.Generator().manual_seed(0))
    return SAC(h, d, edges_per_node=16, generator=torch.Generator().manual_seed(0))


def run_one(name: str, n: int, repeats: int, malloc: str) -> dict:
    import torch

    if malloc == "retain":
        from graphattn.train.engine import retain_freed_memory

        if not retain_freed_memory():
            raise SystemExit("--malloc retain needs glibc's malloc")

    torch.manual_seed(0)
    h, d = 4, 32
    from graphattn.ops import edge_attention
    from graphattn.structure import fold

    q, k, v = (torch.randn(n, h, d, requires_grad=True) for _ in range(3))
    structure = _build(name, n, h, d).train()
    base = _rss_mib()
    times, cpu, edges = [], [], 0
    # At least `repeats` steps and at least 2 s of them: the 1k step (~50 ms) is the denominator
    # of every ratio, and a median of 3 such short steps on a shared host is not a stable one.
    while len(times) < repeats or sum(times) < 2.0:
        t0, c0 = time.perf_counter(), time.process_time()
        out = structure(q, k)
        kk, vv = out.sources(q, k, v) if out.sources is not None else (k, v)
        args = (fold(q), fold(kk), fold(vv)) if out.per_head else (q, kk, vv)
        y = edge_attention(*args, out.graph, bias=out.bias, gate=out.gate)
        loss = y.sum() + (out.aux_loss if out.aux_loss is not None else 0.0)
        loss.backward()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        edges = out.graph.num_edges
    return {
        "structure": name,
        "N": n,
        "edges": edges,
        "edges_per_row": edges / (n * (h if out.per_head else 1)),
        "median_ms": 1e3 * statistics.median(times),
        "median_cpu_ms": 1e3 * statistics.median(cpu),
        "load": os.getloadavg()[0],
        "peak_rss_above_setup_mib": _rss_mib() - base,
        "malloc": malloc,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 1k and 4k only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE.parent / "results" / "adaptive_structures.jsonl"))
    parser.add_argument(
        "--structures", default=",".join(STRUCTURES), help="comma-separated subset; other rows of --out are kept"
    )
    parser.add_argument(
        "--malloc", choices=("system", "retain"), default="system", help="retain: reuse freed blocks (see above)"
    )
    parser.add_argument("--one", nargs=2, metavar=("STRUCTURE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.repeats, args.malloc)))
        return
    sizes = [1024, 4096] if args.quick else [1024, 4096, 16384, 65536]
    names = [name for name in args.structures.split(",") if name]
    unknown = sorted(set(names) - set(STRUCTURES))
    if unknown:
        parser.error(f"unknown structures {unknown}; choose from {list(STRUCTURES)}")
    rows = []
    for name in names:
        for n in sizes:
            cmd = [sys.executable, __file__, "--one", name, str(n), "--repeats", str(args.repeats)]
            cmd += ["--malloc", args.malloc]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(
                f"{r['structure']:8s} N={r['N']:6d}  {r['median_ms']:9.1f} ms  {r['edges_per_row']:6.1f} edges/row  "
                f"+{r['peak_rss_above_setup_mib']:7.1f} MiB",
                flush=True,
            )
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    kept = [json.loads(line) for line in out_path.read_text().splitlines()] if out_path.exists() else []

    def key(r: dict) -> tuple:
        return r["structure"], r.get("malloc", "system"), r["N"]

    measured = {key(r) for r in rows}
    rows = [r for r in kept if key(r) not in measured] + rows  # re-measured rows replace old ones
    rows.sort(key=lambda r: (STRUCTURES.index(r["structure"]), *key(r)[1:]))
    with out_path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    header = ["structure", "N", "edges / row", "build + fwd + bwd (ms)", "CPU (ms)", "x time vs N=1k"]
    print("\n| " + " | ".join([*header, "peak RSS above set-up (MiB)"]) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        first = next(x for x in rows if key(x)[:2] == key(r)[:2])
        has_cpu = "median_cpu_ms" in r and "median_cpu_ms" in first
        cpu = f"{r['median_cpu_ms']:.1f}" if has_cpu else "-"
        cpu_ratio = f" (CPU {r['median_cpu_ms'] / first['median_cpu_ms']:.0f})" if has_cpu else ""
        name = r["structure"] + (" (retain)" if key(r)[1] == "retain" else "")
        print(
            f"| {name} | {r['N']} | {r['edges_per_row']:.1f} | {r['median_ms']:.1f} | {cpu} | "
            f"{r['median_ms'] / first['median_ms']:.1f}{cpu_ratio} | "
            f"{r['peak_rss_above_setup_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
