"""PyG's ``Data`` for a molecule with ring nodes (imports PyG: loaded only when rings are asked for)."""

from __future__ import annotations

from typing import Any

import torch
from torch_geometric.data import Data


class RingData(Data):
    """A molecule with ``ring_index [2, M]`` (row 0 an atom, row 1 a ring holding it) and
    ``num_rings``: batching offsets the atoms by ``num_nodes`` and the rings by ``num_rings``
    (PyG's default for an ``*index`` key offsets both rows by ``num_nodes``), so
    ``Batch.to_data_list`` and ``index_select`` give the molecules back."""

    def __inc__(self, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if key == "ring_index":
            return torch.tensor([[self.num_nodes], [self.num_rings]])
        return super().__inc__(key, value, *args, **kwargs)
