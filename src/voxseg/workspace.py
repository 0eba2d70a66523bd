"""The workspace: one root holding raw data, preprocessed data, models, predictions, reports.

Layout (as ovseg's database)::

    $VOXSEG_HOME/
        raw/<dataset>/                      nnU-Net v2 raw format
        preprocessed/<dataset>/<plan>/<config>/   ($VOXSEG_PREPROCESSED relocates it)
        models/<dataset>/<plan>/<model>/fold_<k>/
        predictions/<dataset>/<plan>/<model>/<name>/
        reports/<dataset>/

The root is ``--home`` when given, else ``$VOXSEG_HOME``, else ``./voxseg_home``.
Nothing is read from the environment at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from voxseg.errors import VoxsegError
from voxseg.modelfolder import ModelLayout

DEFAULT_HOME = "voxseg_home"


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace; create folders lazily with :meth:`ensure`."""

    root: Path
    preprocessed_root: Path

    @classmethod
    def from_env(cls, home: str | os.PathLike[str] | None = None) -> Workspace:
        root = Path(home or os.environ.get("VOXSEG_HOME") or DEFAULT_HOME).expanduser()
        pre = os.environ.get("VOXSEG_PREPROCESSED")
        pre_root = Path(pre).expanduser() if pre else root / "preprocessed"
        return cls(root.absolute(), pre_root.absolute())

    @classmethod
    def around(cls, path: str | os.PathLike[str]) -> list[Workspace]:
        """The workspaces a model or preprocessed folder may belong to: the one whose
        ``models/`` (or ``preprocessed/``) folder holds ``path``, then ``$VOXSEG_HOME``'s."""
        parents = Path(path).absolute().parents
        homes = [p.parent for p in parents if p.name in ("models", "preprocessed")]
        return [cls.from_env(h) for h in homes] + [cls.from_env()]

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def ensure(self) -> Workspace:
        for p in (self.raw, self.preprocessed_root, self.models, self.predictions, self.reports):
            p.mkdir(parents=True, exist_ok=True)
        return self

    def dataset_dir(self, name_or_path: str | os.PathLike[str]) -> Path:
        """Resolve a dataset given by path (any folder with ``dataset.json``) or by name in
        ``raw/`` (exact name, or a unique ``DatasetXXX_Name`` match on ``Name`` or ``XXX``)."""
        p = Path(name_or_path).expanduser()
        if (p / "dataset.json").is_file():
            return p.absolute()
        name = str(name_or_path)
        candidate = self.raw / name
        if (candidate / "dataset.json").is_file():
            return candidate
        if self.raw.is_dir():
            matches = [
                d
                for d in sorted(self.raw.iterdir())
                if d.is_dir()
                and (d / "dataset.json").is_file()
                and _dataset_name_matches(d.name, name)
            ]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                found = ", ".join(m.name for m in matches)
                raise VoxsegError(f"dataset {name!r} is ambiguous in {self.raw}: {found}")
        raise VoxsegError(
            f"dataset {name!r} not found: neither a folder with dataset.json nor a dataset "
            f"in {self.raw}"
        )

    def dataset_name(self, name_or_path: str | os.PathLike[str]) -> str:
        return self.dataset_dir(name_or_path).name

    def preprocessed_dir(self, dataset: str, plan: str, config: str) -> Path:
        return self.preprocessed_root / dataset / plan / config

    def preprocessed_dataset_dir(self, dataset: str) -> Path:
        """``preprocessed/<dataset>/``: its ``fingerprint.json``, ``plans/<plan>.json`` and
        the ``<plan>/<config>/`` arrays."""
        return self.preprocessed_root / dataset

    def model_dir(self, dataset: str, plan: str, model: str, fold: int | str | None = None) -> Path:
        base = self.models / dataset / plan / model
        return base if fold is None else ModelLayout(base).fold_dir(fold)


def _dataset_name_matches(folder: str, query: str) -> bool:
    if folder == query:
        return True
    if folder.startswith("Dataset") and "_" in folder:
        number, _, short = folder[len("Dataset") :].partition("_")
        return query in (short, number, number.lstrip("0"))
    return False
