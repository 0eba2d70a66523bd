"""``write_report``: one self-contained HTML report folder for a dataset, model or evaluation.

::

    report/
        index.html          every section; plots are inline SVG
        cases/<case>.html   one slice viewer per case (its data inline)
        assets/             the report's own CSS and JavaScript (no network, no CDN)
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from importlib import resources
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from voxseg.config import atomic_write_text
from voxseg.errors import VoxsegError
from voxseg.report import sections
from voxseg.report.cases import CaseSources, build_case_view
from voxseg.report.html import Markup, fmt, kv_table, label_color, page, script_json, table
from voxseg.report.quality import label_qc_table, quality_section, validation_quality_section
from voxseg.report.sources import DatasetSource, EvalCase, Evaluation, Sources, collect

ASSETS = ("report.css", "report.js", "viewer.js")
#: Intensity values drawn per case and channel for the dataset's histograms.
HISTOGRAM_SAMPLES = 20_000
#: Foreground intensities sampled when the report computes a missing fingerprint.
FINGERPRINT_SAMPLES = 1_000_000


@dataclass
class CaseJob:
    """One case page to write: its files and what the page states about it."""

    slug: str
    sources: CaseSources
    title: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    fold: str = ""
    prev: str | None = None
    next: str | None = None
    #: the case's ``voxseg predict --qc`` record (:class:`voxseg.evaluation.qc.CaseQC`)
    qc: Any = None


@dataclass
class PageContext:
    """What every case page shares."""

    out: Path
    report_title: str
    labels: dict[str, Any]
    is_ct: bool
    channel: str
    samples: int


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _image_files(case_id: str, reference: Path | None, ds: DatasetSource | None) -> list[Path]:
    """The channel files of a case: beside the references (``labelsXx`` → ``imagesXx``) or in
    the dataset's ``imagesTr``/``imagesTs``."""
    from voxseg.io import file_ending

    folders: list[tuple[Path, str]] = []
    if reference is not None and reference.parent.name.startswith("labels"):
        split = reference.parent.name[len("labels") :]
        folders.append((reference.parent.parent / f"images{split}", file_ending(reference)))
    if ds is not None and ds.raw is not None:
        ending = ds.info.get("file_ending", ".nii.gz")
        folders += [(ds.raw / "imagesTr", ending), (ds.raw / "imagesTs", ending)]
    for folder, ending in folders:
        files = sorted(folder.glob(f"{glob_escape(case_id)}_[0-9][0-9][0-9][0-9]{ending}"))
        if files:
            return files
    return []


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _render_case(job: CaseJob, ctx: PageContext) -> tuple[str, int, list[np.ndarray]]:
    """Read one case, write its page; return (slug, bytes of data, intensity samples)."""
    view = build_case_view(job.sources, ctx.is_ct, samples=ctx.samples)
    labels = [
        {"name": n, "value": v, "color": label_color(v)}
        for n, v in sections.foreground_labels(ctx.labels).items()
        if isinstance(v, int)
    ]
    data = {**view.data, "labels": labels, "ct": ctx.is_ct, "channel": ctx.channel}
    shape = data.get("shape", [])
    facts: list[tuple[str, Any]] = [
        ("case", job.sources.case_id),
        ("image", ", ".join(p.name for p in job.sources.image) or "not found"),
        ("reference", job.sources.reference.name if job.sources.reference else "none"),
        ("prediction", job.sources.prediction.name if job.sources.prediction else "none"),
        (
            "original grid",
            " × ".join(map(str, data["original_shape"]))
            + " voxels of "
            + " × ".join(fmt(v) for v in data["original_spacing"])
            + (" mm (z × y × x, LPS)" if data["original_shape"][0] > 1 else " mm (as stored)"),
        ),
        (
            "shown",
            " × ".join(map(str, shape))
            + " voxels: the labelled box plus a margin, every "
            + " × ".join(map(str, data["strides"]))
            + " voxel(s)"
            + f"; {view.bytes / 1e6:.2f} MB of data",
        ),
    ]
    if job.fold:
        facts.insert(1, ("validation fold", job.fold))
    if job.qc is not None and job.qc.members > 1:
        facts.append(("member agreement", f"{fmt(job.qc.agreement)} ({job.qc.members} members)"))
    metric_rows = [
        [
            name,
            m.get("dice"),
            m.get("hd95"),
            m.get("nsd"),
            m.get("precision"),
            m.get("recall"),
            m.get("volume_ref", math.nan) / 1000,
            m.get("volume_pred", math.nan) / 1000,
        ]
        for name, m in job.metrics.items()
    ]
    nav = ["<a href='../index.html'>← report</a>"]
    if job.prev:
        nav.append(f"<a href='{escape(job.prev)}.html' rel='prev'>previous case</a>")
    if job.next:
        nav.append(f"<a href='{escape(job.next)}.html' rel='next'>next case</a>")
    body = (
        f"<nav class='top'>{' · '.join(nav)}</nav>"
        f"<h1>{escape(job.sources.case_id)}</h1><p class='sub'>{escape(job.title)}</p>"
        "<div class='case'><div id='viewer' class='viewer'></div><div class='facts'>"
        + kv_table(facts)
        + (
            table(
                ["label", "Dice", "HD95 (mm)", "NSD", "precision", "recall", "ref. ml", "pred. ml"],
                metric_rows,
            )
            if metric_rows
            else ""
        )
        + (
            "<h3>Quality control</h3>"
            + (f"<p>{escape('; '.join(job.qc.flags))}</p>" if job.qc.flags else "")
            + label_qc_table(job.qc)
            if job.qc is not None
            else ""
        )
        + "</div></div>"
        f"<script>window.VOXSEG_CASE={script_json(_finite(data))};</script>"
    )
    html = page(
        f"{job.sources.case_id} · {ctx.report_title}", body, root="../", scripts=["viewer.js"]
    )
    atomic_write_text(ctx.out / "cases" / f"{job.slug}.html", html)
    return job.slug, view.bytes, view.samples


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _is_ct(info: dict[str, Any]) -> bool:
    channels = info.get("channel_names", {})
    first = channels.get("0", "") if isinstance(channels, dict) else ""
    return str(first).strip().lower() == "ct"


def _case_jobs(src: Sources) -> list[tuple[Evaluation | None, list[CaseJob]]]:
    """The case pages: every evaluated case (worst first), or a dataset's labelled cases."""
    groups: list[tuple[Evaluation | None, list[CaseJob]]] = []
    multi = len(src.evaluations) > 1
    for i, ev in enumerate(src.evaluations):
        order = sorted(ev.cases, key=_worst_first)
        jobs = [
            CaseJob(
                _slug(f"{i}_{c.case_id}" if multi else c.case_id),
                CaseSources(
                    c.case_id,
                    _image_files(c.case_id, c.reference, src.dataset),
                    c.reference,
                    c.prediction,
                ),
                ev.title,
                c.metrics,
                c.fold,
            )
            for c in order
        ]
        if ev.quality is not None:  # a model's validation QC
            records = {q.case_id: q for q in ev.quality.cases}
            for j in jobs:
                j.qc = records.get(j.sources.case_id)
        groups.append((ev, jobs))
    quality = src.quality
    if quality is not None:
        records = {q.case_id: q for q in quality.cases}
        for _, jobs in groups:
            for j in jobs:
                j.qc = records.get(j.sources.case_id)
        if not src.evaluations:
            from voxseg.evaluation.qc import worst_first

            jobs = [
                CaseJob(
                    _slug(q.case_id),
                    CaseSources(q.case_id, quality.images(q), None, quality.prediction(q)),
                    "prediction without a reference (quality control)",
                    qc=q,
                )
                for q in sorted(quality.cases, key=worst_first)
            ]
            groups.append((None, jobs))
    if not src.evaluations and src.kind == "dataset" and src.dataset and src.dataset.raw:
        from voxseg.data import Dataset

        ds = Dataset(src.dataset.raw)
        jobs = [
            CaseJob(
                _slug(c.case_id),
                CaseSources(c.case_id, list(c.images), c.label, None),
                f"dataset {ds.name}: training case",
            )
            for c in ds.cases("Tr")
        ]
        groups.append((None, jobs))
    for _, jobs in groups:
        for a, b in zip(jobs, jobs[1:], strict=False):
            a.next, b.prev = b.slug, a.slug
    return groups


def _worst_first(c: EvalCase) -> tuple[float, str]:
    d = sections.case_mean_dice(c.metrics)
    return (math.inf if math.isnan(d) else d, c.case_id)


def _copy_assets(out: Path) -> None:
    folder = out / "assets"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ASSETS:
        text = resources.files("voxseg.report").joinpath("assets", name).read_text(encoding="utf-8")
        atomic_write_text(folder / name, text)


def write_report(
    target: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    num_processes: int | None = None,
    cases: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write ``out/index.html`` (and its case pages and assets) for ``target``: a dataset,
    a model folder (folds, pipeline stages, auto models) or an evaluation folder. Reads what
    the steps wrote; never trains or predicts. Returns the index page's path.

    ``cases=False`` leaves out the per-case slice viewers (and the images they read).
    ``num_processes`` case pages are read and written in parallel (default: up to 4 CPUs).

    >>> write_report("voxseg_home/models/Dataset001_Organs/default/3d_fullres", "report")
    PosixPath('report/index.html')
    """
    tic = time.perf_counter()
    say = log or (lambda _text: None)
    src = collect(target)
    out = Path(out)
    if out.resolve() == src.target.resolve():
        raise VoxsegError(f"{out}: the report folder must not be the target itself")
    out.mkdir(parents=True, exist_ok=True)
    _copy_assets(out)
    for stale in (out / "cases").glob("*.html"):  # pages of cases no longer in the target
        stale.unlink()
    info = src.dataset.info if src.dataset else {}
    if not info and src.models:
        info = src.models[0].dataset_info
    labels = info.get("labels") or (src.evaluations[0].labels if src.evaluations else {})
    if src.evaluations and src.evaluations[0].labels:
        labels = {"background": 0, **src.evaluations[0].labels}
    if src.quality is not None:
        info = info or {"channel_names": src.quality.run.get("channel_names", {})}
        labels = labels or src.quality.run.get("labels", {})
    title = f"voxseg report: {src.target.name}"
    groups = _case_jobs(src) if cases else []
    written: dict[str, int] = {}
    samples: list[list[np.ndarray]] = []
    channels = info.get("channel_names", {"0": "image"})
    ctx = PageContext(
        out,
        title,
        labels,
        _is_ct(info),
        str(channels.get("0", "image")),
        HISTOGRAM_SAMPLES if src.kind == "dataset" else 0,
    )
    jobs = [j for _, js in groups for j in js]
    if jobs:
        say(f"writing {len(jobs)} case page(s)")
        # a worker process costs seconds to start: few cases are written in this one
        n = num_processes or (min(4, os.cpu_count() or 1) if len(jobs) >= 8 else 1)
        failures: list[str] = []
        if n > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(n, mp_context=get_context("spawn")) as pool:
                futures = [(j, pool.submit(_render_case, j, ctx)) for j in jobs]
                results = []
                for j, f in futures:
                    try:
                        results.append(f.result())
                    except VoxsegError as exc:
                        failures.append(f"{j.sources.case_id}: {exc}")
        else:
            results = []
            for j in jobs:
                try:
                    results.append(_render_case(j, ctx))
                except VoxsegError as exc:
                    failures.append(f"{j.sources.case_id}: {exc}")
        for slug, size, drawn in results:
            written[slug] = size
            if drawn:
                samples.append(drawn)
        for text in failures:
            say(f"no viewer for case {text}")

    def href_for(group_slugs: dict[str, str]) -> Callable[[str], str | None]:
        return lambda case_id: (
            f"cases/{group_slugs[case_id]}.html"
            if case_id in group_slugs and group_slugs[case_id] in written
            else None
        )

    body = [f"<h1>{escape(title)}</h1>"]
    facts: list[tuple[str, Any]] = [
        ("target", str(src.target)),
        ("kind", src.kind),
        ("written", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    if written:
        sizes = list(written.values())
        facts.append(
            (
                "case viewers",
                Markup(
                    f"{len(written)} pages, {np.mean(sizes) / 1e6:.2f} MB of data per case "
                    f"on average (max {max(sizes) / 1e6:.2f} MB)"
                ),
            )
        )
    nav: list[tuple[str, str]] = []
    parts: list[str] = []
    ds_href: Callable[[str], str | None] = lambda _c: None  # noqa: E731
    if src.kind == "dataset" and groups:
        ds_href = href_for({j.sources.case_id: j.slug for j in groups[0][1]})
    if src.auto is not None:
        parts.append(sections.auto_section(src.auto))
        nav.append(("auto", "Auto"))
    if src.dataset is not None and (src.kind == "dataset" or src.dataset.fingerprint is not None):
        problems = _check(src.dataset) if src.kind == "dataset" else None
        if src.dataset.fingerprint is None and src.dataset.raw is not None:
            say("computing the dataset fingerprint (voxseg plan caches it)")
            src.dataset.fingerprint = _fingerprint(src.dataset, num_processes)
        hists = _histograms(samples, channels)
        parts.append(sections.dataset_section(src.dataset, problems, hists, ds_href))
        nav.append(("dataset", "Dataset"))
        if src.dataset.plans is not None and not src.models:
            parts.append(sections.plan_section(src.dataset.plans))
            nav.append(("plan", "Plan"))
    if src.kind == "dataset" and groups:
        rows = [
            [
                (
                    Markup(
                        f"<a href='cases/{escape(j.slug)}.html'>{escape(j.sources.case_id)}</a>"
                        if j.slug in written
                        else escape(j.sources.case_id)
                    ),
                    j.sources.case_id,
                )
            ]
            for j in groups[0][1]
        ]
        parts.append(
            sections.section(
                "cases",
                "Cases",
                "<p>Open a case to scroll through it with its reference labels.</p>"
                + table(["case"], rows, cls="cases sortable", raw=True),
            )
        )
        nav.append(("cases", "Cases"))
    for i, model in enumerate(src.models):
        parts.append(
            sections.plan_section(model.plans, f"plan-{i}", only=model.config.get("configuration"))
        )
        nav.append((f"plan-{i}", f"Plan {model.name}" if len(src.models) > 1 else "Plan"))
        parts.append(sections.training_section(model, f"training-{i}"))
        nav.append(
            (f"training-{i}", f"Training {model.name}" if len(src.models) > 1 else "Training")
        )
    pages = {id(ev): jobs for ev, jobs in groups if ev is not None}
    if src.quality is not None:
        slugs = {j.sources.case_id: j.slug for _, js in groups for j in js}
        dice = None
        if src.evaluations:
            dice = {c.case_id: sections.case_mean_dice(c.metrics) for c in src.evaluations[0].cases}
        parts.append(quality_section(src.quality, "quality", href_for(slugs), dice))
        nav.append(("quality", "Quality control"))
    for i, ev in enumerate(src.evaluations):
        href = href_for({j.sources.case_id: j.slug for j in pages.get(id(ev), [])})
        parts.append(sections.evaluation_section(ev, f"evaluation-{i}", href))
        name = "Evaluation" if len(src.evaluations) == 1 else f"Evaluation {i + 1}"
        nav.append((f"evaluation-{i}", name))
        if ev.quality is not None:
            dice = {c.case_id: sections.case_mean_dice(c.metrics) for c in ev.cases}
            folds = {c.case_id: c.fold for c in ev.cases}
            parts.append(
                validation_quality_section(ev.quality, f"cv-quality-{i}", href, dice, folds)
            )
            nav.append((f"cv-quality-{i}", "QC on cross-validation"))
    links = " · ".join(f"<a href='#{a}'>{escape(t)}</a>" for a, t in nav)
    body.append(f"<nav class='top'>{links}</nav>")
    body.append(kv_table(facts))
    body.extend(parts)
    index = out / "index.html"
    atomic_write_text(index, page(title, "".join(body), scripts=["report.js"]))
    say(f"report written to {index} in {time.perf_counter() - tic:.1f} s")
    return index


def _fingerprint(ds: DatasetSource, num_processes: int | None) -> dict[str, Any] | None:
    """The fingerprint of a raw dataset that has none cached (not written anywhere)."""
    from voxseg.data import Dataset
    from voxseg.data.fingerprint import compute_fingerprint

    try:
        fp = compute_fingerprint(
            Dataset(ds.raw),
            num_processes=num_processes or 1,
            samples_total=FINGERPRINT_SAMPLES,
        )
    except VoxsegError:
        return None  # a dataset with errors: the check section says which
    return fp.model_dump(mode="json")


def _check(ds: DatasetSource) -> tuple[list[str], list[str]] | None:
    if ds.raw is None:
        return None
    from voxseg.data.check import check_dataset

    report = check_dataset(ds.raw, read_voxels=False, num_processes=1)
    return [str(p) for p in report.errors], [str(p) for p in report.warnings]


def _histograms(samples: list[list[np.ndarray]], channels: dict[str, str]) -> list[tuple[str, Any]]:
    """One histogram per channel over the values drawn from every case."""
    out = []
    n = max((len(s) for s in samples), default=0)
    for c in range(n):
        values = np.concatenate([s[c] for s in samples if len(s) > c])
        if values.size == 0:
            continue
        lo, hi = np.percentile(values, [0.1, 99.9])
        hi = hi if hi > lo else lo + 1
        out.append((channels.get(str(c), str(c)), np.histogram(values, bins=60, range=(lo, hi))))
    return out
