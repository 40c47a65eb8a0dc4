"""The HTML report as a reader sees it: opened in headless Chromium (Debian's ``chromium``, driven by
Playwright for Python), at a desktop's 1280 px and a phone's 390 px.

Every figure loads, the console stays free of errors, nothing but a table's or a figure's own
scroll box is wider than the window, every table that metrics.json has data for is there with its
rows, and every link inside the page leads to an element of it. Full-page screenshots go to
``$STUDY_SCREENSHOTS`` (CI keeps them as artefacts), else ``reports/screenshots/`` (git ignores
it). Without Chromium or Playwright the test is skipped, saying why (``make test`` installs
Chromium where it runs as root or with sudo); with ``STUDY_REQUIRE_BROWSER=1`` (CI) it fails
instead.

Also a tool: ``python -m tests.test_browser REPORT.html OUT.png`` writes the top of a report as
the README shows it (``docs/report-screenshot.png``, from ``reports/example-digits``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Debian's Chromium as root in a container with no network: no sandbox, no GPU, and nothing that
# phones home (without these its background connections are refused and logged). Playwright gives
# each launch a fresh profile (a --user-data-dir of its own).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTHS = {"desktop": 1280, "phone": 390}

# Elements wider than the window, except inside a box that scrolls (or clips) them.
OVERFLOWING = """() => {
  const boxed = e => { for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX; if (o === 'auto' || o === 'scroll' || o === 'hidden') return true; }
    return false; };
  return [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > innerWidth + 1 && !boxed(e))
    .map(e => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}: ${Math.round(e.getBoundingClientRect().right)} px`);
}"""
PAGE = """() => ({
  width: document.documentElement.scrollWidth,
  images: [...document.images].map(i => ({alt: i.alt, width: i.naturalWidth})),
  tables: Object.fromEntries([...document.querySelectorAll('table')].map(t => [t.id, t.rows.length])),
  links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
})"""


@pytest.fixture
def chromium() -> str:
    """The system's Chromium, else skip (or fail, with STUDY_REQUIRE_BROWSER=1) saying why; asked
    for before the small study, so a skip costs nothing."""
    why = None
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        why = "Chromium is not installed (make test installs Debian's chromium where it runs as root or with sudo)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "Playwright for Python is not installed (pip install -r requirements.txt)"
    if why and os.environ.get("STUDY_REQUIRE_BROWSER"):
        pytest.fail(f"STUDY_REQUIRE_BROWSER is set but {why}")
    if why:
        pytest.skip(why)
    return path


def expected_tables(metrics: dict) -> set[str]:
    """The ids of the HTML report's tables that metrics.json has data for."""
    tables = {"table-data-set", "table-versions"}
    if metrics["models"]:
        tables |= {"table-accuracy", "table-per-class"}
    if metrics["attributions"]:
        tables.add("table-explainers")
    if metrics.get("agreement", {}).get("pairs"):
        tables.add("table-agreement")
    if metrics.get("quality", {}).get("arms"):
        tables |= {"table-at-a-glance", "table-faithfulness", "table-sanity-checks", "table-consistency"}
    if "seeds" in metrics:
        tables |= {"table-seeds-accuracy", "table-seeds-stability"}
        tables |= {"table-seeds-comparisons"} if "comparison" in metrics["seeds"] else set()
        tables |= {"table-seeds-versus"} if metrics["seeds"]["agreement"] else set()
    tables |= {"table-stages"} if metrics.get("stages") else set()
    tables |= {"table-machine"} if metrics.get("machine") else set()
    return tables


def screenshots() -> Path:
    folder = Path(os.environ.get("STUDY_SCREENSHOTS") or REPO / "reports" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def console_errors(page) -> list[str]:
    """The page's console errors and uncaught exceptions, as they come."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def test_the_report_in_chromium(chromium, small_study):
    from playwright.sync_api import sync_playwright

    report = small_study.out / "report.html"
    metrics = json.loads((small_study.out / "metrics.json").read_text())
    n_figures = len(list((small_study.out / "figures").glob("*.png")))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for device, width in WIDTHS.items():
                page = browser.new_page(viewport={"width": width, "height": 900})
                errors = console_errors(page)
                page.goto(report.as_uri(), wait_until="load")
                seen = page.evaluate(PAGE)
                page.screenshot(path=str(screenshots() / f"report-{width}.png"), full_page=True)
                assert errors == [], (device, errors)
                assert len(seen["images"]) == n_figures == 8 and all(i["width"] > 0 for i in seen["images"]), seen
                assert page.evaluate(OVERFLOWING) == [] and seen["width"] <= width, device
                missing = {t for t in expected_tables(metrics) if seen["tables"].get(t, 0) < 2}
                assert not missing and "" not in seen["tables"], (device, missing, seen["tables"])
                assert seen["links"] and all(h.startswith("#") and h[1:] in seen["ids"] for h in seen["links"])
                page.close()
        finally:
            browser.close()


# Where the README's picture of a report cuts: the bottom of the verdicts at a glance, and the
# heading of the attribution grid and the top of the grid itself.
CUTS = """() => {
  const y = e => e.getBoundingClientRect().y + scrollY;
  const glance = document.querySelector('#table-at-a-glance') || document.querySelector('table');
  const heading = [...document.querySelectorAll('h3')].find(h => h.textContent.startsWith('Attribution maps'));
  const grid = document.querySelector('img[alt^="Attribution maps"]');
  return {top: y(glance) + glance.getBoundingClientRect().height + 16, heading: y(heading) - 8, grid: y(grid)};
}"""


def screenshot_top(report: Path, png: Path, width: int = 1280, scale: float = 0.6) -> Path:
    """What the README shows of a report: its top (title, the verdicts at a glance), then the heading
    and the first rows of its attribution grid, at ``width`` px scaled by ``scale``."""
    from PIL import Image, ImageDraw
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as p:
        executable = shutil.which("chromium") or "chromium"
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(Path(report).resolve().as_uri(), wait_until="load")
        cut = page.evaluate(CUTS)
        clips = [(0, cut["top"]), (cut["heading"], cut["grid"] + 380 - cut["heading"])]  # two rows of the grid
        shots = [Path(folder) / f"{i}.png" for i in range(len(clips))]
        for shot, (y, height) in zip(shots, clips, strict=True):
            page.screenshot(path=str(shot), clip={"x": 0, "y": y, "width": width, "height": height}, full_page=True)
        browser.close()
        parts = [Image.open(shot).convert("RGB") for shot in shots]
        both = Image.new("RGB", (width, sum(part.height for part in parts) + 12), "white")
        both.paste(parts[0], (0, 0))
        ImageDraw.Draw(both).line([(0, parts[0].height + 5), (width, parts[0].height + 5)], fill="#d0d7de", width=2)
        both.paste(parts[1], (0, parts[0].height + 12))
        both.resize((round(width * scale), round(both.height * scale)), Image.LANCZOS).save(png, optimize=True)
    return png


if __name__ == "__main__":
    print(screenshot_top(Path(sys.argv[1]), Path(sys.argv[2])))
