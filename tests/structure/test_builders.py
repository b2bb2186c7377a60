"""Sequence builders against their definitions: a dense per-pair predicate is the spec.

For each builder: the graph equals the predicate's adjacency on a table of lengths (empty,
length 1, odd sizes, several examples), in-degrees equal the closed forms of the docstrings,
and bad arguments raise errors that name them.
"""

from __future__ import annotations

import pytest
import torch

import graphattn.structure as S
from graphattn import Graph

LENGTHS = [[0], [1], [2], [7], [13, 0, 1, 17, 5]]


def spec_dense(lengths: list[int], pred) -> torch.Tensor:
    """Block-diagonal adjacency from ``pred(i, j, L)`` over local positions (slow, obviously right)."""
    n = sum(lengths)
    out = torch.zeros(n, n, dtype=torch.long)
    off = 0
    for length in lengths:
        for i in range(length):
            for j in range(length):
                out[off + i, off + j] = int(bool(pred(i, j, length)))
        off += length
    return out


def local_positions(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.cat([torch.arange(n) for n in lengths]) if lengths else torch.zeros(0, dtype=torch.long)
    lens = torch.cat([torch.full((n,), n) for n in lengths]) if lengths else torch.zeros(0, dtype=torch.long)
    return pos, lens


def check_graph(g: Graph, lengths: list[int], pred) -> None:
    assert g.num_dst == g.num_src == sum(lengths)
    assert g.ptr is not None and g.ptr.tolist() == [0, *torch.tensor(lengths).cumsum(0).tolist()]
    assert torch.equal(g.to_dense(), spec_dense(lengths, pred))


CASES = {
    "full": (lambda L, p: S.full(lengths=L, **p), lambda p: lambda i, j, n: True, [{}]),
    "full_causal": (lambda L, p: S.full(lengths=L, causal=True), lambda p: lambda i, j, n: j <= i, [{}]),
    "window": (
        lambda L, p: S.window(None, lengths=L, **p),
        lambda p: lambda i, j, n: abs(i - j) < p["w"] and (j <= i or not p["causal"]),
        [{"w": w, "causal": c} for w in (1, 2, 3, 30) for c in (False, True)],
    ),
    "dilated": (
        lambda L, p: S.dilated(None, lengths=L, **p),
        lambda p: (
            lambda i, j, n: (
                (i - j) % p["dilation"] == 0 and abs(i - j) < p["w"] * p["dilation"] and (j <= i or not p["causal"])
            )
        ),
        [{"w": w, "dilation": d, "causal": c} for w in (1, 3) for d in (1, 2, 5) for c in (False, True)],
    ),
    "strided": (
        lambda L, p: S.strided(None, lengths=L, **p),
        lambda p: (
            lambda i, j, n: (abs(i - j) < p["stride"] or (i - j) % p["stride"] == 0) and (j <= i or not p["causal"])
        ),
        [{"stride": s, "causal": c} for s in (1, 2, 4) for c in (False, True)],
    ),
    "fixed": (
        lambda L, p: S.fixed(None, lengths=L, **p),
        lambda p: (
            lambda i, j, n: (
                (i // p["stride"] == j // p["stride"] or j % p["stride"] >= p["stride"] - p["c"])
                and (j <= i or not p["causal"])
            )
        ),
        [{"stride": s, "c": c, "causal": k} for s in (1, 3, 4) for c in (1, 2, 3) if c <= s for k in (False, True)],
    ),
    "block_local": (
        lambda L, p: S.block_local(None, lengths=L, **p),
        lambda p: lambda i, j, n: i // p["block_size"] == j // p["block_size"] and (j <= i or not p["causal"]),
        [{"block_size": s, "causal": c} for s in (1, 3, 8) for c in (False, True)],
    ),
    "global_tokens": (
        lambda L, p: S.global_tokens(None, lengths=L, **p),
        lambda p: (
            lambda i, j, n: (i < p["g"] or j < p["g"]) if isinstance(p["g"], int) else (i in p["g"] or j in p["g"])
        ),
        [{"g": 0}, {"g": 1}, {"g": 3}, {"g": [0, 4, 6]}],
    ),
    "bigbird_no_random": (
        lambda L, p: S.bigbird(None, lengths=L, r=0, **p),
        lambda p: lambda i, j, n: abs(i - j) < p["w"] or i < p["g"] or j < p["g"],
        [{"w": w, "g": g} for w in (1, 3) for g in (0, 2)],
    ),
    "longformer": (
        lambda L, p: S.longformer(None, lengths=L, **p),
        lambda p: (
            lambda i, j, n: (
                (((i - j) % p["dilation"] == 0 and abs(i - j) < p["w"] * p["dilation"]) or i in p["g"] or j in p["g"])
                and (j <= i or not p["causal"])
            )
        ),
        [{"w": w, "g": [0, 5], "dilation": d, "causal": c} for w in (1, 3) for d in (1, 2) for c in (False, True)],
    ),
}


@pytest.mark.parametrize("lengths", LENGTHS, ids=lambda L: "x".join(map(str, L)))
@pytest.mark.parametrize("name", sorted(CASES))
def test_builder_matches_definition(name, lengths):
    build, spec, params = CASES[name]
    for p in params:
        check_graph(build(lengths, p), lengths, spec(p))


# ---------------------------------------------------------------- closed-form in-degrees
def _min(a, b):
    return torch.minimum(a, torch.as_tensor(b))


DEGREES = [
    ("window", lambda n: S.window(n, 5), lambda p, L: _min(p, 4) + _min(L - 1 - p, 4) + 1),
    ("window_causal", lambda n: S.window(n, 5, causal=True), lambda p, L: _min(p, 4) + 1),
    ("dilated", lambda n: S.dilated(n, 3, 4), lambda p, L: _min(p // 4, 2) + _min((L - 1 - p) // 4, 2) + 1),
    (
        "strided",
        lambda n: S.strided(n, 6),
        lambda p, L: _min(p, 5) + _min(L - 1 - p, 5) + 1 + p // 6 + (L - 1 - p) // 6,
    ),
    ("strided_causal", lambda n: S.strided(n, 6, causal=True), lambda p, L: _min(p + 1, 6) + p // 6),
    ("fixed_causal", lambda n: S.fixed(n, 6, 2, causal=True), lambda p, L: (p // 6) * 2 + (p - (p // 6) * 6 + 1)),
    ("block_local", lambda n: S.block_local(n, 7), lambda p, L: _min((p // 7 + 1) * 7, L) - (p // 7) * 7),
    ("global_tokens", lambda n: S.global_tokens(n, 3), lambda p, L: torch.where(p < 3, L, _min(L, 3))),
    ("random", lambda n: S.random(n, 4), lambda p, L: _min(L, 4)),
    ("full", lambda n: S.full(n), lambda p, L: L),
]


@pytest.mark.parametrize("n", [0, 1, 5, 64, 257])
@pytest.mark.parametrize("name,build,formula", DEGREES, ids=[d[0] for d in DEGREES])
def test_in_degree_closed_form(name, build, formula, n):
    g = build(n)
    p = torch.arange(n)
    assert torch.equal(g.in_degree(), formula(p, torch.full_like(p, n)).long())


def test_fixed_bidirectional_degree_with_partial_last_block():
    n, lw, c = 23, 5, 2  # nb = 5 blocks, the last one has 3 tokens (summaries: position 23 only... none)
    g = S.fixed(n, lw, c)
    p = torch.arange(n)
    b, nb = p // lw, (n + lw - 1) // lw
    own = torch.minimum((b + 1) * lw, torch.tensor(n)) - b * lw
    last = max(n - nb * lw + c, 0)
    after = torch.where(b < nb - 1, c * torch.clamp(nb - b - 2, min=0) + last, 0)
    assert torch.equal(g.in_degree(), b * c + own + after)


# ---------------------------------------------------------------- identities
@pytest.mark.parametrize("n", [0, 1, 2, 9, 33])
def test_window_at_least_n_is_full(n):
    for w in (n, n + 1, 3 * n + 1):
        w = max(w, 1)
        assert torch.equal(S.window(n, w).to_dense(), S.full(n).to_dense())
        assert torch.equal(S.window(n, w, causal=True).to_dense(), S.full(n, causal=True).to_dense())


def test_dilation_one_is_window_and_strided_contains_window():
    assert torch.equal(S.dilated(40, 4, 1).to_dense(), S.window(40, 4).to_dense())
    assert bool((S.strided(40, 4).to_dense() >= S.window(40, 4).to_dense()).all())
    assert bool((S.fixed(40, 4, 1).to_dense() >= S.block_local(40, 4).to_dense()).all())


def test_rows_have_no_duplicates_and_sources_stay_in_range():
    gen = torch.Generator().manual_seed(3)
    for g in (S.bigbird(None, 4, 2, 5, generator=gen, lengths=[50, 3, 20]), S.longformer(90, 4, 2, dilation=3)):
        assert int(g.to_dense().max()) == 1


def test_batch_vector_equals_lengths():
    batch = torch.tensor([0, 0, 0, 2, 2, 3])
    a = S.window(None, 2, batch=batch)
    b = S.window(None, 2, lengths=[3, 0, 2, 1])
    assert torch.equal(a.rowptr, b.rowptr) and torch.equal(a.col, b.col) and torch.equal(a.ptr, b.ptr)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: S.window(10, 0), ValueError, "w must be >= 1, got 0"),
        (lambda: S.window(10, -3), ValueError, "w must be >= 1, got -3"),
        (lambda: S.window(10, 2.5), TypeError, "w must be an int"),
        (lambda: S.dilated(10, 2, 0), ValueError, "dilation must be >= 1"),
        (lambda: S.strided(10, 0), ValueError, "stride must be >= 1"),
        (lambda: S.fixed(10, 4, 5), ValueError, "c must be <= stride = 4"),
        (lambda: S.block_local(10, 0), ValueError, "block_size must be >= 1"),
        (lambda: S.random(10, -1), ValueError, "r must be >= 0"),
        (lambda: S.global_tokens(10, -1), ValueError, "g must be >= 0"),
        (lambda: S.window(10, 2, lengths=[3, 4]), ValueError, r"lengths must sum to n = 10, got sum\(lengths\) = 7"),
        (lambda: S.window(5, 2, batch=torch.tensor([0, 0, 1])), ValueError, "batch must have n = 5 entries, got 3"),
        (lambda: S.window(None, 2, batch=torch.tensor([1, 0])), ValueError, "batch must be non-decreasing"),
        (lambda: S.window(None, 2, lengths=[3, -1]), ValueError, "lengths must be >= 0"),
        (lambda: S.window(None, 2, lengths=[3], batch=torch.tensor([0])), ValueError, "pass lengths or batch"),
        (lambda: S.window(None, 2), TypeError, "pass n, lengths or batch"),
        (lambda: S.window(-1, 2), ValueError, "n must be >= 0"),
        (lambda: S.window(None, 2, lengths=torch.tensor([1.0])), TypeError, "lengths must hold integers"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
