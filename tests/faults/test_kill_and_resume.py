"""SIGKILL at seeded random moments of real ``voxseg`` processes, then the same command
again: every output with a final name is complete at any moment, and the rerun finishes
with outputs identical to an uninterrupted run's.

The default suite tries one kill point of ``preprocess``, ``predict`` and ``centerline``
and one SIGTERM; ``pytest -m slow`` sweeps 20 points per verb (``evaluate``,
``postprocess apply``, a vessel ``trace``, ``dataset import dicom``, ``pipeline predict``
and ``train`` too, the latter resumed from its last complete checkpoint, the final weights
equal to the uninterrupted run's).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fault_harness import (
    Verb,
    command,
    delays,
    digest,
    environment,
    kill_and_rerun,
    reference,
    run,
)

DATASET = "Dataset001_Organs"
STORE = f"preprocessed/{DATASET}/default/3d_fullres"
MODEL = f"models/{DATASET}/default/3d_fullres"
TRAIN_ARGS = [
    "--fold",
    "all",
    "--epochs",
    "4",
    "--iterations",
    "2",
    "--device",
    "cpu",
    "--set",
    "training.num_workers=0",
    "--set",
    "logging.snapshots=false",
]


VESSELS = "raw/Dataset501_Vessels"
TRACE_CASE = "vessels_test_000"
CORD = "Dataset001_Cord"
PIPELINE_SETTINGS = [
    "training.epochs=1",
    "training.iterations_per_epoch=2",
    "training.val_iterations=0",
    "training.batch_size=2",
    "training.num_workers=0",
    "prediction.tta=false",
    "logging.snapshots=false",
]


def _train_rerun(home: Path) -> list[str]:
    resume = (home / MODEL / "fold_all" / "checkpoint_last.safetensors").exists()
    return ["train", DATASET, *TRAIN_ARGS, *(["--resume"] if resume else [])]


VERBS = {
    "preprocess": Verb(
        "preprocess", ["preprocess", DATASET, "-c", "3d_fullres", "-p", "1"], [STORE]
    ),
    "predict": Verb(
        "predict",
        ["predict", "-i", f"raw/{DATASET}/imagesTs", "-o", "pred", "-m", MODEL]
        + ["--device", "cpu", "--no-tta"],
        ["pred"],
    ),
    "evaluate": Verb("evaluate", ["evaluate", "ref_pred", f"raw/{DATASET}/labelsTs"], ["ref_pred"]),
    "postprocess_apply": Verb(
        "postprocess_apply",
        ["postprocess", "apply", "ref_pred", "pp_out", "--config", "pp.json"],
        ["pp_out"],
    ),
    "train": Verb(
        "train",
        ["train", DATASET, *TRAIN_ARGS],
        [f"{MODEL}/fold_all"],
        compare=["weights.safetensors"],
        rerun=_train_rerun,
    ),
    "centerline": Verb(
        "centerline",
        ["centerline", f"{VESSELS}/labelsTr/vessels_000.nii.gz", "-o", "cl/vessels_000.vtp"],
        ["cl"],
    ),
    "trace": Verb(
        "trace",
        ["trace", f"{VESSELS}/imagesTs/{TRACE_CASE}_0000.nii.gz"]
        + ["--seeds", f"{VESSELS}/seeds/{TRACE_CASE}.json"]
        + ["--oracle", f"{VESSELS}/labelsTs/{TRACE_CASE}.nii.gz", "-o", "traced"],
        ["traced"],
        # the overview's title holds the tracing time
        compare=["*.nii.gz", "*.vtp", "*.stl", "*.json"],
        timings=["seconds"],
    ),
    "import_dicom": Verb(
        "import_dicom",
        ["dataset", "import", "dicom", "archive", "imported", "--roi", "liver=Liver", "-p", "1"],
        ["imported"],
        # dicom_index.json is a header cache keyed by the archive's absolute path
        compare=["*.nii.gz", "dataset.json", "*.csv", "import_report.json"],
    ),
    "pipeline_predict": Verb(
        "pipeline_predict",
        ["pipeline", "predict", "pipe", f"{CORD}/imagesTs", "out", "--device", "cpu"]
        + ["--no-tta", "--save-stages"],
        ["out"],
    ),
}


def _vessel_trees(home: Path) -> None:
    from voxseg.synth import generate

    generate("vessels", home / VESSELS, num_train=1, num_test=1, shape=(48, 48, 48))


def _dicom_archive(home: Path) -> None:
    """Four CT series (12 slices of 32 x 32) with an RTSTRUCT outlining an ellipse."""
    from voxseg.synth.dicom import rtstruct_dataset, series_datasets, write_datasets

    rng = np.random.default_rng(23)
    t = np.linspace(0, 2 * np.pi, 49)[:-1]
    for p in range(4):
        series = series_datasets(
            rng.integers(-200, 200, size=(12, 32, 32)),
            spacing=(2.0, 1.0, 1.0),
            first_position=(0.0, 0.0, 0.0),
            patient_id=f"PAT{p}",
            intercept=-1024,
        )
        write_datasets(series, home / "archive" / f"PAT{p}" / "CT")
        contours = [
            np.stack([16 + 8 * np.cos(t), 15 + 6 * np.sin(t), np.full_like(t, 2.0 * k)], 1)
            for k in range(3, 9)
        ]
        rtstruct_dataset(series, {"Liver": contours}).save_as(
            home / "archive" / f"PAT{p}" / "RS.dcm", enforce_file_format=True
        )


def _cord_pipeline(home: Path) -> None:
    """A cord-lesion pipeline trained for a few iterations on generated cases."""
    from voxseg.synth import generate

    generate("cord", home / CORD, num_train=4, num_test=2, shape=(8, 40, 40))
    sets = [a for s in PIPELINE_SETTINGS for a in ("--set", s)]
    init = ["pipeline", "init", "cord-lesion", CORD, "pipe", "--spacing", "1.0"]
    init += ["--window", "16", "--patch-size", "16x16x16", "--device", "cpu", *sets]
    for args in (init, ["pipeline", "train", "pipe", CORD, "--device", "cpu"]):
        done = run(args, home)
        assert done.returncode == 0, done.stderr[-2000:]


#: verbs whose workspace is made from scratch instead of from the organs workspace
BUILDERS = {
    "centerline": _vessel_trees,
    "trace": _vessel_trees,
    "import_dicom": _dicom_archive,
    "pipeline_predict": _cord_pipeline,
}


@pytest.fixture(scope="module")
def homes(tiny_model, tmp_path_factory) -> Callable[[str], Path]:
    """A pristine workspace per verb, made when first asked for: raw data, plans, store, a
    tiny trained model (and its predictions of the test images for ``evaluate``), each
    without the outputs of its verb."""
    source = tiny_model.parents[3]
    base = tmp_path_factory.mktemp("faults")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name in made:
            return made[name]
        copy = base / f"pristine-{name}"
        if name in BUILDERS:
            copy.mkdir()
            BUILDERS[name](copy)
            made[name] = copy
            return copy
        shutil.copytree(source, copy)
        if name == "preprocess":
            shutil.rmtree(copy / STORE)
        if name == "train":
            shutil.rmtree(copy / MODEL)
        if name == "postprocess_apply":
            steps = [{"name": "keep_largest_component"}, {"name": "fill_holes"}]
            (copy / "pp.json").write_text(json.dumps({"steps": steps}))
        if name in ("evaluate", "postprocess_apply"):
            args = VERBS["predict"].args
            predicted = run([*args[:4], "ref_pred", *args[5:]], copy)
            assert predicted.returncode == 0, predicted.stderr[-2000:]
        made[name] = copy
        return copy

    return get


@pytest.fixture(scope="module")
def references(homes, tmp_path_factory) -> Callable[[str], tuple[dict[str, str], float]]:
    """Digest and duration of an uninterrupted run per verb (computed once)."""
    cache: dict[str, tuple[dict[str, str], float]] = {}
    scratch = tmp_path_factory.mktemp("references")

    def get(name: str) -> tuple[dict[str, str], float]:
        if name not in cache:
            cache[name] = reference(VERBS[name], homes(name), scratch)
            assert cache[name][0], f"the uninterrupted {name} wrote nothing to compare"
        return cache[name]

    return get


def _sweep(name: str, homes, references, scratch: Path, seed: int, n: int) -> list:
    verb = VERBS[name]
    expected, seconds = references(name)
    outcomes = [
        kill_and_rerun(verb, homes(name), scratch, expected, d, f"k{i}")
        for i, d in enumerate(delays(seed, n, seconds))
    ]
    bad = [o for o in outcomes if not o.ok]
    assert not bad, "\n".join(f"{name} killed at {o.delay_s:.2f} s: {o}" for o in bad)
    return outcomes


@pytest.mark.parametrize("name", ["preprocess", "predict", "centerline"])
def test_killed_verb_resumes_to_identical_outputs(name, homes, references, tmp_path):
    _sweep(name, homes, references, tmp_path, seed=23, n=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VERBS))
def test_kill_sweep(name, homes, references, tmp_path):
    outcomes = _sweep(name, homes, references, tmp_path, seed=2023, n=20)
    killed = sum(o.killed for o in outcomes)
    print(f"{name}: {len(outcomes)} kill points ({killed} during the run), all resumed identical")


def test_sigterm_stops_with_143_and_a_resume_hint(homes, references, tmp_path):
    verb = VERBS["predict"]
    expected, seconds = references("predict")
    home = tmp_path / "home"
    shutil.copytree(homes("predict"), home)
    proc = subprocess.Popen(
        command(verb.args), cwd=home, env=environment(home), stderr=subprocess.PIPE, text=True
    )
    # wait until the verb is at work (its lock exists), then ask it to stop
    lock = home / "pred" / ".voxseg.lock"
    deadline = time.monotonic() + seconds * 3 + 60
    while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    tic = time.monotonic()
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert time.monotonic() - tic < 10
    assert proc.returncode == 143, err
    assert "SIGTERM" in err and "run the same command again" in err and "Traceback" not in err
    assert "last step: predicting" in " ".join(err.split())
    assert not lock.exists()  # released on the way out
    assert run(verb.args, home).returncode == 0
    assert digest(home, verb.outputs, verb.compare) == expected
