"""Draw the adjacency of every structure builder on a small input, and time the builders at scale.

    python docs/make_structure_pictures.py            # writes docs/img/structure_*.png
    python docs/make_structure_pictures.py --timings  # prints the build-time table of docs/structures.md

A picture shows ``graph.to_dense()``: row ``i`` (destination) has a dark cell in column ``j`` when
``i`` attends to ``j``. Batched examples show as diagonal blocks.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import graphattn.structure as S
from graphattn import Graph

IMG = Path(__file__).resolve().parent / "img"
N = 32


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


PICTURES: dict[str, tuple[str, Callable[[], Graph]]] = {
    "full": ("full(32)", lambda: S.full(N)),
    "window": ("window(32, w=4)", lambda: S.window(N, 4)),
    "window_causal": ("window(32, w=4, causal=True)", lambda: S.window(N, 4, causal=True)),
    "dilated": ("dilated(32, w=3, dilation=3)", lambda: S.dilated(N, 3, 3)),
    "strided": ("strided(32, stride=6, causal=True)", lambda: S.strided(N, 6, causal=True)),
    "fixed": ("fixed(32, stride=8, c=2, causal=True)", lambda: S.fixed(N, 8, 2, causal=True)),
    "block_local": ("block_local(32, block_size=8)", lambda: S.block_local(N, 8)),
    "global_tokens": ("global_tokens(32, g=2)", lambda: S.global_tokens(N, 2)),
    "random": ("random(32, r=3)", lambda: S.random(N, 3, generator=_gen())),
    "bigbird": ("bigbird(32, w=3, g=2, r=2)", lambda: S.bigbird(N, 3, 2, 2, generator=_gen())),
    "longformer": ("longformer(32, w=3, g=[0, 16], dilation=2)", lambda: S.longformer(N, 3, [0, 16], dilation=2)),
    "causal_bigbird": ("causal(bigbird(32))", lambda: S.causal(S.bigbird(N, 3, 2, 2, generator=_gen()))),
    "knn": ("knn(2-D points, k=4)", lambda: S.knn(torch.rand(N, 2, generator=_gen()), 4)),
    "grid": ("grid(6, 6, radius=1) (8-conn.)", lambda: S.grid(6, 6)),
    "grid_4conn_dilated": ("grid(6, 6, connectivity=4, dilation=2)", lambda: S.grid(6, 6, connectivity=4, dilation=2)),
    "axial": ("axial(6, 6)", lambda: S.axial(6, 6)),
    "batch": ("window(w=3, lengths=[12, 5, 15])", lambda: S.window(None, 3, lengths=[12, 5, 15])),
    "batch_images": ("grid(sizes=[(4, 4), (3, 5)])", lambda: S.grid(sizes=[(4, 4), (3, 5)])),
}


def draw(name: str, title: str, graph: Graph) -> Path:
    fig, ax = plt.subplots(figsize=(3.2, 3.4), dpi=100)
    ax.imshow(graph.to_dense().clamp(max=1).numpy(), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    if graph.ptr is not None and graph.ptr.numel() > 2:
        for p in graph.ptr[1:-1].tolist():
            ax.axhline(p - 0.5, color="tab:red", lw=0.6)
            ax.axvline(p - 0.5, color="tab:red", lw=0.6)
    ax.set_title(f"{title}\nE = {graph.num_edges}", fontsize=8)
    ax.set_xlabel("source j", fontsize=7)
    ax.set_ylabel("destination i", fontsize=7)
    ax.tick_params(labelsize=6)
    fig.tight_layout()
    path = IMG / f"structure_{name}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


TIMINGS: list[tuple[str, Callable[[], Graph]]] = [
    ("full(lengths=[256] * 256)", lambda: S.full(lengths=[256] * 256)),
    ("window(65536, w=64)", lambda: S.window(65536, 64)),
    ("window(65536, w=128, causal=True)", lambda: S.window(65536, 128, causal=True)),
    ("dilated(65536, w=32, dilation=4)", lambda: S.dilated(65536, 32, 4)),
    ("strided(65536, stride=256, causal=True)", lambda: S.strided(65536, 256, causal=True)),
    ("fixed(65536, stride=256, c=1, causal=True)", lambda: S.fixed(65536, 256, 1, causal=True)),
    ("fixed(65536, stride=256, c=4)", lambda: S.fixed(65536, 256, 4)),
    ("strided(65536, stride=256)", lambda: S.strided(65536, 256)),
    ("block_local(65536, block_size=128)", lambda: S.block_local(65536, 128)),
    ("global_tokens(65536, g=16)", lambda: S.global_tokens(65536, 16)),
    ("random(65536, r=8)", lambda: S.random(65536, 8, generator=_gen())),
    ("bigbird(65536, w=64, g=2, r=3)", lambda: S.bigbird(65536, 64, 2, 3, generator=_gen())),
    ("longformer(65536, w=64, g=2)", lambda: S.longformer(65536, 64, 2)),
    ("bigbird(lengths=[1024] * 64, w=64, g=2, r=3)", lambda: S.bigbird(None, 64, 2, 3, lengths=[1024] * 64)),
    ("knn(x [65536, 2], k=16, lengths=[1024] * 64)", lambda: S.knn(torch.rand(65536, 2), 16, lengths=[1024] * 64)),
    ("grid(256, 256, radius=1)", lambda: S.grid(256, 256)),
    (
        "grid(256, 256, radius=3, connectivity=4, dilation=2)",
        lambda: S.grid(256, 256, radius=3, connectivity=4, dilation=2),
    ),
    ("axial(256, 256)", lambda: S.axial(256, 256)),
    ("grid(256, 256, patch_size=4, radius=2)", lambda: S.grid(256, 256, patch_size=4, radius=2)),
]


def timings(repeats: int = 5) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {repeats}")
    print("| builder | edges | build time |")
    print("| --- | ---: | ---: |")
    for name, build in TIMINGS:
        graph = build()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            graph = build()
            best = min(best, time.perf_counter() - t0)
        print(f"| `{name}` | {graph.num_edges:,} | {best * 1e3:.0f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timings", action="store_true", help="print the build-time table instead of drawing")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for --timings")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.timings:
        timings()
        return
    IMG.mkdir(parents=True, exist_ok=True)
    for name, (title, build) in PICTURES.items():
        print(draw(name, title, build()))


if __name__ == "__main__":
    main()
