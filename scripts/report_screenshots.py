"""Screenshots of a report's sections for the README, taken in headless Chromium.

    python scripts/report_screenshots.py REPORT_DIR docs/report

Writes dataset.png, plan.png, training.png, evaluation.png (the index's sections) and
case.png (the first case page, with the error map of its slice of largest error).
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from voxseg.report.browser import launch


def main(report: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((report / "index.html").absolute().as_uri())
        page.add_style_tag(content="nav.top { display: none; }")  # sticky: it would cover sections
        for name, selector in (
            ("dataset", "section#dataset"),
            ("plan", "section[id^='plan']"),
            ("training", "section[id^='training']"),
            ("evaluation", "section[id^='evaluation']"),
        ):
            section = page.locator(selector).first
            if section.count():
                section.screenshot(path=str(out / f"{name}.png"))
                print(out / f"{name}.png")
        first = sorted((report / "cases").glob("*.html"))[0]
        page.goto(first.absolute().as_uri())
        page.wait_for_selector("#viewer[data-ready='1']")
        page.add_style_tag(content="nav.top { display: none; }")
        page.locator(".case").screenshot(path=str(out / "case.png"))
        page.check("#error-map")
        page.click("#jump-error")
        page.locator("#viewer").screenshot(path=str(out / "case_errors.png"))
        print(out / "case.png")
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
