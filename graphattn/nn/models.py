"""Classifiers built from the graph encoder: sequences of tokens and images of patches.

* :class:`SequenceClassifier`: token embedding + positional encoding + :class:`GraphTransformerEncoder`
  + pooling over each example + a linear head (the LRA-style classifier of Tay et al., "Long Range
  Arena", 2020, https://arxiv.org/abs/2011.04006).
* :class:`ImageClassifier`: ``P x P`` patch embedding (a stride-``P`` convolution, as in ViT,
  Dosovitskiy et al. 2020, https://arxiv.org/abs/2010.11929) + 2-D positional encoding + encoder
  over a patch graph (default: :func:`~graphattn.structure.grid` neighbourhoods) + pooling + head.

Batches are concatenations, never padded: sequences come with ``lengths``/``ptr``; images may be a
``[B, C, H, W]`` tensor or a list of ``[C, H_b, W_b]`` tensors of different sizes. Both return a
:class:`ClassifierOutput` with the logits and the summed structure ``aux_loss``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .._validation import check_int, check_int_pair
from ..graph import Graph, LastBuilt, check_ptr
from ..structure._segments import segments
from ..structure.base import Structure
from ..structure.batch import example_ids
from ..structure.grid import grid
from .encoder import GraphTransformerEncoder, GraphTransformerLayer
from .positional import (
    LearnedPositionalEncoding,
    LearnedPositionalEncoding2D,
    SinusoidalPositionalEncoding,
    SinusoidalPositionalEncoding2D,
)

__all__ = ["SequenceClassifier", "ImageClassifier", "ClassifierOutput", "segment_pool"]


class ClassifierOutput(NamedTuple):
    """``logits [B, num_classes]`` and ``aux_loss`` (scalar) to add to the task loss."""

    logits: Tensor
    aux_loss: Tensor


def segment_pool(x: Tensor, ptr: Tensor, mode: str = "mean") -> Tensor:
    """Pool node features ``x [N, d]`` over each example of ``ptr [B + 1]``: ``[B, d]``.

    ``mode``: ``"mean"``, ``"max"`` (an empty example gives zeros) or ``"first"`` (the first node,
    e.g. a ``[CLS]`` token; an empty example raises).
    """
    ptr = check_ptr("ptr", ptr, x.shape[0])
    counts = ptr[1:] - ptr[:-1]
    b = counts.numel()
    if mode == "first":
        if bool((counts == 0).any()):
            raise ValueError("pooling='first' needs every example to have at least one node")
        return x[ptr[:-1]]
    batch = example_ids(ptr, x.shape[0])
    if mode == "mean":
        total = x.new_zeros(b, x.shape[1]).index_add_(0, batch, x)
        return total / torch.clamp(counts, min=1).to(x.dtype)[:, None]
    if mode == "max":
        out = x.new_zeros(b, x.shape[1])
        return out.scatter_reduce(0, batch[:, None].expand_as(x), x, "amax", include_self=False)
    raise ValueError(f"pooling must be 'mean', 'max' or 'first', got {mode!r}")


def _encoder(
    d_model: int,
    nhead: int,
    num_layers: int,
    dim_feedforward: int | None,
    dropout: float,
    structure: Structure | None,
    backend: str | None,
) -> GraphTransformerEncoder:
    layer = GraphTransformerLayer(d_model, nhead, dim_feedforward, dropout, structure=structure, backend=backend)
    return GraphTransformerEncoder(layer, num_layers)


class SequenceClassifier(nn.Module):
    """Classify variable-length token (or feature-vector) sequences, batched by concatenation.

    Args:
        vocab_size: number of token ids; ``None`` with ``in_features`` for real-valued inputs.
        num_classes: number of classes.
        d_model: feature size.
        nhead: attention heads.
        num_layers: encoder layers.
        dim_feedforward: FFN hidden size (default ``4 * d_model``).
        dropout: dropout everywhere in the encoder.
        structure: edge builder (e.g. ``BigBird()``); without it, pass ``graph`` to :meth:`forward`.
        positional: ``"sinusoidal"``, ``"learned"`` or ``None``.
        max_len: positions of the learned encoding.
        pooling: ``"mean"``, ``"max"`` or ``"first"``.
        backend: ``edge_attention`` backend.
        in_features: size of real-valued inputs ``[N, in_features]`` (a linear embedding) instead
            of token ids; give it with ``vocab_size=None``.
    """

    def __init__(
        self,
        vocab_size: int | None,
        num_classes: int,
        d_model: int = 128,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        *,
        structure: Structure | None = None,
        positional: str | None = "sinusoidal",
        max_len: int = 4096,
        pooling: str = "mean",
        backend: str | None = None,
        in_features: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "max", "first"):
            raise ValueError(f"pooling must be 'mean', 'max' or 'first', got {pooling!r}")
        check_int("num_classes", num_classes, minimum=1)
        check_int("max_len", max_len, minimum=1)
        for name, size in (("vocab_size", vocab_size), ("in_features", in_features)):
            if size is not None:
                check_int(name, size, minimum=1)
        if (vocab_size is None) == (in_features is None):
            raise ValueError(
                f"give exactly one of vocab_size (token ids) and in_features (real-valued inputs), "
                f"got vocab_size={vocab_size!r}, in_features={in_features!r}"
            )
        self.in_features = in_features
        self.embed: nn.Module = (
            nn.Embedding(vocab_size, d_model) if vocab_size is not None else nn.Linear(in_features, d_model)
        )
        if positional == "sinusoidal":
            if d_model % 2:  # the encoding's own error named its internal `dim`
                raise ValueError(f"d_model must be even for positional='sinusoidal', got {d_model}")
            self.pos: nn.Module | None = SinusoidalPositionalEncoding(d_model)
        elif positional == "learned":
            self.pos = LearnedPositionalEncoding(max_len, d_model)
        elif positional is None:
            self.pos = None
        else:
            raise ValueError(f"positional must be 'sinusoidal', 'learned' or None, got {positional!r}")
        self.encoder = _encoder(d_model, nhead, num_layers, dim_feedforward, dropout, structure, backend)
        self.head = nn.Linear(d_model, num_classes)
        self.pooling = pooling

    def forward(
        self,
        tokens: Tensor,
        *,
        lengths: Tensor | Sequence[int] | None = None,
        ptr: Tensor | None = None,
        graph: Graph | None = None,
    ) -> ClassifierOutput:
        """``tokens [N]`` (concatenated examples; ``[N, in_features]`` for real-valued inputs) with
        ``lengths [B]`` or ``ptr [B + 1]``.

        Without either, ``graph.ptr`` is used, else the input is one example. Passing both is an
        error (they could disagree), and so is a ``graph`` whose ``ptr`` disagrees with them.
        """
        if ptr is not None and lengths is not None:
            raise ValueError("pass lengths or ptr, not both")
        if not isinstance(tokens, Tensor):
            raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
        if self.in_features is None and tokens.dim() != 1:
            raise ValueError(f"tokens must be [N] (examples concatenated), got shape {list(tokens.shape)}")
        if self.in_features is not None and (tokens.dim() != 2 or tokens.shape[1] != self.in_features):
            raise ValueError(
                f"tokens must be [N, in_features] = [N, {self.in_features}] (examples concatenated), "
                f"got shape {list(tokens.shape)}"
            )
        if ptr is None:
            if lengths is None and graph is not None and graph.ptr is not None:
                ptr = graph.ptr
            else:
                ptr = segments(tokens.shape[0], lengths, device=tokens.device).ptr.to(tokens.device)
        if graph is not None and graph.ptr is not None and not torch.equal(graph.ptr.to(ptr.device), ptr):
            raise ValueError(
                f"graph.ptr {graph.ptr.tolist()} and the examples of lengths / ptr {ptr.tolist()} disagree: "
                "attention would use one split, positions and pooling the other"
            )
        x = self.embed(tokens)
        if self.pos is not None:
            x = self.pos(x, ptr=ptr)
        h, aux = self.encoder(x, graph, ptr=ptr)
        return ClassifierOutput(self.head(segment_pool(h, ptr, self.pooling)), aux)


class ImageClassifier(nn.Module):
    """Classify images as graphs of ``patch_size x patch_size`` patches.

    Args:
        in_channels: image channels.
        num_classes: number of classes.
        patch_size: ``P``; an ``H x W`` image gives ``floor(H / P) x floor(W / P)`` nodes.
        d_model: feature size (divisible by 4 for the sinusoidal 2-D encoding).
        nhead: attention heads.
        num_layers: encoder layers.
        dim_feedforward: FFN hidden size (default ``4 * d_model``).
        dropout: dropout in the encoder.
        structure: edge builder; default ``None`` builds :func:`~graphattn.structure.grid` over
            the patches with ``radius`` and ``connectivity`` (any image sizes).
        radius: grid radius when ``structure is None``.
        connectivity: grid connectivity (4 or 8) when ``structure is None``.
        positional: ``"sinusoidal"``, ``"learned"`` (needs ``max_grid``) or ``None``.
        max_grid: ``(rows, cols)`` of patches of the learned encoding.
        pooling: ``"mean"`` or ``"max"``.
        backend: ``edge_attention`` backend.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        patch_size: int = 4,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        *,
        structure: Structure | None = None,
        radius: int = 1,
        connectivity: int = 8,
        positional: str | None = "sinusoidal",
        max_grid: tuple[int, int] = (64, 64),
        pooling: str = "mean",
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "max"):
            raise ValueError(f"pooling must be 'mean' or 'max', got {pooling!r}")
        grid(1, 1, radius=radius, connectivity=connectivity)  # validate now, not at the first batch
        for name, size in (("in_channels", in_channels), ("num_classes", num_classes), ("patch_size", patch_size)):
            check_int(name, size, minimum=1)
        self.patch_size = patch_size
        self.patch = nn.Conv2d(in_channels, d_model, patch_size, stride=patch_size)
        if positional == "sinusoidal":
            if d_model % 4:  # the encoding's own error named its internal `dim`
                raise ValueError(f"d_model must be divisible by 4 for positional='sinusoidal' (2-D), got {d_model}")
            self.pos: nn.Module | None = SinusoidalPositionalEncoding2D(d_model)
        elif positional == "learned":
            self.pos = LearnedPositionalEncoding2D(*check_int_pair("max_grid", max_grid, minimum=1), d_model)
        elif positional is None:
            self.pos = None
        else:
            raise ValueError(f"positional must be 'sinusoidal', 'learned' or None, got {positional!r}")
        self.encoder = _encoder(d_model, nhead, num_layers, dim_feedforward, dropout, structure, backend)
        self.head = nn.Linear(d_model, num_classes)
        self.pooling = pooling
        self.radius, self.connectivity = radius, connectivity
        self._graph = LastBuilt()  # the grid graph of the last image sizes

    def _grid(self, sizes: list[tuple[int, int]], device: torch.device) -> Graph:
        def build() -> Graph:
            layout = sizes or torch.zeros(0, 2, dtype=torch.long)  # no images: an empty graph
            return grid(sizes=layout, radius=self.radius, connectivity=self.connectivity).to(device)

        return self._graph.get((tuple(sizes), device), build)

    def forward(self, images: Tensor | Sequence[Tensor]) -> ClassifierOutput:
        """``images [B, C, H, W]`` or a list of ``[C, H_b, W_b]`` -> ``logits [B, num_classes]``."""
        if isinstance(images, Tensor) and images.dim() != 4:
            raise ValueError(f"images must be [B, C, H, W] or a list of [C, H, W], got shape {list(images.shape)}")
        channels = self.patch.in_channels
        layouts = [images.shape[1:]] if isinstance(images, Tensor) else [img.shape for img in images]
        wrong = [list(s) for s in layouts if len(s) != 3 or s[0] != channels]
        if wrong:  # e.g. channels-last [H, W, C], which the size check below would misreport
            raise ValueError(
                f"images must be channels-first [C, H, W] with C = in_channels = {channels}, got an image of "
                f"shape {wrong[0]}"
            )
        small = [list(s[1:]) for s in layouts if min(s[1:]) < self.patch_size]
        if small:  # Conv2d's own error ("Kernel size can't be greater than actual input size") named neither
            raise ValueError(f"images must be at least patch_size = {self.patch_size} on each side, got {small[0]}")
        if isinstance(images, Tensor):
            f = self.patch(images)  # [B, d, h, w]
            sizes = [(f.shape[2], f.shape[3])] * f.shape[0]
            x = f.flatten(2).transpose(1, 2).reshape(-1, f.shape[1])  # row-major patches, image after image
        else:
            feats = [self.patch(img.unsqueeze(0))[0] for img in images]  # one conv per image (loop over images)
            sizes = [(t.shape[1], t.shape[2]) for t in feats]
            x = (
                torch.cat([t.flatten(1).T for t in feats])
                if feats
                else self.head.weight.new_zeros(0, self.head.in_features)
            )
        counts = torch.tensor([h * w for h, w in sizes], dtype=torch.long, device=x.device)
        ptr = torch.zeros(len(sizes) + 1, dtype=torch.long, device=x.device)
        torch.cumsum(counts, 0, out=ptr[1:])
        if self.pos is not None:
            x = self.pos(x, sizes=sizes or torch.zeros(0, 2, dtype=torch.long))
        graph = None if self.encoder.layers[0].self_attn.structure is not None else self._grid(sizes, x.device)
        h, aux = self.encoder(x, graph, ptr=ptr)
        return ClassifierOutput(self.head(segment_pool(h, ptr, self.pooling)), aux)
