"""A tiny planned and preprocessed phantom dataset, built once per session and copied into
each test's own workspace."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


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
    fp = load_or_compute_fingerprint(ds, pre, progress=False)
    plans = plan_dataset(fp, ds.info, PlannerOptions(device="cpu", patch_size=list(patch)))
    write_plans(plans, pre)
    preprocess_dataset(ds, plans, "3d_fullres", pre / "default" / "3d_fullres", progress=False)
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
