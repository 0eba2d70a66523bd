"""Shared steps of the importers: the output folder, channel files, parallel cases."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from voxseg.config import write_json
from voxseg.data.check import CACHE_NAME, unique_values
from voxseg.data.dataset import DATASET_FOLDERS
from voxseg.errors import VoxsegError
from voxseg.io import Image, write_image
from voxseg.io.formats import VOLUME_ENDINGS, file_ending

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Written by an import command once its output is complete and checked: the request it
#: answered (importer, sources, options). The same command run again finds it and has
#: nothing to do, so an import killed while it was exiting still reruns with exit 0.
IMPORT_STAMP = ".voxseg_import.json"

#: What an importer writes into its output folder (removed by ``overwrite=True``).
OUTPUT_ENTRIES = ("dataset.json", *DATASET_FOLDERS, "splits.json", CACHE_NAME, IMPORT_STAMP)


#: Marks an output folder while an importer writes it (removed by :func:`finish_output`): a
#: folder that still has it holds an interrupted import, which the next import replaces.
UNFINISHED = ".voxseg_import_unfinished"


def prepare_output(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """Create ``out`` and mark it unfinished; refuse a folder that already holds a dataset
    unless ``overwrite`` or the dataset is what an interrupted import left (then replace it)."""
    out = Path(out).absolute()
    present = [n for n in OUTPUT_ENTRIES if (out / n).exists()]
    if present and (out / UNFINISHED).exists() and not overwrite:
        log.warning("%s: an earlier import into this folder did not finish; importing again", out)
        overwrite = True
    if present and not overwrite:
        raise VoxsegError(
            f"{out}: already holds a dataset ({', '.join(present)}); "
            "use --overwrite to replace it or choose another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / UNFINISHED).touch()
    for n in present:
        p = out / n
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return out


def finish_output(out: Path) -> None:
    """Mark an importer's output folder finished (the last step of every importer)."""
    (out / UNFINISHED).unlink(missing_ok=True)


@contextmanager
def unfinished_while(out: Path) -> Iterator[None]:
    """Keep ``out`` marked unfinished while the block runs (the import command's closing
    check): an import stopped there (Ctrl-C, a kill) is redone by the next one instead of
    being refused as a finished dataset; the mark stays when the block raises."""
    (Path(out) / UNFINISHED).touch()
    yield
    finish_output(Path(out))


def import_request(kind: str, sources: Sequence[Path], options: dict[str, Any]) -> dict[str, Any]:
    """What an import command was asked: the importer, its options and each source folder
    with a digest of its file listing (relative names and sizes), so a source that gained,
    lost or changed a file asks for a new import."""
    listing = []
    for src in sources:
        src = Path(src).absolute()
        digest = hashlib.sha256()
        if src.is_dir():
            for dirpath, dirnames, filenames in os.walk(src):
                dirnames.sort()
                for name in sorted(filenames):
                    p = Path(dirpath) / name
                    try:
                        size = p.stat().st_size
                    except OSError:
                        continue
                    digest.update(f"{p.relative_to(src).as_posix()}\t{size}\n".encode())
        listing.append({"path": str(src), "files": digest.hexdigest()})
    return {
        "importer": kind,
        "sources": listing,
        "options": json.loads(json.dumps(options, default=str)),
    }


def already_imported(out: str | os.PathLike[str], request: dict[str, Any]) -> bool:
    """Whether ``out`` holds a finished, checked import of exactly ``request``."""
    out = Path(out).absolute()
    stamp = out / IMPORT_STAMP
    if (out / UNFINISHED).exists() or not stamp.is_file():
        return False
    try:
        return json.loads(stamp.read_text(encoding="utf-8")) == request
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def write_import_stamp(out: str | os.PathLike[str], request: dict[str, Any]) -> None:
    """Record that ``out`` answers ``request`` (while the folder is still marked unfinished)."""
    write_json(Path(out) / IMPORT_STAMP, request)


def write_channels(
    image: Image, folder: Path, case_id: str, ending: str = ".nii.gz", fast_gzip: bool = False
) -> int:
    """Write each channel of ``image`` as ``{case}_{XXXX}{ending}``; return the count
    (``fast_gzip``: see :func:`voxseg.io.write_image`)."""
    for c in range(image.num_channels):
        write_image(image.channel(c), folder / f"{case_id}_{c:04d}{ending}", fast_gzip=fast_gzip)
    return image.num_channels


def as_label(image: Image, path: Path) -> Image:
    """An integer label map (float files with whole values are cast; others refused)."""
    arr = image.array
    if image.num_channels != 1 or arr.ndim != 3:
        raise VoxsegError(f"{path}: a label map has one channel, this file has {arr.shape[0]}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise VoxsegError(f"{path}: label values are not whole numbers")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise VoxsegError(f"{path}: label pixel type {arr.dtype} is not numeric")
    values = unique_values(arr)
    if values and values[0] < 0:
        raise VoxsegError(f"{path}: negative label value {values[0]}")
    dtype = np.uint8 if not values or values[-1] < 256 else np.uint16
    return image.with_array(arr.astype(dtype, copy=False))


def case_id_of(path: Path) -> str:
    """File name without its image ending (``.nii.gz`` counts as one)."""
    return path.name[: -len(file_ending(path))]


def volume_files(folder: Path) -> list[Path]:
    """Image volumes in ``folder`` (hidden files such as macOS ``._x.nii.gz`` skipped)."""
    if not folder.is_dir():
        raise VoxsegError(f"{folder}: folder not found")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and file_ending(p) in VOLUME_ENDINGS
    )


def run_cases(
    func: Callable[..., T],
    jobs: Sequence[tuple[Any, ...]],
    num_processes: int | None,
    description: str,
) -> list[T]:
    """``func(*job)`` for every job, in a process pool with a progress bar; order kept."""
    from voxseg.progress import ProgressReporter, note_step
    from voxseg.workers import worker_pool

    workers = max(1, min(num_processes or min(8, os.cpu_count() or 1), len(jobs) or 1))
    out: list[T] = []
    note_step(f"{description} 0/{len(jobs)}")
    with ProgressReporter(description, len(jobs), log, transient=True) as bar:
        if workers == 1:
            for job in jobs:
                out.append(func(*job))
                bar.item(f"{description} {len(out)}/{len(jobs)}")
            return out
        with worker_pool(workers) as pool:
            for result in pool.map(_star, [(func, job) for job in jobs]):
                out.append(result)
                bar.item(f"{description} {len(out)}/{len(jobs)}")
    return out


def _star(item: tuple[Callable[..., T], Iterable[Any]]) -> T:
    func, job = item
    return func(*job)


def label_names(values: Iterable[int], names: dict[str, int] | None) -> dict[str, int]:
    """``names`` if given (value 0 named ``background``), else ``background`` + ``label_<v>``."""
    if names:
        return {"background": 0, **{k: int(v) for k, v in names.items() if int(v) != 0}}
    return {"background": 0, **{f"label_{v}": int(v) for v in sorted(set(values)) if v != 0}}
