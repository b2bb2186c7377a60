"""PyG node and graph classification sets: Planetoid (Cora, CiteSeer) and TU datasets.

Both go through PyG's own classes (``torch_geometric.datasets.Planetoid`` / ``TUDataset``), which
keep their normal download path; a local copy is copied into the cache first and read from there.
Planetoid is one graph (papers are nodes, citations edges in both directions, bag-of-words
features); a TU dataset is many small graphs (graph classification).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from ._common import cache_lock, cache_root, data_root, local_copy, try_download

__all__ = ["load_planetoid", "load_tu", "PLANETOID_DATASETS"]

PLANETOID_DATASETS = ("Cora", "CiteSeer")
"""Planetoid sets available offline (PubMed lacks ``ind.pubmed.allx`` in the shared data)."""

_PLANETOID_RAW = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


def load_planetoid(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    split: str = "public",
    cache_dir: str | os.PathLike | None = None,
    transform: Any = None,
    **kwargs: Any,
) -> Any:
    """Load Planetoid ``Cora`` or ``CiteSeer`` as a PyG dataset with one ``Data``.

    Looks for ``<root>/planetoid/<name>/raw/ind.<name>.*``; ``split="geom-gcn"`` also needs
    ``<root>/planetoid/<name>/geom-gcn/raw/`` (the 10 fixed 60/20/20 splits; the ``ind.*`` files
    are copied next to them, as PyG expects).

    Args:
        name: ``"Cora"`` or ``"CiteSeer"`` (PubMed too when downloadable).
        root: local data root; default ``$GRAPHATTN_DATA``.
        split: PyG's ``split`` (``"public"``, ``"full"``, ``"geom-gcn"``, ``"random"``).
        cache_dir: writable cache; default ``$GRAPHATTN_CACHE`` or ``~/.cache/graphattn``.
        transform: PyG transform applied on access (e.g. ``graphattn.nn.pyg.ToGraph()``).
        **kwargs: more arguments of ``torch_geometric.datasets.Planetoid``.
    """
    if name not in (*PLANETOID_DATASETS, "PubMed"):
        raise ValueError(f"name must be one of {', '.join(PLANETOID_DATASETS)} (or PubMed online), got {name!r}")
    splits = ("public", "full", "geom-gcn", "random")
    if split not in splits:  # PyG asserts it without a message, which try_download reported as a missing dataset
        raise ValueError(f"split must be one of {', '.join(splits)}, got {split!r}")
    from torch_geometric.datasets import Planetoid

    relative = f"planetoid/{name}"
    local = data_root(root)  # checked before the cache is touched
    cache = cache_root(cache_dir)
    stem = name.lower()

    def build() -> Any:
        return Planetoid(str(cache / "planetoid"), name, split=split, transform=transform, **kwargs)

    with cache_lock(cache, relative):
        required = tuple(f"raw/ind.{stem}.{s}" for s in _PLANETOID_RAW)
        copy = local_copy(local, relative, cache, required=required)
        if copy is None:
            return try_download(f"Planetoid {name}", local, relative, "GitHub (via torch_geometric)", build)
        if split == "geom-gcn":
            for s in _PLANETOID_RAW:
                target = copy / "geom-gcn" / "raw" / f"ind.{stem}.{s}"
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    shutil.copyfile(copy / "raw" / f"ind.{stem}.{s}", target)
        return build()


def load_tu(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    transform: Any = None,
    **kwargs: Any,
) -> Any:
    """Load a TU graph classification dataset (``MUTAG``, ``PROTEINS``, ``ENZYMES``, ...) with PyG.

    Looks for ``<root>/tudataset/<name>/raw/<name>_A.txt`` (TU's text format). TU sets have no
    official split: use a seeded stratified k-fold and say so.

    Args:
        name: TU dataset name (case as on the TU website).
        root: local data root; default ``$GRAPHATTN_DATA``.
        cache_dir: writable cache; default ``$GRAPHATTN_CACHE`` or ``~/.cache/graphattn``.
        transform: PyG transform applied on access.
        **kwargs: more arguments of ``torch_geometric.datasets.TUDataset`` (``use_node_attr``, ...).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a TU dataset name such as 'MUTAG', got {name!r}")
    from torch_geometric.datasets import TUDataset

    relative = f"tudataset/{name}"
    local = data_root(root)  # checked before the cache is touched
    cache = cache_root(cache_dir)

    def build() -> Any:
        return TUDataset(str(cache / "tudataset"), name, transform=transform, **kwargs)

    with cache_lock(cache, relative):
        if local_copy(local, relative, cache, required=(f"raw/{name}_A.txt",)) is not None:
            return build()
        source = "the TU website (via torch_geometric)"
        return try_download(f"TU dataset {name}", local, relative, source, build)
