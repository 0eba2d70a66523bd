"""The report in a real headless Chromium: no console errors, no network, sortable tables,
a slice viewer that scrolls, toggles layers and draws the labels where they are."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image as PILImage

#: Screenshots for the README are written here when set (``VOXSEG_REPORT_SCREENSHOTS=docs/report``).
SCREENSHOTS = os.environ.get("VOXSEG_REPORT_SCREENSHOTS")


def _png(data: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"))


def _save(name: str, data: bytes) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        (Path(SCREENSHOTS) / name).write_bytes(data)


def test_index_loads_offline_and_the_case_table_sorts_and_filters(eval_report, watch):
    watch.open(eval_report / "index.html")
    page = watch.page
    assert page.title().startswith("voxseg report")
    shot = page.screenshot(full_page=True)
    _save("evaluation.png", shot)
    img = _png(shot)
    assert img.std() > 10  # not blank
    assert page.locator("svg.plot").count() >= 4  # Dice, HD95, NSD strips + volume scatter

    table = page.locator("table.cases")
    cases = table.locator("tbody tr td:first-child")
    mean_dice = [float(t) for t in table.locator("tbody tr td:nth-child(2)").all_inner_texts()]
    assert mean_dice == sorted(mean_dice)  # worst first
    assert cases.all_inner_texts()[0] == "organs_test_000"  # the case that lost its kidney

    table.locator("thead th", has_text="mean Dice").click()  # already ascending → descending
    desc = [float(t) for t in table.locator("tbody tr td:nth-child(2)").all_inner_texts()]
    assert desc == sorted(mean_dice, reverse=True)
    table.locator("thead th", has_text="case").first.click()
    assert cases.all_inner_texts() == sorted(cases.all_inner_texts())

    page.fill("input.filter", "001")
    visible = [r for r in table.locator("tbody tr").all() if r.is_visible()]
    assert [r.locator("td").first.inner_text() for r in visible] == ["organs_test_001"]

    page.locator("svg.plot a").first.click()  # an outlier in a plot opens its case page
    page.wait_for_selector("#viewer[data-ready='1']")
    assert "/cases/" in page.url
    assert watch.errors == []
    assert watch.network() == []


def _canvas(page) -> np.ndarray:
    return _png(page.locator("#slice").screenshot())


def test_viewer_scrolls_and_toggles_layers(eval_report, watch):
    watch.open(eval_report / "cases" / "organs_test_000.html")
    page = watch.page
    page.wait_for_selector("#viewer[data-ready='1']")
    _save("case.png", page.screenshot(full_page=True))
    first = _canvas(page)
    assert first.std() > 10
    k = int(page.get_attribute("#viewer", "data-slice"))

    page.locator("#slice").hover()
    page.mouse.wheel(0, 120)
    page.wait_for_function(f"document.getElementById('viewer').dataset.slice !== '{k}'")
    assert not np.array_equal(_canvas(page), first)
    page.keyboard.press("ArrowDown")
    assert int(page.get_attribute("#viewer", "data-slice")) == k

    with_pred = _canvas(page)
    page.select_option("#pred-mode", "off")
    without = _canvas(page)
    assert not np.array_equal(with_pred, without)
    page.select_option("#ref-mode", "off")
    bare = _canvas(page)
    assert not np.array_equal(without, bare)

    page.check("#error-map")
    page.click("#jump-error")
    errors = _canvas(page)
    # false positives are drawn gold, false negatives light blue
    gold = np.all(np.abs(errors.astype(int) - [255, 215, 0]) < 60, axis=-1)
    assert gold.any()
    page.select_option("#axis", "1")
    assert page.get_attribute("#viewer", "data-axis") == "1"
    _save("case_coronal_errors.png", page.screenshot(full_page=True))
    assert watch.errors == []
    assert watch.network() == []


def test_overlay_puts_prediction_pixels_where_the_label_is(eval_report, eval_folder, watch):
    """Golden test: the canvas of the axial slice shown, with the prediction filled opaquely,
    has the label colour exactly where nibabel's reoriented prediction holds the label."""
    page_path = eval_report / "cases" / "organs_test_001.html"
    data = json.loads(
        re.search(r"window.VOXSEG_CASE=(\{.*?\});</script>", page_path.read_text()).group(1)
    )
    watch.open(page_path)
    page = watch.page
    page.wait_for_selector("#viewer[data-ready='1']")
    page.select_option("#ref-mode", "off")
    page.evaluate(
        "() => { const o = document.getElementById('opacity'); o.value = '1';"
        " o.dispatchEvent(new Event('input')); }"
    )
    k = int(page.get_attribute("#viewer", "data-slice"))
    pixels = np.asarray(
        page.evaluate(
            "() => { const c = document.getElementById('slice');"
            " return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }"
        ),
        np.uint8,
    )
    shape = data["shape"]
    rgb = pixels.reshape(shape[1], shape[2], 4)[..., :3]

    # nibabel's closest canonical orientation is RAS, its array [x, y, z]: LPS [z, y, x]
    # is that transposed and flipped along y and x
    ras = nib.as_closest_canonical(nib.load(eval_folder / "organs_test_001.nii.gz"))
    arr = np.asarray(ras.dataobj).transpose(2, 1, 0)[:, ::-1, ::-1]
    (z0, _), (y0, y1), (x0, x1) = data["box"]
    sz, sy, sx = data["strides"]
    expected = arr[z0 + k * sz, y0:y1:sy, x0:x1:sx]
    colors = {lab["value"]: lab["color"] for lab in data["labels"]}
    for value, color in colors.items():
        want = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])
        drawn = np.all(rgb == want, axis=-1)
        assert np.array_equal(drawn, expected == value), value
    grey = rgb[expected == 0]
    assert np.all(grey[:, 0] == grey[:, 1]) and np.all(grey[:, 1] == grey[:, 2])
    # the unlabelled pixels show the CT in the default abdomen window (W 400, L 40)
    image = nib.as_closest_canonical(
        nib.load(eval_folder.parent / "raw/Dataset001_Organs/imagesTs/organs_test_001_0000.nii.gz")
    )
    hu = np.asarray(image.dataobj).transpose(2, 1, 0)[:, ::-1, ::-1]
    hu = hu[z0 + k * sz, y0:y1:sy, x0:x1:sx][expected == 0]
    want = np.clip((hu.astype(float) + 160) / 400 * 255, 0, 255)
    assert np.abs(grey[:, 0] - want).max() <= 1
    assert watch.errors == []
