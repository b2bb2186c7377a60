"""grid() and axial(): image neighbourhoods, degrees at corners / edges / interior, patches, batches."""

from __future__ import annotations

import pytest
import torch

import graphattn.structure as S


def spec_grid(h: int, w: int, radius: int, conn: int, dil: int, loop: bool) -> torch.Tensor:
    out = torch.zeros(h * w, h * w, dtype=torch.long)
    for y in range(h):
        for x in range(w):
            for y2 in range(h):
                for x2 in range(w):
                    dy, dx = y2 - y, x2 - x
                    if dy % dil or dx % dil:
                        continue
                    a, b = abs(dy) // dil, abs(dx) // dil
                    near = max(a, b) <= radius if conn == 8 else a + b <= radius
                    if near and (loop or (dy, dx) != (0, 0)):
                        out[y * w + x, y2 * w + x2] = 1
    return out


@pytest.mark.parametrize("h,w", [(1, 1), (1, 6), (5, 4), (6, 7)])
@pytest.mark.parametrize(
    "radius,conn,dil,loop", [(1, 8, 1, True), (1, 4, 1, True), (2, 4, 1, False), (1, 8, 2, True), (0, 8, 1, True)]
)
def test_grid_matches_definition(h, w, radius, conn, dil, loop):
    g = S.grid(h, w, radius=radius, connectivity=conn, dilation=dil, loop=loop)
    assert torch.equal(g.to_dense(), spec_grid(h, w, radius, conn, dil, loop))


@pytest.mark.parametrize("conn,corner,edge,interior", [(8, 4, 6, 9), (4, 3, 4, 5)])
def test_grid_degrees_at_corners_edges_interior(conn, corner, edge, interior):
    h, w = 6, 9
    deg = S.grid(h, w, connectivity=conn).in_degree().view(h, w)
    for y, x in [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)]:
        assert int(deg[y, x]) == corner
    assert bool((deg[0, 1:-1] == edge).all()) and bool((deg[1:-1, 0] == edge).all())
    assert bool((deg[-1, 1:-1] == edge).all()) and bool((deg[1:-1, -1] == edge).all())
    assert bool((deg[1:-1, 1:-1] == interior).all())


def test_grid_interior_degree_formula_for_larger_radius():
    r = 3
    deg8 = S.grid(20, 20, radius=r).in_degree().view(20, 20)
    deg4 = S.grid(20, 20, radius=r, connectivity=4, loop=False).in_degree().view(20, 20)
    assert int(deg8[10, 10]) == (2 * r + 1) ** 2
    assert int(deg4[10, 10]) == 2 * r * (r + 1)


def test_patches_and_batches_of_several_sizes():
    g = S.grid(17, 13, patch_size=4)  # 4 x 3 patches
    assert g.num_dst == 12 and torch.equal(g.to_dense(), spec_grid(4, 3, 1, 8, 1, True))
    b = S.grid(sizes=[(3, 4), (2, 2), (0, 5)])
    assert b.ptr.tolist() == [0, 12, 16, 16]
    assert torch.equal(b.to_dense()[:12, :12], spec_grid(3, 4, 1, 8, 1, True))
    assert torch.equal(b.to_dense()[12:, 12:], spec_grid(2, 2, 1, 8, 1, True))
    assert int(b.to_dense()[:12, 12:].sum()) == 0


def test_axial_is_row_plus_column():
    h, w = 4, 5
    g = S.axial(h, w)
    assert g.in_degree().tolist() == [h + w - 1] * (h * w)
    y, x = torch.arange(h * w) // w, torch.arange(h * w) % w
    spec = ((y[:, None] == y[None, :]) | (x[:, None] == x[None, :])).long()
    assert torch.equal(g.to_dense(), spec)
    assert S.axial(sizes=[(2, 3), (1, 1)]).in_degree().tolist() == [4] * 6 + [1]


def test_empty_and_single_pixel_images():
    assert S.grid(0, 0).num_edges == 0 and S.axial(0, 7).num_dst == 0
    assert S.grid(1, 1).col.tolist() == [0] and S.grid(1, 1, loop=False).num_edges == 0


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: S.grid(4, 4, radius=-1), ValueError, "radius must be >= 0, got -1"),
        (lambda: S.grid(4, 4, connectivity=6), ValueError, "connectivity must be 4 or 8, got 6"),
        (lambda: S.grid(4, 4, dilation=0), ValueError, "dilation must be >= 1"),
        (lambda: S.grid(4, 4, patch_size=0), ValueError, "patch_size must be >= 1"),
        (lambda: S.grid(4), TypeError, "pass height and width, or sizes"),
        (lambda: S.grid(4, 4, sizes=[(1, 1)]), ValueError, "not both"),
        (lambda: S.grid(sizes=[(1, 2, 3)]), ValueError, r"sizes must be \[B, 2\]"),
        (lambda: S.grid(sizes=[(4, 4), (3,)]), ValueError, r"sizes must be \[B, 2\] \(height, width\) pairs of ints"),
        (lambda: S.grid(sizes=[(2.9, 2)]), ValueError, r"pairs of ints, got \[\[2.9, 2\]\]"),
        (
            lambda: S.grid(sizes=torch.tensor([[2.9, 2.9]])),
            TypeError,
            r"sizes must hold integers, got dtype torch.float32",
        ),
        (lambda: S.axial(-2, 3), ValueError, "height must be >= 0"),
    ],
)
def test_bad_image_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_grid_structure_checks_example_sizes():
    st = S.Grid(3, 3)
    q = torch.zeros(18, 1, 2)
    assert st(q, q, ptr=torch.tensor([0, 9, 18])).graph.num_edges == 2 * (4 * 4 + 4 * 6 + 9)  # corners, edges, centre
    with pytest.raises(ValueError, match="needs every example to have 9 nodes"):
        st(q, q, ptr=torch.tensor([0, 8, 18]))
