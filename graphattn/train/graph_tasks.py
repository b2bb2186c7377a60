"""Graph tasks for ``graphattn train``: OGB molecules (graph level) and citation graphs (node level).

These need PyG (``pip install graphattn[pyg]``) and, for molecules, ``ogb``; both are imported
when a task is built, not when :mod:`graphattn.train` is imported.

* :class:`MoleculeTask` (``ogbg-molhiv``, ``ogbg-molesol``, ...): OGB's scaffold split and
  Evaluator. Models (``--option model=...``):

  - ``gps`` (default): a GPS layer stack (Rampášek et al., "Recipe for a General, Powerful, Scalable
    Graph Transformer", NeurIPS 2022, https://arxiv.org/abs/2205.12454): per layer a local
    message-passing branch (GINE over the bonds, Hu et al. 2020) and a global attention branch
    (:class:`graphattn.nn.GraphAttention` over the structure named by ``--attention``, within each
    molecule), summed, then a feed-forward block; random-walk structural encodings (RWSE, 16
    steps) added to the atom embeddings.
  - ``transformerconv``: the plain baseline of the issue: PyG's ``TransformerConv`` layers (bond
    features as ``edge_attr``), batch norm, ReLU, mean pool.
  - ``graphattnconv``: the same baseline with :class:`graphattn.nn.pyg.GraphAttnConv` (equal
    math, the fused op).

* :class:`NodeTask` (``cora``, ``citeseer``): Planetoid's public split (140 / 500 / 1000 nodes on
  Cora), two :class:`~graphattn.nn.pyg.GraphAttnConv` layers with self loops and no skip weight,
  dropout on inputs and attention as in GAT (Veličković et al., ICLR 2018,
  https://arxiv.org/abs/1710.10903), row-normalized features. An "epoch" is one full-graph step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..nn import GraphAttention
from ..nn.models import segment_pool
from .tasks import Task, _opt, make_structure

if TYPE_CHECKING:
    from .engine import TrainConfig

__all__ = ["MoleculeTask", "NodeTask", "MoleculeGPS", "MoleculeConvNet", "random_walk_encoding"]


def random_walk_encoding(edge_index: Tensor, ptr: Tensor, steps: int) -> Tensor:
    r"""Random-walk structural encoding: :math:`[(D^{-1}A)^k]_{ii}` for :math:`k = 1..steps`, ``[N, steps]``.

    The probability that a random walk from node :math:`i` is back at :math:`i` after :math:`k`
    steps (Dwivedi et al., "Graph Neural Networks with Learnable Structural and Positional
    Representations", ICLR 2022). Computed per batch on dense per-graph blocks ``[B, n_max, n_max]``
    (molecules are small; memory ``B * n_max^2``). Isolated nodes get zeros.
    """
    counts = ptr[1:] - ptr[:-1]
    b, n = counts.numel(), int(ptr[-1])
    if n == 0 or steps == 0:
        return torch.zeros(n, steps)
    n_max = int(counts.max())
    graph_of = torch.repeat_interleave(torch.arange(b), counts, output_size=n)
    local = torch.arange(n) - ptr[graph_of]
    adj = torch.zeros(b, n_max, n_max)
    src, dst = edge_index
    adj[graph_of[src], local[src], local[dst]] = 1.0
    walk = adj / adj.sum(-1, keepdim=True).clamp(min=1.0)
    power, out = walk, []
    for _ in range(steps):
        out.append(torch.diagonal(power, dim1=1, dim2=2))
        power = power @ walk
    return torch.stack(out, -1)[graph_of, local]  # [N, steps]


class _WithRWSE(Dataset):
    """A PyG dataset whose items carry ``rwse [n, steps]``, computed once per graph on first pass."""

    def __init__(self, dataset: Any, steps: int) -> None:
        self.dataset, self.steps = dataset, steps
        self._cache: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        data = self.dataset[i]
        rwse = self._cache.get(i)
        if rwse is None:
            ptr = torch.tensor([0, data.num_nodes])
            rwse = self._cache[i] = random_walk_encoding(data.edge_index, ptr, self.steps)
        data.rwse = rwse
        return data


class _GPSLayer(nn.Module):
    """Local GINE + global graphattn attention, summed, then an FFN; batch norm after each residual."""

    def __init__(self, hidden: int, heads: int, dropout: float, attn_dropout: float, structure: Any) -> None:
        super().__init__()
        from torch_geometric.nn import GINEConv

        mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.local = GINEConv(mlp, edge_dim=hidden)
        self.attn = GraphAttention(hidden, heads, structure=structure, dropout=attn_dropout)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * hidden, hidden)
        )
        self.norm_local, self.norm_attn, self.norm_ffn = (nn.BatchNorm1d(hidden) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, ptr: Tensor) -> tuple[Tensor, Tensor]:
        h_local = self.norm_local(x + self.dropout(self.local(x, edge_index, edge_attr)))
        att = self.attn(x, ptr=ptr)
        h_attn = self.norm_attn(x + self.dropout(att.output))
        h = h_local + h_attn
        return self.norm_ffn(h + self.dropout(self.ffn(h))), att.aux_loss


class MoleculeGPS(nn.Module):
    """GPS over OGB molecules: atom/bond encoders + RWSE, :class:`_GPSLayer` x ``layers``, mean pool, MLP head.

    ``structure`` is any graphattn structure for the global branch (``Full()`` is GPS's
    Transformer); edges never cross molecules (the structure sees the batch ``ptr``).
    """

    def __init__(
        self,
        num_tasks: int,
        hidden: int = 64,
        layers: int = 5,
        heads: int = 4,
        dropout: float = 0.05,
        attn_dropout: float = 0.5,
        structure: Any = None,
        rwse_steps: int = 16,
    ) -> None:
        super().__init__()
        from ogb.graphproppred.mol_encoder import AtomEncoder, BondEncoder

        self.atom, self.bond = AtomEncoder(hidden), BondEncoder(hidden)
        self.rwse_steps = rwse_steps
        self.rwse = nn.Sequential(nn.BatchNorm1d(rwse_steps), nn.Linear(rwse_steps, hidden)) if rwse_steps else None
        self.layers = nn.ModuleList(_GPSLayer(hidden, heads, dropout, attn_dropout, structure) for _ in range(layers))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_tasks))

    def forward(self, batch: Any) -> tuple[Tensor, Tensor]:
        x = self.atom(batch.x)
        if self.rwse is not None:
            x = x + self.rwse(batch.rwse)
        e = self.bond(batch.edge_attr)
        aux = x.new_zeros(())
        for layer in self.layers:
            x, a = layer(x, batch.edge_index, e, batch.ptr)
            aux = aux + a
        return self.head(segment_pool(x, batch.ptr, "mean")), aux


class MoleculeConvNet(nn.Module):
    """The plain baseline: atom/bond encoders, ``layers`` x (conv -> batch norm -> ReLU -> dropout) with
    residuals, mean pool, linear head. ``conv`` is ``"transformerconv"`` (PyG) or ``"graphattnconv"``."""

    def __init__(
        self, num_tasks: int, conv: str, hidden: int = 64, layers: int = 3, heads: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        from ogb.graphproppred.mol_encoder import AtomEncoder, BondEncoder

        if conv == "transformerconv":
            from torch_geometric.nn import TransformerConv as Conv
        elif conv == "graphattnconv":
            from ..nn.pyg import GraphAttnConv as Conv
        else:
            raise ValueError(f"conv must be 'transformerconv' or 'graphattnconv', got {conv!r}")
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.atom, self.bond = AtomEncoder(hidden), BondEncoder(hidden)
        self.convs = nn.ModuleList(Conv(hidden, hidden // heads, heads=heads, edge_dim=hidden) for _ in range(layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_tasks)

    def forward(self, batch: Any) -> tuple[Tensor, Tensor]:
        x, e = self.atom(batch.x), self.bond(batch.edge_attr)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = x + self.dropout(F.relu(norm(conv(x, batch.edge_index, e))))
        return self.head(segment_pool(x, batch.ptr, "mean")), x.new_zeros(())


class MoleculeTask(Task):
    """An OGB ``ogbg-mol*`` dataset: graph-level labels, OGB's metric (ROC-AUC or RMSE).

    Options: ``model`` (``gps``, ``transformerconv``, ``graphattnconv``), ``rwse`` (steps, 16),
    ``attn_dropout`` (0.5).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.metric_name = "rocauc"
        self.higher_is_better = True
        self._info: Any = None
        self._rwse_steps = 16

    def datasets(self, cfg: TrainConfig) -> tuple[Dataset, Dataset, Dataset]:
        from ..datasets.ogb import load_ogbg

        self._info = load_ogbg(self.name, cfg.data_root)
        self.metric_name = self._info.metric
        self.higher_is_better = self.metric_name != "rmse"
        model = str(_opt(cfg, "model", "gps"))
        self._rwse_steps = int(_opt(cfg, "rwse", 16)) if model == "gps" else 0
        splits = tuple(self._info.subset(part) for part in ("train", "valid", "test"))
        if self._rwse_steps:
            splits = tuple(_WithRWSE(part, self._rwse_steps) for part in splits)
        return splits

    def collate(self, items: Sequence[Any]) -> Any:
        from torch_geometric.data import Batch

        return Batch.from_data_list(list(items))

    @staticmethod
    def to_device(batch: Any, device: torch.device) -> Any:
        return batch.to(device)

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        if self._info is None:
            raise RuntimeError("call datasets() before build_model(): the label count comes from the data")
        model = str(_opt(cfg, "model", "gps"))
        if model == "gps":
            return MoleculeGPS(
                self._info.num_tasks,
                hidden=cfg.dim,
                layers=cfg.layers,
                heads=cfg.heads,
                dropout=cfg.dropout,
                attn_dropout=float(_opt(cfg, "attn_dropout", 0.5)),
                structure=make_structure(cfg.attention, cfg, max_len=64),
                rwse_steps=self._rwse_steps,
            )
        return MoleculeConvNet(
            self._info.num_tasks, model, hidden=cfg.dim, layers=cfg.layers, heads=cfg.heads, dropout=cfg.dropout
        )

    def forward(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        return model(batch)

    def task_loss(self, pred: Tensor, batch: Any) -> Tensor:
        y = batch.y.to(pred.dtype)
        known = ~torch.isnan(y)  # OGB marks missing labels with NaN
        if self.metric_name == "rmse":
            return F.mse_loss(pred[known], y[known])
        return F.binary_cross_entropy_with_logits(pred[known], y[known])

    def target(self, batch: Any) -> Tensor:
        return batch.y

    def metric(self, pred: Tensor, target: Tensor) -> float:
        result = self._info.evaluator.eval({"y_true": target.numpy(), "y_pred": pred.float().numpy()})
        return float(result[self.metric_name])

    def batch_size(self, batch: Any) -> int:
        return int(batch.num_graphs)


class _Split(Dataset):
    """One item: the whole graph and the mask of one split."""

    def __init__(self, data: Any, mask: Tensor) -> None:
        self.data, self.mask = data, mask

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> tuple[Any, Tensor]:
        return self.data, self.mask


class _NodeNet(nn.Module):
    """Two GraphAttnConv layers, GAT's recipe: dropout on inputs and attention, ELU, one output head."""

    def __init__(self, in_dim: int, classes: int, hidden: int, heads: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        from ..nn.pyg import GraphAttnConv

        self.conv1 = GraphAttnConv(in_dim, hidden, heads=heads, dropout=attn_dropout, root_weight=False)
        self.conv2 = GraphAttnConv(
            hidden * heads, classes, heads=1, concat=False, dropout=attn_dropout, root_weight=False
        )
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Any) -> Tensor:
        x = F.dropout(x, self.dropout, self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index)


class NodeTask(Task):
    """Planetoid node classification (``cora``, ``citeseer``), public split; full-graph steps.

    ``--dim`` is the hidden size per head (GAT: 8), ``--heads`` the first layer's heads (8),
    ``--dropout`` the feature dropout (GAT: 0.6), option ``attn_dropout`` the attention dropout
    (default ``--dropout``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._dataset: Any = None

    def datasets(self, cfg: TrainConfig) -> tuple[Dataset, Dataset, Dataset]:
        if cfg.attention != "graph":
            raise ValueError(f"node tasks attend over the citation graph: use --attention graph, got {cfg.attention!r}")
        import torch_geometric.transforms as T
        from torch_geometric.utils import add_self_loops

        from ..datasets.pyg import load_planetoid

        self._dataset = load_planetoid(
            {"cora": "Cora", "citeseer": "CiteSeer"}[self.name], cfg.data_root, transform=T.NormalizeFeatures()
        )
        data = self._dataset[0]
        data.edge_index = add_self_loops(data.edge_index, num_nodes=data.num_nodes)[0]
        return _Split(data, data.train_mask), _Split(data, data.val_mask), _Split(data, data.test_mask)

    def collate(self, items: Sequence[tuple[Any, Tensor]]) -> dict[str, Any]:
        (data, mask), *rest = items
        if rest:
            raise ValueError("node tasks hold one graph per split")
        return {"x": data.x, "edge_index": data.edge_index, "y": data.y[mask], "mask": mask}

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        if self._dataset is None:
            raise RuntimeError("call datasets() before build_model(): feature and class counts come from the data")
        attn_dropout = float(_opt(cfg, "attn_dropout", cfg.dropout))
        return _NodeNet(
            self._dataset.num_features, self._dataset.num_classes, cfg.dim, cfg.heads, cfg.dropout, attn_dropout
        )

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        logits = model(batch["x"], batch["edge_index"])[batch["mask"]]
        return logits, logits.new_zeros(())
