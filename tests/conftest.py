"""Shared test fixtures: everything is generated with fixed seeds into temporary folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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


@pytest.fixture(autouse=True)
def _library_logging():
    """A CLI run configures the ``voxseg`` logger (level, handler); every test starts from
    the library's default (nothing shown below WARNING)."""
    import logging

    from voxseg.cli._logging import PlainHandler

    yield
    logger = logging.getLogger("voxseg")
    for handler in [h for h in logger.handlers if isinstance(h, PlainHandler)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def build_workspace(root: Path, *, num_train: int = 5, patch=(16, 32, 32)) -> Path:
    from voxseg.data import Dataset
    from voxseg.data.fingerprint import load_or_compute_fingerprint
    from voxseg.planning import PlannerOptions, plan_dataset, write_plans
    from voxseg.preprocessing.preprocessor import preprocess_dataset
    from voxseg.synth import generate

    raw = generate(
        "organs",
        root / "raw" / "Dataset001_Organs",
        num_train=num_train,
        num_test=2,
        shape=(16, 40, 40),
        seed=3,
    )
    ds = Dataset(raw)
    pre = root / "preprocessed" / ds.name
    fp = load_or_compute_fingerprint(ds, pre)
    plans = plan_dataset(fp, ds.info, PlannerOptions(device="cpu", patch_size=list(patch)))
    write_plans(plans, pre)
    preprocess_dataset(ds, plans, "3d_fullres", pre / "default" / "3d_fullres")
    return root


@pytest.fixture(scope="session")
def _tiny_workspace(tmp_path_factory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("tiny_ws"))


@pytest.fixture
def tiny_home(_tiny_workspace, tmp_path, monkeypatch) -> Path:
    """A private copy of the tiny workspace, set as ``VOXSEG_HOME``."""
    home = tmp_path / "home"
    shutil.copytree(_tiny_workspace, home)
    monkeypatch.setenv("VOXSEG_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model(_tiny_workspace, tmp_path_factory) -> Path:
    """A model trained for a few iterations on the tiny workspace (fold ``all``); returns
    the model folder. Quality is irrelevant: tests of geometry and plumbing use it."""
    from voxseg.config import apply_overrides
    from voxseg.training import ModelConfig, train_fold

    home = tmp_path_factory.mktemp("tiny_model_home")
    shutil.copytree(_tiny_workspace, home, dirs_exist_ok=True)
    cfg = apply_overrides(
        ModelConfig(dataset="Organs"),
        [
            "training.epochs=1",
            "training.iterations_per_epoch=2",
            "training.val_iterations=0",
            "training.num_workers=0",
            "training.device=cpu",
            "logging.snapshots=false",
        ],
    )
    return train_fold(cfg, "all", home=home).parent
