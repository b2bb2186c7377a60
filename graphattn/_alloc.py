"""Large CPU buffers backed by transparent huge pages.

On Linux with transparent huge pages in ``madvise`` mode (the default of Debian and Ubuntu), a
fresh tensor from ``torch.empty`` is mapped in 4 KiB pages, and the first write to each page is
a page fault. For the index tensors the structure builders write (tens of millions of int64),
those faults cost more than the arithmetic: filling a fresh 80 MB tensor measured 120 ms on the
project machine, against 18 ms for the same buffer from NumPy, whose allocator advises huge pages
(``madvise(MADV_HUGEPAGE)``) for every array of 4 MiB or more (NumPy's
``_set_madvise_hugepage``). PyTorch does the same only when ``THP_MEM_ALLOC_ENABLE=1`` is set
in the environment before it allocates, which a library cannot do for its users.

:func:`large_empty` returns a tensor over such a NumPy buffer when it is on the CPU and at least
4 MiB, and ``torch.empty`` otherwise. The tensor behaves like any other (its storage is not
resizable, which no caller needs).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["large_empty"]

# NumPy advises huge pages from this size on (numpy/_core/src/multiarray/alloc.c).
_HUGE_BYTES = 1 << 22

_NUMPY_DTYPES = {
    torch.int64: np.int64,
    torch.int32: np.int32,
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.bool: np.bool_,
}


def large_empty(
    size: int | tuple[int, ...], *, dtype: torch.dtype = torch.long, device: torch.device | str | None = None
) -> Tensor:
    """An uninitialised tensor like ``torch.empty(size, dtype=dtype, device=device)``.

    CPU buffers of 4 MiB or more come from NumPy so that they are mapped in huge pages (see the
    module docstring); other sizes, dtypes and devices are ``torch.empty``.
    """
    shape = (size,) if isinstance(size, int) else tuple(size)
    dev = torch.device("cpu") if device is None else torch.device(device)
    np_dtype = _NUMPY_DTYPES.get(dtype)
    if dev.type == "cpu" and np_dtype is not None:
        numel = 1
        for s in shape:
            numel *= s
        if numel * np.dtype(np_dtype).itemsize >= _HUGE_BYTES:
            return torch.from_numpy(np.empty(shape, dtype=np_dtype))
    return torch.empty(shape, dtype=dtype, device=dev)
