"""``voxseg dataset``: check, import, export and split raw datasets."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from voxseg.cli._app import HomeOption, app, console, err_console, user_errors
from voxseg.workspace import Workspace

dataset_app = typer.Typer(
    help="Check, import, export and split raw datasets (nnU-Net v2 raw format).",
    no_args_is_help=True,
)
import_app = typer.Typer(
    help="Convert a dataset from another layout into a voxseg/nnU-Net raw dataset.",
    no_args_is_help=True,
)
dataset_app.add_typer(import_app, name="import")
app.add_typer(dataset_app, name="dataset")

DatasetArg = typer.Argument(..., help="Dataset folder, or its name in the workspace raw/.")
ProcessesOption = typer.Option(
    None, "--num-processes", "-p", help="Worker processes (default: CPUs, at most 8)."
)
OverwriteOption = typer.Option(False, "--overwrite", help="Replace an existing output dataset.")


def _resolve(dataset: str, home: str | None) -> Path:
    return Workspace.from_env(home).dataset_dir(dataset)


def _print_report(report) -> None:
    for p in report.errors:
        err_console.print(f"[red]error:[/] {p}", highlight=False, soft_wrap=True)
    for p in report.warnings:
        err_console.print(f"[yellow]warning:[/] {p}", highlight=False, soft_wrap=True)
    cases = ", ".join(f"{n} in images{s}" for s, n in report.num_cases.items())
    summary = (
        f"{report.root.name}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)"
        + (f" ({cases})" if cases else "")
    )
    console.print(("[green]" if report.ok else "[red]") + summary + "[/]", highlight=False)


def _import_request(kind: str, sources: list[Path], out: Path, overwrite: bool, **options):
    """The request of an import command, or None when ``out`` already holds its finished,
    checked result (said on the console; the command then has nothing to do)."""
    from voxseg.data.importers import already_imported, import_request

    request = import_request(kind, sources, options)
    if not overwrite and already_imported(out, request):
        console.print(
            f"{Path(out).absolute()}: already imported from the same source with the same "
            "options; nothing to do (--overwrite imports again)",
            highlight=False,
            soft_wrap=True,
        )
        return None
    return request


def _finish_import(out: Path, num_processes: int | None, request) -> None:
    from voxseg.data.check import check_dataset
    from voxseg.data.importers import unfinished_while, write_import_stamp

    with unfinished_while(out):  # the import is done once its check is
        report = check_dataset(out, num_processes=num_processes)
        if report.ok:
            write_import_stamp(out, request)
    _print_report(report)
    if not report.ok:
        sys.exit(1)


@dataset_app.command("check")
@user_errors
def check(
    dataset: str = DatasetArg,
    num_processes: int | None = ProcessesOption,
    headers_only: bool = typer.Option(
        False, "--headers-only", help="Check names and geometry only (no voxel data read)."
    ),
    home: str | None = HomeOption,
) -> None:
    """Check a raw dataset and print every problem; exit 1 when there are errors."""
    from voxseg.data.check import check_dataset

    folder = Path(dataset)  # a folder is checked even without dataset.json
    report = check_dataset(
        folder if folder.is_dir() else _resolve(dataset, home),
        num_processes=num_processes,
        read_voxels=not headers_only,
    )
    _print_report(report)
    if not report.ok:
        sys.exit(1)


@dataset_app.command("export-nnunet")
@user_errors
def export_nnunet(
    dataset: str = DatasetArg,
    out: Path = typer.Argument(..., help="Folder to write DatasetXXX_Name into (nnUNet_raw)."),
    dataset_id: int = typer.Option(..., "--id", help="nnU-Net dataset number (1-999)."),
    name: str | None = typer.Option(None, "--name", help="Name part (default: from DATASET)."),
    overwrite: bool = OverwriteOption,
    num_processes: int | None = ProcessesOption,
    home: str | None = HomeOption,
) -> None:
    """Write the dataset as nnU-Net v2 raw data (Dataset{ID}_{Name})."""
    from voxseg.data.export import export_nnunet as run

    target = run(
        _resolve(dataset, home),
        out,
        dataset_id,
        name=name,
        overwrite=overwrite,
        num_processes=num_processes,
    )
    console.print(f"wrote {target}", highlight=False)


@dataset_app.command("split")
@user_errors
def split(
    dataset: str = DatasetArg,
    folds: int = typer.Option(5, "--folds", "-k", help="Number of folds."),
    seed: int = typer.Option(12345, "--seed", help="Random seed of the shuffle."),
    group_regex: str | None = typer.Option(
        None,
        "--group-regex",
        help="Regex on the case id; its first group (or whole match) is the patient key.",
    ),
    group_file: Path | None = typer.Option(
        None, "--group-file", help="JSON {case: group} or CSV 'case,group' lines."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing splits.json."),
    home: str | None = HomeOption,
) -> None:
    """Write splits.json (k folds, grouped by patient if asked); an existing one is checked."""
    from voxseg.data.splits import get_splits

    root = _resolve(dataset, home)
    folds_ = get_splits(
        root,
        num_folds=folds,
        seed=seed,
        group_regex=group_regex,
        group_file=group_file,
        overwrite=force,
    )
    for k, fold in enumerate(folds_):
        console.print(f"fold {k}: {len(fold['train'])} train, {len(fold['val'])} val")
    console.print(f"splits: {root / 'splits.json'}", highlight=False)


@import_app.command("msd")
@user_errors
def import_msd(
    task_folder: Path = typer.Argument(..., help="MSD TaskXX_Name folder (with dataset.json)."),
    out: Path = typer.Argument(..., help="Output raw dataset folder."),
    overwrite: bool = OverwriteOption,
    num_processes: int | None = ProcessesOption,
) -> None:
    """Medical Segmentation Decathlon task → raw dataset (4D images split into channels)."""
    from voxseg.data.importers import import_msd as run

    request = _import_request("msd", [task_folder], out, overwrite)
    if request is None:
        return
    out = run(task_folder, out, overwrite=overwrite, num_processes=num_processes)
    _finish_import(out, None, request)


@import_app.command("ovseg")
@user_errors
def import_ovseg(
    raw: Path = typer.Argument(..., help="ovseg raw_data/<name> folder with images/ and labels/."),
    out: Path = typer.Argument(..., help="Output raw dataset folder."),
    channel_names: list[str] | None = typer.Option(
        None, "--channel-names", help="Channel name (normalisation), once per channel."
    ),
    labels: list[str] | None = typer.Option(
        None, "--labels", help="name=value, once per label (default: inferred from values)."
    ),
    overwrite: bool = OverwriteOption,
    num_processes: int | None = ProcessesOption,
) -> None:
    """ovseg images/ + labels/ → raw dataset (4D images split into channels)."""
    from voxseg.data.importers import import_ovseg as run

    options = {"channel_names": channel_names or None, "labels": _parse_labels(labels)}
    request = _import_request("ovseg", [raw], out, overwrite, **options)
    if request is None:
        return
    out = run(raw, out, **options, overwrite=overwrite, num_processes=num_processes)
    _finish_import(out, None, request)


@import_app.command("folder2d")
@user_errors
def import_folder2d(
    images: Path = typer.Argument(..., help="Folder of 2D images (png, bmp, tif, jpg)."),
    masks: Path = typer.Argument(..., help="Folder of masks (png, bmp, tif), same file stems."),
    out: Path = typer.Argument(..., help="Output raw dataset folder."),
    fmt: str = typer.Option("nii.gz", "--format", help="nii.gz (pseudo-3D, z spacing 999) or png."),
    test_fraction: float = typer.Option(
        0.0, "--test-fraction", help="Share of cases held out into imagesTs/labelsTs."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the test hold-out."),
    label_names: list[str] | None = typer.Option(
        None, "--label-names", help="Name of each foreground class in value order."
    ),
    overwrite: bool = OverwriteOption,
) -> None:
    """2D images + masks → raw dataset; mask values map to consecutive labels 0..K."""
    from voxseg.data.importers import import_folder2d as run

    options = {
        "file_format": fmt,
        "test_fraction": test_fraction,
        "seed": seed,
        "label_names": label_names or None,
    }
    request = _import_request("folder2d", [images, masks], out, overwrite, **options)
    if request is None:
        return
    out, mapping = run(images, masks, out, **options, overwrite=overwrite)
    shown = ", ".join(f"{k} → {v}" for k, v in mapping.items())
    console.print(f"mask values mapped to labels: {shown}", highlight=False)
    _finish_import(out, None, request)


@import_app.command("seqseg")
@user_errors
def import_seqseg(
    data: Path = typer.Argument(..., help="SeqSeg folder with images/, truths/, centerlines/."),
    out: Path = typer.Argument(..., help="Output raw dataset folder."),
    channel_name: str = typer.Option("CT", "--channel-name", help="Image channel name."),
    label_name: str = typer.Option("vessel", "--label-name", help="Name of the vessel label."),
    check_alignment: bool = typer.Option(
        True,
        "--check-alignment/--no-check-alignment",
        help="Refuse centerlines lying mostly outside their vessel mask.",
    ),
    overwrite: bool = OverwriteOption,
    num_processes: int | None = ProcessesOption,
) -> None:
    """SeqSeg images/ + truths/ + centerlines/ (+ seeds/) → raw dataset with centerlines."""
    from voxseg.data.importers import import_seqseg as run

    options = {
        "channel_name": channel_name,
        "label_name": label_name,
        "check_alignment": check_alignment,
    }
    request = _import_request("seqseg", [data], out, overwrite, **options)
    if request is None:
        return
    out = run(data, out, **options, overwrite=overwrite, num_processes=num_processes)
    _finish_import(out, None, request)


@import_app.command("dicom")
@user_errors
def import_dicom(
    src: Path = typer.Argument(..., help="Folder of DICOM files (any names, any nesting)."),
    out: Path = typer.Argument(..., help="Output raw dataset folder."),
    roi: list[str] = typer.Option(
        ...,
        "--roi",
        help='label="Pattern|Alias*|re:regex", once per label in value order (ROI/segment '
        "names: case-insensitive globs, or regexes after re:).",
    ),
    modality: str | None = typer.Option(
        None, "--modality", help="Image modality of the labelled series (default: most common)."
    ),
    channel: list[str] | None = typer.Option(
        None,
        "--channel",
        help="NAME=SELECTOR per channel, the first carrying the labels (selectors: "
        "modality:MR, desc:*t2*, seq:*tse*, uid:1.2.3, or a bare description glob).",
    ),
    overlap: str = typer.Option(
        "paint", "--overlap", help="paint (a later --roi wins where labels overlap) or error."
    ),
    allow_missing: bool = typer.Option(
        False, "--allow-missing", help="Keep cases missing a label (it stays background)."
    ),
    resample_uneven: bool = typer.Option(
        False, "--resample-uneven", help="Interpolate series with uneven or missing slices."
    ),
    index: Path | None = typer.Option(
        None, "--index", help="Header index cache (default: OUT/dicom_index.json)."
    ),
    series_uid: list[str] | None = typer.Option(
        None,
        "--series-uid",
        help="Import only this labelled image series (SeriesInstanceUID; repeatable).",
    ),
    overwrite: bool = OverwriteOption,
    num_processes: int | None = ProcessesOption,
) -> None:
    """DICOM archive with RTSTRUCT or DICOM-SEG (PACS/TPS export) → raw dataset."""
    from voxseg.data.importers import import_dicom as run

    options = {
        "modality": modality,
        "channels": channel or (),
        "overlap": overlap,
        "allow_missing": allow_missing,
        "resample_uneven": resample_uneven,
        "index": index,
        "series_uids": series_uid or (),
    }
    request = _import_request("dicom", [src], out, overwrite, roi=roi, **options)
    if request is None:
        return
    report = run(src, out, roi, **options, overwrite=overwrite, num_processes=num_processes)
    for w in report.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    for d in report.skipped:
        err_console.print(
            f"[yellow]skipped[/] {d['item']}: {d['reason']}", highlight=False, soft_wrap=True
        )
    for d in report.failed:
        err_console.print(
            f"[red]failed[/] {d['item']}: {d['reason']}", highlight=False, soft_wrap=True
        )
    if report.unmatched_rois:
        shown = ", ".join(f"{k} ({v})" for k, v in report.unmatched_rois.items())
        console.print(f"ROIs matching no --roi: {shown}", highlight=False, soft_wrap=True)
    console.print(
        f"imported {len(report.cases)} case(s), skipped {len(report.skipped)}, "
        f"failed {len(report.failed)}; report: {report.out / 'import_report.json'}, "
        f"patient identifiers: {report.out / 'case_map.csv'}",
        highlight=False,
        soft_wrap=True,
    )
    _finish_import(report.out, num_processes, request)
    if not report.ok:
        sys.exit(1)


def _parse_labels(items: list[str] | None) -> dict[str, int] | None:
    from voxseg.errors import VoxsegError

    if not items:
        return None
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = int(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise VoxsegError(f"--labels {item!r} is not of the form name=integer")
    return out
