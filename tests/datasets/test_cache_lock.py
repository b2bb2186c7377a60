"""Loaders hold a per-dataset lock on the cache while they copy, download or process there."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from graphattn.datasets._common import cache_lock

pytest.importorskip("fcntl")  # the lock is POSIX; elsewhere loaders run unlocked

_LOAD = "import sys; from graphattn.datasets import load_mnist1d; load_mnist1d(sys.argv[1], cache_dir=sys.argv[2])"


def _start_loader(shared_data, cache_dir) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _LOAD, str(shared_data), str(cache_dir)], stderr=subprocess.PIPE)


def test_a_second_process_waits_for_the_lock_then_loads(shared_data, tmp_path):
    with cache_lock(tmp_path, "mnist1d"):
        proc = _start_loader(shared_data, tmp_path)
        time.sleep(3.0)  # ample for the import and the load (~1 s), were the lock not taken
        assert proc.poll() is None, "the loader ran while another process held the dataset's lock"
        assert not (tmp_path / "mnist1d" / "mnist1d_data.npz").exists()  # nothing copied under the lock
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert (tmp_path / "mnist1d" / "mnist1d_data.npz").exists()


def test_the_lock_is_per_dataset(shared_data, tmp_path):
    with cache_lock(tmp_path, "sst/trees"):  # another dataset's lock does not hold up mnist1d
        proc = _start_loader(shared_data, tmp_path)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
