"""Real datasets as graphs, offline-first.

Every loader takes ``root=`` (or ``$GRAPHATTN_DATA``): a local folder laid out like graphattn's
offline data (``ogb/``, ``planetoid/``, ``tudataset/``, ``mnist/``, ``mnist1d/``, ``sst/``). Files
found there are copied to a writable cache (``cache_dir=``, ``$GRAPHATTN_CACHE`` or
``~/.cache/graphattn``) and processed there, one process at a time per dataset (a file lock: two
trainings or ``torchrun`` ranks on a fresh cache wait for each other instead of reading half-written
files); without a local copy the loader takes the normal
download path of its source (``ogb``, PyG or the original URL). With neither,
:class:`DatasetNotFoundError` says where it looked and what to do. ListOps is generated (seeded),
scikit-learn digits ship with scikit-learn.

* :func:`load_ogbg`: OGB molecules (PyG dataset, scaffold split, Evaluator); atoms and bonds.
* :func:`load_planetoid`: Cora / CiteSeer citation graphs (PyG ``Planetoid``).
* :func:`load_tu`: TU graph classification sets (PyG ``TUDataset``).
* :func:`load_mnist_test`, :func:`load_digits`: images ``[B, H, W]``; pixel or patch grids
  (:func:`pixel_edge_index`, :func:`patchify`).
* :func:`load_mnist1d`: ``[N, 40]`` signals, sequences.
* :func:`load_sst`: sentences as token sequences or parse trees.
* :func:`generate_listops`: seeded LRA ListOps token ids and labels; parse trees.
* :class:`AssociativeRecall`: seeded associative-recall sequences (a long-range probe).

Importing this package imports neither PyG, DGL nor ogb; each loader imports what it needs.
"""

from ._common import CACHE_ENV, DATA_ENV, DatasetNotFoundError
from .images import ImageSet, batch_edge_index, fixed_split, load_digits, load_mnist_test, patchify, pixel_edge_index
from .listops import LISTOPS_VOCAB, ListOps, evaluate_listops, generate_listops, listops_tree_edges
from .ogb import OGBG_DATASETS, OGBGraphTask, load_ogbg
from .pyg import PLANETOID_DATASETS, load_planetoid, load_tu
from .recall import AssociativeRecall, RecallConfig
from .sequences import SequenceSplits, load_mnist1d
from .sst import SSTSentence, build_vocab, encode, load_sst, parse_tree

__all__ = [
    "AssociativeRecall",
    "RecallConfig",
    "CACHE_ENV",
    "DATA_ENV",
    "DatasetNotFoundError",
    "ImageSet",
    "LISTOPS_VOCAB",
    "ListOps",
    "OGBG_DATASETS",
    "OGBGraphTask",
    "PLANETOID_DATASETS",
    "SSTSentence",
    "SequenceSplits",
    "batch_edge_index",
    "build_vocab",
    "encode",
    "evaluate_listops",
    "fixed_split",
    "generate_listops",
    "listops_tree_edges",
    "load_digits",
    "load_mnist1d",
    "load_mnist_test",
    "load_ogbg",
    "load_planetoid",
    "load_sst",
    "load_tu",
    "parse_tree",
    "patchify",
    "pixel_edge_index",
]
