"""Argument checks shared across the package (one place for the wording of their errors)."""

from __future__ import annotations

from torch import Tensor


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """``value`` as an ``int``; ``TypeError``/``ValueError`` naming ``name`` otherwise.

    A one-element integer tensor is accepted (sizes often come from ``tensor.sum()``).
    """
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value
