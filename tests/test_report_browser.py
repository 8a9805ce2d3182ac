"""The HTML report in a real headless browser: Debian's chromium driven by Playwright.

Needs ``apt-get install -y chromium`` and ``pip install playwright`` (never
``playwright install``: the system chromium is used). Skipped when either is missing. A
screenshot is saved to ``test-artifacts/report.png``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from clipsieve.report import write_report

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Any:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Any:
    from test_report import make_results

    out = tmp_path / "report.html"
    write_report(make_results(tmp_path / "img"), out, title="browser test")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(out.as_uri())
    pg.wait_for_load_state("load")
    yield pg
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert errors == []
    context.close()


def _quality_column(pg: Any) -> list[float | None]:
    idx = pg.eval_on_selector_all(
        "#items thead th", "ths => ths.findIndex(t => t.textContent.trim() === 'quality')"
    )
    cells = pg.eval_on_selector_all(
        "#items tbody tr", f"rows => rows.map(r => r.cells[{idx}].getAttribute('data-v'))"
    )
    return [float(c) if c else None for c in cells]


def test_report_in_a_real_browser(page: Any) -> None:
    pg = page
    assert pg.title() == "browser test"
    assert pg.locator("#items tbody tr").count() == 5

    # sorting on a header click changes the order; a second click reverses it
    before = _quality_column(pg)
    assert before == [8.5, 6.0, 4.2, 7.1, None]
    pg.click("#items thead th:text-is('quality')")
    assert _quality_column(pg) == [4.2, 6.0, 7.1, 8.5, None]
    pg.click("#items thead th:text-is('quality')")
    assert _quality_column(pg) == [8.5, 7.1, 6.0, 4.2, None]
    assert pg.get_attribute("#items thead th:text-is('quality')", "aria-sort") == "descending"

    # the filter box hides non-matching rows
    pg.fill("#q", "beach")
    assert pg.locator("#items tbody tr:visible").count() == 1
    assert pg.text_content("#shown") == "1 of 5 shown"
    pg.fill("#q", "")
    pg.select_option("#mod", "block")
    assert pg.locator("#items tbody tr:visible").count() == 1
    pg.select_option("#mod", "")

    # blocked and review thumbnails are blurred until clicked
    blurred = pg.locator("#items img.blur")
    assert blurred.count() == 2
    fight = pg.locator("#items img[alt='fight.jpg']")
    assert "blur" in fight.evaluate("el => getComputedStyle(el).filter")
    sunset = pg.locator("#items img[alt='sunset.jpg']")
    assert sunset.evaluate("el => getComputedStyle(el).filter") == "none"
    assert pg.screenshot(full_page=False)  # before un-blurring, for the record
    fight.click()
    pg.wait_for_function(  # after the short CSS transition
        "() => getComputedStyle(document.querySelector(\"#items img[alt='fight.jpg']\"))"
        ".filter === 'none'",
        timeout=3000,
    )
    assert "blur" not in (fight.get_attribute("class") or "")
    assert pg.locator("#items img.blur").count() == 1

    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
