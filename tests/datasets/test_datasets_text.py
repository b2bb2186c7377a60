"""MNIST-1D sequences and SST sentences (token sequences and parse trees) load offline."""

from __future__ import annotations

import pytest
import torch

from graphattn.datasets import DATA_ENV, build_vocab, encode, load_mnist1d, load_sst, parse_tree


def test_mnist1d(shared_data, cache):
    s = load_mnist1d(shared_data, cache_dir=cache)
    assert s.x_train.shape == (4000, 40) and s.x_test.shape == (1000, 40)
    assert s.y_train.shape == (4000,) and s.y_test.shape == (1000,)
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.long
    assert sorted(s.y_train.unique().tolist()) == list(range(10)) and s.num_classes == 10


def test_root_defaults_to_env(shared_data, cache, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(shared_data))
    assert load_mnist1d(cache_dir=cache).x_test.shape == (1000, 40)


@pytest.mark.parametrize(("split", "n", "n_binary"), [("train", 8544, 6920), ("dev", 1101, 872), ("test", 2210, 1821)])
def test_sst_split_sizes(split, n, n_binary, shared_data, cache):
    fine = load_sst(split, shared_data, cache_dir=cache)
    assert len(fine) == n and {s.label for s in fine} == {0, 1, 2, 3, 4}
    binary = load_sst(split, shared_data, binary=True, cache_dir=cache)
    assert len(binary) == n_binary and {s.label for s in binary} == {0, 1}
    for s in fine[:50]:
        n_words = len(s.tokens)
        assert s.num_nodes == 2 * n_words - 1  # binarized tree
        assert s.edge_index.shape == (2, 2 * n_words - 2)
        assert int(s.node_labels[-1]) == s.label  # root last


def test_parse_tree_by_hand():
    s = parse_tree("(3 (2 It) (4 (2 's) (3 (2 8 1\\/2) (2 .))))")
    assert s.tokens == ["It", "'s", "8 1\\/2", "."] and s.label == 3
    # words 0-3, then phrases in post-order: 4 = (8 1/2 .), 5 = ('s 4), 6 = root (It 5)
    assert sorted(zip(*s.edge_index.tolist(), strict=True)) == [(4, 2), (4, 3), (5, 1), (5, 4), (6, 0), (6, 5)]
    assert s.node_labels.tolist() == [2, 2, 2, 2, 3, 4, 3]
    with pytest.raises(ValueError, match="malformed SST tree"):
        parse_tree("2 word")


def test_vocab_and_encoding(shared_data, cache):
    train = load_sst("dev", shared_data, cache_dir=cache)
    vocab = build_vocab(train, min_freq=2)
    assert vocab["<pad>"] == 0 and vocab["<unk>"] == 1 and len(vocab) > 100
    ids = encode(train[:3], vocab)
    assert [len(t) for t in ids] == [len(s.tokens) for s in train[:3]]
    assert encode([parse_tree("(2 (2 zzzunseen) (2 .))")], vocab)[0].tolist() == [1, vocab["."]]
