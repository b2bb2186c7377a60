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
    math, the fused op); ``--option vn=1`` adds a virtual node per molecule (OGB's GIN-VN scheme),
    ``--option rwse=16`` random-walk structural encodings, ``--option mlp=1`` GIN's MLP after each
    conv and ``--option rings=8`` a node per ring, all off by default.

* :class:`NodeTask` (``cora``, ``citeseer``): Planetoid's public split (140 / 500 / 1000 nodes on
  Cora), two attention layers over the citation graph with self loops, dropout on inputs and
  attention as in GAT (Veličković et al., ICLR 2018, https://arxiv.org/abs/1710.10903),
  row-normalized features. ``--option conv=transformer`` (default): :class:`~graphattn.nn.pyg.GraphAttnConv`
  with no skip weight (dot-product attention); ``conv=gat``: GAT's additive attention, run by the
  same fused op (the score as a per-edge bias). An "epoch" is one full-graph step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..nn import GraphAttention
from ..nn._gate import dropout_gate
from ..nn.models import segment_pool
from ..structure.batch import example_ids
from .tasks import Task, _opt, make_structure

if TYPE_CHECKING:
    from .engine import TrainConfig

__all__ = [
    "MoleculeTask",
    "NodeTask",
    "MoleculeGPS",
    "MoleculeConvNet",
    "MoleculeEnsemble",
    "random_walk_encoding",
    "ring_index",
    "mean_log_degree",
    "substructure_counts",
]


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
    graph_of = example_ids(ptr, n)
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


_HASH_PRIME = 2**31 - 1  # hashes stay below 2^31, so every product below fits int64


def _mix(x: Tensor) -> Tensor:
    """A non-linear hash of non-negative int64 values below ``2^32`` to ``[0, 2^31)``: two
    multiply-mod rounds with xor-shifts between them (products stay below 2^63)."""
    x = (x * 1103515245 + 12345) % _HASH_PRIME
    x = x ^ (x >> 13)
    x = (x * 2654435761) % _HASH_PRIME
    return x ^ (x >> 16)


def substructure_counts(x: Tensor, edge_index: Tensor, edge_attr: Tensor, bits: int, radius: int = 2) -> Tensor:
    """A molecule's count fingerprint: how many atoms have each circular environment of radius
    ``0 .. radius`` bonds, hashed into ``bits`` bins (``int64 [bits]``).

    The Morgan algorithm behind ECFP (Rogers and Hahn, "Extended-Connectivity Fingerprints",
    J. Chem. Inf. Model. 2010), as counts (ECFC) over the OGB features rather than RDKit's
    invariants: an atom starts from a hash of its feature row ``x[i]`` (element, chirality,
    degree, charge, hydrogens, radicals, hybridization, aromaticity, ring membership); each round
    replaces it by a hash of itself and the sum of its neighbours' hashes, each mixed with the
    bond's feature row (a multiset hash: the neighbours' order does not matter). Every atom
    adds one count per round to bin ``hash % bits``. ECFP4, the usual choice, is ``radius=2``.

    Args:
        x: ``int64 [N, F]`` atom features.
        edge_index: ``[2, E]`` bonds, both directions.
        edge_attr: ``int64 [E, F_e]`` bond features.
        bits: the number of bins (>= 1).
        radius: rounds of neighbour hashing (>= 0).
    """
    if bits < 1 or radius < 0:
        raise ValueError(f"bits must be >= 1 and radius >= 0, got bits={bits}, radius={radius}")
    h = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for column in x.long().T:
        h = _mix(h + column)
    bond = torch.zeros(edge_index.shape[1], dtype=torch.long, device=x.device)
    attr = edge_attr.long()
    for column in (attr[:, None] if attr.dim() == 1 else attr).T:  # (a molecule may have no bonds)
        bond = _mix(bond + column)
    counts = torch.bincount(h % bits, minlength=bits)
    src, dst = edge_index
    for r in range(radius):
        messages = _mix((h[src] + bond) % _HASH_PRIME)
        total = torch.zeros_like(h).index_add_(0, dst, messages) % _HASH_PRIME
        h = _mix((_mix(h + r + 1) + total) % _HASH_PRIME)
        counts += torch.bincount(h % bits, minlength=bits)
    return counts


def ring_index(edge_index: Tensor, num_nodes: int, max_size: int) -> Tensor:
    """A molecule's rings as ``int64 [2, M]`` (atom, ring) memberships: its chordless (induced)
    cycles of at most ``max_size`` atoms, the rings of Bodnar et al.'s CIN ("Weisfeiler and Lehman
    Go Cellular", NeurIPS 2021); a fused ring system gives its rings, not its perimeter. Rings are
    numbered in networkx's order (``networkx.chordless_cycles``; networkx ships with torch)."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(num_nodes))
    g.add_edges_from(edge_index.t().tolist())
    rings = [sorted(c) for c in nx.chordless_cycles(g, length_bound=max_size) if len(c) >= 3]
    atoms = [a for ring in rings for a in ring]
    ids = [r for r, ring in enumerate(rings) for _ in ring]
    return torch.tensor([atoms, ids], dtype=torch.long).reshape(2, len(atoms))


class _PerGraph(Dataset):
    """A PyG dataset whose items carry attributes ``compute(item)`` (a dict), computed once per graph
    on first pass (RWSE, rings)."""

    def __init__(self, dataset: Any, compute: Callable[[Any], dict[str, Any]]) -> None:
        self.dataset, self.compute = dataset, compute
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        data = self.dataset[i]
        extra = self._cache.get(i)
        if extra is None:
            extra = self._cache[i] = self.compute(data)
        for key, value in extra.items():
            setattr(data, key, value)
        return data


def _rwse_of(steps: int, data: Any) -> dict[str, Any]:
    return {"rwse": random_walk_encoding(data.edge_index, torch.tensor([0, data.num_nodes]), steps)}


def _fingerprint_of(bits: int, data: Any) -> dict[str, Any]:
    counts = substructure_counts(data.x, data.edge_index, data.edge_attr, bits)
    return {"fingerprint": counts.clamp_max(255).to(torch.uint8)[None]}  # [1, bits]: PyG stacks graphs


def _rings_of(max_size: int, data: Any) -> dict[str, Any]:
    rings = ring_index(data.edge_index, data.num_nodes, max_size)
    return {"ring_index": rings, "num_rings": int(rings[1].max()) + 1 if rings.numel() else 0}


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
    residuals, mean pool, linear head. ``conv`` is ``"transformerconv"`` (PyG) or ``"graphattnconv"``.

    Five additions, off by default (the plain baseline has none):

    - ``virtual_node``: a virtual node per molecule as in OGB's GIN-VN (Gilmer et al. 2017; Hu et al.
      2020): its state is added to every atom before each layer and updated between layers by an
      MLP over (sum of the molecule's atoms + its state), so every layer also sees the whole molecule.
    - ``rwse_steps``: random-walk structural encodings (``batch.rwse``) added to the atom embeddings.
    - ``mlp``: GIN's update (Xu et al. 2019, as in OGB's GIN): a 2-layer MLP
      ``Linear(d, 2d) -> BN -> ReLU -> Linear(2d, d)`` on each conv's output before its batch norm,
      so a layer is ``x + dropout(relu(bn(mlp(conv(x)))))``; the attention aggregate alone is
      linear in the values, GIN's layer has this MLP.
    - ``rings``: a node per ring (``batch.ring_index``, :func:`ring_index`: chordless cycles of
      at most ``rings`` atoms), embedded by its size and joined to its atoms by edges both ways
      (one learned edge embedding per direction; a ring of more than ``rings`` atoms, from data
      found with a larger bound, shares the largest size's embedding); the convs, the virtual
      node and the mean pool run over atoms and rings alike. Two atoms of a ring are two hops
      apart through it, as with the clusters of Fey et al.'s HIMP ("Hierarchical Inter-Message
      Passing for Learning on Molecular Graphs", 2020) and the ring cells of CIN.
    - ``degree_scalers``: PNA's degree scalers (Corso et al., "Principal Neighbourhood Aggregation
      for Graph Nets", 2020, eq. 5). Attention weights sum to 1 over a node's in-edges, so the
      aggregate ``h`` of node ``i`` is a weighted mean and cannot tell a node with one neighbour
      from one with three identical neighbours; each conv output becomes
      ``[h, h s_i, h / s_i]`` with ``s_i = log(d_i + 1) / delta`` (``d_i`` its in-degree, at
      least 1), mapped back to ``d`` by the MLP's first layer (``mlp``) or by a linear layer.
      The value is ``delta``, the mean ``log(d + 1)`` over the training atoms
      (:func:`mean_log_degree`, over the bonds: with ``rings`` the degrees the scalers see also
      count the ring edges, so there ``s`` is not centred on 1); 0 turns the scalers off.
    - ``fingerprint``: the bins of a count fingerprint of the molecule's circular substructures
      (``batch.fingerprint``, :func:`substructure_counts`), ``log(1 + count)`` through
      ``Linear(bins, d) -> BN -> ReLU -> dropout``, concatenated to the pooled atoms before the
      head: the fixed substructure features of fingerprint models beside the learned ones
      (random forests on fingerprints, blended with GNNs, lead the OGB molhiv leaderboard:
      Bugaud, "Multi-RF Fusion with Multi-GNN Blending", arXiv:2603.20724, 2026).
    """

    def __init__(
        self,
        num_tasks: int,
        conv: str,
        hidden: int = 64,
        layers: int = 3,
        heads: int = 4,
        dropout: float = 0.0,
        virtual_node: bool = False,
        rwse_steps: int = 0,
        mlp: bool = False,
        rings: int = 0,
        degree_scalers: float = 0.0,
        fingerprint: int = 0,
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
        if fingerprint < 0:
            raise ValueError(f"fingerprint must be 0 (off) or the number of fingerprint bins, got {fingerprint}")
        if not (math.isfinite(degree_scalers) and degree_scalers >= 0):
            raise ValueError(f"degree_scalers must be 0 (off) or the mean log(degree + 1), > 0; got {degree_scalers}")
        self.delta = float(degree_scalers)
        width = 3 * hidden if self.delta else hidden  # the conv output and its two scaled copies
        self.atom, self.bond = AtomEncoder(hidden), BondEncoder(hidden)
        self.rwse = nn.Sequential(nn.BatchNorm1d(rwse_steps), nn.Linear(rwse_steps, hidden)) if rwse_steps else None
        self.convs = nn.ModuleList(Conv(hidden, hidden // heads, heads=heads, edge_dim=hidden) for _ in range(layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(layers))
        self.mlps = nn.ModuleList(
            nn.Sequential(
                nn.Linear(width, 2 * hidden), nn.BatchNorm1d(2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden)
            )
            if mlp
            else nn.Linear(width, hidden)
            if self.delta
            else nn.Identity()
            for _ in range(layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.vn_init: nn.Parameter | None = None
        self.vn_mlps = nn.ModuleList()
        if virtual_node:
            self.vn_init = nn.Parameter(torch.zeros(hidden))  # OGB initializes the virtual node to 0
            for _ in range(layers - 1):
                self.vn_mlps.append(
                    nn.Sequential(
                        nn.Linear(hidden, 2 * hidden),
                        nn.BatchNorm1d(2 * hidden),
                        nn.ReLU(),
                        nn.Linear(2 * hidden, hidden),
                        nn.BatchNorm1d(hidden),
                        nn.ReLU(),
                        nn.Dropout(dropout),
                    )
                )
        self.fingerprint = (
            nn.Sequential(nn.Linear(fingerprint, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout))
            if fingerprint
            else None
        )
        self.head = nn.Linear(2 * hidden if fingerprint else hidden, num_tasks)
        self.ring_embed = nn.Embedding(rings + 1, hidden) if rings else None  # by ring size
        self.ring_edge = nn.Embedding(2, hidden) if rings else None  # atom -> ring, ring -> atom

    def forward(self, batch: Any) -> tuple[Tensor, Tensor]:
        x, e = self.atom(batch.x), self.bond(batch.edge_attr)
        if self.rwse is not None:
            x = x + self.rwse(batch.rwse)
        num_molecules = batch.ptr.numel() - 1
        graph_of = example_ids(batch.ptr, x.shape[0])
        edge_index = batch.edge_index
        if self.ring_embed is not None and self.ring_edge is not None:
            atom, ring = batch.ring_index
            ring_node = ring + x.shape[0]  # ring nodes follow the atoms
            num_rings = int(batch.num_rings.sum())
            sizes = torch.bincount(ring, minlength=num_rings)  # atoms per ring
            sizes = sizes.clamp_max(self.ring_embed.num_embeddings - 1)  # rings found with a larger bound
            x = torch.cat([x, self.ring_embed(sizes)])
            edge_index = torch.cat([edge_index, torch.stack([atom, ring_node]), torch.stack([ring_node, atom])], 1)
            directions = torch.repeat_interleave(torch.arange(2, device=x.device), atom.numel())
            e = torch.cat([e, self.ring_edge(directions)])
            molecules = torch.arange(num_molecules, device=x.device)
            ring_of = torch.repeat_interleave(molecules, batch.num_rings, output_size=num_rings)
            graph_of = torch.cat([graph_of, ring_of])
        scale = None
        if self.delta:
            degree = torch.bincount(edge_index[1], minlength=x.shape[0]).clamp_min(1)
            scale = (torch.log(degree.to(x.dtype) + 1) / self.delta)[:, None]
        vn = None if self.vn_init is None else self.vn_init.expand(num_molecules, -1)
        for i, (conv, mlp, norm) in enumerate(zip(self.convs, self.mlps, self.norms, strict=True)):
            if vn is not None:
                x = x + vn[graph_of]
            h = conv(x, edge_index, e)
            if scale is not None:
                h = torch.cat([h, h * scale, h / scale], 1)
            x = x + self.dropout(F.relu(norm(mlp(h))))
            if vn is not None and i < len(self.vn_mlps):
                pooled = x.new_zeros(vn.shape).index_add_(0, graph_of, x)  # sum over each molecule
                vn = vn + self.vn_mlps[i](pooled + vn)
        if self.ring_embed is None:
            pooled = segment_pool(x, batch.ptr, "mean")
        else:
            sums = x.new_zeros(num_molecules, x.shape[1]).index_add_(0, graph_of, x)  # atoms and rings
            nodes = torch.bincount(graph_of, minlength=num_molecules).clamp_min(1)
            pooled = sums / nodes[:, None].to(x.dtype)
        if self.fingerprint is not None:
            pooled = torch.cat([pooled, self.fingerprint(torch.log1p(batch.fingerprint.to(x.dtype)))], 1)
        return self.head(pooled), x.new_zeros(())


class MoleculeEnsemble(nn.Module):
    """Models trained side by side, each on its own loss (a deep ensemble: Lakshminarayanan et
    al., "Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles", NeurIPS
    2017), from their own initializations and dropout draws, on the same batches. ``forward``
    returns every member's predictions ``[K, B, T]`` (the task's loss averages the members'
    losses, so no member's gradient depends on another's output; the training loop's gradient
    norm clip, over all parameters, does scale their steps by one factor) and the sum of their
    auxiliary losses; :meth:`MoleculeTask.predict` averages the members' outputs (logits, for
    the classification sets: a geometric-type mean of their odds, where the cited paper
    averages probabilities; the ranking a ROC-AUC reads differs little)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, batch: Any) -> tuple[Tensor, Tensor]:
        outs = [member(batch) for member in self.members]
        return torch.stack([pred for pred, _ in outs]), torch.stack([aux for _, aux in outs]).sum()


MOLECULE_MODELS = ("gps", "transformerconv", "graphattnconv")


def mean_log_degree(graphs: Any) -> float:
    """PNA's ``delta``: the mean of ``log(d + 1)`` over every node of ``graphs`` (PyG ``Data`` items
    with ``edge_index``; ``d`` a node's in-degree), the normalizer of :class:`MoleculeConvNet`'s
    ``degree_scalers``. Raises ``ValueError`` for graphs without nodes."""
    total, nodes = 0.0, 0
    for data in graphs:
        degree = torch.bincount(data.edge_index[1], minlength=data.num_nodes)
        total += float(torch.log1p(degree.double()).sum())
        nodes += degree.numel()
    if nodes == 0:
        raise ValueError("graphs must hold at least one node to take their mean log degree")
    return total / nodes


def _molecule_model(cfg: TrainConfig) -> str:
    """The ``--option model`` of a molecule task (default ``gps``), checked before any data loads."""
    model = _opt(cfg, "model", "gps", str)
    if model not in MOLECULE_MODELS:
        raise ValueError(f"--option model must be one of {', '.join(MOLECULE_MODELS)}, got {model!r}")
    return model


class MoleculeTask(Task):
    """An OGB ``ogbg-mol*`` dataset: graph-level labels, OGB's metric (ROC-AUC or RMSE).

    ``--attention``: for ``gps`` a sequence structure over each molecule's atoms (``full``: all
    pairs); the conv models attend over the bonds, ``--attention graph``.

    Options: ``model`` (``gps``, ``transformerconv``, ``graphattnconv``), ``rwse`` (steps; 16 for
    ``gps``, 0 otherwise), ``vn`` (1: a virtual node, conv models only; default 0), ``mlp`` (1: GIN's
    MLP after each conv, conv models only; default 0), ``rings`` (the largest ring: a node per ring
    of at most that many atoms, conv models only; default 0, none), ``scalers`` (1: PNA's degree
    scalers on each conv's output, normalized by the training atoms' mean log degree, conv models
    only; default 0), ``fingerprint`` (bins of a count fingerprint of each molecule's circular
    substructures, :func:`substructure_counts`, read by an MLP beside the convs, conv models
    only; default 0, none), ``ensemble`` (members of a :class:`MoleculeEnsemble` of the conv
    model, default 1: one model), ``attn_dropout`` (0.5, ``gps``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.metric_name = "rocauc"
        self.higher_is_better = True
        self._info: Any = None
        self._rwse_steps = 16
        self._rings = 0
        self._delta = 0.0
        self._fingerprint = 0

    def attentions(self, cfg: TrainConfig) -> list[str]:
        """``gps``: a sequence structure within each molecule; the conv models: ``graph`` (the bonds)."""
        return super().attentions(cfg) if _molecule_model(cfg) == "gps" else ["graph"]

    def prepare_metric(self, cfg: TrainConfig) -> None:
        """OGB's evaluator and metric name for this dataset (the molecules are loaded, not transformed)."""
        from ..datasets.ogb import load_ogbg

        self._info = load_ogbg(self.name, cfg.data_root)
        self.metric_name = self._info.metric
        self.higher_is_better = self.metric_name != "rmse"

    def datasets(self, cfg: TrainConfig) -> tuple[Dataset, Dataset, Dataset]:
        model = _molecule_model(cfg)  # before loading the data
        self.prepare_metric(cfg)
        self._rwse_steps = _opt(cfg, "rwse", 16 if model == "gps" else 0, int)
        rings = 0 if model == "gps" else _opt(cfg, "rings", 0, int, minimum=0)
        if rings in (1, 2):
            raise ValueError(f"--option rings is the largest ring size: 0 (no ring nodes) or >= 3, got {rings}")
        self._rings = rings
        splits = tuple(self._info.subset(part) for part in ("train", "valid", "test"))
        scalers = model != "gps" and _opt(cfg, "scalers", 0, bool)
        self._delta = mean_log_degree(splits[0]) if scalers else 0.0  # of the bonds, before any ring nodes
        if self._rwse_steps:
            splits = tuple(_PerGraph(part, partial(_rwse_of, self._rwse_steps)) for part in splits)
        if self._rings:
            splits = tuple(_PerGraph(part, partial(_rings_of, self._rings)) for part in splits)
        self._fingerprint = 0 if model == "gps" else _opt(cfg, "fingerprint", 0, int, minimum=0)
        if self._fingerprint:
            splits = tuple(_PerGraph(part, partial(_fingerprint_of, self._fingerprint)) for part in splits)
        return splits

    def collate(self, items: Sequence[Any]) -> Any:
        from torch_geometric.data import Batch

        if items and "ring_index" in items[0]:
            from ._ring_data import RingData

            items = [RingData(**item.to_dict()) for item in items]  # its rings offset by rings, not atoms
        return Batch.from_data_list(list(items))

    @staticmethod
    def to_device(batch: Any, device: torch.device) -> Any:
        return batch.to(device)

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        if self._info is None:
            raise RuntimeError("call datasets() before build_model(): the label count comes from the data")
        model = _molecule_model(cfg)
        if model == "gps":
            return MoleculeGPS(
                self._info.num_tasks,
                hidden=cfg.dim,
                layers=cfg.layers,
                heads=cfg.heads,
                dropout=cfg.dropout,
                attn_dropout=_opt(cfg, "attn_dropout", 0.5, float),
                structure=make_structure(cfg.attention, cfg, max_len=64),
                rwse_steps=self._rwse_steps,
            )
        settings = {
            "hidden": cfg.dim,
            "layers": cfg.layers,
            "heads": cfg.heads,
            "dropout": cfg.dropout,
            "virtual_node": _opt(cfg, "vn", 0, bool),
            "rwse_steps": self._rwse_steps,
            "mlp": _opt(cfg, "mlp", 0, bool),
            "rings": self._rings,
            "degree_scalers": self._delta,
            "fingerprint": self._fingerprint,
        }
        members = _opt(cfg, "ensemble", 1, int, minimum=1)
        nets = [MoleculeConvNet(self._info.num_tasks, model, **settings) for _ in range(members)]
        return nets[0] if members == 1 else MoleculeEnsemble(nets)

    def forward(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        return model(batch)

    def _label_losses(self, pred: Tensor, batch: Any) -> tuple[Tensor, Tensor]:
        """The loss of every label ``[B, T]`` (``[K, B, T]`` for an ensemble's ``K`` members; squared
        error or BCE; missing labels count as 0,
        their losses are not used) and the mask of known labels (OGB marks missing ones NaN)."""
        y = batch.y.to(pred.dtype)
        known = ~torch.isnan(y)
        y = torch.where(known, y, torch.zeros_like(y)).expand_as(pred)  # an ensemble's pred is [K, B, T]
        loss = F.mse_loss if self.metric_name == "rmse" else F.binary_cross_entropy_with_logits
        return loss(pred, y, reduction="none"), known.expand_as(pred)

    def task_loss(self, pred: Tensor, batch: Any) -> Tensor:
        losses, known = self._label_losses(pred, batch)
        return losses[known].mean()

    def example_losses(self, pred: Tensor, batch: Any) -> Tensor:
        """Each molecule's loss ``[B]``: the mean over its known labels (0 where it has none; of an
        ensemble, the members' mean)."""
        losses, known = self._label_losses(pred, batch)
        per_molecule = (losses * known).sum(-1) / known.sum(-1).clamp_min(1)
        return per_molecule.mean(0) if per_molecule.dim() == 2 else per_molecule

    def predict(self, model: nn.Module, batch: Any) -> Tensor:
        """The model's predictions ``[B, T]``; of an ensemble, its members' mean."""
        pred = self.forward(model, batch)[0]
        return pred.mean(0) if pred.dim() == 3 else pred

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


def _dropout_nonzeros(x: Tensor, p: float, training: bool, cache: dict[str, Any] | None = None) -> Tensor:
    """``F.dropout(x, p)`` drawing the mask only where ``x`` is nonzero (the same distribution: a zero
    stays zero either way). Planetoid features are ~1% nonzero bags of words, so this draws ~50k
    instead of ~4M Bernoulli samples per step on Cora, which was a third of the step time.
    ``cache`` keeps the nonzero positions of the last ``x`` (node tasks feed the same tensor every step).
    """
    if not training or p == 0.0:
        return x
    key = (x.data_ptr(), x.shape, x._version)
    if cache is not None and cache.get("key") == key:
        idx, values = cache["idx"], cache["values"]
    else:
        idx = x.nonzero(as_tuple=True)
        values = x[idx]
        if cache is not None:
            cache.update(key=key, idx=idx, values=values)
    keep = torch.rand_like(values) >= p
    return torch.zeros_like(x).index_put(idx, values * keep / (1.0 - p))


class _GATLayer(nn.Module):
    r"""GAT's layer (Veličković et al. 2018) on graphattn's fused edge attention.

    :math:`h = W x` per head, score :math:`\operatorname{LeakyReLU}_{0.2}(a_s^\top h_j + a_d^\top h_i)`
    for edge :math:`j \to i`, softmax over the in-edges of :math:`i`, dropout on the normalized
    weights, :math:`\sum_j \alpha_{ij} h_j`. ``value_dropout`` also drops :math:`h_j` as a value (not in
    the score), as GAT's reference code does (``in_drop`` on ``seq_fts``); PyG's ``GATConv`` does not.
    The additive score enters
    :func:`graphattn.ops.edge_attention` as its per-edge ``bias`` (queries and keys of width 1 and
    zero, so the dot-product term vanishes), the attention dropout as its ``gate``; softmax and
    aggregation are the op's, as for every other model here.
    """

    def __init__(
        self, in_dim: int, out_dim: int, heads: int, concat: bool, attn_dropout: float, value_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.heads, self.out_dim, self.concat, self.attn_dropout = heads, out_dim, concat, attn_dropout
        self.value_dropout = value_dropout
        self.lin = nn.Linear(in_dim, heads * out_dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(heads, out_dim))
        self.att_dst = nn.Parameter(torch.empty(heads, out_dim))
        self.bias = nn.Parameter(torch.zeros(heads * out_dim if concat else out_dim))
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.xavier_uniform_(self.att_src)
        nn.init.xavier_uniform_(self.att_dst)

    def forward(self, x: Tensor, graph: Any) -> Tensor:
        from ..ops import edge_attention

        h = self.lin(x).view(-1, self.heads, self.out_dim)
        a_src, a_dst = (h * self.att_src).sum(-1), (h * self.att_dst).sum(-1)  # [N, H]
        score = F.leaky_relu(a_src[graph.col] + a_dst[graph.dst()], 0.2)  # [E, H]
        gate = dropout_gate(None, self.attn_dropout, self.training, *score.shape, score)
        zero = h.new_zeros(h.shape[0], self.heads, 1)
        value = F.dropout(h, self.value_dropout, self.training)
        out = edge_attention(zero, zero, value, graph, bias=score, gate=gate)
        out = out.reshape(-1, self.heads * self.out_dim) if self.concat else out.mean(1)
        return out + self.bias


class _NodeNet(nn.Module):
    """Two attention layers, GAT's recipe: dropout on inputs and attention, ELU, one output head.

    ``conv="gat"``: :class:`_GATLayer` (GAT's additive attention); ``"transformer"``:
    :class:`~graphattn.nn.pyg.GraphAttnConv` (dot-product attention, ``TransformerConv``'s math)
    with no skip weight.
    """

    def __init__(
        self,
        in_dim: int,
        classes: int,
        hidden: int,
        heads: int,
        dropout: float,
        attn_dropout: float,
        conv: str,
        value_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if conv == "gat":
            self.conv1: nn.Module = _GATLayer(in_dim, hidden, heads, True, attn_dropout, value_dropout)
            self.conv2: nn.Module = _GATLayer(hidden * heads, classes, 1, False, attn_dropout, value_dropout)
        elif conv == "transformer":
            from ..nn.pyg import GraphAttnConv

            self.conv1 = GraphAttnConv(in_dim, hidden, heads=heads, dropout=attn_dropout, root_weight=False)
            self.conv2 = GraphAttnConv(
                hidden * heads, classes, heads=1, concat=False, dropout=attn_dropout, root_weight=False
            )
        else:
            raise ValueError(f"conv must be 'gat' or 'transformer', got {conv!r}")
        self.conv = conv
        self.dropout = dropout
        self._nonzeros: dict[str, Any] = {}
        self._graph: tuple[Any, Any] | None = None

    def _edges(self, edge_index: Tensor, num_nodes: int) -> Any:
        if self.conv == "transformer":
            return edge_index
        from ..graph import Graph

        key = (edge_index.data_ptr(), edge_index.shape, num_nodes)
        if self._graph is None or self._graph[0] != key:  # the same citation graph every step
            self._graph = (key, Graph.from_edge_index(edge_index, num_nodes))
        return self._graph[1]

    def forward(self, x: Tensor, edge_index: Any) -> Tensor:
        edges = self._edges(edge_index, x.shape[0])
        x = _dropout_nonzeros(x, self.dropout, self.training, self._nonzeros)
        x = F.elu(self.conv1(x, edges))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edges)


class NodeTask(Task):
    """Planetoid node classification (``cora``, ``citeseer``), public split; full-graph steps.

    ``--dim`` is the hidden size per head (GAT: 8), ``--heads`` the first layer's heads (8),
    ``--dropout`` the feature dropout (GAT: 0.6), option ``attn_dropout`` the attention dropout
    (default ``--dropout``), option ``conv`` the layer (``transformer`` or ``gat``, see the module),
    option ``value_dropout`` (``gat`` only, default 0) dropout on the projected values as in GAT's code.
    """

    dim_is_per_head = True

    def __init__(self, name: str) -> None:
        self.name = name
        self._dataset: Any = None

    def attentions(self, cfg: TrainConfig) -> list[str]:
        return ["graph"]  # the citation graph

    def datasets(self, cfg: TrainConfig) -> tuple[Dataset, Dataset, Dataset]:
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
        attn_dropout = _opt(cfg, "attn_dropout", cfg.dropout, float)
        conv = _opt(cfg, "conv", "transformer", str)
        value_dropout = _opt(cfg, "value_dropout", 0.0, float)
        if value_dropout and conv != "gat":
            raise ValueError("option value_dropout is for conv=gat")
        return _NodeNet(
            self._dataset.num_features,
            self._dataset.num_classes,
            cfg.dim,
            cfg.heads,
            cfg.dropout,
            attn_dropout,
            conv,
            value_dropout,
        )

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        logits = model(batch["x"], batch["edge_index"])[batch["mask"]]
        return logits, logits.new_zeros(())

    def example_losses(self, pred: Tensor, batch: dict[str, Any]) -> None:
        """``None``: a batch is the whole graph, one example."""
        return None
