"""large_empty(): huge-page CPU buffers for big index tensors, torch.empty otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphattn._alloc import large_empty


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float32, torch.float64, torch.bool])
def test_large_buffers_come_from_numpy_and_behave_like_tensors(dtype):
    n = (1 << 22) // torch.empty((), dtype=dtype).element_size()  # exactly 4 MiB
    t = large_empty((2, n // 2), dtype=dtype)
    assert t.shape == (2, n // 2) and t.dtype == dtype and t.is_contiguous()
    assert isinstance(t.numpy(), np.ndarray) and t.numpy().base is not None  # a view of NumPy's buffer
    t.fill_(1)
    assert int(t.sum()) == n
    small = large_empty(n - 1, dtype=dtype)
    assert small.shape == (n - 1,) and small.dtype == dtype


def test_small_and_unsupported_buffers_are_torch_empty():
    assert large_empty(10).dtype == torch.long
    assert large_empty(0).numel() == 0
    half = large_empty(1 << 22, dtype=torch.float16)  # no NumPy path for this dtype
    assert half.dtype == torch.float16 and half.numel() == 1 << 22
