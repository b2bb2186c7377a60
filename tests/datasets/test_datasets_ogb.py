"""OGB molecule sets load offline with the counts of the data README, and come with OGB's Evaluator."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ogb")  # an optional extra

from graphattn.datasets import load_ogbg

# name: (graphs, train, valid, test, tasks, metric), from the data README (section 1).
EXPECTED = {
    "ogbg-molesol": (1128, 902, 113, 113, 1, "rmse"),
    "ogbg-molfreesolv": (642, 513, 64, 65, 1, "rmse"),
    "ogbg-molbace": (1513, 1210, 151, 152, 1, "rocauc"),
    "ogbg-molbbbp": (2039, 1631, 204, 204, 1, "rocauc"),
    "ogbg-molhiv": (41127, 32901, 4113, 4113, 1, "rocauc"),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_counts_splits_and_shapes(name, shared_data, cache):
    graphs, n_train, n_valid, n_test, tasks, metric = EXPECTED[name]
    task = load_ogbg(name, shared_data, cache_dir=cache)
    assert len(task.dataset) == graphs
    assert {k: len(v) for k, v in task.split.items()} == {"train": n_train, "valid": n_valid, "test": n_test}
    assert task.num_tasks == tasks and task.metric == metric
    g = task.dataset[0]
    assert g.x.dim() == 2 and g.x.shape[1] == 9 and g.x.dtype == torch.long
    assert g.edge_attr.shape == (g.edge_index.shape[1], 3)
    # Bonds are stored in both directions.
    assert g.edge_index.shape[1] % 2 == 0
    assert len(task.subset("valid")) == n_valid
    # The processed cache lives in the writable cache, never in the read-only shared folder.
    folder = name.replace("-", "_")
    assert (cache / "ogb" / folder / "processed").is_dir()
    assert not (shared_data / "ogb" / folder / "processed").exists()


def test_molhiv_positives_and_evaluator(shared_data, cache):
    task = load_ogbg("ogbg-molhiv", shared_data, cache_dir=cache)
    y = task.dataset.y[:, 0]
    assert int((y == 1).sum()) == 1443  # README: 1443 positives
    valid_y = y[task.split["valid"]].view(-1, 1)
    perfect = task.evaluator.eval({"y_true": valid_y, "y_pred": valid_y.float()})
    assert perfect["rocauc"] == pytest.approx(1.0)
    flipped = task.evaluator.eval({"y_true": valid_y, "y_pred": -valid_y.float()})
    assert flipped["rocauc"] == pytest.approx(0.0)


def test_unknown_name_is_rejected():
    with pytest.raises(ValueError, match="name must be one of ogbg-molhiv"):
        load_ogbg("ogbg-molpcba")
