"""Draw the adjacency of every structure builder on a small input.

    python docs/make_structure_pictures.py            # writes docs/img/structure_*.png

(Build times at scale: ``benchmarks/structures/bench_builders.py``.)

A picture shows ``graph.to_dense()``: row ``i`` (destination) has a dark cell in column ``j`` when
``i`` attends to ``j``. Batched examples show as diagonal blocks.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    IMG.mkdir(parents=True, exist_ok=True)
    for name, (title, build) in PICTURES.items():
        print(draw(name, title, build()))


if __name__ == "__main__":
    main()
