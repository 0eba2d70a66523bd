"""SIGKILL at seeded random moments of real ``voxseg`` processes, then the same command
again: every output with a final name is complete at any moment, and the rerun finishes
with outputs identical to an uninterrupted run's.

The default suite tries one kill point of ``preprocess``, ``predict``, ``centerline`` and
of a ``preprocess -p 2`` whose whole process group is killed, SIGTERM to ``predict`` and
Ctrl-C to ``preprocess -p 2``; ``pytest -m slow`` sweeps 20 points per verb (``evaluate``,
``postprocess apply``, a vessel ``trace``, ``dataset import dicom`` with one and two
processes, ``pipeline predict``, and ``train`` and ``pipeline train`` too, resumed from
their last complete checkpoint, the final weights equal to the uninterrupted run's), and
stops every long verb with SIGTERM and with Ctrl-C. ``-s`` prints the sweep table.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fault_harness import (
    TABLE_HEAD,
    Aim,
    Reference,
    Verb,
    digest,
    files,
    incomplete_files,
    kill_and_rerun,
    points,
    reference,
    run,
    run_interrupted,
    table_row,
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
PIPELINE_SETTINGS = [  # three epochs: a checkpoint before the last one, to resume from
    "training.epochs=3",
    "training.iterations_per_epoch=2",
    "training.val_iterations=0",
    "training.batch_size=2",
    "training.num_workers=0",
    "prediction.tta=false",
    "logging.snapshots=false",
]
#: the trained stages' weights (a stage's ``fold_*`` folder inside the pipeline)
STAGE_WEIGHTS = "pipe/stages/*/fold_*/weights.safetensors"


def _train_rerun(home: Path) -> list[str]:
    resume = (home / MODEL / "fold_all" / "checkpoint_last.safetensors").exists()
    return ["train", DATASET, *TRAIN_ARGS, *(["--resume"] if resume else [])]


def _import_dicom(name: str, processes: int) -> Verb:
    return Verb(
        name,
        ["dataset", "import", "dicom", "archive", "imported", "--roi", "liver=Liver"]
        + ["-p", str(processes)],
        ["imported"],
        # dicom_index.json is a header cache keyed by the archive's absolute path
        compare=["*.nii.gz", "dataset.json", "*.csv", "import_report.json"],
    )


VERBS = {
    "preprocess": Verb(
        "preprocess", ["preprocess", DATASET, "-c", "3d_fullres", "-p", "1"], [STORE]
    ),
    # two worker processes (a forkserver and its children): the kill takes the whole group
    "preprocess_p2": Verb(
        "preprocess_p2", ["preprocess", DATASET, "-c", "3d_fullres", "-p", "2"], [STORE]
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
    "import_dicom": _import_dicom("import_dicom", 1),
    "import_dicom_p2": _import_dicom("import_dicom_p2", 2),
    "pipeline_predict": Verb(
        "pipeline_predict",
        ["pipeline", "predict", "pipe", f"{CORD}/imagesTs", "out", "--device", "cpu"]
        + ["--no-tta", "--save-stages"],
        ["out"],
    ),
    # every stage: derive its data, plan, preprocess, train, install; a rerun resumes the
    # interrupted fold from its last checkpoint
    "pipeline_train": Verb(
        "pipeline_train",
        ["pipeline", "train", "pipe", CORD, "--device", "cpu"],
        ["pipe"],
        compare=[STAGE_WEIGHTS],
    ),
    # a time budget: its outputs depend on the clock, so only completeness and a rerun
    # that finishes are checked (no kill sweep)
    "auto": Verb(
        "auto",
        ["auto", DATASET, "--time-budget", "60s", "--device", "cpu", "-p", "1", "--no-report"],
        [f"models/{DATASET}"],
        compare=[],
    ),
}
#: verbs whose outputs are not compared with an uninterrupted run's
UNCOMPARED = {"auto"}


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


def _cord_pipeline_folder(home: Path) -> None:
    """Generated cord cases and a cord-lesion pipeline folder, not yet trained."""
    from voxseg.synth import generate

    generate("cord", home / CORD, num_train=4, num_test=2, shape=(8, 40, 40))
    sets = [a for s in PIPELINE_SETTINGS for a in ("--set", s)]
    init = ["pipeline", "init", "cord-lesion", CORD, "pipe", "--spacing", "1.0"]
    init += ["--window", "16", "--patch-size", "16x16x16", "--device", "cpu", *sets]
    done = run(init, home)
    assert done.returncode == 0, done.stderr[-2000:]


def _cord_pipeline(home: Path) -> None:
    """A cord-lesion pipeline trained for a few iterations on generated cases."""
    _cord_pipeline_folder(home)
    done = run(VERBS["pipeline_train"].args, home)
    assert done.returncode == 0, done.stderr[-2000:]


#: verbs whose workspace is made from scratch instead of from the organs workspace
BUILDERS = {
    "centerline": _vessel_trees,
    "trace": _vessel_trees,
    "import_dicom": _dicom_archive,
    "import_dicom_p2": _dicom_archive,
    "pipeline_predict": _cord_pipeline,
    "pipeline_train": _cord_pipeline_folder,
}


@pytest.fixture(scope="module")
def homes(request, tmp_path_factory) -> Callable[[str], Path]:
    """A pristine workspace per verb, made when first asked for: raw data, plans, store, a
    tiny trained model (and its predictions of the test images for ``evaluate``), each
    without the outputs of its verb; or, for the verbs in ``BUILDERS``, their own data."""
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
        # the organs workspace with its tiny model, trained only when a verb needs it
        source = request.getfixturevalue("tiny_model").parents[3]
        shutil.copytree(source, copy)
        if name in ("preprocess", "preprocess_p2"):
            shutil.rmtree(copy / STORE)
        if name == "train":
            shutil.rmtree(copy / MODEL)
        if name == "auto":
            shutil.rmtree(copy / "models")
            shutil.rmtree(copy / "preprocessed")
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
def references(homes, tmp_path_factory) -> Callable[[str], Reference]:
    """Digest, wall and CPU seconds of an uninterrupted run per verb (computed once, in this
    process, so kill points follow the run as it goes on this machine today)."""
    cache: dict[str, Reference] = {}
    scratch = tmp_path_factory.mktemp("references")

    def get(name: str) -> Reference:
        if name not in cache:
            cache[name] = reference(VERBS[name], homes(name), scratch)
            if name not in UNCOMPARED:
                assert cache[name].digest, f"the uninterrupted {name} wrote nothing to compare"
        return cache[name]

    return get


#: rows of the tables printed at the end of the module (``pytest -s`` shows them)
ROWS: dict[str, list[str]] = {"kill": [], "signal": []}
SIGNAL_HEAD = (
    "| verb | signal | sent to | exit code | CPU s after the signal | wall s after it "
    "| says where and how to resume | outputs incomplete | rerun exit 0 | identical |"
    "\n|---|---|---|---|---|---|---|---|---|---|"
)


@pytest.fixture(scope="module", autouse=True)
def _print_tables():
    yield
    if ROWS["kill"]:
        print("\n\nSIGKILL at seeded points of the CPU time, then the same command again\n")
        print("\n".join([TABLE_HEAD, *ROWS["kill"]]))
    if ROWS["signal"]:
        print("\n\nSIGTERM / Ctrl-C at 60 % of the uninterrupted run's CPU time\n")
        print("\n".join([SIGNAL_HEAD, *ROWS["signal"]]))


def _sweep(name: str, homes, references, scratch: Path, seed: int, n: int) -> list:
    verb = VERBS[name]
    ref = references(name)
    aim = Aim(ref.cpu_s)
    outcomes = []
    for i, fraction in enumerate(points(seed, n)):
        outcome = kill_and_rerun(verb, homes(name), scratch, ref.digest, fraction, aim, f"k{i}")
        outcomes.append(outcome)
        whole = f"{aim.cpu_s:.2f} CPU s"
        print(f"\n{name} point {i + 1}/{n} at {fraction:.3f} of a run ({whole}): {outcome}")
    ROWS["kill"].append(table_row(name, outcomes, ref))
    print(f"\n{ROWS['kill'][-1]}")
    bad = [o for o in outcomes if not o.ok]
    assert not bad, "\n".join(f"{name} killed at {o.point_s:.2f} CPU s: {o}" for o in bad)
    return outcomes


@pytest.mark.parametrize("name", ["preprocess", "predict", "centerline", "preprocess_p2"])
def test_killed_verb_resumes_to_identical_outputs(name, homes, references, tmp_path):
    _sweep(name, homes, references, tmp_path, seed=23, n=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in VERBS if n not in UNCOMPARED])
def test_kill_sweep(name, homes, references, tmp_path):
    outcomes = _sweep(name, homes, references, tmp_path, seed=2023, n=20)
    killed = sum(o.killed for o in outcomes)
    # points are CPU seconds of the run itself, so nearly all of them fall inside it
    assert killed >= len(outcomes) - 3, f"{name}: only {killed} kill points inside the run"


#: resume hint per verb (default: the same command again)
HINTS = {"train": "run the same command with --resume"}
#: the verbs stopped with a signal in the default suite; every verb in the slow one
FAST_SIGNALS = {("predict", signal.SIGTERM), ("preprocess_p2", signal.SIGINT)}
SIGNALLED = [
    "train",
    "pipeline_train",
    "preprocess",
    "preprocess_p2",
    "predict",
    "evaluate",
    "import_dicom",
    "import_dicom_p2",
    "trace",
    "auto",
]


def _signal_params():
    for name in SIGNALLED:
        for sig in (signal.SIGTERM, signal.SIGINT):
            marks = () if (name, sig) in FAST_SIGNALS else (pytest.mark.slow,)
            yield pytest.param(name, sig, id=f"{name}-{sig.name}", marks=marks)


@pytest.mark.parametrize(("name", "sig"), list(_signal_params()))
def test_signal_stops_with_a_resume_hint(name, sig, homes, references, tmp_path):
    """SIGTERM to the verb's process (``kill PID``) or SIGINT to its process group (Ctrl-C
    in a terminal) at 60 % of its work: it stops within a few CPU seconds with exit code
    143 or 130, says where it was and how to resume, releases its locks, leaves only
    complete outputs, and the resumed run finishes as an uninterrupted one."""
    verb = VERBS[name]
    ref = references(name)
    home = tmp_path / "home"
    shutil.copytree(homes(name), home)
    group = sig == signal.SIGINT
    stopped = run_interrupted(verb.args, home, 0.6 * ref.cpu_s, sig=sig, group=group)
    if not stopped.signalled:
        pytest.skip(f"{name} finished before it had used 60 % of the reference's CPU time")
    err = " ".join(stopped.stderr.split())
    hint = HINTS.get(name, "run the same command again")
    where = "last step:" in err or "before its first step" in err
    told = "stopped by" in err and where and hint in err
    incomplete = incomplete_files(home, verb.outputs)
    locks = [p for p in home.rglob(".voxseg.lock")]
    again = run(verb.rerun(home) if verb.rerun else verb.args, home)
    same = name in UNCOMPARED or (
        again.returncode == 0
        and digest(home, verb.outputs, verb.compare, verb.timings) == ref.digest
    )
    ROWS["signal"].append(
        f"| `{name}` | {sig.name} | {'group' if group else 'process'} | {stopped.code} "
        f"| {stopped.cpu_after_s:.1f} | {stopped.wall_after_s:.1f} | {'yes' if told else 'no'} "
        f"| {len(incomplete)} | {'yes' if again.returncode == 0 else 'no'} "
        f"| {'n/a' if name in UNCOMPARED else 'yes' if same else 'no'} |"
    )
    assert stopped.code == (143 if sig == signal.SIGTERM else 130), stopped.stderr[-3000:]
    assert stopped.cpu_after_s < 5, f"{stopped.cpu_after_s:.1f} CPU s to stop"
    assert told and "Traceback" not in err, stopped.stderr[-3000:]
    assert not incomplete and not locks, (incomplete, locks)
    assert again.returncode == 0, again.stderr[-3000:]
    assert same
    if name in UNCOMPARED:
        assert files(home, verb.outputs)
