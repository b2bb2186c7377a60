"""The seeded LRA ListOps generator follows the grammar of the data README (section 9)."""

from __future__ import annotations

import pytest
import torch

from graphattn.datasets import LISTOPS_VOCAB, evaluate_listops, generate_listops, listops_tree_edges
from graphattn.datasets.listops import PAD_ID


def test_vocabulary():
    assert LISTOPS_VOCAB[PAD_ID] == "<pad>" and len(LISTOPS_VOCAB) == 16
    assert LISTOPS_VOCAB[1:11] == tuple(str(d) for d in range(10))
    assert LISTOPS_VOCAB[11:] == ("[MIN", "[MAX", "[MED", "[SM", "]")


def test_seeded_bounds_distinct_and_labels_correct():
    a = generate_listops(60, min_length=64, max_length=256, seed=1)
    b = generate_listops(60, min_length=64, max_length=256, seed=1)
    c = generate_listops(60, min_length=64, max_length=256, seed=2)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.tokens[:, :64], c.tokens[:, :64])
    assert bool(((a.lengths > 64) & (a.lengths < 256)).all())
    assert a.tokens.shape == (60, int(a.lengths.max()))
    assert len({tuple(a.sequence(i).tolist()) for i in range(60)}) == 60  # duplicates dropped
    for i in range(60):
        seq = a.sequence(i)
        assert int((a.tokens[i, len(seq) :] != PAD_ID).sum()) == 0
        assert evaluate_listops(seq) == int(a.labels[i])  # independent evaluation of the label
        assert LISTOPS_VOCAB[int(seq[0])] in ("[MIN", "[MAX", "[MED", "[SM")


def test_lra_defaults():
    d = generate_listops(8, seed=0)
    assert bool(((d.lengths > 500) & (d.lengths < 2000)).all())
    assert d.labels.min() >= 0 and d.labels.max() <= 9


def test_operators_by_hand():
    ids = {t: i for i, t in enumerate(LISTOPS_VOCAB)}

    def enc(text: str) -> list[int]:
        return [ids[t] for t in text.split()]

    assert evaluate_listops(enc("[MAX 2 9 ]")) == 9
    assert evaluate_listops(enc("[MED 1 2 7 9 ]")) == 4  # mean of the middle two, truncated
    assert evaluate_listops(enc("[SM 5 [MIN 7 8 ] 9 ]")) == 1  # (5 + 7 + 9) % 10
    edges = listops_tree_edges(torch.tensor(enc("[SM 5 [MIN 7 8 ] 9 ]")))
    # The root [SM (0) has children 5, [MIN, 9 and its ']'; [MIN (2) has 7, 8 and its ']'.
    assert sorted(zip(*edges.tolist(), strict=True)) == [(0, 1), (0, 2), (0, 6), (0, 7), (2, 3), (2, 4), (2, 5)]


def test_too_tight_bounds_raise():
    with pytest.raises(RuntimeError, match="widen the length bounds"):
        generate_listops(5, min_length=3, max_length=5, max_depth=1, max_tries=200)  # root is a digit
    with pytest.raises(ValueError, match="min_length < max_length - 1"):
        generate_listops(5, min_length=10, max_length=10)
