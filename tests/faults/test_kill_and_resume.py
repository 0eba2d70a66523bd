"""SIGKILL at seeded random moments of real ``voxseg`` processes, then the same command
again: every output with a final name is complete at any moment, and the rerun finishes
with outputs identical to an uninterrupted run's.

The default suite tries one kill point of ``preprocess`` and of ``predict`` and one
SIGTERM; ``pytest -m slow`` sweeps 20 points per verb (``evaluate``, ``postprocess apply``
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


@pytest.mark.parametrize("name", ["preprocess", "predict"])
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
