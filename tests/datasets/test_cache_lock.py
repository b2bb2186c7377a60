"""Loaders hold a per-dataset lock on the cache while they copy, download or process there."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from graphattn.datasets._common import cache_lock

pytest.importorskip("fcntl")  # the lock is POSIX; elsewhere loaders run unlocked

# Says "imported" once graphattn is imported, then loads MNIST-1D from the offline data (~0.1 s).
_LOAD = (
    "import sys; from graphattn.datasets import load_mnist1d; print('imported', flush=True); "
    "load_mnist1d(sys.argv[1], cache_dir=sys.argv[2])"
)


def _start_loader(shared_data, cache_dir) -> subprocess.Popen:
    cmd = [sys.executable, "-c", _LOAD, str(shared_data), str(cache_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"imported\n", proc.stderr.read().decode()
    return proc


def test_a_second_process_waits_for_the_lock_then_loads(shared_data, tmp_path):
    with cache_lock(tmp_path, "mnist1d"):
        proc = _start_loader(shared_data, tmp_path)
        time.sleep(2.0)  # 20x the load's time, were the lock not taken
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
