"""A seeded generator of LRA ListOps (Nangia & Bowman 2018; Tay et al. 2021, https://arxiv.org/abs/2011.04006).

Grammar and defaults follow the Long Range Arena generator (see the data README, section 9):

* operators ``MIN``, ``MAX``, ``MED`` (median; with an even count the mean of the two middle values,
  truncated to int), ``SM`` (sum modulo 10); values are digits 0-9; the target is a digit;
* a node at depth ``d`` (root at depth 1) below ``max_depth`` is an operator with probability 0.25,
  otherwise a digit; at ``max_depth`` it is always a digit; an operator first draws its number of
  arguments uniformly in ``2 .. max_args`` (inclusive), generates them, then draws its operator;
* a tree's length counts operator tokens, closing brackets and digits; trees are kept only if
  ``min_length < length < max_length`` (strict) and distinct (duplicates dropped).

LRA's defaults are ``min_length=500, max_length=2000, max_depth=10, max_args=10`` and 100,000 trees
split 96,000 / 2,000 / 2,000; upstream is unseeded, so only the distribution is matched. Lower the
length bounds for CPU-sized runs (e.g. 64-512) and state them.

Vocabulary (:data:`LISTOPS_VOCAB`; id = position): ``0`` ``<pad>``, ``1-10`` the digits ``0-9``,
``11`` ``[MIN``, ``12`` ``[MAX``, ``13`` ``[MED``, ``14`` ``[SM``, ``15`` ``]``. So ``[MAX 2 9 ]`` is
``[12, 3, 10, 15]`` and the token count equals the tree's length.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ListOps", "generate_listops", "listops_tree_edges", "evaluate_listops", "LISTOPS_VOCAB", "PAD_ID"]

LISTOPS_VOCAB = ("<pad>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "[MIN", "[MAX", "[MED", "[SM", "]")
PAD_ID = 0
_DIGIT0 = 1  # id of digit 0
_OPS = ("[MIN", "[MAX", "[MED", "[SM")
_OP_IDS = {op: LISTOPS_VOCAB.index(op) for op in _OPS}
_CLOSE = LISTOPS_VOCAB.index("]")
_OPERATOR_P = 0.25


@dataclass
class ListOps:
    """Generated ListOps examples.

    Attributes:
        tokens: ``int64 [N, L_max]`` token ids, right-padded with ``PAD_ID`` (0).
        lengths: ``int64 [N]`` tokens per example.
        labels: ``int64 [N]`` the value of each expression (0-9).
        seed: the generator seed.
    """

    tokens: Tensor
    lengths: Tensor
    labels: Tensor
    seed: int

    def __len__(self) -> int:
        return self.labels.numel()

    def sequence(self, i: int) -> Tensor:
        """Unpadded token ids of example ``i``."""
        return self.tokens[i, : int(self.lengths[i])]

    def text(self, i: int) -> str:
        """Example ``i`` as text, e.g. ``"[MAX 2 9 ]"``."""
        return " ".join(LISTOPS_VOCAB[t] for t in self.sequence(i).tolist())


def _apply(op: str, values: list[int]) -> int:
    if op == "[MIN":
        return min(values)
    if op == "[MAX":
        return max(values)
    if op == "[SM":
        return sum(values) % 10
    s = sorted(values)
    m = len(s) // 2
    # Median; for an even count the mean of the two middle values, truncated (values are >= 0).
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) // 2


def _tree(rng: random.Random, depth: int, max_depth: int, max_args: int, out: list[int]) -> int:
    """Append the token ids of a random tree to ``out``; return its value."""
    if depth < max_depth and rng.random() <= _OPERATOR_P:
        slot = len(out)
        out.append(-1)  # operator id, drawn after the arguments (upstream's order of draws)
        values = [_tree(rng, depth + 1, max_depth, max_args, out) for _ in range(rng.randint(2, max_args))]
        op = rng.choice(_OPS)
        out[slot] = _OP_IDS[op]
        out.append(_CLOSE)
        return _apply(op, values)
    value = rng.randrange(10)
    out.append(_DIGIT0 + value)
    return value


def generate_listops(
    num_samples: int,
    *,
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    seed: int = 0,
    max_tries: int | None = None,
) -> ListOps:
    """Draw ``num_samples`` distinct ListOps trees with ``min_length < length < max_length``.

    Args:
        num_samples: number of examples.
        min_length: exclusive lower bound on the token count (LRA: 500).
        max_length: exclusive upper bound on the token count (LRA: 2000).
        max_depth: maximum tree depth (root at depth 1; LRA: 10).
        max_args: maximum arguments of an operator (LRA: 10).
        seed: seed of the generator (Python's ``random.Random``); equal seeds give equal data.
        max_tries: give up after this many drawn trees (default ``1000 * num_samples + 10000``).

    Raises:
        ValueError: bad arguments.
        RuntimeError: the bounds are too tight to find ``num_samples`` distinct trees in ``max_tries``.
    """
    if not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
    if not 0 <= min_length < max_length - 1:
        raise ValueError(f"need 0 <= min_length < max_length - 1 (strict bounds), got {min_length}, {max_length}")
    if max_depth < 1:
        raise ValueError(f"max_depth must be >= 1, got {max_depth!r}")
    if max_args < 2:
        raise ValueError(f"max_args must be >= 2, got {max_args!r}")
    tries = max_tries if max_tries is not None else 1000 * num_samples + 10000
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    seqs: list[list[int]] = []
    labels: list[int] = []
    for _ in range(tries):
        if len(seqs) == num_samples:
            break
        toks: list[int] = []
        value = _tree(rng, 1, max_depth, max_args, toks)
        if not min_length < len(toks) < max_length:
            continue
        key = tuple(toks)
        if key in seen:
            continue
        seen.add(key)
        seqs.append(toks)
        labels.append(value)
    if len(seqs) < num_samples:
        raise RuntimeError(
            f"found only {len(seqs)} of {num_samples} distinct trees with {min_length} < length < {max_length} "
            f"in {tries} draws; widen the length bounds or raise max_tries"
        )
    width = max((len(s) for s in seqs), default=0)
    tokens = torch.full((num_samples, width), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    return ListOps(tokens, lengths, torch.tensor(labels, dtype=torch.long), seed)


def evaluate_listops(sequence: Tensor | list[int]) -> int:
    """The value of one token-id sequence (an independent check of the generator's labels)."""
    stack: list[tuple[str | None, list[int]]] = [(None, [])]
    for t in sequence.tolist() if isinstance(sequence, Tensor) else sequence:
        name = LISTOPS_VOCAB[t]
        if name in _OPS:
            stack.append((name, []))
        elif name == "]":
            op, args = stack.pop()
            if op is None:
                raise ValueError("unbalanced ListOps sequence: ']' without an operator")
            stack[-1][1].append(_apply(op, args))
        elif name != "<pad>":
            stack[-1][1].append(int(name))
    if len(stack) != 1 or len(stack[0][1]) != 1:
        raise ValueError("a ListOps sequence must hold exactly one complete expression")
    return stack[0][1][0]


def listops_tree_edges(sequence: Tensor) -> Tensor:
    """Parse-tree edges of one unpadded sequence: ``int64 [2, M]``, row 0 operator position, row 1 argument.

    An argument is a digit (its position) or a nested operator (its ``[OP`` position); each ``]``
    is linked to its operator too, so every token but the root has one parent.
    """
    src, dst = [], []
    open_ops: list[int] = []
    for pos, t in enumerate(sequence.tolist()):
        if open_ops:
            src.append(open_ops[-1])
            dst.append(pos)
        if t == _CLOSE:
            if not open_ops:
                raise ValueError(f"unbalanced ListOps sequence: ']' at position {pos} without an operator")
            open_ops.pop()
        elif LISTOPS_VOCAB[t] in _OPS:
            open_ops.append(pos)
    return torch.tensor([src, dst], dtype=torch.long).view(2, -1)
