"""``python -m graphattn.info``: versions, the machine, and which backends can run.

Reads optional packages' versions from their metadata without importing them, so it
is fast and never triggers PyG's or DGL's import side effects.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

import torch

from . import __version__
from .ops import backends

__all__ = ["collect", "main"]

_OPTIONAL = ("torch_geometric", "dgl", "ogb", "rdkit", "numpy")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def collect() -> dict[str, object]:
    """Everything ``main`` prints, as a dict (for bug reports and benchmark records)."""
    rows = []
    for b in backends():
        why = b.unavailable()
        rows.append(
            {
                "name": b.name,
                "status": "available" if why is None else f"unavailable: {why}",
                "devices": list(b.devices),
                "dtypes": [str(d).removeprefix("torch.") for d in b.dtypes],
                "max_head_dim": b.max_head_dim,
                "deterministic_on": list(b.deterministic_devices),
                "description": b.description,
            }
        )
    return {
        "graphattn": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch.cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        **{name: _version(name.replace("_", "-")) for name in _OPTIONAL},
        "backends": rows,
    }


def main() -> None:
    info = collect()
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key != "backends":
            print(f"{key:<{width}}  {value}")
    print("\nbackends (tried in this order when backend=None):")
    for row in info["backends"]:
        print(f"  {row['name']}: {row['status']}")
        print(f"    {row['description']}")
        print(
            f"    devices={','.join(row['devices'])} dtypes={','.join(row['dtypes'])} "
            f"max_head_dim={row['max_head_dim']} deterministic_on={','.join(row['deterministic_on']) or '-'}"
        )


if __name__ == "__main__":
    main()
