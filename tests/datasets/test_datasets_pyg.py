"""Planetoid and TU datasets load offline through PyG with the counts of the data README."""

from __future__ import annotations

import pytest

pytest.importorskip("torch_geometric")  # an optional extra

from graphattn.datasets import load_planetoid, load_tu

# name: (nodes, directed edges, features, classes, train, val, test), README section 3a.
PLANETOID = {
    "Cora": (2708, 10556, 1433, 7, 140, 500, 1000),
    "CiteSeer": (3327, 9104, 3703, 6, 120, 500, 1000),
}

# name: (graphs, nodes, directed edges, classes), README section 4.
TU = {
    "MUTAG": (188, 3371, 7442, 2),
    "PROTEINS": (1113, 43471, 162088, 2),
    "ENZYMES": (600, 19580, 74564, 6),
    "Mutagenicity": (4337, 131488, 266894, 2),
    "AIDS": (2000, 31385, 64780, 2),
}


@pytest.mark.parametrize("name", list(PLANETOID))
def test_planetoid_public_split(name, shared_data, cache):
    nodes, edges, feats, classes, n_train, n_val, n_test = PLANETOID[name]
    ds = load_planetoid(name, shared_data, cache_dir=cache)
    data = ds[0]
    assert (data.num_nodes, data.num_edges, data.num_features, ds.num_classes) == (nodes, edges, feats, classes)
    assert (int(data.train_mask.sum()), int(data.val_mask.sum()), int(data.test_mask.sum())) == (n_train, n_val, n_test)


def test_cora_geom_gcn_splits(shared_data, cache):
    data = load_planetoid("Cora", shared_data, split="geom-gcn", cache_dir=cache)[0]
    assert data.train_mask.shape == (2708, 10)
    split0 = (int(data.train_mask[:, 0].sum()), int(data.val_mask[:, 0].sum()), int(data.test_mask[:, 0].sum()))
    assert split0 == (1192, 796, 497)


@pytest.mark.parametrize("name", list(TU))
def test_tu_counts(name, shared_data, cache):
    graphs, nodes, edges, classes = TU[name]
    ds = load_tu(name, shared_data, cache_dir=cache)
    assert len(ds) == graphs and ds.num_classes == classes
    assert ds._data.num_nodes == nodes and ds._data.edge_index.shape[1] == edges


def test_planetoid_name_is_checked():
    with pytest.raises(ValueError, match="name must be one of Cora, CiteSeer"):
        load_planetoid("cora")
    # PyG asserted the split without a message, reported as "Planetoid Cora is not available".
    with pytest.raises(ValueError, match="split must be one of public, full, geom-gcn, random, got 'bogus'"):
        load_planetoid("Cora", split="bogus")
