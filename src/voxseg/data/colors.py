"""Display colours of label values, shared by the overlay PNGs and the HTML report."""

from __future__ import annotations

#: Label colours by label value (value 1 first): distinct on grey images.
LABEL_COLORS = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
    "#dcbeff",
    "#9a6324",
    "#fffac8",
    "#800000",
    "#aaffc3",
    "#808000",
)


def label_color(value: int) -> str:
    """The colour of a label value (values beyond the table repeat it)."""
    return LABEL_COLORS[(int(value) - 1) % len(LABEL_COLORS)]
