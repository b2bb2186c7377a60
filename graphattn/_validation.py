"""Argument checks shared across the package (one place for the wording of their errors)."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


def is_integer_tensor(t: Tensor) -> bool:
    """Whether ``t`` holds integers (bool, floating and complex dtypes do not)."""
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """``value`` as an ``int``; ``TypeError``/``ValueError`` naming ``name`` otherwise.

    A one-element integer tensor is accepted (sizes often come from ``tensor.sum()``), and so is
    any integral number (``numpy.int64``); booleans are not.
    """
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        if value.dtype == torch.bool:
            raise TypeError(f"{name} must be an int, got a bool tensor")
        value = int(value)
    if isinstance(value, bool) or type(value).__name__ == "bool_" or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float(name: str, value: object, *, minimum: float | None = None, positive: bool = False) -> float:
    """``value`` as a finite ``float`` (``>= minimum``; ``> 0`` when ``positive``); ``TypeError`` /
    ``ValueError`` naming ``name`` otherwise. Booleans are not numbers here."""
    if isinstance(value, bool) or type(value).__name__ == "bool_" or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_int_pair(name: str, value: object, *, minimum: int | None = None) -> tuple[int, int]:
    """``value`` as a pair of ints (``(height, width)``); ``TypeError``/``ValueError`` naming ``name``."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair of ints, got {value!r}")
    return check_int(f"{name}[0]", value[0], minimum=minimum), check_int(f"{name}[1]", value[1], minimum=minimum)


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool (``numpy.bool_`` too); a ``TypeError`` naming ``name`` otherwise (a
    string such as ``"no"`` is truthy, so it is not accepted as a flag)."""
    if not (isinstance(value, bool) or type(value).__name__ == "bool_"):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_generator(name: str, value: object) -> torch.Generator | None:
    """``value`` if it is a ``torch.Generator`` or ``None``; a ``TypeError`` naming ``name`` otherwise."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value


def check_feature_sizes(name: str, value: object, *, lazy: bool = False) -> tuple[int, int]:
    """``value`` (an int, or a ``(source, destination)`` pair of them) as two positive sizes.

    ``lazy``: ``-1`` is also accepted (PyG's lazily initialized ``Linear``).
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a (source, destination) pair, got {value!r}")
        labelled = [(f"{name}[0]", value[0]), (f"{name}[1]", value[1])]
    else:
        labelled = [(name, value)]
    sizes = []
    for label, size in labelled:
        size = check_int(label, size)
        if size < 1 and not (lazy and size == -1):
            raise ValueError(f"{label} must be >= 1{' or -1 (lazy)' if lazy else ''}, got {size}")
        sizes.append(size)
    return sizes[0], sizes[-1]


def check_features(name: str, pair: bool, features: tuple[object, object], sizes: tuple[int, int], note: str) -> None:
    """A layer's (source, destination) node features, each a 2-D tensor whose width is the layer's
    ``sizes`` entry (``-1``: lazy, any width); ``ValueError`` naming ``name`` (``name[0]`` /
    ``name[1]`` when the caller passed a ``pair``) and ending with ``note``, the sizes' argument."""
    labels = (f"{name}[0] (source features)", f"{name}[1] (destination features)") if pair else (name, name)
    for label, t, size in zip(labels, features, sizes, strict=True):
        if not isinstance(t, Tensor) or t.dim() != 2 or (size != -1 and t.size(1) != size):
            got = f"shape {list(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            width = "F" if size == -1 else size
            raise ValueError(f"{label} must be a [N, {width}] tensor ({note}), got {got}")
