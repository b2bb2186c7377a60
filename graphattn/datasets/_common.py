"""Where dataset files come from, and where they are processed.

Every loader finds its files in this order:

1. ``root=`` (a folder laid out like graphattn's offline data folder: ``<root>/ogb/ogbg_molhiv``,
   ``<root>/planetoid/Cora``, ``<root>/tudataset/MUTAG``, ``<root>/mnist/raw``, ``<root>/mnist1d``,
   ``<root>/sst/trees``), else the environment variable ``GRAPHATTN_DATA`` (same layout); a root
   that is not a folder is an error (:func:`data_root`);
2. if the dataset is not there (or neither is set): the normal download of its source (OGB, PyG
   or the original URL) into the cache.

Local copies are never written to: the dataset's folder is copied into the writable cache
(``cache_dir=``, else ``GRAPHATTN_CACHE``, else ``~/.cache/graphattn``) and processed there, under
:func:`cache_lock`.
When the files are neither local nor downloadable, :class:`DatasetNotFoundError` says where it
looked, what failed and what to do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

__all__ = [
    "DatasetNotFoundError",
    "DATA_ENV",
    "CACHE_ENV",
    "data_root",
    "cache_root",
    "cache_lock",
    "local_copy",
    "download_file",
    "try_download",
    "no_weights_only_load",
]

DATA_ENV = "GRAPHATTN_DATA"
CACHE_ENV = "GRAPHATTN_CACHE"

T = TypeVar("T")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is neither in the local root nor downloadable (no network, or the source failed)."""


def data_root(root: str | os.PathLike | None) -> Path | None:
    """``root`` if given, else ``$GRAPHATTN_DATA`` if set, else ``None`` (download only).

    A root that is not a folder is an error, not a silent fallback to the download path (or to an
    earlier download in the cache): it is a mistyped path far more often than a wish to download.
    """
    if root is None:
        env = os.environ.get(DATA_ENV)
        if not env:
            return None
        name, path = f"${DATA_ENV}", Path(env).expanduser()
    elif not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike) or None, got {type(root).__name__}")
    elif not os.fspath(root):  # Path("") is the current folder: an empty root is a mistake, not "."
        raise ValueError("root must be a folder holding local copies of the datasets, got ''; pass None to download")
    else:
        name, path = "root", Path(root).expanduser()
    if not path.is_dir():
        raise NotADirectoryError(
            f"{name} must be a folder holding local copies of the datasets, got {str(path)!r}, which "
            f"{'is not a folder' if path.exists() else 'does not exist'}; leave it unset to download"
        )
    return path


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """The writable folder datasets are copied to and processed in (created if missing)."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "graphattn"
    path = Path(cache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy files that are missing or differ in size; never copies permissions (sources may be read-only)."""
    for dirpath, _, filenames in os.walk(src):
        target = dst / Path(dirpath).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in filenames:
            s, d = Path(dirpath) / name, target / name
            if not d.exists() or d.stat().st_size != s.stat().st_size:
                shutil.copyfile(s, d)  # copyfile: content only, the copy is writable


@contextlib.contextmanager
def cache_lock(cache: Path, relative: str) -> Iterator[None]:
    """Hold an exclusive lock on ``cache/relative`` while a dataset is copied, downloaded or processed there.

    Two processes preparing the same dataset at once (two trainings side by side, the ranks of a
    ``torchrun`` job on a fresh cache) would otherwise read each other's half-written files: one
    of two ``ogbg-molhiv`` trainings started together failed with "PytorchStreamReader failed
    reading file". The second process waits, then finds the files ready. An advisory
    ``fcntl.flock`` on ``<cache>/<relative>.lock`` (released if its process dies); where ``fcntl``
    is missing (Windows) loaders run unlocked, as before.
    """
    path = cache / f"{relative}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def local_copy(root: Path | None, relative: str, cache: Path, required: tuple[str, ...] = ()) -> Path | None:
    """Copy ``root/relative`` into ``cache/relative`` and return the copy, or ``None`` if not local.

    Args:
        root: the local data root (``None``: nothing local).
        relative: the dataset's folder inside the root, e.g. ``"ogb/ogbg_molhiv"``.
        cache: the writable cache root.
        required: files (relative to the dataset folder) that must exist for the copy to count.
    """
    if root is None:
        return None
    src = root / relative
    if not src.is_dir() or any(not (src / r).exists() for r in required):
        return None
    dst = cache / relative
    _copy_tree(src, dst)
    return dst


def download_file(url: str, path: Path, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``path`` (atomically: a partial file never remains)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
        shutil.copyfileobj(response, f)
    tmp.replace(path)
    return path


def try_download(what: str, looked_in: Path | None, relative: str, source: str, action: Callable[[], T]) -> T:
    """Run ``action`` (a download); turn any failure into a :class:`DatasetNotFoundError` that says what to do."""
    try:
        return action()
    except Exception as err:  # any network / source failure becomes one clear error
        where = f"{looked_in / relative}" if looked_in is not None else f"no local root (root=None, ${DATA_ENV} unset)"
        raise DatasetNotFoundError(
            f"{what} is not available: not found locally ({where}) and the download from {source} failed "
            f"({type(err).__name__}: {err}). Pass root= (or set ${DATA_ENV}) to a folder holding "
            f"'{relative}/', or run once with network access."
        ) from err


@contextlib.contextmanager
def no_weights_only_load() -> Iterator[None]:
    """Let ``ogb`` re-load its own processed cache on torch >= 2.6 (it calls ``torch.load`` without
    ``weights_only=False``). Only files this process wrote into the cache are loaded meanwhile.
    """
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
