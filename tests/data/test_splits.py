"""Cross-validation splits: partition, grouping, determinism, validation of a user's file."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.data.splits import (
    get_splits,
    groups_from_file,
    groups_from_regex,
    kfold_splits,
    load_or_create_splits,
    load_splits,
    validate_splits,
)
from voxseg.errors import VoxsegError

CASES = [f"p{p:02d}_scan{s}" for p in range(7) for s in range(3 if p % 2 else 1)]


def _assert_partition(folds, cases):
    vals = [c for f in folds for c in f["val"]]
    assert sorted(vals) == sorted(cases)  # every case in exactly one val
    for f in folds:
        assert set(f["train"]) | set(f["val"]) == set(cases)
        assert not set(f["train"]) & set(f["val"])


def test_kfold_partitions_cases_evenly():
    cases = [f"c{i}" for i in range(11)]
    folds = kfold_splits(cases, num_folds=5, seed=1)
    _assert_partition(folds, cases)
    assert sorted(len(f["val"]) for f in folds) == [2, 2, 2, 2, 3]


def test_kfold_is_seeded():
    cases = [f"c{i}" for i in range(20)]
    assert kfold_splits(cases, 5, seed=3) == kfold_splits(list(reversed(cases)), 5, seed=3)
    assert kfold_splits(cases, 5, seed=3) != kfold_splits(cases, 5, seed=4)


def test_grouped_by_regex_keeps_patients_together():
    groups = groups_from_regex(CASES, r"^(p\d+)_")
    folds = kfold_splits(CASES, num_folds=3, seed=0, groups=groups)
    _assert_partition(folds, CASES)
    for f in folds:
        train_patients = {groups[c] for c in f["train"]}
        assert not train_patients & {groups[c] for c in f["val"]}


def test_regex_that_misses_a_case_is_an_error():
    with pytest.raises(VoxsegError, match="other"):
        groups_from_regex(["p01_a", "other"], r"^p\d+")


def test_group_file_json_and_csv(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps({"a": "x", "b": "x", "c": "y"}))
    (tmp_path / "g.csv").write_text("case,patient\na,x\nb,x\nc,y\n")
    assert groups_from_file(tmp_path / "g.json") == groups_from_file(tmp_path / "g.csv")


def test_too_few_groups():
    with pytest.raises(VoxsegError, match="fewer folds"):
        kfold_splits(["a", "b"], num_folds=3)


@pytest.mark.parametrize(
    ("folds", "message"),
    [
        ([{"train": ["b"], "val": ["a"]}, {"train": ["a"], "val": ["b", "zz"]}], "unknown"),
        ([{"train": ["b"], "val": ["a"]}, {"train": ["b"], "val": ["a"]}], "more than one"),
        ([{"train": ["b"], "val": ["a"]}, {"train": [], "val": ["a", "b"]}], "more than one"),
        ([{"train": ["a", "b"], "val": ["a"]}, {"train": ["a"], "val": ["b"]}], "both"),
        ([{"train": ["b"], "val": ["a"]}], "no fold's val"),
        ([{"train": ["b"]}], "keys"),
        ({"train": [], "val": []}, "list"),
    ],
)
def test_invalid_splits_are_refused(folds, message):
    with pytest.raises(VoxsegError, match=message):
        validate_splits(folds, ["a", "b", "c"][: 3 if message == "no fold's val" else 2])


def test_get_splits_writes_then_loads_user_edits(raw_dataset):
    folds = get_splits(raw_dataset, num_folds=3, seed=0)
    path = raw_dataset / "splits.json"
    assert json.loads(path.read_text()) == folds
    _assert_partition(folds, ["case_tr000", "case_tr001", "case_tr002"])
    # a user's edit (2 folds instead of 3) is kept, not regenerated
    edited = [
        {"train": ["case_tr002"], "val": ["case_tr000", "case_tr001"]},
        {"train": ["case_tr000", "case_tr001"], "val": ["case_tr002"]},
    ]
    path.write_text(json.dumps(edited))
    assert get_splits(raw_dataset, num_folds=3) == edited
    path.write_text(json.dumps([{"train": [], "val": ["case_tr000", "ghost"]}]))
    with pytest.raises(VoxsegError, match="ghost"):
        load_splits(path, ["case_tr000", "case_tr001", "case_tr002"])


def test_split_cli(raw_dataset):
    runner = CliRunner()
    result = runner.invoke(
        app, ["dataset", "split", str(raw_dataset), "-k", "3", "--group-regex", r"case_tr00(\d)"]
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads((raw_dataset / "splits.json").read_text())) == 3


def test_load_or_create_splits_for_training(raw_dataset):
    from voxseg.data import Dataset

    ds = Dataset(raw_dataset)
    folds = load_or_create_splits(ds, ["case_tr000", "case_tr002"], num_folds=3)
    assert folds == get_splits(raw_dataset)  # written once, then read back
    with pytest.raises(VoxsegError, match="case_zz"):
        load_or_create_splits(ds, ["case_zz"])
