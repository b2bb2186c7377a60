"""Associative recall: every example's label is the value stored under its query key."""

from __future__ import annotations

import pytest
import torch

from graphattn.datasets import AssociativeRecall, RecallConfig


def _decode(tokens: torch.Tensor, c: RecallConfig) -> dict[int, int]:
    """key -> value of one example, read back from its ids by the layout's rules."""
    body = tokens[1:].tolist()
    pairs: dict[int, int] = {}
    if c.pair_tokens:
        for t in body:
            if c.num_keys <= t < c.num_keys + c.num_keys * c.num_values:
                k, v = divmod(t - c.num_keys, c.num_values)
                assert k not in pairs, "a key appears twice"
                pairs[k] = v
    else:
        for i, t in enumerate(body):
            if t < c.num_keys:
                assert t not in pairs, "a key appears twice"
                nxt = body[i + 1]
                assert c.num_keys <= nxt < c.num_keys + c.num_values, "a key not followed by a value"
                pairs[t] = nxt - c.num_keys
    return pairs


# (pair_tokens, length, num_pairs): roomy, and the shortest length each layout allows
_SIZES = [(False, 64, 8), (False, 17, 8), (False, 300, 3), (True, 64, 8), (True, 9, 8), (True, 300, 3)]


@pytest.mark.parametrize("pair_tokens,length,num_pairs", _SIZES)
def test_label_is_the_value_under_the_query_key(pair_tokens, length, num_pairs):
    c = RecallConfig(length=length, num_pairs=num_pairs, pair_tokens=pair_tokens)
    ds = AssociativeRecall(200, c, seed=3)
    assert len(ds) == 200
    for i in range(len(ds)):
        tokens, label = ds[i]
        assert tokens.shape == (length,) and tokens.dtype == torch.int64
        assert int(tokens.min()) >= 0 and int(tokens.max()) < c.vocab_size
        pairs = _decode(tokens, c)
        assert len(pairs) == num_pairs
        query = int(tokens[0])
        assert query in pairs
        assert int(label) == pairs[query]


def test_layout_lengths_are_checked():
    with pytest.raises(ValueError, match=r"length must be >= 2 \* num_pairs \+ 1 = 17"):
        RecallConfig(length=16, num_pairs=8)
    with pytest.raises(ValueError, match=r"length must be >= 1 \* num_pairs \+ 1 = 9 with pair_tokens"):
        RecallConfig(length=8, num_pairs=8, pair_tokens=True)
    with pytest.raises(ValueError, match="num_pairs must be <= num_keys"):
        RecallConfig(num_pairs=17)


@pytest.mark.parametrize("pair_tokens", [False, True])
def test_token_features_describe_every_id(pair_tokens):
    c = RecallConfig(length=64, num_pairs=4, num_keys=5, num_values=3, num_filler=2, pair_tokens=pair_tokens)
    table = c.token_features()
    nk, nv, nf = 5, 3, 2
    assert table.shape == (c.vocab_size, nk + nv + 1 + nf)
    key, value, flag, filler = table.split([nk, nv, 1, nf], dim=1)
    ids = torch.arange(c.vocab_size)
    if pair_tokens:
        assert c.vocab_size == nk + nk * nv + nf
        is_pair = (ids >= nk) & (ids < nk + nk * nv)
        assert torch.equal(key[is_pair].argmax(1), (ids[is_pair] - nk) // nv)
        assert torch.equal(value[is_pair].argmax(1), (ids[is_pair] - nk) % nv)
        assert torch.equal(flag[:, 0], (ids < nk).float())  # the query flag marks the keys alone
    else:
        assert c.vocab_size == nk + nv + nf
        is_value = (ids >= nk) & (ids < nk + nv)
        assert torch.equal(value[is_value].argmax(1), ids[is_value] - nk)
        assert flag.sum() == 0
    assert torch.equal(key[:nk], torch.eye(nk))
    assert torch.equal(filler[-nf:], torch.eye(nf))
    # Keys carry one 1, pairs two (pair layout), fillers one; no two ids share a row.
    assert len({tuple(r.tolist()) for r in table}) == c.vocab_size
    assert set(table.unique().tolist()) == {0.0, 1.0}


def test_same_seed_same_examples_other_seed_other_examples():
    c = RecallConfig(length=128, num_pairs=4, pair_tokens=True)
    a, b, other = AssociativeRecall(50, c, seed=7), AssociativeRecall(50, c, seed=7), AssociativeRecall(50, c, seed=8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.tokens, other.tokens)


def test_resample_draws_a_new_reproducible_training_set_each_epoch():
    c = RecallConfig(length=16, num_pairs=2)
    fixed = AssociativeRecall(64, c, seed=5)
    ds = AssociativeRecall(64, c, seed=5, resample=True)
    assert torch.equal(ds.tokens, fixed.tokens) and torch.equal(ds.labels, fixed.labels)
    held = ds.tokens
    ds.set_epoch(0)  # the constructor's set is epoch 0's: kept, not drawn again
    assert ds.tokens is held
    sets = {}
    for epoch in (1, 2, 1, 0):
        ds.set_epoch(epoch)
        if epoch in sets:
            assert torch.equal(ds.tokens, sets[epoch])  # reproducible
        sets[epoch] = ds.tokens.clone()
        # Each example still answers its query.
        for tokens, label in zip(ds.tokens, ds.labels, strict=True):
            assert int(label) == _decode(tokens, c)[int(tokens[0])]
    assert torch.equal(sets[0], fixed.tokens)
    assert not torch.equal(sets[1], sets[0]) and not torch.equal(sets[2], sets[1])
    fixed.set_epoch(3)  # without resample: a no-op
    assert torch.equal(fixed.tokens, sets[0])


def test_recall_task_reads_pair_tokens_as_features():
    from graphattn.train.engine import TrainConfig
    from graphattn.train.tasks import get_task

    cfg = TrainConfig(task="recall", attention="full", options={"length": 32, "pairs": 2, "pair_tokens": 1})
    task = get_task("recall")
    train, _, _ = task.datasets(cfg)
    batch = task.collate([train[0], train[1]])
    table = RecallConfig(length=32, num_pairs=2, pair_tokens=True).token_features()
    assert batch["tokens"].shape == (64, table.shape[1])
    assert torch.equal(batch["tokens"][:32], table[train[0][0]])
    model = task.build_model(cfg)
    logits, _ = task.forward(model, batch)
    assert logits.shape == (2, 16)
