"""Stanford Sentiment Treebank (Socher et al. 2013) as token sequences and parse trees.

Each line of ``trees/{train,dev,test}.txt`` is a binarized PTB tree ``(label (label word) ...)``
with a 0-4 sentiment label on every node. A sentence becomes:

* a token sequence (the leaves, left to right) with the root label: the sequence task;
* a tree graph: nodes are the ``n`` words (ids ``0 .. n-1``, in order) then the ``n - 1`` phrases
  (ids ``n ..``, in post-order, root last); ``edge_index [2, 2n - 2]`` holds parent -> child edges
  (row 0 parent, row 1 child); ``node_labels`` the label of every node.

SST-2 (``binary=True``): sentences with root label 2 are dropped, 0-1 -> 0, 3-4 -> 1.
"""

from __future__ import annotations

import os
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._common import cache_lock, cache_root, data_root, download_file, local_copy, try_download

__all__ = ["SSTSentence", "load_sst", "parse_tree", "build_vocab", "encode", "SST_SPLITS"]

SST_URL = "https://nlp.stanford.edu/sentiment/trainDevTestTrees_PTB.zip"
SST_SPLITS = ("train", "dev", "test")
PAD, UNK = "<pad>", "<unk>"


@dataclass
class SSTSentence:
    """One parsed sentence.

    Attributes:
        tokens: the words, left to right.
        label: root sentiment (0-4, or 0/1 when loaded with ``binary=True``).
        edge_index: ``int64 [2, 2n - 2]`` parent -> child edges over ``2n - 1`` nodes (words first).
        node_labels: ``int64 [2n - 1]`` the 0-4 label of every node.
    """

    tokens: list[str]
    label: int
    edge_index: Tensor
    node_labels: Tensor

    @property
    def num_nodes(self) -> int:
        return self.node_labels.numel()


def _tokenize(line: str) -> list[str]:
    return line.replace("(", " ( ").replace(")", " ) ").split()


def parse_tree(line: str) -> SSTSentence:
    """Parse one PTB tree line ``(3 (2 It) (4 ...))`` into an :class:`SSTSentence`."""
    toks = _tokenize(line)
    pos = 0
    words: list[str] = []
    word_labels: list[int] = []
    phrase_labels: list[int] = []
    children: list[list[tuple[str, int]]] = []  # per phrase: ("w", word id) or ("p", phrase id)

    def node() -> tuple[str, int]:
        # ( label word )  or  ( label node node ... )
        nonlocal pos
        if toks[pos] != "(":
            raise ValueError(f"malformed SST tree at token {pos}: expected '(', got {toks[pos]!r} in {line[:80]!r}")
        label = int(toks[pos + 1])
        pos += 2
        if toks[pos] != "(":
            # A leaf's text runs to its ')' and may hold a space (e.g. "8 1\\/2" in train.txt).
            end = toks.index(")", pos)
            words.append(" ".join(toks[pos:end]))
            word_labels.append(label)
            pos = end + 1
            return "w", len(words) - 1
        kids = []
        while toks[pos] == "(":
            kids.append(node())
        if toks[pos] != ")":
            raise ValueError(f"malformed SST tree: expected ')' at token {pos} in {line[:80]!r}")
        pos += 1
        phrase_labels.append(label)
        children.append(kids)
        return "p", len(phrase_labels) - 1

    kind, _ = node()
    n = len(words)
    src, dst = [], []
    for p, kids in enumerate(children):
        for k, i in kids:
            src.append(n + p)
            dst.append(i if k == "w" else n + i)
    root_label = word_labels[0] if kind == "w" else phrase_labels[-1]
    return SSTSentence(
        tokens=words,
        label=root_label,
        edge_index=torch.tensor([src, dst], dtype=torch.long).view(2, -1),
        node_labels=torch.tensor(word_labels + phrase_labels, dtype=torch.long),
    )


def load_sst(
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    binary: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> list[SSTSentence]:
    """Parse one SST split (8544 / 1101 / 2210 sentences; SST-2: 6920 / 872 / 1821).

    Reads ``<root>/sst/trees/<split>.txt``; without it downloads the Stanford release zip.

    Args:
        split: ``"train"``, ``"dev"`` or ``"test"``.
        root: local data root; default ``$GRAPHATTN_DATA``.
        binary: SST-2 labels (drop neutral roots).
        cache_dir: writable cache.
    """
    if split not in SST_SPLITS:
        raise ValueError(f"split must be one of {', '.join(SST_SPLITS)}, got {split!r}")
    relative = "sst/trees"
    local = data_root(root)  # checked before the cache is touched
    cache = cache_root(cache_dir)
    with cache_lock(cache, relative):
        folder = local_copy(local, relative, cache, required=tuple(f"{s}.txt" for s in SST_SPLITS))
        if folder is None:
            folder = cache / relative
            if not (folder / f"{split}.txt").exists():

                def fetch() -> None:
                    archive = download_file(SST_URL, cache / "sst" / "trainDevTestTrees_PTB.zip")
                    with zipfile.ZipFile(archive) as z:
                        z.extractall(cache / "sst")  # the zip holds trees/{train,dev,test}.txt

                try_download("SST trees", local, relative, SST_URL, fetch)
    out = []
    with open(folder / f"{split}.txt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            s = parse_tree(line.strip())
            if binary:
                if s.label == 2:
                    continue
                s.label = int(s.label > 2)
            out.append(s)
    return out


def build_vocab(sentences: Iterable[SSTSentence], min_freq: int = 1, lower: bool = False) -> dict[str, int]:
    """Token -> id with ``<pad>`` = 0 and ``<unk>`` = 1, then tokens by decreasing frequency (ties alphabetical)."""
    counts = Counter(t.lower() if lower else t for s in sentences for t in s.tokens)
    vocab = {PAD: 0, UNK: 1}
    for tok, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if c >= min_freq:
            vocab[tok] = len(vocab)
    return vocab


def encode(sentences: Iterable[SSTSentence], vocab: dict[str, int], lower: bool = False) -> list[Tensor]:
    """Token ids (``int64 [n]`` per sentence); unknown tokens map to ``<unk>``."""
    unk = vocab[UNK]
    return [
        torch.tensor([vocab.get(t.lower() if lower else t, unk) for t in s.tokens], dtype=torch.long) for s in sentences
    ]
