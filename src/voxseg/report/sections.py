"""The report's sections as HTML: dataset, plan, training, evaluation."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from html import escape
from typing import Any

import numpy as np

from voxseg.report import svg
from voxseg.report.html import (
    Markup,
    details,
    fmt,
    json_block,
    kv_table,
    label_color,
    link_cell,
    table,
)
from voxseg.report.sources import DatasetSource, Evaluation, FoldRun, ModelSource

#: Metrics of the evaluation summary table: key, heading, whether higher is better.
SUMMARY_METRICS = (
    ("dice", "Dice", True),
    ("hd95", "HD95 (mm)", False),
    ("nsd", "NSD", True),
    ("volume_diff_rel", "volume error (rel.)", False),
)


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def foreground_labels(labels: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in labels.items() if k not in ("background", "ignore")}


def _stats(values: Sequence[float]) -> tuple[float, float, float, float, float]:
    v = np.asarray([x for x in values if math.isfinite(x)], float)
    if v.size == 0:
        return (math.nan,) * 5
    return float(v.mean()), float(v.std()), float(np.median(v)), float(v.min()), float(v.max())


def _plots(*svgs: str) -> str:
    return '<div class="plots">' + "".join(svgs) + "</div>"


# --- dataset ---------------------------------------------------------------------------


def _axis_groups(
    cases: list[dict[str, Any]],
    values: np.ndarray,
    axes: list[str],
    text: Callable[[float], str],
    case_href: Callable[[str], str | None],
) -> list[tuple[str, list[svg.Point]]]:
    """One strip-plot group per array axis of ``values`` ``[case, axis]``, a point per case."""
    if not len(cases):
        return []
    return [
        (
            axes[a],
            [
                svg.Point(
                    0,
                    float(values[i, a]),
                    f"{c['case_id']}: {text(values[i, a])}",
                    case_href(c["case_id"]),
                )
                for i, c in enumerate(cases)
            ],
        )
        for a in range(values.shape[1])
    ]


def dataset_section(
    ds: DatasetSource,
    problems: tuple[list[str], list[str]] | None,
    intensity_histograms: list[tuple[str, np.ndarray]],
    case_href: Callable[[str], str | None],
) -> str:
    info = ds.info
    channels = info.get("channel_names", {})
    labels = foreground_labels(info.get("labels", {}))
    fp = ds.fingerprint
    parts = []
    items: list[tuple[str, Any]] = [("dataset", ds.name)]
    if ds.raw is not None:
        items.append(("folder", str(ds.raw)))
        n_tr = (
            len(list((ds.raw / "imagesTr").glob("*_0000*")))
            if (ds.raw / "imagesTr").is_dir()
            else 0
        )
        n_ts = (
            len(list((ds.raw / "imagesTs").glob("*_0000*")))
            if (ds.raw / "imagesTs").is_dir()
            else 0
        )
        items += [("training cases", n_tr), ("test cases (imagesTs)", n_ts)]
    items.append(("channels", ", ".join(f"{k}: {v}" for k, v in channels.items()) or "–"))
    items.append(
        ("labels", ", ".join(f"{k} = {v}" for k, v in labels.items()) or "–"),
    )
    if info.get("file_ending"):
        items.append(("file ending", info["file_ending"]))
    parts.append(kv_table(items))
    if fp is None:
        parts.append(
            "<p class='note'>No fingerprint (the dataset check found errors): label "
            "volumes, spacings and intensity statistics are not shown.</p>"
        )
    else:
        cases = fp.get("cases", [])
        rows = []
        for name, value in labels.items():
            key = str(value)
            vols = [c.get("label_volumes_mm3", {}).get(key, 0.0) / 1000 for c in cases]
            vox = [c.get("label_voxels", {}).get(key, 0) for c in cases]
            present = sum(1 for v in vox if v > 0)
            mean, sd, med, lo, hi = _stats(vols)
            swatch = (
                f"<span class='swatch' style='background:{label_color(value)}'></span>"
                if isinstance(value, int)
                else ""
            )
            rows.append(
                [
                    (Markup(swatch + escape(name)), name),
                    value if isinstance(value, int) else str(value),
                    f"{present} / {len(cases)}",
                    mean,
                    sd,
                    med,
                    lo,
                    hi,
                    float(np.median(vox)) if vox else math.nan,
                ]
            )
        parts.append("<h3>Labels</h3>")
        parts.append(
            table(
                [
                    "label",
                    "value",
                    "cases with it",
                    "volume mean (ml)",
                    "sd",
                    "median",
                    "min",
                    "max",
                    "median voxels",
                ],
                rows,
                raw=True,
            )
        )
        spac = np.asarray([c["spacing"] for c in cases], float)
        shapes = np.asarray([c["shape"] for c in cases], float)
        axes = ["axis 0", "axis 1", "axis 2"]  # array axes as stored (orientations may differ)
        groups_sp = _axis_groups(cases, spac, axes, lambda v: f"{v:.3g} mm", case_href)
        groups_sh = _axis_groups(cases, shapes, axes, lambda v: f"{int(v)}", case_href)
        parts.append("<h3>Spacing and size</h3>")
        plots = []
        if groups_sp:
            plots.append(
                svg.strip_plot(
                    groups_sp, title="voxel spacing per case (array axes as stored)", ylabel="mm"
                )
            )
            plots.append(
                svg.strip_plot(
                    groups_sh, title="image size per case (array axes as stored)", ylabel="voxels"
                )
            )
        vol_groups = [
            (
                name,
                [
                    svg.Point(
                        0,
                        c.get("label_volumes_mm3", {}).get(str(v), 0.0) / 1000,
                        c["case_id"],
                        case_href(c["case_id"]),
                        label_color(v) if isinstance(v, int) else svg.PALETTE[0],
                    )
                    for c in cases
                ],
            )
            for name, v in labels.items()
        ]
        if vol_groups and cases:
            plots.append(svg.strip_plot(vol_groups, title="label volume per case", ylabel="ml"))
        parts.append(_plots(*plots))
        parts.append("<h3>Intensities</h3>")
        ch_rows = []
        for i, st in enumerate(fp.get("channels", [])):
            if st is None:
                continue
            ch_rows.append(
                [
                    channels.get(str(i), str(i)),
                    st["mean"],
                    st["std"],
                    st["min"],
                    st["percentile_00_5"],
                    st["percentile_99_5"],
                    st["max"],
                    st["num_samples"],
                ]
            )
        if ch_rows:
            parts.append("<p>Foreground (labelled voxels) statistics from the fingerprint:</p>")
            parts.append(
                table(["channel", "mean", "sd", "min", "p0.5", "p99.5", "max", "samples"], ch_rows)
            )
    if intensity_histograms:
        parts.append(
            _plots(
                *(
                    svg.histogram(
                        [],
                        counts=h[0],
                        edges=h[1],
                        title=f"{name}: intensities (all cases, cropped views)",
                        xlabel="intensity",
                        ylabel="voxels",
                    )
                    for name, h in intensity_histograms
                )
            )
        )
    if problems is not None:
        errors, warnings = problems
        parts.append("<h3>Dataset check</h3>")
        parts.append(
            "<p class='note'>Names, headers and geometry of every file were checked (as "
            "<code>voxseg dataset check</code> does; it also reads the voxel values).</p>"
        )
        if not errors and not warnings:
            parts.append("<p class='ok'>No problems found.</p>")
        for kind, items_ in (("error", errors), ("warning", warnings)):
            if items_:
                lis = "".join(f"<li>{escape(p)}</li>" for p in items_)
                parts.append(
                    f"<p class='{kind}'>{len(items_)} {kind}(s):</p><ul class='{kind}'>{lis}</ul>"
                )
    return section("dataset", f"Dataset {ds.name}", "".join(parts))


# --- plan ------------------------------------------------------------------------------


def plan_section(plans: dict[str, Any], anchor: str = "plan", only: str | None = None) -> str:
    parts = []
    expl = plans.get("explanations", {})
    items: list[tuple[str, Any]] = [
        ("plan", plans.get("plan_name", "")),
        ("planned for", plans.get("device", "")),
        ("orientation", plans.get("orientation") or "as stored"),
        (
            "median spacing (mm)",
            " × ".join(fmt(v) for v in plans.get("original_median_spacing", [])),
        ),
        ("median shape", " × ".join(str(v) for v in plans.get("original_median_shape", []))),
    ]
    parts.append(kv_table(items))
    norm_rows = [
        [n.get("channel_name", ""), n.get("scheme", ""), n.get("rule", "")]
        for n in plans.get("normalization", [])
    ]
    if norm_rows:
        parts.append("<h3>Normalisation</h3>")
        parts.append(table(["channel", "scheme", "rule"], norm_rows))
    configs = plans.get("configurations", {})
    if only is not None and only in configs:
        configs = {only: configs[only]}
    rows = []
    for name, c in configs.items():
        topo = c.get("topology", {})
        rows.append(
            [
                name,
                " × ".join(fmt(v) for v in c.get("spacing", [])),
                " × ".join(str(v) for v in c.get("patch_size", [])),
                c.get("batch_size", ""),
                f"{c.get('network', '')} {topo.get('features_per_stage', '')}",
                c.get("estimated_training_gflops"),
                c.get("estimated_gpu_memory_gb"),
                " × ".join(str(v) for v in c.get("median_shape", [])),
            ]
        )
    parts.append("<h3>Configurations</h3>")
    parts.append(
        table(
            [
                "configuration",
                "spacing (mm)",
                "patch",
                "batch",
                "network (features)",
                "GFLOP / iteration",
                "memory (GB)",
                "median shape",
            ],
            rows,
        )
    )
    for name, c in configs.items():
        rules = c.get("explanations", {})
        if rules:
            lis = "".join(
                f"<li><b>{escape(k)}</b>: {escape(str(v))}</li>" for k, v in rules.items()
            )
            parts.append(f"<h4>{escape(name)}: why these values</h4><ul class='rules'>{lis}</ul>")
    if expl:
        lis = "".join(f"<li><b>{escape(k)}</b>: {escape(str(v))}</li>" for k, v in expl.items())
        parts.append(f"<h4>Plan-wide rules</h4><ul class='rules'>{lis}</ul>")
    return section(
        anchor, f"Plan {plans.get('plan_name', '')} of {plans.get('dataset', '')}", "".join(parts)
    )


# --- training --------------------------------------------------------------------------


def _column(log: list[dict[str, float]], key: str) -> list[float]:
    return [row.get(key, math.nan) for row in log]


def fold_training(run: FoldRun, config: dict[str, Any], labels: dict[str, Any]) -> str:
    log = run.log
    if not log:
        return f"<h3>fold {escape(run.fold)}</h3><p class='note'>No training_log.csv.</p>"
    epochs = _column(log, "epoch")
    ema = _column(log, "val_dice_ema")
    finite = [(e, v) for e, v in zip(epochs, ema, strict=True) if math.isfinite(v)]
    best = max(finite, key=lambda t: t[1]) if finite else None
    last = int(epochs[-1])
    planned = config.get("training", {}).get("epochs")
    head = f"epochs 0–{last} logged" + (f" of {planned} planned" if planned else "")
    if best is not None:
        head += f"; best EMA validation Dice {best[1]:.3f} at epoch {int(best[0])}"
    marks = [(best[0], "best")] if best is not None else []
    iters = config.get("training", {}).get("iterations_per_epoch") or 1
    plots = [
        svg.line_plot(
            [
                svg.Series("train", epochs, _column(log, "train_loss")),
                svg.Series("validation", epochs, _column(log, "val_loss")),
            ],
            title="loss",
            xlabel="epoch",
            ylabel="loss",
            marks=marks,
        )
    ]
    dice = [
        svg.Series(
            name, epochs, _column(log, f"dice_{name}"), label_color(v) if isinstance(v, int) else ""
        )
        for name, v in labels.items()
        if any(f"dice_{name}" in r for r in log)
    ]
    if any("val_dice" in r for r in log):
        dice.append(svg.Series("mean (EMA)", epochs, ema, "#000000"))
        dice.append(svg.Series("mean", epochs, _column(log, "val_dice"), "#000000", dashed=True))
        plots.append(
            svg.line_plot(
                dice,
                title="validation Dice (patches)",
                xlabel="epoch",
                ylabel="Dice",
                ylim=(0, 1),
                marks=marks,
            )
        )
    lr = _column(log, "lr")
    plots.append(
        svg.line_plot(
            [svg.Series("learning rate", epochs, lr)],
            title="learning rate",
            xlabel="epoch",
            ylabel="lr",
            log_y=all(v > 0 for v in lr if math.isfinite(v)) and any(v > 0 for v in lr),
        )
    )
    sec = [s / iters for s in _column(log, "epoch_seconds")]
    plots.append(
        svg.line_plot(
            [svg.Series("s / iteration", epochs, sec, svg.PALETTE[3])],
            title=f"seconds per iteration (epoch time / {iters})",
            xlabel="epoch",
            ylabel="s",
        )
    )
    total = sum(v for v in _column(log, "epoch_seconds") if math.isfinite(v))
    return (
        f"<h3>fold {escape(run.fold)}</h3><p>{escape(head)}; {total / 60:.1f} min of training.</p>"
        + _plots(*plots)
    )


def training_section(model: ModelSource, anchor: str) -> str:
    cfg = model.config
    t = cfg.get("training", {})
    opt = cfg.get("optimizer", {})
    sched = cfg.get("schedule", {})
    conf = model.plans.get("configurations", {}).get(cfg.get("configuration", ""), {})
    items: list[tuple[str, Any]] = [
        ("folder", str(model.folder)),
        ("configuration", cfg.get("configuration", "")),
        ("network", cfg.get("network", {}).get("name", "")),
        ("loss", cfg.get("loss", {}).get("name", "")),
        (
            "optimiser",
            f"{opt.get('name', '')} (lr {opt.get('lr', '')}, "
            f"weight decay {opt.get('weight_decay', '')})",
        ),
        ("schedule", sched.get("name", "")),
        ("epochs × iterations", f"{t.get('epochs', '')} × {t.get('iterations_per_epoch', '')}"),
        ("batch size", t.get("batch_size") or conf.get("batch_size", "")),
        ("patch", " × ".join(str(v) for v in conf.get("patch_size", []))),
        ("folds", ", ".join(f.fold for f in model.folds) or "none"),
    ]
    labels = foreground_labels(
        model.dataset_info.get("labels", {}) or model.plans.get("labels", {})
    )
    parts = [kv_table(items), details("resolved settings (config.json)", json_block(cfg))]
    for run in model.folds:
        parts.append(fold_training(run, run.config or cfg, labels))
    return section(anchor, f"Training: {model.name}", "".join(parts))


# --- evaluation ------------------------------------------------------------------------


def case_mean_dice(metrics: dict[str, dict[str, float]]) -> float:
    v = [m.get("dice", math.nan) for m in metrics.values()]
    v = [x for x in v if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def evaluation_section(ev: Evaluation, anchor: str, case_href: Callable[[str], str | None]) -> str:
    labels = list(ev.labels) or sorted({n for c in ev.cases for n in c.metrics})
    values = {n: v for n, v in ev.labels.items()} if ev.labels else {}
    parts = [
        f"<p>{len(ev.cases)} cases; NSD at {ev.nsd_tolerance_mm:g} mm; folder "
        f"<code>{escape(str(ev.folder))}</code>.</p>"
    ]
    rows = []
    for name in labels:
        row: list[Any] = [name]
        for metric, _, _ in SUMMARY_METRICS:
            vals = [c.metrics.get(name, {}).get(metric, math.nan) for c in ev.cases]
            v = np.asarray([x for x in vals if not math.isnan(x)], float)
            if v.size == 0:
                row.append("–")
                continue
            with np.errstate(invalid="ignore"):
                mean, sd, med = float(v.mean()), float(v.std()), float(np.median(v))
            row.append(f"{fmt(mean)} ± {fmt(sd)} ({fmt(med)})")
        rows.append(row)
    parts.append(
        "<p>Per label: mean ± sd (median) over cases; a distance is ∞ when a case missed the "
        "structure or predicted it where there is none.</p>"
    )
    parts.append(table(["label", *(h for _, h, _ in SUMMARY_METRICS)], rows))
    plots = []
    for metric, title, _ in (
        ("dice", "Dice", True),
        ("hd95", "HD95 (mm)", False),
        ("nsd", "NSD", True),
    ):
        groups = []
        for name in labels:
            pts = []
            for c in ev.cases:
                y = c.metrics.get(name, {}).get(metric, math.nan)
                pts.append(
                    svg.Point(
                        0,
                        y,
                        f"{c.case_id} · {name}: {fmt(y)}",
                        case_href(c.case_id),
                        _color(values.get(name)),
                    )
                )
            groups.append((name, pts))
        if any(math.isfinite(p.y) for _, pts in groups for p in pts):
            n_inf = sum(1 for _, pts in groups for p in pts if math.isinf(p.y))
            t = f"{title} per case" + (f" ({n_inf} ∞ not drawn)" if n_inf else "")
            plots.append(
                svg.strip_plot(
                    groups,
                    title=t,
                    ylabel=title,
                    ylim=(0, 1.02) if metric in ("dice", "nsd") else None,
                )
            )
    pts = []
    for name in labels:
        for c in ev.cases:
            m = c.metrics.get(name, {})
            if "volume_ref" in m:
                pts.append(
                    svg.Point(
                        m["volume_ref"] / 1000,
                        m.get("volume_pred", math.nan) / 1000,
                        f"{c.case_id} · {name}",
                        case_href(c.case_id),
                        _color(values.get(name)),
                    )
                )
    if pts:
        plots.append(
            svg.scatter_plot(
                pts,
                title="predicted vs reference volume",
                xlabel="reference (ml)",
                ylabel="predicted (ml)",
                identity=True,
                legend=[(n, _color(values.get(n))) for n in labels],
            )
        )
    parts.append(_plots(*plots))
    if ev.lesions:
        parts.append(lesion_table(ev.lesions))
    parts.append(case_table(ev, labels, case_href))
    return section(anchor, ev.title, "".join(parts))


def lesion_table(lesions: dict[str, Any]) -> str:
    """Lesion-wise detection pooled over cases: counts, sensitivity and precision."""
    rows = [
        [
            name,
            d.get("n_ref"),
            d.get("detected_ref"),
            d.get("n_pred"),
            d.get("true_pred"),
            math.nan if d.get("sensitivity") is None else d["sensitivity"],
            math.nan if d.get("precision") is None else d["precision"],
        ]
        for name, d in lesions.items()
    ]
    return "<h3>Lesion-wise detection (all cases)</h3>" + table(
        [
            "label",
            "reference lesions",
            "detected",
            "predicted lesions",
            "true predicted",
            "sensitivity",
            "precision",
        ],
        rows,
    )


def _color(value: Any) -> str:
    return label_color(value) if isinstance(value, int) else svg.PALETTE[0]


def case_table(ev: Evaluation, labels: list[str], case_href: Callable[[str], str | None]) -> str:
    """Every case, worst mean Dice first; sortable by any column, filterable by text."""
    has_fold = any(c.fold for c in ev.cases)
    headers = ["case"] + (["fold"] if has_fold else []) + ["mean Dice"]
    headers += [f"Dice {n}" for n in labels] + [f"HD95 {n}" for n in labels]
    headers += [f"vol. err. {n}" for n in labels]
    lesion_names = list(ev.lesions)
    headers += [f"lesions {n} (ref / found / FP)" for n in lesion_names]
    order = sorted(
        ev.cases,
        key=lambda c: (math.inf if math.isnan(d := case_mean_dice(c.metrics)) else d, c.case_id),
    )
    rows = []
    for c in order:
        row: list[Any] = [link_cell(c.case_id, case_href(c.case_id))]
        if has_fold:
            row.append((escape(c.fold), c.fold))
        d = case_mean_dice(c.metrics)
        row.append((fmt(d), d))
        for metric in ("dice", "hd95", "volume_diff_rel"):
            for n in labels:
                v = c.metrics.get(n, {}).get(metric, math.nan)
                row.append((fmt(v), v))
        for n in lesion_names:
            d = ev.lesions[n].get("per_case", {}).get(c.case_id)
            if d is None:
                row.append(("–", math.nan))
                continue
            missed = d["n_ref"] - d["detected_ref"]
            false_pos = d["n_pred"] - d["true_pred"]
            text = f"{d['n_ref']} / {d['detected_ref']} / {false_pos}"
            row.append((escape(text), float(missed + false_pos)))  # sorts by errors
        rows.append(row)
    tid = f"cases-{zlib.crc32((str(ev.folder) + ev.title).encode())}"
    return (
        "<h3>Cases (worst mean Dice first)</h3>"
        f"<p><input type='search' class='filter' data-table='{tid}' placeholder='filter cases…' "
        "aria-label='filter cases'> <span class='hint'>click a heading to sort; click a case "
        "to open its slice viewer</span></p>"
        + table(headers, rows, cls="cases sortable", table_id=tid, raw=True).replace(
            "<th>mean Dice</th>", '<th aria-sort="ascending">mean Dice</th>', 1
        )
    )


# --- auto ------------------------------------------------------------------------------


def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool)) or v is None}


def auto_section(summary: dict[str, Any]) -> str:
    """What ``voxseg auto`` trained, how long, and why the winner won (its summary.json)."""
    items: list[tuple[str, Any]] = [
        ("winner", summary.get("winner", "")),
        ("why", summary.get("why", "")),
        ("dataset", summary.get("dataset", "")),
        ("device", summary.get("device", "")),
        (
            "time budget",
            f"{fmt(summary.get('budget_seconds', math.nan) / 60)} min, "
            f"{fmt(summary.get('spent_seconds', math.nan) / 60)} min spent",
        ),
        ("configurations", ", ".join(map(str, summary.get("configurations", [])))),
        ("validation", summary.get("validation", "")),
        ("recipe", summary.get("recipe", "")),
        (
            "post-processing",
            ", ".join(s.get("name", "?") for s in summary.get("postprocessing") or []) or "none",
        ),
        ("predict with", Markup(f"<code>{escape(str(summary.get('predict', '')))}</code>")),
    ]
    parts = [kv_table(items)]
    for title, rows in (("Runs", summary.get("runs", [])), ("Ranking", summary.get("ranking", []))):
        flat = [_scalars(r) for r in rows if isinstance(r, dict)]
        if flat:
            keys = list(dict.fromkeys(k for r in flat for k in r))
            parts.append(f"<h3>{title}</h3>")
            parts.append(table(keys, [[r.get(k, "") for k in keys] for r in flat]))
    steps = summary.get("steps_seconds")
    if isinstance(steps, dict) and steps:
        parts.append("<h3>Seconds per step</h3>")
        parts.append(table(["step", "seconds"], [[k, v] for k, v in steps.items()]))
    return section("auto", "voxseg auto", "".join(parts))
