"""Shared test fixtures: everything is generated with fixed seeds into temporary folders."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated_workspace(tmp_path, monkeypatch):
    """Every test gets its own VOXSEG_HOME so no test touches a real workspace."""
    monkeypatch.setenv("VOXSEG_HOME", str(tmp_path / "voxseg_home"))
    monkeypatch.delenv("VOXSEG_PREPROCESSED", raising=False)
