"""The structure protocol: static builders as modules, caching, batch layout and errors."""

from __future__ import annotations

import pytest
import torch

import graphattn.structure as S


@pytest.mark.parametrize(
    "structure,builder",
    [
        (S.Full(), lambda L: S.full(lengths=L)),
        (S.Window(3, causal=True), lambda L: S.window(None, 3, causal=True, lengths=L)),
        (S.Dilated(2, 3), lambda L: S.dilated(None, 2, 3, lengths=L)),
        (S.Strided(3), lambda L: S.strided(None, 3, lengths=L)),
        (S.Fixed(4, 2), lambda L: S.fixed(None, 4, 2, lengths=L)),
        (S.BlockLocal(4), lambda L: S.block_local(None, 4, lengths=L)),
        (S.GlobalTokens([0, 2]), lambda L: S.global_tokens(None, [0, 2], lengths=L)),
        (S.Longformer(3, 1, dilation=2), lambda L: S.longformer(None, 3, 1, dilation=2, lengths=L)),
        (S.Axial(2, 3), lambda L: S.axial(sizes=[(2, 3)] * len(L))),
    ],
    ids=lambda s: type(s).__name__ if isinstance(s, torch.nn.Module) else "",
)
def test_static_structures_build_their_builder_per_batch(structure, builder):
    lengths = [6, 6, 6] if isinstance(structure, S.Axial) else [6, 0, 11]
    q = torch.zeros(sum(lengths), 2, 4)
    ptr = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    out = structure(q, q, ptr=ptr)
    assert isinstance(out, S.StructureOutput) and out.bias is None and out.aux_loss is None and not out.per_head
    assert torch.equal(out.graph.to_dense(), builder(lengths).to_dense())
    assert torch.equal(out.graph.ptr, ptr)


def test_cache_reuses_the_graph_until_the_layout_changes():
    st = S.Window(2)
    q = torch.zeros(10, 1, 2)
    a = st(q, q).graph
    assert st(q, q).graph is a
    c = st(q, q, ptr=torch.tensor([0, 4, 10])).graph
    assert c is not a and c.ptr.tolist() == [0, 4, 10]


def test_bigbird_structure_and_errors():
    st = S.BigBird(2, 1, 2, generator=torch.Generator().manual_seed(0))
    q = torch.zeros(9, 1, 2)
    g = st(q, q).graph
    assert int(g.to_dense().max()) == 1 and bool((g.in_degree() >= 2).all())
    with pytest.raises(ValueError, match="self-attention structure"):
        st(q, torch.zeros(4, 1, 2))
    with pytest.raises(ValueError, match=r"ptr must end at N = 9"):
        st(q, q, ptr=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="w must be >= 1"):
        S.Window(0)


_BAD_PTRS = [
    (torch.tensor([2, 6]), ValueError, r"ptr must start at 0, got ptr\[0\] = 2"),
    (torch.tensor([0, 4, 2, 6]), ValueError, r"ptr must be non-decreasing, but ptr\[2\] = 2 < ptr\[1\] = 4"),
    ([0, 6], TypeError, r"ptr must be a torch.Tensor, got list"),
    (torch.tensor(6), ValueError, r"ptr must be 1-D, got shape \[\]"),
    (torch.tensor([[0, 6]]), ValueError, r"ptr must be 1-D, got shape \[1, 2\]"),
    (torch.zeros(0, dtype=torch.long), ValueError, r"ptr must have B \+ 1 >= 1 entries"),
    (torch.tensor([0, 6], dtype=torch.int32), TypeError, r"ptr must have dtype torch.int64"),
]


@pytest.mark.parametrize(
    "make", [lambda: S.Window(1), lambda: S.BigBird(2, 1, 2), lambda: S.SEA(1, 4, k=2), lambda: S.Routing(1, 4, 2)]
)
@pytest.mark.parametrize(("ptr", "error", "match"), _BAD_PTRS)
def test_structures_reject_bad_ptr(make, ptr, error, match):
    q = torch.randn(6, 1, 4)
    with pytest.raises(error, match=match):
        make()(q, q, ptr=ptr)


def test_structures_reject_bad_src_ptr():
    q = torch.randn(6, 1, 4)
    with pytest.raises(ValueError, match=r"src_ptr must be non-decreasing, but src_ptr\[2\] = 2 < src_ptr\[1\] = 4"):
        S.Window(1)(q, q, ptr=torch.tensor([0, 4, 6]), src_ptr=torch.tensor([0, 4, 2, 6]))
    with pytest.raises(ValueError, match=r"Window needs src_ptr == ptr"):
        S.Window(1)(q, q, src_ptr=torch.tensor([0, 2, 6]))  # ptr defaults to one example
