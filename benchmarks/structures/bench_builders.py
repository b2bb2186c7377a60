"""Build time of the fixed structure builders at N = 65536 tokens / 256 x 256 pixels.

The table of docs/structures.md ("Build times"). Every case builds its graph once to warm up,
then ``--repeats`` times; the median wall time is reported, and the median CPU time of the process
(``time.process_time``), which other jobs on a shared machine inflate much less. One torch thread (``OMP_NUM_THREADS=1``
is set before torch is imported, and ``torch.set_num_threads(1)``), since the project machine has
2 cores shared with other jobs. Prints a markdown table and appends one JSON line per case to
``benchmarks/results/builders.jsonl``.

    python benchmarks/structures/bench_builders.py                 # every case
    python benchmarks/structures/bench_builders.py --only fixed    # cases whose name contains "fixed"

Comparing two versions on a busy machine: run them case by case, alternating (``--only NAME``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

import graphattn.structure as S
from graphattn import Graph

RESULTS = Path(__file__).resolve().parent.parent / "results" / "builders.jsonl"
N = 65536


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _points() -> torch.Tensor:
    return torch.rand(N, 2, generator=_gen())


# (name, set-up run outside the timed region, build(set-up result) -> Graph)
CASES: list[tuple[str, Callable[[], object], Callable[[object], Graph]]] = [
    ("full(lengths=[256] * 256)", lambda: None, lambda _: S.full(lengths=[256] * 256)),
    ("window(65536, w=64)", lambda: None, lambda _: S.window(N, 64)),
    ("window(65536, w=128, causal=True)", lambda: None, lambda _: S.window(N, 128, causal=True)),
    ("dilated(65536, w=32, dilation=4)", lambda: None, lambda _: S.dilated(N, 32, 4)),
    ("strided(65536, stride=256, causal=True)", lambda: None, lambda _: S.strided(N, 256, causal=True)),
    ("fixed(65536, stride=256, c=1, causal=True)", lambda: None, lambda _: S.fixed(N, 256, 1, causal=True)),
    ("fixed(65536, stride=256, c=4)", lambda: None, lambda _: S.fixed(N, 256, 4)),
    ("strided(65536, stride=256)", lambda: None, lambda _: S.strided(N, 256)),
    ("block_local(65536, block_size=128)", lambda: None, lambda _: S.block_local(N, 128)),
    ("global_tokens(65536, g=16)", lambda: None, lambda _: S.global_tokens(N, 16)),
    ("random(65536, r=8)", lambda: None, lambda _: S.random(N, 8, generator=_gen())),
    ("bigbird(65536, w=64, g=2, r=3)", lambda: None, lambda _: S.bigbird(N, 64, 2, 3, generator=_gen())),
    ("longformer(65536, w=64, g=2)", lambda: None, lambda _: S.longformer(N, 64, 2)),
    (
        "bigbird(None, w=64, g=2, r=3, lengths=[1024] * 64)",
        lambda: None,
        lambda _: S.bigbird(None, 64, 2, 3, generator=_gen(), lengths=[1024] * 64),
    ),
    ("knn(x [65536, 2], k=16, lengths=[1024] * 64)", _points, lambda x: S.knn(x, 16, lengths=[1024] * 64)),
    ("knn(x [65536, 2], k=16)", _points, lambda x: S.knn(x, 16)),
    ("causal(bigbird(65536, w=64, g=2, r=3))", lambda: S.bigbird(N, 64, 2, 3, generator=_gen()), S.causal),
    (
        "union(window(65536, w=64), global_tokens(65536, g=16))",
        lambda: (S.window(N, 64), S.global_tokens(N, 16)),
        lambda gs: S.union(*gs),
    ),
    (
        "intersection(window(65536, w=64), dilated(65536, w=32, dilation=4))",
        lambda: (S.window(N, 64), S.dilated(N, 32, 4)),
        lambda gs: S.intersection(*gs),
    ),
    ("grid(256, 256, radius=1)", lambda: None, lambda _: S.grid(256, 256)),
    (
        "grid(256, 256, radius=3, connectivity=4, dilation=2)",
        lambda: None,
        lambda _: S.grid(256, 256, radius=3, connectivity=4, dilation=2),
    ),
    ("axial(256, 256)", lambda: None, lambda _: S.axial(256, 256)),
    ("grid(256, 256, patch_size=4, radius=2)", lambda: None, lambda _: S.grid(256, 256, patch_size=4, radius=2)),
]


def run(name: str, setup: Callable[[], object], build: Callable[[object], Graph], repeats: int) -> dict:
    arg = setup()
    graph = build(arg)  # warm-up (allocator, lazy initialisation)
    edges = graph.num_edges
    del graph
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        graph = build(arg)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        del graph
    return {
        "builder": name,
        "edges": edges,
        "median_ms": 1e3 * statistics.median(times),
        "ms": [1e3 * t for t in times],
        "median_cpu_ms": 1e3 * statistics.median(cpu),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (the median is reported)")
    parser.add_argument("--only", default=None, help="run the case of this name, or those whose name contains it")
    parser.add_argument("--out", default=str(RESULTS), help="JSON lines file to append to ('' for none)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = {
        "load": os.getloadavg()[0],
        "time": stamp,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "host": platform.node(),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread; median of {args.repeats} after one warm-up")
    print()
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores here; CPU time is the process's own)")
    print()
    print("| builder | edges | build time | CPU time |")
    print("| --- | ---: | ---: | ---: |")
    rows = []
    exact = args.only is not None and any(name == args.only for name, _, _ in CASES)
    for name, setup, build in CASES:
        if args.only is not None and (name != args.only if exact else args.only not in name):
            continue
        row = {**run(name, setup, build, args.repeats), **meta}
        rows.append(row)
        wall, cpu = row["median_ms"], row["median_cpu_ms"]
        print(f"| `{name}` | {row['edges']:,} | {wall:.0f} ms | {cpu:.0f} ms |", flush=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
