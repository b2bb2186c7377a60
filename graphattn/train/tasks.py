"""Tasks for ``graphattn train``: data, model, loss and metric, one class per kind of task.

A :class:`Task` is everything task-specific the engine needs; the attention structure is
chosen independently by name (:func:`make_structure`), so every task runs with every
structure on the same budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from .. import structure as S
from ..datasets.ogb import OGBG_DATASETS
from ..nn import SequenceClassifier

if TYPE_CHECKING:
    from .engine import TrainConfig

__all__ = ["Task", "SequenceTask", "get_task", "task_names", "attention_names", "make_structure"]


# ---------------------------------------------------------------------- structures by name
def _kind_name(kind: type | None) -> str:
    """How an option's error names its kind."""
    if kind is None:
        return "set"
    return "0 or 1" if kind is bool else ("an int" if kind is int else f"a {kind.__name__}")


def _opt(cfg: TrainConfig, key: str, default: Any, kind: type | None = None, *, minimum: float | None = None) -> Any:
    """Option ``key`` (``--option key=value``) or ``default``; checked as ``kind`` (int, float, bool,
    str) and ``>= minimum`` when given, with an error naming the option. Every key read is
    recorded with the value used (``result.json``'s ``options_used``): engine.train reports the
    others as unknown."""
    value = cfg.options.get(key, default)
    if value is None and default is not None:  # `--option key=null`: not a value of this option
        raise ValueError(f"--option {key} must be {_kind_name(kind)}, got null (leave it out for the default)")
    if kind is None or value is None:
        cfg._options_used[key] = value
        return value
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        bool: isinstance(value, bool) or value in (0, 1),
        str: isinstance(value, str),
    }[kind]
    if not ok:
        raise ValueError(f"--option {key} must be {_kind_name(kind)}, got {value!r}")
    value = kind(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"--option {key} must be >= {minimum}, got {value}")
    cfg._options_used[key] = value
    return value


WINDOWED = ("window", "bigbird", "longformer", "routing", "sac")
"""The ``--attention`` names with a local window, the ones that read ``--option window``."""


def make_structure(name: str, cfg: TrainConfig, max_len: int) -> S.Structure:
    """The structure called ``name``, sized from ``cfg`` (heads, dim, ``options``) and ``max_len``.

    Options (``--option KEY=VALUE``): ``window`` (local width, for the :data:`WINDOWED` names;
    default 16), ``global`` (global
    tokens, 2), ``random`` (random sources, 3), ``clusters`` (routing centroids, default
    ``sqrt(max_len)``), ``sbm_clusters`` (32), ``sbm_degree`` (SBM's expected sampled in-edges per
    node at initialization, 16), ``edges`` (SAC edges per node, 32),
    ``sac_mode`` (``reinforce``), ``region`` (Combiner region size, default ``sqrt(L)``),
    ``k`` (SEA keys per query, 32).
    """
    heads, head_dim = cfg.heads, cfg.dim // cfg.heads

    def window(minimum: int = 1) -> int:  # read only by the structures with a local window: others report it unknown
        return _opt(cfg, "window", 16, int, minimum=minimum)

    if name == "full":
        return S.Full()
    if name == "window":
        return S.Window(window())
    if name == "bigbird":
        return S.BigBird(window(), _opt(cfg, "global", 2, int), _opt(cfg, "random", 3, int))
    if name == "longformer":
        return S.Longformer(window(), _opt(cfg, "global", 2, int))
    if name == "routing":
        from ..structure.routing import Routing

        clusters = _opt(cfg, "clusters", max(1, round(math.sqrt(max_len))), int, minimum=1)
        return Routing(heads, head_dim, clusters, window=window(minimum=0))  # 0: routed edges only
    if name == "sbm":
        from ..structure.sbm import SBM

        degree = _opt(cfg, "sbm_degree", 16, float)
        return SBM(heads, head_dim, _opt(cfg, "sbm_clusters", 32, int), init_density=min(1.0, degree / max_len))
    if name == "sac":
        from ..structure.sac import SAC

        mode = _opt(cfg, "sac_mode", "reinforce", str)
        return SAC(heads, head_dim, _opt(cfg, "edges", 32, int), window=window(), mode=mode)
    if name in ("combiner", "combiner-logsparse", "combiner-mixture"):
        from ..structure.combiner import Combiner

        variant = "fixed" if name == "combiner" else name.split("-")[1]
        return Combiner(variant, _opt(cfg, "region", None, int, minimum=1))
    if name == "sea":
        from ..structure.sea import SEA

        return SEA(heads, head_dim, _opt(cfg, "k", 32, int))
    if name == "grid":
        raise ValueError("attention 'grid' is for image tasks (digits, mnist-graph): the patch neighbourhood graph")
    if name == "graph":
        raise ValueError(
            "attention 'graph' (the input edges) is for node tasks (cora, citeseer) and the molecule conv models"
        )
    raise ValueError(f"attention must be one of {attention_names()}, got {name!r}")


def attention_names() -> list[str]:
    """Every ``--attention`` name; each task runs the subset its :meth:`Task.attentions` lists."""
    return [
        "full",
        "window",
        "bigbird",
        "longformer",
        "routing",
        "sbm",
        "sac",
        "combiner",
        "combiner-logsparse",
        "combiner-mixture",
        "sea",
        "grid",
        "graph",
    ]


# ---------------------------------------------------------------------- tasks
class Task:
    """What the engine needs from a task. Batches are dicts of tensors."""

    name: str = ""
    metric_name: str = "accuracy"
    higher_is_better: bool = True
    dim_is_per_head: bool = False
    """Whether ``--dim`` is each head's width (the node tasks' GAT recipe) rather than the model's,
    which ``--heads`` must divide (checked before any data loads)."""

    def attentions(self, cfg: TrainConfig) -> list[str]:
        """The ``--attention`` names this task runs with ``cfg`` (checked before any data loads):
        the sequence structures, not ``grid`` (image tasks) or ``graph`` (the input edges)."""
        return [name for name in attention_names() if name not in ("grid", "graph")]

    def datasets(self, cfg: TrainConfig) -> tuple[Dataset, Dataset, Dataset]:
        raise NotImplementedError

    def collate(self, items: Sequence[Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(predictions, aux_loss)``."""
        raise NotImplementedError

    def task_loss(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(pred, batch["y"])

    def example_losses(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor | None:
        """Each example's own loss ``[B]``, in batch order (the order of the structures' ``ptr``):
        SAC's REINFORCE reward is its negative. ``None`` where a batch is one example (a whole
        graph of node labels); the reward is then the negative task loss."""
        return F.cross_entropy(pred, batch["y"], reduction="none")

    def predict(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return self.forward(model, batch)[0]

    def target(self, batch: dict[str, Tensor]) -> Tensor:
        return batch["y"]

    def metric(self, pred: Tensor, target: Tensor) -> float:
        return float((pred.argmax(-1) == target).float().mean()) if target.numel() else float("nan")

    def prepare_metric(self, cfg: TrainConfig) -> None:
        """Set up :meth:`metric` without building the datasets (``graphattn ensemble`` scores saved
        predictions); accuracy needs nothing, a task whose metric comes with its data loads that."""

    def batch_size(self, batch: dict[str, Tensor]) -> int:
        return int(batch["y"].shape[0])

    @staticmethod
    def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
        return {k: v.to(device) for k, v in batch.items()}


class SequenceTask(Task):
    """Token sequences -> one class each; batches concatenate examples (no padding)."""

    vocab_size: int | None = 0
    in_features: int | None = None  # real-valued inputs [L, in_features] instead of token ids
    num_classes: int = 0
    max_len: int = 0
    pooling: str = "mean"
    positional: str | None = "sinusoidal"

    def collate(self, items: Sequence[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        tokens = [t for t, _ in items]
        return {
            "tokens": torch.cat(tokens),
            "lengths": torch.tensor([t.shape[0] for t in tokens], dtype=torch.long),
            "y": torch.stack([torch.as_tensor(y) for _, y in items]),
        }

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        return SequenceClassifier(
            self.vocab_size,
            self.num_classes,
            d_model=cfg.dim,
            nhead=cfg.heads,
            num_layers=cfg.layers,
            dropout=cfg.dropout,
            structure=make_structure(cfg.attention, cfg, self.max_len),
            pooling=self.pooling,
            positional=self.positional,
            in_features=self.in_features,
        )

    def forward(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        out = model(batch["tokens"], lengths=batch["lengths"])
        return out.logits, out.aux_loss


class RecallTask(SequenceTask):
    """Associative recall (:mod:`graphattn.datasets.recall`); options ``length``, ``pairs``, ``train_size``,
    ``eval_size``, ``resample`` (1: a new training set of ``train_size`` examples every epoch) and
    ``pair_tokens`` (1: one token per key-value pair, the answer one attention hop from the query)."""

    name = "recall"
    pooling = "first"  # the query leads the sequence
    _features: Tensor | None = None  # the id -> multi-hot table with pair_tokens

    def datasets(self, cfg: TrainConfig) -> tuple[Dataset, Dataset, Dataset]:
        from ..datasets.recall import AssociativeRecall, RecallConfig

        rc = RecallConfig(
            length=_opt(cfg, "length", 1024, int),
            num_pairs=_opt(cfg, "pairs", 8, int),
            pair_tokens=_opt(cfg, "pair_tokens", 0, bool),
        )
        self.num_classes, self.max_len = rc.num_values, rc.length
        # Pair tokens are read through their key and value one-hots (see RecallConfig.token_features).
        self._features = rc.token_features() if rc.pair_tokens else None
        if self._features is None:
            self.vocab_size, self.in_features, self.positional = rc.vocab_size, None, "sinusoidal"
        else:
            # No positional code: order carries nothing in this layout, and a sinusoidal code
            # (norm sqrt(d / 2)) is ~5x the embedding of a one-hot row at init, burying the key.
            self.vocab_size, self.in_features, self.positional = None, self._features.shape[1], None
        n_train = _opt(cfg, "train_size", 4000, int, minimum=1)
        n_eval = _opt(cfg, "eval_size", 500, int, minimum=1)
        # Disjoint seeds per split; cfg.seed moves all of them.
        base = 1000 * cfg.seed
        return (
            AssociativeRecall(n_train, rc, seed=base + 1, resample=_opt(cfg, "resample", 0, bool)),
            AssociativeRecall(n_eval, rc, seed=base + 2),
            AssociativeRecall(n_eval, rc, seed=base + 3),
        )

    def collate(self, items: Sequence[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        batch = super().collate(items)
        if self._features is not None:
            batch["tokens"] = self._features[batch["tokens"]]
        return batch


class _TokenSequences(Dataset):
    """``(tokens [L_i], label)`` items from padded ``tokens [N, L_max]`` and ``lengths [N]``."""

    def __init__(self, tokens: Tensor, lengths: Tensor, labels: Tensor) -> None:
        self.tokens, self.lengths, self.labels = tokens, lengths, labels

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.tokens[i, : int(self.lengths[i])], self.labels[i]


class ListOpsTask(SequenceTask):
    """LRA ListOps, generated (:func:`graphattn.datasets.generate_listops`); options ``min_length``,
    ``max_length`` (exclusive bounds, default 32 and 512), ``train_size`` (4000), ``eval_size`` (500)."""

    name = "listops"

    def datasets(self, cfg: TrainConfig) -> tuple[Dataset, Dataset, Dataset]:
        from ..datasets.listops import LISTOPS_VOCAB, generate_listops

        lo, hi = _opt(cfg, "min_length", 32, int), _opt(cfg, "max_length", 512, int)
        n_train, n_eval = _opt(cfg, "train_size", 4000, int, minimum=1), _opt(cfg, "eval_size", 500, int, minimum=1)
        self.vocab_size, self.num_classes, self.max_len = len(LISTOPS_VOCAB), 10, hi
        # One draw of distinct trees, split in order: no tree is in two splits.
        data = generate_listops(n_train + 2 * n_eval, min_length=lo, max_length=hi, seed=cfg.seed)
        parts = (slice(0, n_train), slice(n_train, n_train + n_eval), slice(n_train + n_eval, None))
        return tuple(_TokenSequences(data.tokens[p], data.lengths[p], data.labels[p]) for p in parts)


class MNIST1DTask(SequenceTask):
    """MNIST-1D (Greydanus 2020): 40-step real-valued signals, 10 classes; the official 4000 / 1000
    split, the last 500 training signals held out for validation. Option ``valid_size`` (500)."""

    name = "mnist1d"
    vocab_size = None
    in_features = 1

    def datasets(self, cfg: TrainConfig) -> tuple[Dataset, Dataset, Dataset]:
        from ..datasets.sequences import load_mnist1d

        data = load_mnist1d(cfg.data_root)
        self.num_classes, self.max_len = data.num_classes, data.x_train.shape[1]
        n_valid = _opt(cfg, "valid_size", 500, int, minimum=1)
        if n_valid >= data.x_train.shape[0]:
            raise ValueError(
                f"--option valid_size must be below the {data.x_train.shape[0]} training examples, got {n_valid}"
            )
        cut = data.x_train.shape[0] - n_valid
        x_train, x_test = data.x_train[..., None], data.x_test[..., None]  # [N, L, 1]

        def part(x: Tensor, y: Tensor) -> Dataset:
            return _TokenSequences(x, torch.full((x.shape[0],), x.shape[1]), y)

        return (
            part(x_train[:cut], data.y_train[:cut]),
            part(x_train[cut:], data.y_train[cut:]),
            part(x_test, data.y_test),
        )


class SSTTask(SequenceTask):
    """Stanford Sentiment Treebank, sentence level (root label): 5 classes, or 2 with option
    ``binary=1`` (SST-2); train / dev / test as released; vocabulary from the training split
    (lower-cased)."""

    name = "sst"

    def datasets(self, cfg: TrainConfig) -> tuple[Dataset, Dataset, Dataset]:
        from ..datasets.sst import build_vocab, encode, load_sst

        binary = _opt(cfg, "binary", 0, bool)
        splits = [load_sst(split, cfg.data_root, binary=binary) for split in ("train", "dev", "test")]
        vocab = build_vocab(splits[0], lower=True)
        self.vocab_size, self.num_classes = len(vocab), 2 if binary else 5
        parts = []
        for sentences in splits:
            ids = encode(sentences, vocab, lower=True)
            self.max_len = max(self.max_len, max(t.numel() for t in ids))
            parts.append(_Items(list(zip(ids, [torch.tensor(s.label) for s in sentences], strict=True))))
        return tuple(parts)


class _Items(Dataset):
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class ImageTask(Task):
    """Images as graphs of patches (:class:`graphattn.nn.ImageClassifier`).

    ``digits``: scikit-learn's 1797 8x8 digits, 2x2 patches (16 nodes). ``mnist-graph``: the 10,000
    MNIST test images (the only MNIST images available offline), 4x4 patches (49 nodes). Both split
    80 / 10 / 10 with a fixed seed (independent of ``--seed``). ``--attention grid`` is the patch
    neighbourhood graph (radius 1, 8-connected); any sequence structure runs over the patches in
    raster order. Option ``patch`` overrides the patch size.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.num_classes = 10
        self.patch = 2 if name == "digits" else 4
        self.num_patches = 0

    def attentions(self, cfg: TrainConfig) -> list[str]:
        return [*super().attentions(cfg), "grid"]

    def datasets(self, cfg: TrainConfig) -> tuple[Dataset, Dataset, Dataset]:
        from ..datasets.images import load_digits, load_mnist_test

        data = load_digits() if self.name == "digits" else load_mnist_test(cfg.data_root)
        self.num_classes = data.num_classes
        self.patch = _opt(cfg, "patch", self.patch, int, minimum=1)
        if self.patch > min(data.grid):
            raise ValueError(f"--option patch must be at most the image side {min(data.grid)}, got {self.patch}")
        self.num_patches = (data.grid[0] // self.patch) * (data.grid[1] // self.patch)
        n = len(data)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(12345))
        a, b = round(0.8 * n), round(0.9 * n)
        images = data.images[:, None]  # [B, 1, H, W]
        return tuple(
            _Items(list(zip(images[idx], data.labels[idx], strict=True))) for idx in (perm[:a], perm[a:b], perm[b:])
        )

    def collate(self, items: Sequence[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        return {"images": torch.stack([x for x, _ in items]), "y": torch.stack([y for _, y in items])}

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        from ..nn import ImageClassifier

        structure = None if cfg.attention == "grid" else make_structure(cfg.attention, cfg, self.num_patches)
        return ImageClassifier(
            1,
            self.num_classes,
            patch_size=self.patch,
            d_model=cfg.dim,
            nhead=cfg.heads,
            num_layers=cfg.layers,
            dropout=cfg.dropout,
            structure=structure,
        )

    def forward(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        out = model(batch["images"])
        return out.logits, out.aux_loss


def _graph_task(kind: str, name: str) -> Callable[[], Task]:
    def make() -> Task:
        from . import graph_tasks  # PyG / ogb are imported only for these tasks

        return getattr(graph_tasks, kind)(name)

    return make


_TASKS: dict[str, Callable[[], Task]] = {
    "recall": RecallTask,
    "listops": ListOpsTask,
    **{name: _graph_task("MoleculeTask", name) for name in OGBG_DATASETS},
    "mnist1d": MNIST1DTask,
    "sst": SSTTask,
    "digits": lambda: ImageTask("digits"),
    "mnist-graph": lambda: ImageTask("mnist-graph"),
    "cora": _graph_task("NodeTask", "cora"),
    "citeseer": _graph_task("NodeTask", "citeseer"),
}


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """A fresh task object by name; ``ValueError`` listing the known ones otherwise."""
    if name not in _TASKS:
        raise ValueError(f"task must be one of {task_names()}, got {name!r}")
    return _TASKS[name]()
