"""Associative recall: key-value pairs scattered in filler, a query key at the end.

A long-range synthetic task in the spirit of the associative-recall probes of
Ba et al. 2016 ("Using Fast Weights to Attend to the Recent Past") and the Zoology/H3
line of work (Arora et al. 2023, "Zoology: Measuring and Improving Recall in Efficient
Language Models"): the answer sits anywhere in the sequence, so a model whose attention
only reaches a local window stays near chance, while content-based attention (the query
token finding the matching key token) solves it.

Token layout of one example of length ``L`` (ids), two layouts:

``pair_tokens=False`` (the default, two tokens per pair, as in the papers above)::

    [k_q  filler ...  k_a v_a  filler ...  k_b v_b  ...  filler ...]

- ``num_pairs`` distinct keys ``k`` (ids ``0 .. num_keys-1``) each followed directly by its
  value ``v`` (ids ``num_keys .. num_keys+num_values-1``), at random non-overlapping
  positions; filler tokens (the ``num_filler`` ids after those) everywhere else.

``pair_tokens=True`` (one token per pair)::

    [k_q  filler ...  (k_a, v_a)  filler ...  (k_b, v_b)  ...  filler ...]

- each pair is one token with id ``num_keys + k * num_values + v`` at a random position; the
  filler ids come after those. The answer is one attention hop from the query, where the
  two-token layout needs two: a layer must first move each value onto its key's token (a
  "previous token" head), and a model can sit long on the shortcut of guessing among the
  values present (loss ``ln num_pairs``) before it finds that circuit. This layout tests what
  the structures are about, whether the query's edges reach the far token that matches it,
  without that plateau. Read its ids through :meth:`RecallConfig.token_features` (key and
  value one-hots side by side, so a model learns a vector per key and per value rather than
  one per (key, value) id), and without a positional code, which order does not need.
  Measured with 2-layer full attention (d = 64, lr 3e-3, with the sinusoidal code unless
  said): one embedding row per id stayed at chance (6%) after 8,000 examples at length 256;
  the features reached 22% after 12,000 examples at length 64, and 99% after 4,000 without
  the positional code (what ``graphattn train --task recall --option pair_tokens=1`` builds).

In both, the first token is one of the example's keys, the query; the label is that key's
value (``0 .. num_values-1``). Chance accuracy is ``1 / num_values``. (The query leads so a
classifier reads the answer at the first token; with bidirectional attention its place in the
sequence does not change the task.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["RecallConfig", "AssociativeRecall"]


@dataclass(frozen=True)
class RecallConfig:
    """Sizes of the task; the defaults make a length-1024 problem with chance 1/16."""

    length: int = 1024
    num_pairs: int = 8
    num_keys: int = 16
    num_values: int = 16
    num_filler: int = 4
    pair_tokens: bool = False

    @property
    def vocab_size(self) -> int:
        return self._first_filler + self.num_filler

    @property
    def _first_filler(self) -> int:
        values = self.num_keys * self.num_values if self.pair_tokens else self.num_values
        return self.num_keys + values

    def token_features(self) -> Tensor:
        """Multi-hot description of every id, ``float32 [vocab_size, num_keys + num_values + 1 + num_filler]``.

        Columns: the key's one-hot, the value's one-hot, a query flag (the leading key), the
        filler's one-hot. A linear embedding of these rows is a sum of a key embedding and a
        value embedding, so a model learns 16 + 16 vectors instead of one per (key, value) id.
        Row ``i`` of the key ids (``0 .. num_keys-1``) describes a key as the query in the
        ``pair_tokens`` layout, and as a key token in the two-token layout, where the flag
        stays 0 (that layout's query is an ordinary key token).
        """
        nk, nv, nf = self.num_keys, self.num_values, self.num_filler
        table = torch.zeros(self.vocab_size, nk + nv + 1 + nf)
        keys = torch.arange(nk)
        table[keys, keys] = 1.0
        if self.pair_tokens:
            table[keys, nk + nv] = 1.0
            ids = torch.arange(nk * nv)
            table[nk + ids, ids // nv] = 1.0
            table[nk + ids, nk + ids % nv] = 1.0
        else:
            values = torch.arange(nv)
            table[nk + values, nk + values] = 1.0
        fillers = torch.arange(nf)
        table[self._first_filler + fillers, nk + nv + 1 + fillers] = 1.0
        return table

    def __post_init__(self) -> None:
        if self.num_pairs > self.num_keys:
            raise ValueError(
                f"num_pairs must be <= num_keys (keys are distinct), got {self.num_pairs} > {self.num_keys}"
            )
        tokens_per_pair = 1 if self.pair_tokens else 2
        if self.length < tokens_per_pair * self.num_pairs + 1:
            raise ValueError(
                f"length must be >= {tokens_per_pair} * num_pairs + 1 = {tokens_per_pair * self.num_pairs + 1}"
                f"{' with pair_tokens' if self.pair_tokens else ''}, got {self.length}"
            )
        if min(self.num_pairs, self.num_values, self.num_filler) < 1:
            raise ValueError("num_pairs, num_values and num_filler must be >= 1")


class AssociativeRecall(Dataset):
    """``size`` seeded examples; ``ds[i] -> (tokens int64 [length], label int64)``.

    Examples are generated up front in a vectorized way (``size x length`` int64), so
    the same ``(config, size, seed)`` always gives the same data. With ``resample=True``,
    :meth:`set_epoch` (which ``graphattn train`` calls before every epoch, as for a
    ``DistributedSampler``) draws a new set of ``size`` examples for each epoch > 0, so a model
    cannot memorize the training set; epoch 0 is the ``seed``'s set, and every epoch's set is
    reproducible.
    """

    def __init__(
        self, size: int, config: RecallConfig = RecallConfig(), seed: int = 0, *, resample: bool = False
    ) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self.config, self.size, self.seed, self.resample = config, size, seed, resample
        self.tokens, self.labels = _generate(size, config, seed)
        self._drawn_from = seed  # the seed of the examples held now

    def set_epoch(self, epoch: int) -> None:
        """Switch to epoch ``epoch``'s examples (only with ``resample=True``; otherwise a no-op)."""
        if not self.resample:
            return
        # Epoch e > 0 draws from its own seed, above the small seeds the splits use; the set
        # held now is kept when it is already that epoch's (epoch 0 right after construction).
        seed = self.seed if epoch == 0 else (self.seed << 20) + epoch
        if seed != self._drawn_from:
            self.tokens, self.labels = _generate(self.size, self.config, seed)
            self._drawn_from = seed

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.tokens[i], self.labels[i]


def _generate(size: int, c: RecallConfig, seed: int) -> tuple[Tensor, Tensor]:
    """``tokens [size, length]`` and ``labels [size]`` of ``size`` examples drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    body = c.length - 1  # positions after the query
    tokens = torch.randint(0, c.num_filler, (size, c.length), generator=gen) + c._first_filler
    # Distinct keys and their values per example.
    keys = torch.argsort(torch.rand(size, c.num_keys, generator=gen), dim=1)[:, : c.num_pairs]
    values = torch.randint(0, c.num_values, (size, c.num_pairs), generator=gen)
    rows = torch.arange(size)[:, None]
    if c.pair_tokens:
        slots = torch.argsort(torch.rand(size, body, generator=gen), dim=1)[:, : c.num_pairs]
        tokens[rows, 1 + slots] = c.num_keys + keys * c.num_values + values
    else:
        # Non-overlapping slots: choose num_pairs of the body // 2 two-token slots.
        slots = torch.argsort(torch.rand(size, body // 2, generator=gen), dim=1)[:, : c.num_pairs]
        tokens[rows, 1 + 2 * slots] = keys
        tokens[rows, 2 + 2 * slots] = values + c.num_keys
    which = torch.randint(0, c.num_pairs, (size,), generator=gen)
    tokens[:, 0] = keys[torch.arange(size), which]
    return tokens, values[torch.arange(size), which]
