"""Layers: graph attention in the ``nn.MultiheadAttention`` dialect, encoder blocks, classifiers.

``import graphattn.nn`` never imports PyG or DGL; their adapters live in ``graphattn.nn.pyg`` and
``graphattn.nn.dgl`` and are imported explicitly.
"""

from ..structure.base import StaticStructure, Structure, StructureOutput
from .attention import AttentionOutput, GraphAttention
from .encoder import EncoderOutput, GraphTransformerEncoder, GraphTransformerLayer
from .models import ClassifierOutput, ImageClassifier, SequenceClassifier, segment_pool
from .positional import (
    LearnedPositionalEncoding,
    LearnedPositionalEncoding2D,
    SinusoidalPositionalEncoding,
    SinusoidalPositionalEncoding2D,
    image_positions,
    positions,
)

__all__ = [
    "GraphAttention",
    "AttentionOutput",
    "GraphTransformerLayer",
    "GraphTransformerEncoder",
    "EncoderOutput",
    "SequenceClassifier",
    "ImageClassifier",
    "ClassifierOutput",
    "segment_pool",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEncoding",
    "SinusoidalPositionalEncoding2D",
    "LearnedPositionalEncoding2D",
    "positions",
    "image_positions",
    "Structure",
    "StructureOutput",
    "StaticStructure",
]
