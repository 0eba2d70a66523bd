"""Cross-validation splits: seeded k-fold, grouped by case or by patient.

``splits.json`` uses nnU-Net's format — a list of ``{"train": [...], "val": [...]}``, one
per fold — and lives in the raw dataset folder. It is user-editable: when present it is
loaded and validated instead of being regenerated.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from voxseg.config import read_json, write_json
from voxseg.data.dataset import Dataset
from voxseg.errors import VoxsegError

SPLITS_NAME = "splits.json"
Fold = dict[str, list[str]]


def kfold_splits(
    case_ids: Sequence[str],
    num_folds: int = 5,
    seed: int = 12345,
    groups: Mapping[str, str] | None = None,
) -> list[Fold]:
    """Split cases into ``num_folds`` folds; cases of one group always share a fold.

    Groups are shuffled with ``seed`` and dealt, largest first, to the fold with the fewest
    validation cases, so folds are as even as the group sizes allow.
    """
    case_ids = sorted(set(case_ids))
    groups = dict(groups) if groups is not None else {c: c for c in case_ids}
    missing = [c for c in case_ids if c not in groups]
    if missing:
        raise VoxsegError(f"no group for cases {_short(missing)}")
    members: dict[str, list[str]] = defaultdict(list)
    for c in case_ids:
        members[groups[c]].append(c)
    if num_folds < 2:
        raise VoxsegError(f"need at least 2 folds, got {num_folds}")
    if len(members) < num_folds:
        raise VoxsegError(
            f"cannot make {num_folds} folds from {len(members)} group(s) of {len(case_ids)} "
            "case(s); use fewer folds"
        )
    rng = np.random.default_rng(seed)
    keys = sorted(members)
    order = [keys[i] for i in rng.permutation(len(keys))]
    order.sort(key=lambda g: -len(members[g]))  # stable: shuffled within equal sizes
    val: list[list[str]] = [[] for _ in range(num_folds)]
    for g in order:
        k = min(range(num_folds), key=lambda f: (len(val[f]), f))
        val[k].extend(members[g])
    return [{"train": sorted(set(case_ids) - set(v)), "val": sorted(v)} for v in val]


def groups_from_regex(case_ids: Sequence[str], pattern: str) -> dict[str, str]:
    """Patient key of each case: the first group of ``pattern`` (or its whole match)."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise VoxsegError(f"group regex {pattern!r} is invalid: {exc}") from exc
    out, unmatched = {}, []
    for c in case_ids:
        m = rx.search(c)
        if m is None:
            unmatched.append(c)
        else:
            out[c] = m.group(1) if rx.groups else m.group(0)
    if unmatched:
        raise VoxsegError(f"group regex {pattern!r} matches no part of cases {_short(unmatched)}")
    return out


def groups_from_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read ``{case: group}`` from JSON, or from CSV lines ``case,group`` (header optional)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = read_json(path)
        if not isinstance(data, dict):
            raise VoxsegError(f"{path}: must map case id → group")
        return {str(k): str(v) for k, v in data.items()}
    if not path.is_file():
        raise VoxsegError(f"{path}: file not found")
    out = {}
    with path.open(newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise VoxsegError(f"{path}: line {i + 1} is not 'case,group'")
            if i == 0 and row[0].strip().lower() in ("case", "case_id", "id"):
                continue
            out[row[0].strip()] = row[1].strip()
    return out


def validate_splits(folds: object, case_ids: Sequence[str], source: str = SPLITS_NAME) -> None:
    """Raise a clear error unless ``folds`` is a valid split of exactly ``case_ids``."""
    if not isinstance(folds, list) or not folds:
        raise VoxsegError(f"{source}: must be a non-empty list of {{'train': [...], 'val': [...]}}")
    known = set(case_ids)
    problems = []
    val_count: Counter[str] = Counter()
    for k, fold in enumerate(folds):
        if not isinstance(fold, dict) or set(fold) != {"train", "val"}:
            problems.append(f"fold {k} must have exactly the keys 'train' and 'val'")
            continue
        train, val = fold["train"], fold["val"]
        if not all(
            isinstance(x, list) and all(isinstance(c, str) for c in x) for x in (train, val)
        ):
            problems.append(f"fold {k}: 'train' and 'val' must be lists of case ids")
            continue
        unknown = sorted((set(train) | set(val)) - known)
        if unknown:
            problems.append(f"fold {k}: unknown case ids {_short(unknown)}")
        both = sorted(set(train) & set(val))
        if both:
            problems.append(f"fold {k}: cases in both train and val {_short(both)}")
        if not val:
            problems.append(f"fold {k}: empty val")
        val_count.update(val)
    if problems:
        raise VoxsegError(f"{source}: invalid splits:\n" + "\n".join(problems))
    never = sorted(known - set(val_count))
    twice = sorted(c for c, n in val_count.items() if n > 1)
    if never:
        problems.append(f"cases in no fold's val {_short(never)}")
    if twice:
        problems.append(f"cases in more than one fold's val {_short(twice)}")
    if problems:
        raise VoxsegError(
            f"{source}: every case must be in exactly one fold's val:\n" + "\n".join(problems)
        )


def load_splits(path: str | os.PathLike[str], case_ids: Sequence[str]) -> list[Fold]:
    """Read and validate a ``splits.json`` against the dataset's training cases."""
    folds = read_json(path)
    validate_splits(folds, case_ids, str(path))
    return folds


def get_splits(
    root: str | os.PathLike[str],
    *,
    num_folds: int = 5,
    seed: int = 12345,
    group_regex: str | None = None,
    group_file: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> list[Fold]:
    """Load ``root/splits.json`` if present (validated), else create and write it."""
    root = Path(root)
    case_ids = Dataset(root).case_ids("Tr")
    if not case_ids:
        raise VoxsegError(f"{root}: no training cases in imagesTr/")
    path = root / SPLITS_NAME
    if path.is_file() and not overwrite:
        return load_splits(path, case_ids)
    if group_regex and group_file:
        raise VoxsegError("give either a group regex or a group file, not both")
    groups = None
    if group_regex:
        groups = groups_from_regex(case_ids, group_regex)
    elif group_file:
        groups = groups_from_file(group_file)
    folds = kfold_splits(case_ids, num_folds, seed, groups)
    write_json(path, folds)
    return folds


def load_or_create_splits(
    dataset: Dataset,
    case_ids: Sequence[str] | None = None,
    *,
    num_folds: int = 5,
    seed: int = 12345,
) -> list[Fold]:
    """The dataset's folds (:func:`get_splits`), over all its training cases.

    ``case_ids`` (e.g. the cases preprocessed so far) must all be training cases.
    """
    folds = get_splits(dataset.root, num_folds=num_folds, seed=seed)
    if case_ids is not None:
        known = {c for f in folds for c in f["val"]}
        unknown = sorted(set(case_ids) - known)
        if unknown:
            raise VoxsegError(
                f"{dataset.root / SPLITS_NAME}: cases {_short(unknown)} are in no fold; "
                "regenerate it with 'voxseg dataset split --force'"
            )
    return folds


def _short(values: Sequence[str], n: int = 10) -> str:
    shown = ", ".join(values[:n])
    return f"[{shown}{', ...' if len(values) > n else ''}]"
