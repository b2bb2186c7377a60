"""Without local data and without network every downloading loader fails with one clear error.

No network is simulated by an empty root and a name resolver that raises (``socket.getaddrinfo``):
every download path (ogb's and graphattn's ``urllib``, PyG's ``fsspec``/``aiohttp``) resolves the
host first, so each loader really tries its normal download and meets the failure.
"""

from __future__ import annotations

import socket

import pytest

from graphattn import datasets as D


def _loaders():
    cases = [
        ("mnist/raw", lambda root, cache: D.load_mnist_test(root, cache_dir=cache)),
        ("mnist1d", lambda root, cache: D.load_mnist1d(root, cache_dir=cache)),
        ("sst/trees", lambda root, cache: D.load_sst("dev", root, cache_dir=cache)),
    ]
    try:
        import torch_geometric  # noqa: F401

        cases += [
            ("planetoid/Cora", lambda root, cache: D.load_planetoid("Cora", root, cache_dir=cache)),
            ("tudataset/MUTAG", lambda root, cache: D.load_tu("MUTAG", root, cache_dir=cache)),
        ]
        import ogb  # noqa: F401

        cases.append(("ogb/ogbg_molesol", lambda root, cache: D.load_ogbg("ogbg-molesol", root, cache_dir=cache)))
    except ImportError:
        pass
    return cases


@pytest.mark.parametrize(("relative", "load"), _loaders(), ids=[c[0] for c in _loaders()])
def test_absent_data_and_no_network_raise_clearly(relative, load, tmp_path, monkeypatch):
    calls = []

    def no_network(host, *args, **kwargs):
        calls.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "network unreachable (simulated)")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.delenv(D.DATA_ENV, raising=False)
    empty = tmp_path / "empty_root"
    empty.mkdir()
    with pytest.raises(D.DatasetNotFoundError) as info:
        load(empty, tmp_path / "cache")
    message = str(info.value)
    assert str(empty / relative) in message  # where it looked
    assert "network unreachable (simulated)" in message  # why the download failed
    assert "root=" in message and D.DATA_ENV in message  # what to do
    assert calls, "the loader should have tried its normal download path"
    assert isinstance(info.value, FileNotFoundError)
