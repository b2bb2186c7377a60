"""``make demo``: the main job on an embedded default (no download), in about five minutes on 2 cores.

1. The op: attention over a sequence window graph and over a batch of real molecule graphs
   (built from SMILES with RDKit through ``ogb.utils.smiles2graph``, when installed), checked
   against dense masked attention (``scaled_dot_product_attention``), with timings.
2. The main job: ``graphattn train`` on associative recall (key-value pairs, one token each,
   scattered in a long sequence generated from a seed; see :mod:`graphattn.datasets.recall`) with a
   local window against content-based routing on the same budget, printing accuracy, speed and
   peak memory of each run.

Run ``python -m graphattn.demo --help`` for the knobs; ``--quick`` is a 1-minute smoke version.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .graph import Graph
from .ops import edge_attention
from .structure import batch, window

# A few drug molecules (public SMILES): caffeine, aspirin, ibuprofen, paracetamol, nicotine.
MOLECULES = {
    "caffeine": "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "aspirin": "CC(=O)OC1=CC=CC=C1C(=O)O",
    "ibuprofen": "CC(C)CC1=CC=C(C=C1)C(C)C(=O)O",
    "paracetamol": "CC(=O)NC1=CC=C(C=C1)O",
    "nicotine": "CN1CCCC1C2=CN=CC=C2",
}


def _median_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * sorted(times)[len(times) // 2]


def _agreement(name: str, graph: Graph, heads: int, dim: int) -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(graph.num_dst, heads, dim, generator=gen) for _ in range(3))
    mask = graph.to_dense() > 0
    out = edge_attention(q, k, v, graph)
    dense = F.scaled_dot_product_attention(*(t.transpose(0, 1) for t in (q, k, v)), attn_mask=mask).transpose(0, 1)
    err = (out - dense).abs().max().item()
    t_graph = _median_ms(lambda: edge_attention(q, k, v, graph))
    t_dense = _median_ms(
        lambda: F.scaled_dot_product_attention(*(t.transpose(0, 1) for t in (q, k, v)), attn_mask=mask)
    )
    print(
        f"  {name:<34} N={graph.num_dst:<6} E={graph.num_edges:<8} max |graph - dense| = {err:.1e}   "
        f"graph {t_graph:7.2f} ms   dense {t_dense:8.2f} ms"
    )


def _molecules() -> Graph | None:
    try:
        from ogb.utils import smiles2graph
    except ImportError:
        print("  (molecules skipped: install the 'ogb' extra for RDKit + ogb)")
        return None
    graphs = []
    for smiles in MOLECULES.values():
        g = smiles2graph(smiles)
        ei = torch.as_tensor(g["edge_index"], dtype=torch.long)
        n = int(g["num_nodes"])
        loops = torch.arange(n).repeat(2, 1)  # each atom attends to itself and its bonded neighbours
        graphs.append(Graph.from_edge_index(torch.cat([ei, loops], 1), n, n))
    return batch(graphs)


def part_one() -> None:
    print("1. edge_attention vs dense masked attention (float32, H=4, D=64)")
    _agreement("sequence, window(32), N=4096", window(4096, 32), 4, 64)
    mols = _molecules()
    if mols is not None:
        _agreement(f"{len(MOLECULES)} molecules (bonds + self loops)", mols, 4, 64)


def part_two(structures: list[str], args: argparse.Namespace) -> None:
    from .train.tasks import WINDOWED

    print(
        f"\n2. graphattn train --task recall (length {args.length}, {args.pairs} key-value pairs of one token each, "
        "chance 1/16), "
        f"{args.epochs} epochs of {args.train_size} examples each"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in structures:
            out = Path(tmp) / name
            cmd = [
                sys.executable, "-m", "graphattn", "train", "--task", "recall", "--attention", name,
                "--epochs", str(args.epochs), "--dim", "64", "--heads", "4", "--layers", "2", "--lr", "3e-3",
                "--batch-size", "32", "--no-progress", "--out", str(out),
                "--option", f"length={args.length}", "--option", f"pairs={args.pairs}",
                "--option", f"train_size={args.train_size}", "--option", "eval_size=500",
                "--option", "pair_tokens=1",
            ]  # fmt: skip
            if name in WINDOWED:
                cmd += ["--option", "window=8"]
            print(f"   training {name} ...", flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            rows.append(json.loads((out / "result.json").read_text()))
    print(f"\n   {'structure':<12}{'test acc':>10}{'samples/s':>12}{'train s':>10}{'peak RSS MiB':>15}")
    for r in rows:
        print(
            f"   {r['attention']:<12}{r['test_accuracy']:>10.3f}{r['samples_per_s']:>12.1f}"
            f"{r['train_seconds']:>10.1f}{r['peak_rss_mib']:>15.0f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke version")
    parser.add_argument("--structures", default="window,routing", help="comma-separated structures to compare")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=2000, dest="train_size")
    args = parser.parse_args(argv)
    if args.quick:
        args.length, args.epochs, args.train_size = 64, 1, 256
    t0 = time.perf_counter()
    part_one()
    part_two(args.structures.split(","), args)
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
