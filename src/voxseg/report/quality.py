"""The quality-control section: predictions judged without a reference (``voxseg predict
--qc``), worst first, and — when the same cases were also evaluated — how well the members'
agreement ranks their true Dice."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from html import escape
from typing import Any

import numpy as np

from voxseg.evaluation.qc import CaseQC, worst_first
from voxseg.report import svg
from voxseg.report.html import Markup, fmt, kv_table, label_color, link_cell, table
from voxseg.report.sources import QualitySource

#: Colour of a point whose case carries a flag (empty label, volume outside the range).
FLAG_COLOR = "#d62728"


def _label_color(labels: dict[str, Any], name: str) -> str:
    value = labels.get(name)
    return label_color(value) if isinstance(value, int) else svg.PALETTE[0]


def spearman(x: list[float], y: list[float]) -> tuple[float, int]:
    """Spearman's ρ over the pairs where both are finite (``scipy.stats``), and their count."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return math.nan, len(pairs)
    a, b = zip(*pairs, strict=True)
    if len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan, len(pairs)
    return float(spearmanr(a, b).statistic), len(pairs)


def label_qc_table(qc: CaseQC) -> str:
    """One case's QC per label (for its page)."""
    rows = []
    for name, q in qc.labels.items():
        rng = q.training_range
        rows.append(
            [
                name,
                q.volume_ml,
                f"{fmt(rng[0])}–{fmt(rng[1])}" if rng else "–",
                q.volume_flag or "ok",
                q.components,
                q.largest_share,
                "yes" if q.touches_border else "no",
                q.agreement,
            ]
        )
    return table(
        [
            "label",
            "volume (ml)",
            "training range (ml)",
            "volume",
            "components",
            "largest share",
            "touches border",
            "agreement",
        ],
        rows,
    )


def quality_section(
    quality: QualitySource,
    anchor: str,
    case_href: Callable[[str], str | None],
    dice: dict[str, float] | None = None,
) -> str:
    """Facts, plots and the case table of the QC records; with ``dice`` (case → mean Dice of
    an evaluation of the same predictions), the agreement against the Dice and Spearman's ρ."""
    run = quality.run
    labels = {k: v for k, v in run.get("labels", {}).items() if k not in ("background", "ignore")}
    cases = sorted(quality.cases, key=worst_first)
    names = list(labels) or sorted({n for c in cases for n in c.labels})
    members = max((c.members for c in cases), default=1)
    ranges = run.get("training_ranges_ml", {})
    facts: list[tuple[str, Any]] = [
        ("model", Markup(f"<code>{escape(str(run.get('model', '?')))}</code>")),
        ("folds", ", ".join(map(str, run.get("folds", []))) or "–"),
        (
            "members",
            f"{members} ("
            + ("the folds" if len(run.get("folds", [])) > 1 else "one fold's test-time flips")
            + ")",
        ),
        ("training volumes", str(run.get("training_volumes", "–"))),
        ("cases", len(cases)),
        ("flagged cases", sum(1 for c in cases if c.flags)),
    ]
    parts = [
        "<p>Predictions without a reference, judged by what they look like and by how far "
        "the ensemble's members agreed. <b>Agreement</b> is the members' pooled pairwise Dice "
        "(1: every fold and flip drew the same map; the case's score is the mean over labels); "
        "<b>split</b> is the share of labelled voxels some member voted otherwise. A volume is "
        "<b>low</b> or <b>high</b> outside the training cases' range (Tukey's fences on log "
        "volumes); <b>border</b>: the label touches the edge of the image.</p>",
        kv_table(facts),
    ]
    if members < 2:
        parts.append(
            "<p class='hint'>One member (one fold, no test-time flips): no agreement score. "
            "Predict with several folds or with TTA to get one.</p>"
        )
    summary = []
    for name in names:
        qs = [c.labels[name] for c in cases if name in c.labels]
        rng = ranges.get(name)
        summary.append(
            [
                name,
                f"{fmt(rng[0])}–{fmt(rng[1])}" if rng else "–",
                float(np.median([q.volume_ml for q in qs])) if qs else math.nan,
                sum(q.volume_flag == "empty" for q in qs),
                sum(q.volume_flag == "low" for q in qs),
                sum(q.volume_flag == "high" for q in qs),
                sum(q.touches_border for q in qs),
                sum(q.components > 1 for q in qs),
            ]
        )
    parts.append(
        table(
            [
                "label",
                "training range (ml)",
                "median volume (ml)",
                "empty",
                "low",
                "high",
                "touching border",
                "several components",
            ],
            summary,
        )
    )
    plots = []
    groups = []
    for name in names:
        pts = []
        for c in cases:
            q = c.labels.get(name)
            if q is None:
                continue
            color = FLAG_COLOR if q.volume_flag else _label_color(labels, name)
            tip = f"{c.case_id} · {name}: {fmt(q.volume_ml)} ml" + (
                f" ({q.volume_flag})" if q.volume_flag else ""
            )
            pts.append(svg.Point(0, q.volume_ml, tip, case_href(c.case_id), color))
        groups.append((name, pts))
    if groups:
        plots.append(
            svg.strip_plot(groups, title="predicted volume per case (red: flagged)", ylabel="ml")
        )
    if members >= 2:
        pts = [
            svg.Point(0, c.agreement, f"{c.case_id}: {fmt(c.agreement)}", case_href(c.case_id))
            for c in cases
        ]
        plots.append(
            svg.strip_plot(
                [("all labels", pts)],
                title="member agreement per case",
                ylabel="pooled pairwise Dice",
            )
        )
    if dice and members >= 2:
        plot, sentence = _agreement_vs_dice(cases, dice, case_href, "evaluated")
        plots.append(plot)
        parts.append(sentence)
    parts.append('<div class="plots">' + "".join(plots) + "</div>")
    parts.append(_case_table(cases, names, case_href, members >= 2, str(quality.folder)))
    return f'<section id="{anchor}"><h2>Quality control</h2>{"".join(parts)}</section>'


def _agreement_vs_dice(
    cases: list[CaseQC],
    dice: dict[str, float],
    case_href: Callable[[str], str | None],
    which: str,
) -> tuple[str, str]:
    """The agreement-vs-true-Dice scatter plot (points open their case) and the sentence with
    Spearman's ρ over the ``which`` cases."""
    xs = [c.agreement for c in cases]
    ys = [dice.get(c.case_id, math.nan) for c in cases]
    rho, n = spearman(xs, ys)
    pts = [
        svg.Point(x, y, f"{c.case_id}: agreement {fmt(x)}, Dice {fmt(y)}", case_href(c.case_id))
        for c, x, y in zip(cases, xs, ys, strict=True)
    ]
    plot = svg.scatter_plot(
        pts,
        title=f"agreement vs true Dice (Spearman ρ = {fmt(rho)}, {n} cases)",
        xlabel="member agreement",
        ylabel="mean Dice (evaluation)",
    )
    sentence = (
        f"<p class='rho'>On the {n} {which} cases the agreement ranks the true mean Dice "
        f"with Spearman's ρ = <b>{fmt(rho)}</b> (1: the same order; 0: no relation): "
        "how far to trust it on cases without a reference.</p>"
    )
    return plot, sentence


def validation_quality_section(
    quality: QualitySource,
    anchor: str,
    case_href: Callable[[str], str | None],
    dice: dict[str, float],
    folds: dict[str, str],
) -> str:
    """Cross-validation's check of the QC score: each validation case's agreement of its
    fold's test-time flips (what ``voxseg predict --qc`` gives a new scan) against its true
    mean Dice (``dice``), with Spearman's ρ; ``folds``: case → its fold."""
    cases = sorted(quality.cases, key=worst_first)
    members = sorted({c.members for c in cases})
    facts: list[tuple[str, Any]] = [
        ("folds", ", ".join(map(str, quality.run.get("folds", []))) or "–"),
        ("members", " / ".join(map(str, members)) + " (each fold's test-time flips)"),
        ("cases with a score", sum(1 for c in cases if math.isfinite(c.agreement))),
    ]
    plot, sentence = _agreement_vs_dice(cases, dice, case_href, "validation")
    rows = []
    for c in cases:
        d = dice.get(c.case_id, math.nan)
        rows.append(
            [
                link_cell(c.case_id, case_href(c.case_id)),
                (escape(folds.get(c.case_id, "")), folds.get(c.case_id, "")),
                (fmt(c.agreement), c.agreement),
                (fmt(c.split_fraction), c.split_fraction),
                (fmt(d), d),
                (escape("; ".join(c.flags)) or "–", float(len(c.flags))),
            ]
        )
    tid = f"cvqc-{zlib.crc32(str(quality.folder).encode())}"
    headers = ["case", "fold", "agreement", "split", "mean Dice", "flags"]
    body = (
        "<p>Each validation case was predicted by its fold with test-time flips, and the "
        "flips' agreement was recorded (<code>validation/qc/</code>): the score "
        "<code>voxseg predict --qc</code> gives a new scan, here beside the true Dice.</p>"
        + kv_table(facts)
        + sentence
        + f'<div class="plots">{plot}</div>'
        + "<h3>Validation cases (lowest agreement first)</h3>"
        + table(headers, rows, cls="cases sortable", table_id=tid, raw=True).replace(
            "<th>agreement</th>", '<th aria-sort="ascending">agreement</th>', 1
        )
    )
    return f'<section id="{anchor}"><h2>Quality control on cross-validation</h2>{body}</section>'


def _case_table(
    cases: list[CaseQC],
    names: list[str],
    case_href: Callable[[str], str | None],
    scored: bool,
    key: str,
) -> str:
    headers = ["case"] + (["agreement", "split"] if scored else []) + ["flags"]
    for n in names:
        headers += [f"{n} ml", f"{n} components", f"{n} border"]
    rows = []
    for c in cases:
        row: list[Any] = [link_cell(c.case_id, case_href(c.case_id))]
        if scored:
            row += [(fmt(c.agreement), c.agreement), (fmt(c.split_fraction), c.split_fraction)]
        flags = "; ".join(c.flags)
        row.append((escape(flags) or "–", float(len(c.flags))))
        for n in names:
            q = c.labels.get(n)
            if q is None:
                row += [("–", math.nan)] * 3
                continue
            row += [
                (fmt(q.volume_ml), q.volume_ml),
                (str(q.components), float(q.components)),
                ("yes" if q.touches_border else "no", float(q.touches_border)),
            ]
        rows.append(row)
    tid = f"qc-{zlib.crc32(key.encode())}"
    first = "agreement" if scored else "flags"
    order = "ascending" if scored else "descending"
    return (
        "<h3>Cases (" + ("lowest agreement first" if scored else "most flags first") + ")</h3>"
        f"<p><input type='search' class='filter' data-table='{tid}' placeholder='filter cases…' "
        "aria-label='filter cases'> <span class='hint'>click a heading to sort; click a case "
        "to open its slice viewer</span></p>"
        + table(headers, rows, cls="cases sortable", table_id=tid, raw=True).replace(
            f"<th>{first}</th>", f'<th aria-sort="{order}">{first}</th>', 1
        )
    )
