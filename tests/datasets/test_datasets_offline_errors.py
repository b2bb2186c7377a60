"""Without local data and without network every downloading loader fails with one clear error.

No network is simulated by an empty root and a name resolver that raises (``socket.getaddrinfo``):
every download path (ogb's and graphattn's ``urllib``, PyG's ``fsspec``/``aiohttp``) resolves the
host first, so each loader really tries its normal download and meets the failure.
"""

from __future__ import annotations

import re
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


@pytest.mark.parametrize("where", ["argument", "environment"])
@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_root_that_is_not_a_folder_is_an_error(where, kind, tmp_path, monkeypatch):
    # Before, a mistyped root fell through to the download path, and so to an earlier download in
    # the cache: the run silently used other data than the folder it was pointed at.
    bad = tmp_path / "typo"
    if kind == "file":
        bad.write_text("not a folder")
    monkeypatch.delenv(D.DATA_ENV, raising=False)
    if where == "environment":
        monkeypatch.setenv(D.DATA_ENV, str(bad))
    name = "root" if where == "argument" else f"${D.DATA_ENV}"
    with pytest.raises(NotADirectoryError, match=rf"^{re.escape(name)} must be a folder .*{re.escape(str(bad))}"):
        D.load_mnist1d(bad if where == "argument" else None, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # failed before the cache (or its lock) was touched


def test_an_empty_root_is_an_error_not_the_current_folder(tmp_path, monkeypatch):
    # Path("") is ".", so root="" (or --data-root "") read datasets from wherever the run started.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"root must be a folder .*got ''; pass None to download"):
        D.load_mnist1d("", cache_dir=tmp_path / "cache")
