"""The real-data tasks of `graphattn train`: molecules, citation graphs, images, MNIST-1D, SST."""

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from graphattn.train.engine import TrainConfig, train
from graphattn.train.graph_tasks import MoleculeConvNet, mean_log_degree, ring_index, substructure_counts
from graphattn.train.tasks import attention_names, get_task, task_names

pytest.importorskip("torch_geometric")


@pytest.fixture(autouse=True)
def _offline_data(shared_data, cache, monkeypatch):
    monkeypatch.setenv("GRAPHATTN_DATA", str(shared_data))
    monkeypatch.setenv("GRAPHATTN_CACHE", str(cache))


def _cfg(tmp_path, **kw):
    base = {"dim": 16, "heads": 2, "layers": 1, "epochs": 1, "batch_size": 64, "progress": False}
    base.update(kw)
    return TrainConfig(out=str(tmp_path / "run"), **base)


def test_every_task_of_the_issue_is_registered():
    names = set(task_names())
    wanted = {"listops", "recall", "cora", "citeseer", "digits", "mnist-graph", "mnist1d", "sst"}
    wanted |= {"ogbg-molhiv", "ogbg-molesol", "ogbg-molfreesolv", "ogbg-molbace", "ogbg-molbbbp"}
    assert wanted <= names
    assert {"graph", "grid"} <= set(attention_names())
    with pytest.raises(ValueError, match="task must be one of"):
        get_task("ogbg-nothing")


# ---------------------------------------------------------------------- molecules
def _dense_return_probabilities(adj: torch.Tensor, steps: int) -> torch.Tensor:
    walk = adj / adj.sum(1, keepdim=True).clamp(min=1)
    out, power = [], torch.eye(adj.shape[0])
    for _ in range(steps):
        power = power @ walk
        out.append(power.diagonal())
    return torch.stack(out, -1)


def test_random_walk_encoding_equals_dense_powers_per_graph():
    from graphattn.train.graph_tasks import random_walk_encoding

    # graph 0: an edge (period 2); graph 1: a triangle plus a pendant; graph 2: one isolated node
    edges0 = [(0, 1), (1, 0)]
    edges1 = [(0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0), (2, 3), (3, 2)]
    sizes, ptr = [2, 4, 1], torch.tensor([0, 2, 6, 7])
    edge_index = torch.tensor(edges0 + [(a + 2, b + 2) for a, b in edges1]).T
    got = random_walk_encoding(edge_index, ptr, steps=5)
    assert got.shape == (7, 5)
    start = 0
    for n, edges in zip(sizes, (edges0, edges1, []), strict=True):
        adj = torch.zeros(n, n)
        for a, b in edges:
            adj[a, b] = 1.0
        torch.testing.assert_close(got[start : start + n], _dense_return_probabilities(adj, 5))
        start += n
    assert got[:2, 1].tolist() == [1.0, 1.0] and got[:2, 0].tolist() == [0.0, 0.0]  # period 2
    assert got[6].abs().sum() == 0  # isolated


@pytest.fixture(scope="module")
def bace(shared_data, cache, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("GRAPHATTN_DATA", str(shared_data))
    mp.setenv("GRAPHATTN_CACHE", str(cache))
    task = get_task("ogbg-molbace")
    cfg = TrainConfig(task="ogbg-molbace", attention="full", dim=16, heads=2, layers=2)
    splits = task.datasets(cfg)
    yield task, cfg, splits
    mp.undo()


def test_molecule_task_splits_and_rwse(bace):
    task, _, splits = bace
    assert [len(s) for s in splits] == [1210, 151, 152]  # the data README's scaffold split
    item = splits[0][0]
    assert item.rwse.shape == (item.num_nodes, 16)
    assert torch.all((item.rwse >= 0) & (item.rwse <= 1))
    assert task.metric_name == "rocauc" and task.higher_is_better


@pytest.mark.parametrize("model", ["gps", "transformerconv", "graphattnconv"])
def test_molecule_models_learn_one_step(bace, model):
    task, cfg, splits = bace
    cfg = replace(cfg, options={"model": model})
    torch.manual_seed(0)
    net = task.build_model(cfg)
    labels = torch.cat([splits[0][i].y for i in range(len(splits[0]))])[:, 0]
    pick = torch.cat([(labels == 0).nonzero()[:16, 0], (labels == 1).nonzero()[:16, 0]])  # ROC-AUC needs both
    batch = task.collate([splits[0][int(i)] for i in pick])
    pred, aux = task.forward(net, batch)
    assert pred.shape == (32, 1) and aux.dim() == 0
    loss = task.task_loss(pred, batch)
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    metric = task.metric(pred.detach(), task.target(batch))
    assert 0.0 <= metric <= 1.0


def test_molecule_example_losses_average_each_molecules_known_labels():
    from types import SimpleNamespace

    task = get_task("ogbg-molbace")
    nan = float("nan")
    pred = torch.tensor([[0.3, -1.0], [2.0, 0.5], [1.0, 1.0]])
    batch = SimpleNamespace(y=torch.tensor([[1.0, nan], [0.0, 1.0], [nan, nan]]))
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def one(p, t):
        return bce(torch.tensor(p), torch.tensor(t))

    expected = torch.stack([one(0.3, 1.0), (one(2.0, 0.0) + one(0.5, 1.0)) / 2, torch.tensor(0.0)])
    torch.testing.assert_close(task.example_losses(pred, batch), expected)
    task.metric_name = "rmse"
    expected = torch.tensor([0.7**2, (2.0**2 + 0.5**2) / 2, 0.0])
    torch.testing.assert_close(task.example_losses(pred, batch), expected)


def _far_pair(item, hops):
    """(a, b): two atoms of ``item`` more than ``hops`` bonds apart (breadth-first search from each atom)."""
    adj = [[] for _ in range(item.num_nodes)]
    for a, b in item.edge_index.T.tolist():
        adj[a].append(b)
    for start in range(item.num_nodes):
        dist, frontier = {start: 0}, [start]
        while frontier:
            frontier = [b for a in frontier for b in adj[a] if b not in dist and not dist.update({b: dist[a] + 1})]
        far = [b for b, d in dist.items() if d > hops]
        if far:
            return start, far[0]
    return None


@pytest.mark.parametrize("virtual_node", [0, 1])
def test_virtual_node_reaches_atoms_beyond_the_conv_hops(bace, virtual_node):
    # Before the second conv an atom has seen its 1-hop neighbours only, unless a virtual node
    # carries the whole molecule (OGB's GIN-VN): then a change of an atom 3 bonds away reaches it.
    task, cfg, splits = bace
    options = {"model": "graphattnconv", "vn": virtual_node}
    torch.manual_seed(0)
    net = task.build_model(replace(cfg, layers=2, options=options)).eval()
    item = next(it for it in (splits[0][i] for i in range(50)) if _far_pair(it, 3))
    a, b = _far_pair(item, 3)
    seen = []
    net.convs[1].register_forward_pre_hook(lambda _m, args: seen.append(args[0][a].clone()))
    batch = task.collate([item])
    net(batch)
    batch.x[b, 0] = (batch.x[b, 0] + 1) % 10  # another element at the far atom
    net(batch)
    assert net.rwse is not None and batch.rwse.shape == (item.num_nodes, 16)  # the fixture's data carry RWSE
    assert (len(net.vn_mlps) == 1) == bool(virtual_node)
    changed = not torch.allclose(seen[0], seen[1])
    assert changed == bool(virtual_node)


def test_gin_mlp_option_runs_each_conv_output_through_its_mlp(bace):
    task, cfg, splits = bace
    torch.manual_seed(0)
    net = task.build_model(replace(cfg, layers=2, options={"model": "graphattnconv", "mlp": 1})).train()
    plain = task.build_model(replace(cfg, layers=2, options={"model": "graphattnconv"}))
    assert all(isinstance(m, torch.nn.Identity) for m in plain.mlps)
    seen = []  # (conv output, what the layer's norm gets)
    for conv, mlp, norm in zip(net.convs, net.mlps, net.norms, strict=True):
        conv.register_forward_hook(lambda _m, _a, out: seen.append(out))
        norm.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        assert [type(m).__name__ for m in mlp] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
        assert mlp[0].out_features == 2 * cfg.dim and mlp[3].out_features == cfg.dim
    batch = task.collate([splits[0][i] for i in range(16)])
    pred, _ = net(batch)
    for i, mlp in enumerate(net.mlps):
        conv_out, norm_in = seen[2 * i], seen[2 * i + 1]
        torch.testing.assert_close(norm_in, mlp(conv_out))
    pred.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.mlps.parameters())


def test_mean_log_degree_is_the_mean_over_every_node():
    star = SimpleNamespace(edge_index=torch.tensor([[1, 2, 3], [0, 0, 0]]), num_nodes=5)  # node 4 alone
    pair = SimpleNamespace(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=2)
    expected = (math.log(4) + 2 * math.log(2)) / 7  # degrees 3, 0, 0, 0, 0 and 1, 1
    assert mean_log_degree([star, pair]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least one node"):
        mean_log_degree([])


def test_degree_scalers_tell_apart_nodes_that_attention_averages_alike():
    # One carbon with one carbon neighbour, and one with three: attention over identical values
    # gives both the same aggregate; the degree scalers (PNA) make the two atoms differ.
    def carbon_star(leaves):
        edges = torch.tensor([[i + 1 for i in range(leaves)], [0] * leaves])
        edge_index = torch.cat([edges, edges.flip(0)], 1)
        return SimpleNamespace(
            x=torch.zeros(leaves + 1, 9, dtype=torch.long),
            edge_attr=torch.zeros(edge_index.shape[1], 3, dtype=torch.long),
            edge_index=edge_index,
            ptr=torch.tensor([0, leaves + 1]),
        )

    seen = {}
    for delta in (0.0, 1.0):
        torch.manual_seed(0)
        net = MoleculeConvNet(1, "graphattnconv", hidden=8, layers=1, heads=2, degree_scalers=delta).eval()
        assert isinstance(net.mlps[0], torch.nn.Identity if delta == 0 else torch.nn.Linear)
        seen[delta] = []
        net.norms[0].register_forward_pre_hook(lambda _m, args, d=delta: seen[d].append(args[0][0]))
        for leaves in (1, 3):
            net(carbon_star(leaves))
    torch.testing.assert_close(seen[0.0][0], seen[0.0][1])  # a weighted mean of equal values
    assert (seen[1.0][0] - seen[1.0][1]).abs().max() > 1e-3
    mlp = MoleculeConvNet(1, "graphattnconv", hidden=8, layers=1, heads=2, mlp=True, degree_scalers=1.0)
    assert mlp.mlps[0][0].in_features == 24  # [h, h s, h / s]
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="degree_scalers"):
            MoleculeConvNet(1, "graphattnconv", hidden=8, heads=2, degree_scalers=bad)


def test_scalers_option_sets_delta_from_the_training_split(bace):
    _, cfg, _ = bace
    task = get_task("ogbg-molbace")
    splits = task.datasets(replace(cfg, options={"model": "graphattnconv", "scalers": 1}))
    net = task.build_model(replace(cfg, options={"model": "graphattnconv", "scalers": 1}))
    assert net.delta == pytest.approx(mean_log_degree(splits[0])) and 0.5 < net.delta < 2
    task.datasets(replace(cfg, options={"model": "graphattnconv"}))
    assert task.build_model(replace(cfg, options={"model": "graphattnconv"})).delta == 0.0


def _molecule(atoms, bonds, bond_types=None):
    """Atom feature rows ``atoms`` ([element, ...]) and undirected ``bonds`` as OGB-style tensors."""
    x = torch.tensor([[a, 0, 0, 0, 0, 0, 0, 0, 0] for a in atoms])
    edge_index = _undirected(bonds)
    types = bond_types or [0] * len(bonds)
    edge_attr = torch.tensor([[t, 0, 0] for t in types + types])
    return x, edge_index, edge_attr


def test_substructure_counts_see_environments_not_atom_order():
    # Ethanol-like C-C-O against C-O-C: the same atoms, so the same radius-0 counts, but not the
    # same environments; relabelling the atoms changes nothing; each radius adds one count per atom.
    cco = _molecule([6, 6, 8], [(0, 1), (1, 2)])
    coc = _molecule([6, 8, 6], [(0, 1), (1, 2)])
    a, b = substructure_counts(*cco, bits=4096), substructure_counts(*coc, bits=4096)
    assert a.sum() == 9 and b.sum() == 9  # 3 atoms x radius 0, 1, 2
    torch.testing.assert_close(substructure_counts(*cco, bits=4096, radius=0), substructure_counts(*coc, 4096, 0))
    assert not torch.equal(a, b)
    perm = torch.tensor([2, 0, 1])  # atom i of the relabelled molecule is atom perm[i]
    inverse = torch.argsort(perm)
    x, edge_index, edge_attr = cco
    assert torch.equal(substructure_counts(x[perm], inverse[edge_index], edge_attr, 4096), a)
    # a double bond instead of a single one changes the environments of radius >= 1 only
    double = _molecule([6, 6, 8], [(0, 1), (1, 2)], bond_types=[1, 0])
    assert torch.equal(substructure_counts(*double, 4096, 0), substructure_counts(*cco, 4096, 0))
    assert not torch.equal(substructure_counts(*double, 4096, 1), substructure_counts(*cco, 4096, 1))
    # the two carbons of C-O-C share every environment: two counts in one bin per radius
    assert sorted(b[b > 0].tolist()) == [1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="bits must be >= 1"):
        substructure_counts(*cco, bits=0)
    # a molecule without bonds (a single ion; esol, freesolv, sider and tox21 hold some)
    lone = torch.tensor([[11, 0, 0, 1, 0, 0, 0, 0, 0]])
    counts = substructure_counts(lone, torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long), 64)
    assert counts.sum() == 3 and (counts > 0).sum() == 3


def _bace_batch(cfg, options, size):
    """A fresh ogbg-molbace task with ``options``, its splits and a batch of the first ``size``
    training molecules."""
    task = get_task("ogbg-molbace")
    splits = task.datasets(replace(cfg, options=options))
    return task, splits, task.collate([splits[0][i] for i in range(size)])


def test_fingerprint_option_feeds_the_head(bace):
    _, cfg, _ = bace
    options = {"model": "graphattnconv", "fingerprint": 64}
    task, splits, batch = _bace_batch(cfg, options, 5)
    assert batch.fingerprint.shape == (5, 64) and batch.fingerprint.dtype == torch.uint8
    want = substructure_counts(splits[0][3].x, splits[0][3].edge_index, splits[0][3].edge_attr, 64)
    assert torch.equal(batch.fingerprint[3].long(), want.clamp_max(255))
    net = task.build_model(replace(cfg, options=options))
    assert net.head.in_features == 2 * cfg.dim
    pred, _ = net(batch)
    pred.sum().backward()
    assert pred.shape == (5, 1) and net.fingerprint[0].weight.grad.abs().sum() > 0
    task.datasets(replace(cfg, options={"model": "graphattnconv"}))
    assert task.build_model(replace(cfg, options={"model": "graphattnconv"})).fingerprint is None
    with pytest.raises(ValueError, match="fingerprint must be 0"):
        MoleculeConvNet(1, "graphattnconv", hidden=8, heads=2, fingerprint=-1)


def test_ensemble_option_trains_members_on_their_own_losses_and_averages_them(bace):
    _, cfg, _ = bace
    options = {"model": "graphattnconv", "ensemble": 2}
    task, _, batch = _bace_batch(cfg, options, 8)
    torch.manual_seed(0)
    net = task.build_model(replace(cfg, options=options))
    assert len(net.members) == 2
    pred, _ = task.forward(net, batch)
    assert pred.shape == (2, 8, 1) and not torch.equal(pred[0], pred[1])  # own initializations
    own = [task.task_loss(pred[i], batch) for i in range(2)]
    loss = task.task_loss(pred, batch)
    torch.testing.assert_close(loss, (own[0] + own[1]) / 2)
    per_member = [task.example_losses(pred[i], batch) for i in range(2)]
    torch.testing.assert_close(task.example_losses(pred, batch), (per_member[0] + per_member[1]) / 2)
    # member 0's gradient is half its own loss's: no term through member 1's output
    first = list(net.members[0].parameters())
    got = torch.autograd.grad(loss, first, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(own[0] / 2, first, allow_unused=True)
    for x, y in zip(got, want, strict=True):
        assert (x is None and y is None) or torch.allclose(x, y, atol=1e-7)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(task.predict(net, batch), task.forward(net, batch)[0].mean(0))
    bad = replace(cfg, options={**options, "ensemble": 0})
    task.datasets(bad)
    with pytest.raises(ValueError, match="ensemble must be >= 1"):
        task.build_model(bad)


def _undirected(pairs):
    return torch.tensor([[a for a, b in pairs] + [b for a, b in pairs], [b for a, b in pairs] + [a for a, b in pairs]])


def test_ring_index_lists_chordless_rings_up_to_the_size():
    # Naphthalene's skeleton (two fused 6-rings sharing atoms 0 and 5; the 10-atom perimeter has a
    # chord, so it is not a ring), a cyclopropyl on atom 2 and a tail atom.
    bonds = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (5, 6), (6, 7), (7, 8), (8, 9), (9, 0)]
    bonds += [(2, 10), (10, 11), (11, 12), (12, 10), (12, 13)]
    ri = ring_index(_undirected(bonds), 14, max_size=8)
    rings = sorted(sorted(ri[0, ri[1] == r].tolist()) for r in range(int(ri[1].max()) + 1))
    assert rings == [[0, 1, 2, 3, 4, 5], [0, 5, 6, 7, 8, 9], [10, 11, 12]]
    small = ring_index(_undirected(bonds), 14, max_size=5)
    assert sorted(small[0].tolist()) == [10, 11, 12] and small[1].tolist() == [0, 0, 0]
    assert ring_index(_undirected([(0, 1), (1, 2)]), 3, max_size=8).shape == (2, 0)  # a chain


def test_rings_option_batches_ring_nodes_and_reaches_across_a_ring(bace):
    _, cfg, _ = bace
    task = get_task("ogbg-molbace")  # its own: datasets() sets the task's ring and RWSE options
    ringed = replace(cfg, layers=3, options={"model": "graphattnconv", "rings": 8})
    splits = task.datasets(ringed)
    items = [splits[0][i] for i in range(6)]
    batch = task.collate(items)
    # Batched memberships point at each molecule's own atoms and rings.
    atom_off, ring_off = 0, 0
    for item in items:
        mine = (batch.ring_index[1] >= ring_off) & (batch.ring_index[1] < ring_off + item.num_rings)
        assert torch.equal(batch.ring_index[:, mine] - torch.tensor([[atom_off], [ring_off]]), item.ring_index)
        atom_off, ring_off = atom_off + item.num_nodes, ring_off + item.num_rings
    assert batch.ring_index.shape[1] == sum(item.ring_index.shape[1] for item in items) > 0
    for item, back in zip(items, batch.to_data_list(), strict=True):  # PyG's unbatching undoes the offsets
        assert torch.equal(back.ring_index, item.ring_index) and back.num_rings == item.num_rings
    assert torch.equal(batch.index_select([1])[0].ring_index, items[1].ring_index)
    # Two atoms three bonds apart in a 6-ring: after two convs one has seen the other only
    # through their ring node (atom -> ring -> atom), not over two bonds.
    item = next(it for it in items if int(it.ring_index[1].bincount().max()) == 6)
    ring = int(item.ring_index[1].bincount().eq(6).nonzero()[0, 0])
    atoms = item.ring_index[0, item.ring_index[1] == ring].tolist()
    a, b = next((a, b) for a in atoms for b in atoms if _distance(item, a, b) == 3)
    for rings, reaches in ((8, True), (0, False)):
        torch.manual_seed(0)
        net = MoleculeConvNet(1, "graphattnconv", hidden=16, layers=3, heads=2, rings=rings).eval()
        seen: list[torch.Tensor] = []
        net.convs[2].register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0][a].clone()))
        one = task.collate([item])  # the plain model ignores the memberships
        net(one)
        one.x[b, 0] = (one.x[b, 0] + 1) % 10  # another element at the far atom
        net(one)
        assert (not torch.allclose(seen[0], seen[1])) == reaches
    net = task.build_model(ringed).train()
    pred, _ = net(batch)
    pred.sum().backward()
    for module in (net.ring_embed, net.ring_edge):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0


def test_rings_option_is_a_ring_size(bace):
    _, cfg, _ = bace
    task = get_task("ogbg-molbace")
    with pytest.raises(ValueError, match=r"--option rings is the largest ring size: 0 .* or >= 3, got 2"):
        task.datasets(replace(cfg, options={"model": "graphattnconv", "rings": 2}))
    with pytest.raises(ValueError, match="--option rings must be >= 0, got -1"):
        task.datasets(replace(cfg, options={"model": "graphattnconv", "rings": -1}))


def _distance(item, a, b):
    """Bonds between atoms ``a`` and ``b`` (breadth-first)."""
    adj = [[] for _ in range(item.num_nodes)]
    for u, v in item.edge_index.T.tolist():
        adj[u].append(v)
    dist, frontier = {a: 0}, [a]
    while frontier and b not in dist:
        frontier = [v for u in frontier for v in adj[u] if v not in dist and not dist.update({v: dist[u] + 1})]
    return dist.get(b)


def test_graphattnconv_baseline_equals_the_transformerconv_one(bace):
    task, cfg, splits = bace
    pyg = task.build_model(replace(cfg, options={"model": "transformerconv"})).eval()
    ours = task.build_model(replace(cfg, options={"model": "graphattnconv"})).eval()
    ours.load_state_dict(pyg.state_dict(), strict=True)  # the migration is the class swap
    batch = task.collate([splits[1][i] for i in range(40)])
    torch.testing.assert_close(ours(batch)[0], pyg(batch)[0], atol=1e-5, rtol=1e-4)


def test_regression_task_trains_and_reports_rmse(tmp_path):
    result = train(_cfg(tmp_path, task="ogbg-molfreesolv", attention="full", epochs=2, batch_size=64))
    assert result["metric"] == "rmse"
    assert math.isfinite(result["test_rmse"]) and result["test_rmse"] > 0
    losses = [h["train_loss"] for h in result["history"]]
    assert losses[1] < losses[0]


def test_virtual_node_model_trains_when_a_batch_would_hold_one_molecule(tmp_path):
    """ogbg-molfreesolv has 513 training molecules; in batches of 64 the ninth would hold one, and the
    virtual node's BatchNorm has no statistics for one example (this raised before)."""
    options = {"model": "graphattnconv", "vn": 1}
    result = train(_cfg(tmp_path, task="ogbg-molfreesolv", attention="graph", options=options))
    assert result["history"][0]["samples"] == 512 and math.isfinite(result["test_rmse"])


def test_ensemble_of_regression_runs_scores_the_mean_prediction(tmp_path):
    """An OGB regression ensemble (rmse): the metric of the mean prediction, at most the members'
    mean rmse (the triangle inequality)."""
    from graphattn.train.ensemble import ensemble

    runs = [tmp_path / f"s{seed}" for seed in range(2)]
    for seed, out in enumerate(runs):
        cfg = _cfg(tmp_path, task="ogbg-molfreesolv", attention="graph", seed=seed, options={"model": "graphattnconv"})
        train(replace(cfg, out=str(out)))
    result = ensemble(runs, tmp_path / "ens")
    saved = [torch.load(r / "best_predictions.pt", weights_only=True) for r in runs]
    mean = (saved[0]["test"]["pred"] + saved[1]["test"]["pred"]) / 2
    rmse = ((mean - saved[0]["test"]["target"]) ** 2).mean().sqrt().item()
    assert result["metric"] == "rmse" and result["test_rmse"] == pytest.approx(rmse, rel=1e-6)
    assert result["test_rmse"] <= sum(m["test_rmse"] for m in result["members"]) / 2


# ---------------------------------------------------------------------- citation graphs
@pytest.mark.parametrize("conv", ["gat", "transformer"])
def test_cora_learns_with_the_gat_recipe(tmp_path, conv):
    options = {"conv": conv}
    result = train(
        _cfg(
            tmp_path,
            task="cora",
            attention="graph",
            dim=8,
            heads=8,
            dropout=0.6,
            lr=0.01,
            weight_decay=5e-4,
            epochs=30,
            options=options,
        )
    )
    # GAT: one 1433 x 64 projection; the transformer layer: query, key, value (and skip) projections
    n = result["parameters"] / (1433 * 64)
    assert 1.0 < n < 1.1 if conv == "gat" else n > 3.0
    assert result["best_valid_accuracy"] > 0.6  # 7 classes: chance ~0.14-0.3


@pytest.mark.parametrize("concat", [True, False])
def test_gat_layer_equals_pyg_gatconv(concat):
    # conv=gat: GAT's additive attention through graphattn's edge_attention (score as per-edge bias)
    from torch_geometric.nn import GATConv

    from graphattn import Graph
    from graphattn.train.graph_tasks import _GATLayer

    torch.manual_seed(0)
    x, edge_index = torch.randn(30, 12), torch.randint(0, 30, (2, 120))
    ours = _GATLayer(12, 5, 3, concat, attn_dropout=0.0).eval()
    pyg = GATConv(12, 5, heads=3, concat=concat, add_self_loops=False).eval()
    with torch.no_grad():
        pyg.lin.weight.copy_(ours.lin.weight)
        pyg.att_src.copy_(ours.att_src[None])
        pyg.att_dst.copy_(ours.att_dst[None])
        pyg.bias.copy_(torch.randn_like(pyg.bias))
        ours.bias.copy_(pyg.bias)
    graph = Graph.from_edge_index(edge_index, 30)
    torch.testing.assert_close(ours(x, graph), pyg(x, edge_index), atol=1e-5, rtol=1e-4)
    # value_dropout (GAT's code drops the projected features it aggregates, not the scores):
    # at p = 1 every value is zero, so only the bias is left
    ours.value_dropout = 1.0
    torch.testing.assert_close(ours.train()(x, graph), ours.bias.expand(30, -1), atol=0.0, rtol=0.0)


@pytest.mark.parametrize(
    ("task", "attention", "options", "allowed"),
    [
        ("cora", "window", {}, "graph"),
        ("ogbg-molbace", "full", {"model": "graphattnconv"}, "graph"),  # was ignored: the convs attend over bonds
        ("ogbg-molbace", "graph", {"model": "gps"}, "full, window, "),
        ("listops", "graph", {}, "full, window, "),
        ("mnist1d", "grid", {}, "full, window, "),
        ("digits", "graph", {}, "sea, grid"),
    ],
)
def test_attention_is_checked_per_task_before_the_data_loads(tmp_path, monkeypatch, task, attention, options, allowed):
    def no_data(self, cfg):
        raise AssertionError("the data loaded before the attention was checked")

    monkeypatch.setattr(type(get_task(task)), "datasets", no_data)
    wanted = rf"^--attention for --task {task} must be one of .*{allowed}.*, got '{attention}'"
    with pytest.raises(ValueError, match=wanted):
        train(_cfg(tmp_path, task=task, attention=attention, options=options))


# ---------------------------------------------------------------------- images and sequences
def test_digits_as_patch_graphs_learn(tmp_path):
    result = train(_cfg(tmp_path, task="digits", attention="grid", dim=32, heads=4, epochs=4, batch_size=32))
    assert result["best_valid_accuracy"] > 0.3  # 10 classes


def test_mnist_graph_splits_the_offline_test_images():
    task = get_task("mnist-graph")
    train_set, valid_set, test_set = task.datasets(TrainConfig(task="mnist-graph"))
    assert (len(train_set), len(valid_set), len(test_set)) == (8000, 1000, 1000)
    assert task.num_patches == 49
    batch = task.collate([train_set[i] for i in range(4)])
    assert batch["images"].shape == (4, 1, 28, 28) and batch["y"].shape == (4,)


def test_mnist1d_is_a_real_valued_sequence_task():
    task = get_task("mnist1d")
    cfg = TrainConfig(task="mnist1d", attention="window", dim=16, heads=2, layers=1)
    splits = task.datasets(cfg)
    assert [len(s) for s in splits] == [3500, 500, 1000]
    batch = task.collate([splits[0][i] for i in range(3)])
    assert batch["tokens"].shape == (120, 1) and batch["lengths"].tolist() == [40, 40, 40]
    logits, _ = task.forward(task.build_model(cfg), batch)
    assert logits.shape == (3, 10)


def test_sst_sentences_as_token_sequences():
    task = get_task("sst")
    cfg = TrainConfig(task="sst", attention="full", dim=16, heads=2, layers=1)
    splits = task.datasets(cfg)
    assert [len(s) for s in splits] == [8544, 1101, 2210]
    tokens, label = splits[0][0]
    assert tokens.dtype == torch.long and 0 <= int(label) < 5
    batch = task.collate([splits[2][i] for i in range(5)])
    logits, _ = task.forward(task.build_model(cfg), batch)
    assert logits.shape == (5, 5)


def test_molecule_model_option_is_checked_before_the_data_loads(tmp_path):
    """model=gpss was reported by the conv net as "conv must be 'transformerconv' or
    'graphattnconv'" (naming neither the option nor gps), after loading the dataset."""
    cfg = TrainConfig(
        task="ogbg-molbace", attention="full", options={"model": "gpss"}, data_root=str(tmp_path / "none")
    )
    with pytest.raises(
        ValueError, match="--option model must be one of gps, transformerconv, graphattnconv, got 'gpss'"
    ):
        get_task("ogbg-molbace").datasets(cfg)  # the empty data root would fail later
