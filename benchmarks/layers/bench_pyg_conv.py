"""A 4-layer PyG model with graphattn's GraphAttnConv vs the same model with PyG's TransformerConv.

Measures, in one run, the median training step time (forward + backward + Adam step) and the peak
memory of the tensors a step allocates, on ogbg-molhiv mini-batches (edge features on: bonds enter
scores and values) and on Cora (one full graph, no edge features). The molhiv batches are measured
twice: as the loader gives them (edges in the dataset's order, so GraphAttnConv sorts them by
destination and permutes the edge features in every layer), and with every molecule sorted once by
``ToGraph(store=False)`` before batching (the documented pipeline; both models get the same batches).
Both models start from the same weights (GraphAttnConv loads TransformerConv's state dict), and their
first losses are checked equal.

Peak memory on CPU: the largest total size of live tensor storages created during one training
step, tracked at the dispatcher (a ``TorchDispatchMode`` with weak storage references) in a pass
separate from the timed ones. Parameters and data loaded before the step are not counted.

Usage::

    python benchmarks/layers/bench_pyg_conv.py [--data ../shared/data] [--steps 20] [--compile]

Prints a table and writes JSON lines to ``benchmarks/results/bench_pyg_conv.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from torch_geometric.loader import DataLoader  # noqa: E402
from torch_geometric.nn import TransformerConv, global_mean_pool  # noqa: E402

import graphattn  # noqa: E402
from graphattn.datasets import load_ogbg, load_planetoid  # noqa: E402
from graphattn.nn.pyg import GraphAttnConv, ToGraph  # noqa: E402
from graphattn.ops import backends  # noqa: E402


# ---------------------------------------------------------------------------- peak memory
class PeakMemory(TorchDispatchMode):
    """Peak bytes of live tensor storages created while active (CPU has no allocator statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor) and t.device.type != "meta":
                s = t.untyped_storage()
                if s._cdata not in self.live:
                    self.live[s._cdata] = (StorageWeakRef(s), s.nbytes())
                    self.current += s.nbytes()
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        self.peak = max(self.peak, self.current)
        return out


# ---------------------------------------------------------------------------- models
class MolNet(nn.Module):
    """Atom / bond embeddings, 4 attention layers with residuals, mean pool, linear head."""

    def __init__(self, conv_cls: type, hidden: int, heads: int, layers: int = 4, **conv_kw: Any) -> None:
        super().__init__()
        self.atom = nn.ModuleList(nn.Embedding(128, hidden) for _ in range(9))
        self.bond = nn.ModuleList(nn.Embedding(8, hidden) for _ in range(3))
        self.convs = nn.ModuleList(
            conv_cls(hidden, hidden // heads, heads=heads, edge_dim=hidden, **conv_kw) for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.head = nn.Linear(hidden, 1)

    def forward(self, batch: Any) -> Tensor:
        h = sum(emb(batch.x[:, i]) for i, emb in enumerate(self.atom))
        e = sum(emb(batch.edge_attr[:, i]) for i, emb in enumerate(self.bond))
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = h + F.relu(conv(norm(h), batch.edge_index, e))
        return self.head(global_mean_pool(h, batch.batch, batch.num_graphs))

    def loss(self, batch: Any) -> Tensor:
        return F.binary_cross_entropy_with_logits(self(batch), batch.y.float())


class NodeNet(nn.Module):
    """Input projection, 4 attention layers with residuals, linear classifier (Cora)."""

    def __init__(
        self, conv_cls: type, in_dim: int, hidden: int, heads: int, classes: int, layers: int = 4, **kw
    ) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.convs = nn.ModuleList(conv_cls(hidden, hidden // heads, heads=heads, **kw) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, classes)

    def forward(self, data: Any) -> Tensor:
        h = self.inp(data.x)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = h + F.relu(conv(norm(h), data.edge_index))
        return self.out(h)

    def loss(self, data: Any) -> Tensor:
        return F.cross_entropy(self(data)[data.train_mask], data.y[data.train_mask])


# ---------------------------------------------------------------------------- measurement
def step(model: nn.Module, opt: torch.optim.Optimizer, batch: Any) -> float:
    opt.zero_grad(set_to_none=True)
    loss = model.loss(batch)
    loss.backward()
    opt.step()
    return float(loss.detach())


def measure(models: list[tuple[str, nn.Module]], batches: list, steps: int, warmup: int) -> list[dict[str, float]]:
    """Time the models round-robin (step i of every model, then step i + 1), so load from other
    processes on a shared machine hits all of them alike; then one memory pass per model."""
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for _, m in models]
    for i in range(warmup):
        for (_, m), opt in zip(models, opts, strict=True):
            step(m, opt, batches[i % len(batches)])
    times: list[list[float]] = [[] for _ in models]
    for i in range(steps):
        b = batches[i % len(batches)]
        for j, ((_, m), opt) in enumerate(zip(models, opts, strict=True)):
            t0 = time.perf_counter()
            step(m, opt, b)
            times[j].append(time.perf_counter() - t0)
    out = []
    for (_, m), opt, ts in zip(models, opts, times, strict=True):
        opt.zero_grad(set_to_none=True)
        with PeakMemory() as mem:
            step(m, opt, batches[0])
        out.append({"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts), "peak_mib": mem.peak / 2**20})
    return out


def variants(make: Any, compile_too: bool) -> list[tuple[str, nn.Module]]:
    """The PyG model and graphattn models (one per CPU backend) with the same weights; with
    ``compile_too`` also ``torch.compile``'d twins of TransformerConv and of the default GraphAttnConv."""
    torch.manual_seed(0)
    ref = make(TransformerConv, {})
    specs: list[tuple[str, type, dict]] = [("TransformerConv", TransformerConv, {})]
    for name in [b.name for b in backends() if b.unavailable() is None and "cpu" in b.devices]:
        specs.append((f"GraphAttnConv[{name}]", GraphAttnConv, {"backend": name}))
    if compile_too:
        specs += [("TransformerConv+compile", TransformerConv, {}), ("GraphAttnConv[auto]+compile", GraphAttnConv, {})]
    out = []
    for label, cls, kw in specs:
        model = ref if label == "TransformerConv" else make(cls, kw)
        model.load_state_dict(ref.state_dict(), strict=True)
        if label.endswith("+compile"):
            model.loss = torch.compile(model.loss, dynamic=True)
        out.append((label, model))
    return out


def run_task(task: str, make: Any, batches: list, steps: int, warmup: int, compile_too: bool) -> list[dict]:
    models = variants(make, compile_too)
    with torch.no_grad():
        first = [float(m.loss(batches[0])) for _, m in models]
    for (label, _), value in zip(models, first, strict=True):
        if abs(value - first[0]) > 1e-4 * max(1.0, abs(first[0])):
            raise AssertionError(f"{label} starts at loss {value}, TransformerConv at {first[0]}: not the same model")
    rows = []
    for (label, _), result in zip(models, measure(models, batches, steps, warmup), strict=True):
        rows.append({"task": task, "model": label, **result})
        print(f"  {task:<20} {label:<30} {result['median_ms']:9.2f} ms {result['peak_mib']:9.1f} MiB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("GRAPHATTN_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data", default=default_data, help="offline data root (default: ../shared/data)")
    parser.add_argument("--cache", default=None, help="writable cache (default: $GRAPHATTN_CACHE or ~/.cache)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128, help="molecules per ogbg-molhiv batch")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared machine)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models (slow to build)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_pyg_conv.jsonl"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    hiv = load_ogbg("ogbg-molhiv", args.data, cache_dir=args.cache)
    train = hiv.subset("train")
    n_batches = max(args.steps, args.warmup)
    molecules = train[: args.batch_size * n_batches]
    hiv_batches = list(DataLoader(molecules, batch_size=args.batch_size, shuffle=False))
    to_graph = ToGraph(store=False)  # destination-sorted examples: batches need no sort, edge_attr no permutation
    sorted_batches = list(DataLoader([to_graph(d) for d in molecules], batch_size=args.batch_size, shuffle=False))
    cora = load_planetoid("Cora", args.data, cache_dir=args.cache)[0]

    print(f"graphattn {graphattn.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"ogbg-molhiv: {len(hiv_batches)} batches of {args.batch_size} graphs "
        f"(~{hiv_batches[0].num_nodes} nodes, {hiv_batches[0].num_edges} edges); "
        f"Cora: {cora.num_nodes} nodes, {cora.num_edges} edges; hidden {args.hidden}, heads {args.heads}, 4 layers"
    )

    rows = []
    for task, batches in (("ogbg-molhiv", hiv_batches), ("ogbg-molhiv+ToGraph", sorted_batches)):
        rows += run_task(
            task,
            lambda cls, kw: MolNet(cls, args.hidden, args.heads, **kw),
            batches,
            args.steps,
            args.warmup,
            args.compile,
        )
    rows += run_task(
        "Cora",
        lambda cls, kw: NodeNet(cls, cora.num_features, args.hidden, args.heads, 7, **kw),
        [cora],
        args.steps,
        args.warmup,
        args.compile,
    )

    print()
    print("| task | model | median step (ms) | vs TransformerConv | peak step memory (MiB) |")
    print("| --- | --- | ---: | ---: | ---: |")
    base = {r["task"]: r for r in rows if r["model"] == "TransformerConv"}
    for r in rows:
        b = base[r["task"]]
        r["speedup_vs_pyg"] = b["median_ms"] / r["median_ms"]
        r["memory_vs_pyg"] = r["peak_mib"] / b["peak_mib"]
        print(
            f"| {r['task']} | {r['model']} | {r['median_ms']:.2f} | {r['speedup_vs_pyg']:.2f}x | {r['peak_mib']:.1f} |"
        )

    meta = {
        "bench": "bench_pyg_conv",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "batch_size": args.batch_size,
        "hidden": args.hidden,
        "heads": args.heads,
        "steps": args.steps,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        for r in rows:
            f.write(json.dumps({**meta, **r}) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
