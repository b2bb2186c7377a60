"""Backends declare what they support as data; dispatch picks the first that can run.

A backend is a :class:`Backend` record: the devices and dtypes it handles, its largest
head dim, where it is deterministic, and a ``forward`` returning ``(out, lse)`` that is
differentiable in every tensor argument. ``not_supported_reasons`` turns the
declaration into readable reasons, so an explicit ``backend="native"`` that cannot run
raises with the list instead of silently running something else, and ``backend=None``
skips to the next candidate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..graph import Graph
from . import reference

__all__ = ["Backend", "register_backend", "backends", "get_backend", "select_backend"]

ForwardFn = Callable[
    [Tensor, Tensor, Tensor, Graph, "Tensor | None", "Tensor | None", float, "Tensor | None", "Tensor | None"],
    tuple[Tensor, Tensor],
]


@dataclass(frozen=True)
class Backend:
    """Capabilities and entry point of one implementation of ``edge_attention``.

    Attributes:
        name: what users pass as ``backend=``.
        description: one line for ``python -m graphattn.info``.
        devices: device types it runs on (``"cpu"``, ``"cuda"``).
        dtypes: input dtypes it accepts.
        max_head_dim: largest ``D`` and ``Dv`` it handles (``None``: no limit).
        deterministic_devices: device types on which two runs give bitwise equal results.
        forward: ``(q, k, v, graph, bias, gate, scale, edge_key, edge_value) -> (out, lse)``, every
            optional tensor ``None`` when absent.
        unavailable: returns why the backend cannot be used at all (for example, its
            compiled library failed to load), or ``None`` when it can.
    """

    name: str
    description: str
    devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...]
    max_head_dim: int | None
    deterministic_devices: tuple[str, ...]
    forward: ForwardFn
    unavailable: Callable[[], str | None] = lambda: None

    def not_supported_reasons(self, q: Tensor, v: Tensor) -> list[str]:
        """Why this backend cannot run these (already validated) inputs; empty if it can."""
        why = self.unavailable()
        if why is not None:
            return [why]
        reasons = []
        if q.device.type not in self.devices:
            reasons.append(f"device {q.device.type} not supported (supports {', '.join(self.devices)})")
        if q.dtype not in self.dtypes:
            names = ", ".join(str(d).removeprefix("torch.") for d in self.dtypes)
            reasons.append(f"dtype {q.dtype} not supported (supports {names})")
        head_dim = max(q.shape[2], v.shape[2])
        if self.max_head_dim is not None and head_dim > self.max_head_dim:
            reasons.append(f"head dim {head_dim} > max_head_dim {self.max_head_dim}")
        if torch.are_deterministic_algorithms_enabled() and q.device.type not in self.deterministic_devices:
            reasons.append(f"not deterministic on {q.device.type} and torch.use_deterministic_algorithms is on")
        return reasons


_REGISTRY: list[Backend] = []


def register_backend(backend: Backend, *, first: bool = False) -> None:
    """Add a backend; ``first=True`` makes it the preferred one when ``backend=None``."""
    if any(b.name == backend.name for b in _REGISTRY):
        raise ValueError(f"a backend named {backend.name!r} is already registered")
    _REGISTRY.insert(0, backend) if first else _REGISTRY.append(backend)


def backends() -> list[Backend]:
    """All registered backends, in the order ``backend=None`` tries them."""
    return list(_REGISTRY)


def get_backend(name: str) -> Backend:
    """The backend called ``name``; ``ValueError`` listing the known names otherwise."""
    for b in _REGISTRY:
        if b.name == name:
            return b
    known = ", ".join(repr(b.name) for b in _REGISTRY)
    raise ValueError(f"backend must be one of {known} or None, got {name!r}")


def select_backend(name: str | None, q: Tensor, v: Tensor) -> Backend:
    """The backend to run: ``name`` if it can (else raise with its reasons), or the first that can."""
    if name is not None:
        if not isinstance(name, str):
            raise TypeError(f"backend must be a str or None, got {type(name).__name__}")
        b = get_backend(name)
        reasons = b.not_supported_reasons(q, v)
        if reasons:
            raise RuntimeError(f"backend {name!r} cannot run these inputs: " + "; ".join(reasons))
        return b
    tried = []
    for b in _REGISTRY:
        reasons = b.not_supported_reasons(q, v)
        if not reasons:
            return b
        tried.append(f"{b.name}: " + "; ".join(reasons))
    raise RuntimeError("no backend can run these inputs:\n  " + "\n  ".join(tried))


register_backend(
    Backend(
        name="reference",
        description="pure PyTorch (gather + scatter softmax + index_add); the test oracle",
        devices=("cpu", "cuda", "mps", "xpu"),
        dtypes=(torch.float16, torch.bfloat16, torch.float32, torch.float64),
        max_head_dim=None,
        # index_add uses atomics on accelerators.
        deterministic_devices=("cpu",),
        forward=reference.edge_attention,
    )
)
