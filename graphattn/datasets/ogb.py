"""OGB graph property prediction (molecules) through the ``ogb`` package, with its Evaluator.

Each molecule is a graph: atoms are nodes (9 integer features, ``x [N, 9]``), bonds are edges in
both directions (3 integer features, ``edge_attr [E, 3]``), one label row ``y [1, T]`` per graph
(NaN = missing label). Mini-batches are PyG's block-diagonal batches. Splits are OGB's scaffold
splits; the metric is the Evaluator's (ROC-AUC for classification sets, RMSE for regression).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ._common import cache_lock, cache_root, data_root, local_copy, no_weights_only_load, try_download

__all__ = ["OGBGraphTask", "load_ogbg", "OGBG_DATASETS"]

OGBG_DATASETS = (
    "ogbg-molhiv",
    "ogbg-molesol",
    "ogbg-molfreesolv",
    "ogbg-molbace",
    "ogbg-molbbbp",
    "ogbg-mollipo",
    "ogbg-moltox21",
    "ogbg-molsider",
    "ogbg-moltoxcast",
)
"""Names this loader accepts (the first five are the issue's; the rest load the same way)."""


@dataclass
class OGBGraphTask:
    """A loaded OGB graph property prediction dataset.

    Attributes:
        name: e.g. ``"ogbg-molhiv"``.
        dataset: ``ogb.graphproppred.PygGraphPropPredDataset`` (a PyG ``InMemoryDataset``).
        split: ``{"train", "valid", "test"} -> int64 index tensor`` (OGB's scaffold split).
        evaluator: ``ogb.graphproppred.Evaluator``; ``evaluator.eval({"y_true": ..., "y_pred": ...})``.
        metric: the evaluator's metric name (``"rocauc"`` or ``"rmse"``).
        num_tasks: label columns per graph.
    """

    name: str
    dataset: Any
    split: dict[str, Tensor]
    evaluator: Any
    metric: str
    num_tasks: int

    def subset(self, part: str) -> Any:
        """The dataset restricted to one split (``"train"``, ``"valid"`` or ``"test"``)."""
        if part not in self.split:
            raise ValueError(f"part must be one of {sorted(self.split)}, got {part!r}")
        return self.dataset[self.split[part]]


def _import_ogb() -> tuple[Any, Any]:
    # ogb imports dgl if it can; with dgl 2.1 on a newer torch that import half-fails and leaves
    # broken dgl submodules behind. Importing dgl through the compat helper first avoids it.
    from .._compat import import_dgl

    with contextlib.suppress(ImportError):
        import_dgl()
    try:
        from ogb.graphproppred import Evaluator, PygGraphPropPredDataset
    except ImportError as err:
        raise ImportError("OGB datasets need `pip install ogb rdkit torch-geometric`") from err
    return PygGraphPropPredDataset, Evaluator


def load_ogbg(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    transform: Any = None,
    pre_transform: Any = None,
) -> OGBGraphTask:
    """Load an OGB molecule dataset (``ogbg-molhiv``, ``-molesol``, ``-molfreesolv``, ``-molbace``, ``-molbbbp``, ...).

    Looks for ``<root>/ogb/ogbg_<mol>/`` (OGB's unzipped layout), copies it to
    ``<cache>/ogb/ogbg_<mol>/`` and processes it there with ``ogb``; without a local copy, ``ogb``
    downloads into the cache.

    Args:
        name: dataset name, one of :data:`OGBG_DATASETS`.
        root: local data root (see :mod:`graphattn.datasets`); default ``$GRAPHATTN_DATA``.
        cache_dir: writable cache; default ``$GRAPHATTN_CACHE`` or ``~/.cache/graphattn``.
        transform: PyG transform applied on access (e.g. ``graphattn.nn.pyg.ToGraph(store=False)``).
        pre_transform: PyG transform applied once while processing.

    Raises:
        ValueError: unknown ``name``.
        DatasetNotFoundError: not local and the download failed.
    """
    if name not in OGBG_DATASETS:
        raise ValueError(f"name must be one of {', '.join(OGBG_DATASETS)}, got {name!r}")
    folder = name.replace("-", "_")
    relative = f"ogb/{folder}"
    local = data_root(root)  # checked before the cache is touched
    cache = cache_root(cache_dir)
    dataset_cls, evaluator_cls = _import_ogb()
    ogb_root = str(cache / "ogb")

    def build() -> Any:
        with no_weights_only_load(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
            warnings.filterwarnings("ignore", message=".*NumPy array is not writable.*")
            return dataset_cls(name=name, root=ogb_root, transform=transform, pre_transform=pre_transform)

    with cache_lock(cache, relative):
        copy = local_copy(local, relative, cache, required=("raw/edge.csv.gz", "RELEASE_v1.txt"))
        if copy is not None:
            # ogb's numpy loader expects processed/ to exist; git does not keep empty folders.
            (copy / "processed").mkdir(exist_ok=True)
            dataset = build()
        else:
            dataset = try_download(name, local, relative, "the OGB servers (via ogb)", build)
    with no_weights_only_load(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
        split = {k: v for k, v in dataset.get_idx_split().items()}
    evaluator = evaluator_cls(name)
    return OGBGraphTask(name, dataset, split, evaluator, evaluator.eval_metric, int(dataset.num_tasks))
