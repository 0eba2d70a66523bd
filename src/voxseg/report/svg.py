"""Small vector plots written as inline SVG: lines, histograms, strips with boxes, scatter.

Every plot is a string of SVG markup that a browser renders offline. Points may carry a
link (``href``) and a tooltip, so a click on an outlier opens that case's page (as in
MRIQC's group report).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np

#: Colours of successive series (matplotlib's tab10).
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

WIDTH, HEIGHT = 460, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 26, 40


@dataclass
class Series:
    """One line of a line plot; NaN values break the line."""

    name: str
    x: Sequence[float]
    y: Sequence[float]
    color: str = ""
    dashed: bool = False


@dataclass
class Point:
    """One point of a strip or scatter plot, optionally linked to a page."""

    x: float
    y: float
    label: str = ""
    href: str | None = None
    color: str = PALETTE[0]


@dataclass
class _Frame:
    """Maps data to pixels inside the plot area and draws the axes."""

    xlim: tuple[float, float]
    ylim: tuple[float, float]
    title: str
    xlabel: str
    ylabel: str
    log_y: bool = False
    parts: list[str] = field(default_factory=list)

    def px(self, x: float) -> float:
        lo, hi = self.xlim
        return LEFT + (x - lo) / (hi - lo or 1.0) * (WIDTH - LEFT - RIGHT)

    def py(self, y: float) -> float:
        lo, hi = self.ylim
        if self.log_y:
            y, lo, hi = (math.log10(max(v, 1e-30)) for v in (y, lo, hi))
        return HEIGHT - BOTTOM - (y - lo) / (hi - lo or 1.0) * (HEIGHT - TOP - BOTTOM)

    def axes(self, xticks: Sequence[tuple[float, str]] | None = None) -> None:
        x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM
        p = self.parts
        p.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" class="frame"/>')
        if self.log_y:
            yt = [
                (10.0**e, _num(10.0**e))
                for e in range(
                    math.floor(math.log10(self.ylim[0])), math.ceil(math.log10(self.ylim[1])) + 1
                )
                if self.ylim[0] <= 10.0**e <= self.ylim[1]
            ]
        else:
            yt = [(v, _num(v)) for v in nice_ticks(*self.ylim)]
        for v, text in yt:
            y = self.py(v)
            p.append(f'<line x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
            p.append(
                f'<text x="{x0 - 4}" y="{y + 3:.1f}" class="tick" text-anchor="end">{text}</text>'
            )
        for v, text in (
            xticks if xticks is not None else [(v, _num(v)) for v in nice_ticks(*self.xlim)]
        ):
            x = self.px(v)
            p.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y1}" y2="{y1 + 4}" class="axis"/>')
            p.append(
                f'<text x="{x:.1f}" y="{y1 + 15}" class="tick" text-anchor="middle">'
                f"{escape(text)}</text>"
            )
        p.append(
            f'<text x="{(x0 + x1) / 2}" y="{HEIGHT - 6}" class="label" text-anchor="middle">'
            f"{escape(self.xlabel)}</text>"
        )
        p.append(
            f'<text transform="translate(13,{(y0 + y1) / 2}) rotate(-90)" class="label" '
            f'text-anchor="middle">{escape(self.ylabel)}</text>'
        )
        p.append(f'<text x="{x0}" y="16" class="title">{escape(self.title)}</text>')

    def svg(self, legend: Sequence[tuple[str, str, bool]] = ()) -> str:
        parts = list(self.parts)
        x = WIDTH - RIGHT - 4
        for i, (name, color, dashed) in enumerate(legend):
            y = TOP + 12 + 13 * i
            dash = ' stroke-dasharray="4 3"' if dashed else ""
            parts.append(
                f'<line x1="{x - 18}" x2="{x - 2}" y1="{y - 4}" y2="{y - 4}" stroke="{color}" '
                f'stroke-width="2"{dash}/>'
            )
            parts.append(
                f'<text x="{x - 22}" y="{y}" class="legend" text-anchor="end">{escape(name)}</text>'
            )
        return (
            f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img"><title>{escape(self.title)}</title>'
            + "".join(parts)
            + "</svg>"
        )


def _num(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.0e}"
    return f"{v:.4g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (about ``n`` of them)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    return [round(start + i * step, 12) for i in range(int((hi - start) / step + 1e-9) + 1)]


def _limits(values: Sequence[float], pad: float = 0.05, log: bool = False) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if log:
        v = v[v > 0]
    if v.size == 0:
        return (1.0, 10.0) if log else (0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    if log:
        return lo / 1.3, hi * 1.3
    if hi == lo:
        return lo - 0.5 if lo else -0.5, hi + 0.5 if hi else 0.5
    d = (hi - lo) * pad
    return lo - d, hi + d


def line_plot(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
    log_y: bool = False,
    marks: Sequence[tuple[float, str]] = (),
) -> str:
    """Lines against a shared x axis; ``marks`` are labelled vertical lines (e.g. best epoch)."""
    xs = [float(x) for s in series for x in s.x]
    ys = [float(y) for s in series for y in s.y]
    f = _Frame(_limits(xs, 0.0), ylim or _limits(ys, log=log_y), title, xlabel, ylabel, log_y)
    f.axes()
    legend = []
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        legend.append((s.name, color, s.dashed))
        runs: list[list[str]] = [[]]
        for x, y in zip(s.x, s.y, strict=True):
            ok = y is not None and math.isfinite(y) and (not log_y or y > 0)
            if ok:
                runs[-1].append(f"{f.px(float(x)):.1f},{f.py(float(y)):.1f}")
            elif runs[-1]:
                runs.append([])
        dash = ' stroke-dasharray="4 3"' if s.dashed else ""
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                f.parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
            elif run:
                f.parts.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" '
                    f'stroke-width="1.6"{dash}/>'
                )
    for x, text in marks:
        px = f.px(x)
        f.parts.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" class="mark"/>'
        )
        right = px > WIDTH - RIGHT - 40  # near the right edge: label on the left of the line
        f.parts.append(
            f'<text x="{px - 3 if right else px + 3:.1f}" y="{HEIGHT - BOTTOM - 4}" class="tick" '
            f'text-anchor="{"end" if right else "start"}">{escape(text)}</text>'
        )
    return f.svg(legend)


def histogram(
    values: Sequence[float],
    *,
    title: str,
    xlabel: str,
    bins: int = 20,
    counts: Sequence[float] | None = None,
    edges: Sequence[float] | None = None,
    ylabel: str = "cases",
) -> str:
    """Bars of a histogram: from raw ``values``, or precomputed ``counts`` and ``edges``."""
    if counts is None or edges is None:
        v = np.asarray([x for x in values if math.isfinite(x)], float)
        lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
        if hi == lo:
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    counts, edges = np.asarray(counts, float), np.asarray(edges, float)
    f = _Frame(
        (float(edges[0]), float(edges[-1])),
        (0.0, float(counts.max() or 1) * 1.05),
        title,
        xlabel,
        ylabel,
    )
    f.axes()
    for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        if c > 0:
            x0, x1, y = f.px(a), f.px(b), f.py(c)
            f.parts.append(
                f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 0.5, 0.5):.1f}" '
                f'height="{HEIGHT - BOTTOM - y:.1f}" class="bar"><title>{_num(a)} to {_num(b)}: '
                f"{_num(c)}</title></rect>"
            )
    return f.svg()


def strip_plot(
    groups: Sequence[tuple[str, Sequence[Point]]],
    *,
    title: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
) -> str:
    """One column per group: a box (quartiles, median, 1.5 IQR whiskers) and every point,
    jittered deterministically; linked points open their page."""
    ys = [p.y for _, pts in groups for p in pts]
    f = _Frame((-0.5, len(groups) - 0.5), ylim or _limits(ys), title, "", ylabel)
    f.axes([(i, name) for i, (name, _) in enumerate(groups)])
    for i, (_, pts) in enumerate(groups):
        v = np.asarray([p.y for p in pts if math.isfinite(p.y)], float)
        if v.size:
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            iqr = q3 - q1
            lo = float(v[v >= q1 - 1.5 * iqr].min())
            hi = float(v[v <= q3 + 1.5 * iqr].max())
            x0, x1 = f.px(i - 0.3), f.px(i + 0.3)
            xm = f.px(i)
            f.parts.append(
                f'<line x1="{xm:.1f}" x2="{xm:.1f}" y1="{f.py(lo):.1f}" y2="{f.py(hi):.1f}" '
                'class="whisker"/>'
            )
            f.parts.append(
                f'<rect x="{x0:.1f}" y="{f.py(q3):.1f}" width="{x1 - x0:.1f}" '
                f'height="{max(f.py(q1) - f.py(q3), 0.5):.1f}" class="box"/>'
            )
            f.parts.append(
                f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{f.py(med):.1f}" y2="{f.py(med):.1f}" '
                'class="median"/>'
            )
        for j, p in enumerate(pts):
            if not math.isfinite(p.y):
                continue
            jitter = ((j * 0.618034) % 1.0 - 0.5) * 0.4
            f.parts.append(_dot(f.px(i + jitter), f.py(p.y), p))
    return f.svg()


def scatter_plot(
    points: Sequence[Point],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    identity: bool = False,
    legend: Sequence[tuple[str, str]] = (),
) -> str:
    """Points in x and y (linked when they carry ``href``); ``identity`` draws y = x."""
    pts = [p for p in points if math.isfinite(p.x) and math.isfinite(p.y)]
    xl, yl = _limits([p.x for p in pts]), _limits([p.y for p in pts])
    if identity:
        xl = yl = (min(xl[0], yl[0]), max(xl[1], yl[1]))
    f = _Frame(xl, yl, title, xlabel, ylabel)
    f.axes()
    if identity:
        f.parts.append(
            f'<line x1="{f.px(xl[0]):.1f}" y1="{f.py(xl[0]):.1f}" x2="{f.px(xl[1]):.1f}" '
            f'y2="{f.py(xl[1]):.1f}" class="mark"/>'
        )
    for p in pts:
        f.parts.append(_dot(f.px(p.x), f.py(p.y), p))
    return f.svg([(name, color, False) for name, color in legend])


def _dot(x: float, y: float, p: Point) -> str:
    tip = f"<title>{escape(p.label)}</title>" if p.label else ""
    dot = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.2" fill="{p.color}" class="dot">{tip}</circle>'
    if p.href:
        return f'<a href="{escape(p.href)}">{dot}</a>'
    return dot
