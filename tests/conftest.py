"""Shared fixtures: where the offline data is, and a writable cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GRAPHATTN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline data folder (``$GRAPHATTN_SHARED_DATA``, default ``<repo>/../shared/data``)."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.fail(f"offline data not found at {SHARED_DATA}; set GRAPHATTN_SHARED_DATA to it")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """A writable cache shared by the session (``$GRAPHATTN_CACHE`` when set, to reuse processed files)."""
    env = os.environ.get("GRAPHATTN_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("graphattn_cache")
