"""The bad-input corpus (``bad_inputs/make_corpus.py``) through ``dataset check``, ``plan``,
``preprocess``, ``predict`` and ``evaluate``: every kind is named in a one-line error with
its file, exit code 1, no traceback, and the good cases of the run are still processed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "bad_inputs"))
from make_corpus import BAD, IMAGE, KINDS, LABEL, base_dataset, make  # noqa: E402

from voxseg.cli import app  # noqa: E402


def _invoke(args: list[str]):
    result = CliRunner().invoke(app, args)
    assert "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    return result


def _error_lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("error:")]


#: One kind per family in the default suite; ``pytest -m slow`` runs the whole corpus.
FAST_KINDS = {
    "truncated_nifti",
    "zero_byte_png",
    "wrong_magic",
    "huge_claimed_dimensions",
    "nan_intensities",
    "float_labels",
    "label_spacing_off_1e-3",
    "non_orthogonal_direction",
    "dataset_json_duplicate_label_values",
    "unicode_and_spaces_in_paths",
}


@pytest.mark.parametrize(
    "kind", [k if k in FAST_KINDS else pytest.param(k, marks=pytest.mark.slow) for k in KINDS]
)
def test_dataset_check_names_every_bad_input(kind, tmp_path):
    root = make(kind, tmp_path)
    result = _invoke(["dataset", "check", str(root), "-p", "1"])
    if KINDS[kind].accepted:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1, result.output
    errors = _error_lines(result.output)
    assert errors, result.output
    assert any(Path(KINDS[kind].names).name in ln for ln in errors), result.output


def test_corpus_has_at_least_30_kinds():
    assert len(KINDS) >= 30


@pytest.mark.parametrize("kind", ["float_labels", "dataset_json_duplicate_label_values"])
def test_plan_refuses_a_bad_dataset(kind, tmp_path, monkeypatch):
    monkeypatch.setenv("VOXSEG_HOME", str(tmp_path / "home"))
    root = make(kind, tmp_path)
    result = _invoke(["plan", str(root)])
    assert result.exit_code == 1
    assert Path(KINDS[kind].names).name in result.output


def test_preprocess_names_a_file_damaged_after_planning(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXSEG_HOME", str(tmp_path / "home"))
    root = base_dataset(tmp_path / "ds")
    assert _invoke(["plan", str(root)]).exit_code == 0
    data = (root / IMAGE).read_bytes()
    (root / IMAGE).write_bytes(data[: len(data) // 2])
    result = _invoke(["preprocess", str(root), "-c", "3d_fullres", "-p", "1"])
    assert result.exit_code == 1
    assert f"{BAD}_0000.nii.gz" in result.output
    args = ["preprocess", str(root), "-c", "3d_fullres", "-p", "1", "--continue-on-error"]
    result = _invoke(args)
    assert result.exit_code == 1
    assert f"{BAD}_0000.nii.gz" in result.output and "1 case(s) failed" in result.output
    store = tmp_path / "home" / "preprocessed" / "ds" / "default" / "3d_fullres"
    assert sorted(p.stem for p in store.glob("case_*.json")) == ["case_000", "case_002"]


PREDICT_KINDS = [k for k, v in KINDS.items() if v.predict]
EVALUATE_KINDS = [k for k, v in KINDS.items() if v.evaluate]


def test_predict_names_each_bad_image_and_predicts_the_good_one(tiny_model, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for kind in PREDICT_KINDS:
        root = make(kind, tmp_path / "corpus")
        shutil.copy(root / IMAGE, inputs / f"{kind}_0000.nii.gz")
    shutil.copy(root / "imagesTr/case_000_0000.nii.gz", inputs / "good_0000.nii.gz")
    out = tmp_path / "out"
    args = ["predict", "-i", str(inputs), "-o", str(out), "-m", str(tiny_model)]
    result = _invoke([*args, "--device", "cpu", "--no-tta"])
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["good.nii.gz"]
    flat = result.output.replace("\n", "")  # the console wraps long lines
    for kind in PREDICT_KINDS:
        message = flat[flat.index(f"{kind}: ") :][:400]
        assert f"{kind}_0000.nii.gz" in message or "channel" in message, message


@pytest.mark.parametrize("kind", EVALUATE_KINDS)
def test_evaluate_names_a_bad_label_map(kind, tmp_path):
    root = make(kind, tmp_path / "corpus")
    good = base_dataset(tmp_path / "good")
    pred, ref = tmp_path / "pred", good / "labelsTr"
    pred.mkdir()
    shutil.copy(root / LABEL, pred / f"{BAD}.nii.gz")
    result = _invoke(["evaluate", str(pred), str(ref), "-o", str(tmp_path / "ev")])
    assert result.exit_code == 1
    errors = _error_lines(result.output)
    assert len(errors) == 1 and f"{BAD}.nii.gz" in errors[0], result.output


@contextlib.contextmanager
def _mounted_tmpfs(folder: Path, options: str):
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=False
    )
    if done.returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def _predict_into(tiny_model: Path, tmp_path: Path, out: Path):
    inputs = tmp_path / "in"
    inputs.mkdir(exist_ok=True)
    root = base_dataset(tmp_path / "ds")
    shutil.copy(root / "imagesTr/case_000_0000.nii.gz", inputs / "a_0000.nii.gz")
    args = ["predict", "-i", str(inputs), "-o", str(out), "-m", str(tiny_model)]
    return _invoke([*args, "--device", "cpu", "--no-tta"])


def test_read_only_output_folder(tiny_model, tmp_path):
    out = tmp_path / "ro"
    if os.geteuid() == 0:
        ctx = _mounted_tmpfs(out, "ro,size=64k")
    else:
        out.mkdir()
        out.chmod(0o555)
        ctx = contextlib.nullcontext(out)
    with ctx:
        result = _predict_into(tiny_model, tmp_path, out)
    assert result.exit_code == 1
    assert str(out) in result.output and len(_error_lines(result.output)) == 1


def _fill_all_but_one_page(path: Path) -> None:
    with open(path, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\1" * 4096)
                os.fsync(f.fileno())
    pages = -(-path.stat().st_size // 4096)
    os.truncate(path, max(pages - 1, 0) * 4096)


def test_output_disk_that_fills(tiny_model, tmp_path):
    out = tmp_path / "full"
    with _mounted_tmpfs(out, "size=64k"):
        _fill_all_but_one_page(out / "ballast")  # the page the lock file takes
        result = _predict_into(tiny_model, tmp_path, out)
        names = sorted(p.name for p in out.iterdir())
    assert result.exit_code == 1, result.output
    assert "could not be written completely" in result.output
    assert "a.nii.gz" not in names  # nothing half-written under a final name


def test_evaluate_continue_on_error_names_every_bad_label_map(tmp_path):
    good = base_dataset(tmp_path / "good")
    pred, ref = tmp_path / "pred", good / "labelsTr"
    pred.mkdir()
    for kind in EVALUATE_KINDS:
        root = make(kind, tmp_path / "corpus")
        shutil.copy(root / LABEL, pred / f"{kind}.nii.gz")
        shutil.copy(ref / f"{BAD}.nii.gz", ref / f"{kind}.nii.gz")
    shutil.copy(ref / "case_000.nii.gz", pred / "case_000.nii.gz")
    out = tmp_path / "ev"
    args = ["evaluate", str(pred), str(ref), "-o", str(out), "--continue-on-error"]
    result = _invoke(args)
    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    for kind in EVALUATE_KINDS:
        assert f"{kind}: " in flat and f"{kind}.nii.gz" in flat, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["failed"]) == sorted(EVALUATE_KINDS)
    assert [c["case"] for c in summary["metric_per_case"]] == ["case_000"]
    assert summary["mean"]["organ"]["dice"] == 1.0  # the good case against itself
