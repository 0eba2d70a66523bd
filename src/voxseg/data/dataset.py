"""The raw dataset format: nnU-Net v2's, read as-is.

::

    Dataset001_Name/
        dataset.json
        imagesTr/{case}_{XXXX}{file_ending}    XXXX = channel index, 4 digits
        labelsTr/{case}{file_ending}
        imagesTs/{case}_{XXXX}{file_ending}    optional
        labelsTs/{case}{file_ending}           optional (voxseg's held-out references)
        centerlines/{case}.vtp                 optional (vessel datasets)
        seeds/                                 optional (vessel tracing's seed files)
        splits.json                            optional (user-editable folds)

``dataset.json``: ``channel_names`` (index → name; the name picks the normalisation),
``labels`` (name → int, or name → list of ints for a region; ``background`` is 0; an
``ignore`` label must be the highest integer), ``numTraining``, ``file_ending``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from voxseg.config import read_json, write_json
from voxseg.errors import VoxsegError

#: The folders of the layout above (what a tool writing a dataset replaces on overwrite).
DATASET_FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "centerlines", "seeds")

SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".bmp", ".tif", ".tiff")


class DatasetInfo(BaseModel):
    """The contents of ``dataset.json`` (unknown keys are kept and written back)."""

    model_config = ConfigDict(extra="allow")

    channel_names: dict[str, str]
    labels: dict[str, int | list[int]]
    numTraining: int = Field(ge=0)
    file_ending: str = ".nii.gz"
    name: str | None = None
    description: str | None = None
    regions_class_order: list[int] | None = None

    @field_validator("channel_names")
    @classmethod
    def _channels_are_consecutive(cls, v: dict[str, str]) -> dict[str, str]:
        keys = sorted(int(k) for k in v)
        if keys != list(range(len(keys))) or not keys:
            raise ValueError(f"channel_names keys must be 0..N-1, got {list(v)}")
        return {str(k): v[str(k)] for k in keys}

    @field_validator("labels")
    @classmethod
    def _labels_have_background(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("background") != 0:
            raise ValueError("labels must contain 'background': 0")
        seen: dict[int, str] = {}
        for name, value in v.items():
            if isinstance(value, int) and not isinstance(value, bool):
                if value in seen:
                    raise ValueError(
                        f"labels {seen[value]!r} and {name!r} both have the value {value}; "
                        "give each label its own value (regions list several values instead)"
                    )
                seen[value] = name
        return v

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def channel_list(self) -> list[str]:
        return [self.channel_names[str(i)] for i in range(self.num_channels)]

    @property
    def has_regions(self) -> bool:
        return any(isinstance(v, list) for v in self.labels.values())

    @property
    def ignore_label(self) -> int | None:
        v = self.labels.get("ignore")
        return int(v) if isinstance(v, int) else None

    @property
    def label_values(self) -> list[int]:
        """Every integer that may appear in a label map (incl. background and ignore)."""
        values: set[int] = set()
        for v in self.labels.values():
            values.update(v if isinstance(v, list) else [v])
        return sorted(values)

    @property
    def foreground_labels(self) -> dict[str, int | list[int]]:
        """Labels (or regions) to segment: everything but background and ignore."""
        return {k: v for k, v in self.labels.items() if k not in ("background", "ignore")}

    @property
    def regions(self) -> list[list[int]] | None:
        """Region-based labels (any label a list of values): the values making up each region,
        one sigmoid output each; None for plain labels (softmax over the label values)."""
        if not self.has_regions:
            return None
        return [v if isinstance(v, list) else [v] for v in self.foreground_labels.values()]

    @property
    def region_values(self) -> list[int] | None:
        """The value each region paints in the label map, in painting order
        (``regions_class_order``, default 1..n); None for plain labels."""
        regions = self.regions
        if regions is None:
            return None
        return list(self.regions_class_order or range(1, len(regions) + 1))

    @property
    def num_outputs(self) -> int:
        """Network outputs: one per region, else one per value from background to the largest
        label (a value no label has still gets its output)."""
        regions = self.regions
        if regions is not None:
            return len(regions)
        return max(int(v) for v in self.foreground_labels.values()) + 1

    @property
    def class_names(self) -> list[str]:
        """A name per foreground output (``class_<i>`` for a value no label has)."""
        if self.has_regions:
            return list(self.foreground_labels)
        by_value = {int(v): k for k, v in self.foreground_labels.items()}
        return [by_value.get(i, f"class_{i}") for i in range(1, self.num_outputs)]


@dataclass
class Case:
    """One case: its image channel files and, when present, its label file."""

    case_id: str
    images: list[Path]
    label: Path | None = None
    extras: dict[str, Path] = field(default_factory=dict)


class Dataset:
    """A raw dataset folder in nnU-Net v2 format."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        info_path = self.root / "dataset.json"
        if not info_path.is_file():
            raise VoxsegError(f"{self.root}: no dataset.json (is this a raw dataset folder?)")
        from voxseg.config import load_model

        self.info: DatasetInfo = load_model(DatasetInfo, info_path)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def file_ending(self) -> str:
        return self.info.file_ending

    def image_path(self, case_id: str, channel: int, split: str = "Tr") -> Path:
        return self.root / f"images{split}" / f"{case_id}_{channel:04d}{self.file_ending}"

    def label_path(self, case_id: str, split: str = "Tr") -> Path:
        return self.root / f"labels{split}" / f"{case_id}{self.file_ending}"

    def case_ids(self, split: str = "Tr") -> list[str]:
        """Case identifiers found in ``images{split}`` (from files of channel 0000)."""
        folder = self.root / f"images{split}"
        if not folder.is_dir():
            return []
        suffix = f"_0000{self.file_ending}"
        return sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))

    def channel_files(self, case_id: str, split: str = "Tr") -> list[Path]:
        """The image files of a case: one per channel, or fewer multi-channel files (an RGB
        PNG holds channels R, G, B in ``_0000``, as in nnU-Net)."""
        expected = [self.image_path(case_id, c, split) for c in range(self.info.num_channels)]
        if all(p.is_file() for p in expected[1:]):
            return expected
        found = [p for p in expected if p.is_file()]
        return found if found else expected

    def cases(self, split: str = "Tr") -> list[Case]:
        out = []
        for cid in self.case_ids(split):
            label = self.label_path(cid, split)
            cl = self.root / "centerlines" / f"{cid}.vtp"
            extras = {"centerline": cl} if split == "Tr" and cl.is_file() else {}
            out.append(
                Case(
                    cid,
                    self.channel_files(cid, split),
                    label if label.is_file() else None,
                    extras,
                )
            )
        return out

    def case(self, case_id: str, split: str = "Tr") -> Case:
        for c in self.cases(split):
            if c.case_id == case_id:
                return c
        raise VoxsegError(f"{self.root}: no case {case_id!r} in images{split}/")

    def load_case(self, case: Case):
        """Read a case: ``(image [c, z, y, x] float32, label Image or None)``.

        All channels share the geometry of channel 0.
        """
        from voxseg.io import Image, read_image

        chans = [read_image(p) for p in case.images]
        arrays = []
        for ch in chans:
            a = ch.array
            arrays.extend(a if a.ndim == 4 else [a])
        first = chans[0]
        stacked = np.empty((len(arrays), *arrays[0].shape), dtype=np.float32)
        for i, a in enumerate(arrays):
            stacked[i] = a  # one cast-and-copy per channel (no stacked copy to cast again)
        image = Image(
            stacked,
            first.spacing,
            first.origin,
            first.direction,
        )
        label = read_image(case.label) if case.label is not None else None
        return image, label


def write_dataset_json(
    root: str | os.PathLike[str],
    channel_names: dict[int | str, str],
    labels: dict[str, int | list[int]],
    num_training: int,
    file_ending: str = ".nii.gz",
    **extra: Any,
) -> Path:
    """Write a valid ``dataset.json`` (validated before writing)."""
    info = DatasetInfo(
        channel_names={str(k): v for k, v in channel_names.items()},
        labels=labels,
        numTraining=num_training,
        file_ending=file_ending,
        **extra,
    )
    path = Path(root) / "dataset.json"
    write_json(path, info.model_dump(mode="json", exclude_none=True))
    return path


def read_dataset_info(root: str | os.PathLike[str]) -> DatasetInfo:
    return DatasetInfo.model_validate(read_json(Path(root) / "dataset.json"))
