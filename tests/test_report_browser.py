"""The HTML report in a real headless browser: Debian's chromium driven by Playwright.

Needs ``apt-get install -y chromium`` and ``pip install playwright`` (never
``playwright install``: the system chromium is used). Skipped when either is missing. A
screenshot is saved to ``test-artifacts/report.png``.
"""

from __future__ import annotations

import json
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


# -- the review loop, end to end --------------------------------------------------------------


def _cli(*args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", "from clipsieve.cli import main; main()", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_review_loop_mark_export_import_calibrate(
    browser: Any, tmp_path: Path, tiny_clip: Path, photos: dict[str, Path]
) -> None:
    """Mark three items in the report (a key, a click, a bulk action on a selection), export
    the marks with one button, import them, and calibrate --from-reviews on exactly those."""
    import json

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in photos.values():
        (imgs / p.name).write_bytes(p.read_bytes())
    store = str(tmp_path / "s.sqlite")
    common = ["--model", str(tiny_clip), "--store", store]
    p = _cli("scan", str(imgs), "--policy", "default", "-q", "--out", str(tmp_path / "r.jsonl"), *common)
    assert p.returncode in (0, 5), p.stderr
    p = _cli("report", "--out", str(tmp_path / "report.html"), "--store", store)
    assert p.returncode == 0, p.stderr

    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto((tmp_path / "report.html").as_uri())
    rows = pg.locator("#items tbody tr")
    assert rows.count() == 4
    names = [rows.nth(i).get_attribute("data-path") for i in range(4)]
    pg.fill("#reviewer", "ana")
    pg.press("#reviewer", "Escape")  # leave the text field: keys go to the page again
    # 1: keyboard: the first row has the focus; "b" blocks it
    pg.keyboard.press("b")
    # 2: a click on the second row's "A" (allow) button
    rows.nth(1).locator("button[data-mark='allow']").click()
    # 3: a bulk action on a selection (the third row), with a note
    rows.nth(2).locator("input.sel").check()
    pg.click("button[data-bulk='block']")
    rows.nth(2).locator("input.note").fill("weapon on the table")
    rows.nth(2).locator("input.note").press("Enter")
    assert pg.text_content("#nmarked").startswith("3 marked")
    # the marks survive a reload (localStorage keyed by the report id)
    rid = pg.get_attribute("body", "data-report-id")
    pg.reload()
    stored = json.loads(pg.evaluate(f"() => localStorage.getItem('clipsieve-review:{rid}')"))
    assert set(stored["marks"]) == set(names[:3]) and stored["reviewer"] == "ana"
    assert pg.locator("#items tbody tr").nth(2).locator("input.note").input_value() == (
        "weapon on the table"
    )
    with pg.expect_download() as dl:
        pg.click("#export-json")
    export = tmp_path / "marks.json"
    dl.value.save_as(str(export))
    with pg.expect_download() as dl2:
        pg.click("#export-csv")
    dl2.value.save_as(str(tmp_path / "marks.csv"))
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "report-review.png"), full_page=False)
    assert errors == []
    context.close()

    data = json.loads(export.read_text())
    assert data["report_id"] == rid and data["reviewer"] == "ana"
    got = {it["path"]: it["decision"] for it in data["items"]}
    assert got == {names[0]: "block", names[1]: "allow", names[2]: "block"}
    csv_lines = (tmp_path / "marks.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("path,sha256,decision") and len(csv_lines) == 4

    p = _cli("review", "import", str(export), "--store", store)
    assert p.returncode == 0, p.stderr
    assert "imported 3 human labels" in p.stderr and "2 block" in p.stderr and "ana" in p.stderr
    p = _cli("calibrate", "--from-reviews", "--target-recall", "0.5",
             "--out", str(tmp_path / "cal.toml"), "-q", *common)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Using 3 human labels from the store: 2 harmful, 1 benign" in p.stdout
    used = [line.rsplit(" by ", 1)[0].split() for line in p.stdout.splitlines()
            if line.startswith("  ") and line.endswith(" by ana")]
    assert {u[-1]: u[0] for u in used} == got, p.stdout
    # the report now shows where the people and the model disagree
    p = _cli("report", "--out", str(tmp_path / "again.html"), "--store", store)
    html = (tmp_path / "again.html").read_text()
    model = {json.loads(x)["path"]: json.loads(x)["moderation"]["decision"]
             for x in (tmp_path / "r.jsonl").read_text().splitlines()}
    disagree = sum(model[n] != d for n, d in got.items())
    if disagree:
        assert f"Model and people disagree ({disagree})" in html
    else:
        assert "Model and people disagree" not in html


# -- layout at desktop and phone widths, and at scale ----------------------------------------


def _filter_results(folder: Path) -> list[dict[str, Any]]:
    """A filter run's results with long paths, long reasons and destinations (the layout that
    overflowed), named issues and a duplicate group."""
    from test_report import make_results

    deep = folder / "a-rather-long-folder-name" / "with_many_sub_folders_of_its_own" / "2024-holidays"
    results = make_results(deep)
    long_reason = (
        "violence 0.93 >= block 0.65 (nearest prompts: \"a photo of a violent fight\", "
        "\"a photo of a street brawl\")"
    )
    for i, r in enumerate(results):
        r["filter"] = {
            "decision": ["accept", "reject", "review", "accept", "error"][i],
            "reasons": [long_reason, "quality 4.20 < 6.5"] if i else ["moderation: allow"],
            "destination": str(folder / "sorted" / "accepted" / "a-rather-long-folder-name" / Path(r["path"]).name),
            "duplicate_of": results[0]["path"] if i == 3 else None,
        }
        if r.get("quality"):
            r["quality"]["issues"] = [{"name": "dark", "component": "exposure_under", "value": 1.2}]
    results[3]["moderation"]["thresholds"] = {"violence": {"review": 0.35, "block": 0.65}}
    results[1]["moderation"]["thresholds"] = {"violence": {"review": 0.35, "block": 0.65}}
    return results


@pytest.mark.parametrize("width", [1400, 390])
def test_report_layout_has_no_overflow_and_real_thumbnails(
    browser: Any, tmp_path: Path, width: int
) -> None:
    out = tmp_path / "filter.html"
    write_report(_filter_results(tmp_path), out, title="filter run")
    context = browser.new_context(viewport={"width": width, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(out.as_uri())

    def no_overflow() -> None:
        sw, iw = pg.evaluate(
            "() => [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert sw <= iw, f"page is {sw} px wide in a {iw} px window"

    def thumbs_wide(selector: str) -> None:
        widths = pg.eval_on_selector_all(
            selector, "els => els.filter(e => e.offsetParent).map(e => e.getBoundingClientRect().width)"
        )
        assert widths and min(widths) >= 96, (selector, widths)

    no_overflow()
    thumbs_wide("#items .thumbbox")
    thumbs_wide("#flagged .thumbbox")
    thumbs_wide("#issues .thumbbox")
    thumbs_wide("#duplicates .thumbbox")
    if width >= 1400:  # at desktop width the whole table fits: the size column is not cut off
        fits = pg.evaluate(
            "() => { const w = document.getElementById('tablewrap'); return [w.scrollWidth, w.clientWidth]; }"
        )
        assert fits[0] <= fits[1], fits
    # a path is shown relative to the scanned folder, with the full path on hover
    cell = pg.locator("#items tbody tr").first.locator("td.path .p")
    rel = "a-rather-long-folder-name/with_many_sub_folders_of_its_own/2024-holidays/sunset.jpg"
    assert cell.text_content() == rel
    assert cell.get_attribute("title") == str(tmp_path / rel)
    # it breaks at folder boundaries, not character by character: at desktop width each
    # line holds at least one whole folder name (at phone width a long name may wrap once)
    height = cell.evaluate("e => e.getBoundingClientRect().height")
    line = cell.evaluate("e => parseFloat(getComputedStyle(e).lineHeight)")
    assert height <= (4 if width >= 1400 else 8) * line + 1, (height, line)
    # the header counts explain every item
    counts = pg.text_content("#counts")
    assert "5 items:" in counts and "2 allowed" in counts and "1 to review" in counts
    assert "1 blocked" in counts and "1 error" in counts
    # thresholds marked on the category histogram
    assert pg.locator("svg line.mark.review").count() == 1
    assert pg.locator("svg line.mark.block").count() == 1
    # the duplicate group marks the kept file
    assert pg.locator("#duplicates .dup.kept").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"report-{width}.png"), full_page=True)
    # the gallery view, beside the table
    pg.click("#view-gallery")
    assert pg.locator("#gallery .gcard").count() == 5 and not pg.is_visible("#items")
    no_overflow()
    thumbs_wide("#gallery .thumbbox")
    pg.screenshot(path=str(ARTIFACTS / f"report-{width}-gallery.png"), full_page=False)
    assert errors == []
    context.close()


def test_report_stays_usable_at_ten_thousand_items(browser: Any, tmp_path: Path) -> None:
    """10,000 items: thumbnails as external files, a small HTML page, 100 rows drawn at a
    time, and sorting, filtering and paging over all of them."""
    import time

    from test_report import make_results

    base = make_results(tmp_path / "img")[:4]
    results = []
    for i in range(10_000):
        r = json.loads(json.dumps(base[i % 4]))
        r["path"] = str(tmp_path / "img" / f"batch{i // 1000}" / f"{i:05d}-{Path(r['path']).name}")
        r["quality"]["score"] = (i * 7919 % 1000) / 100
        results.append(r)
    for r, src in zip(results[:4], base):  # four real files; the rest reuse their thumbnails
        r["path"] = src["path"]
    out = tmp_path / "big.html"
    t0 = time.perf_counter()
    write_report(results, out, thumbnails_dir=tmp_path / "thumbs")
    build_s = time.perf_counter() - t0
    size_mb = out.stat().st_size / 1e6
    assert size_mb < 8, size_mb
    assert len(list((tmp_path / "thumbs").iterdir())) >= 1
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    t0 = time.perf_counter()
    pg.goto(out.as_uri())
    load_s = time.perf_counter() - t0
    assert pg.locator("#items tbody tr").count() == 100
    assert pg.text_content("#shown") == "10000 of 10000 shown"
    assert pg.text_content("#pageinfo") == "page 1 of 100"
    pg.click("#next")
    assert pg.text_content("#pageinfo") == "page 2 of 100"
    pg.click("#items thead th:text-is('quality')")
    first = pg.locator("#items tbody tr").first.locator("td.num").first.get_attribute("data-v")
    assert float(first) == 0.0
    pg.fill("#q", "00042-")
    assert pg.text_content("#shown") == "1 of 10000 shown"
    # thumbnails are files next to the report, loaded lazily
    src = pg.locator("#items tbody tr img").first.get_attribute("src")
    assert src.startswith("thumbs/") and (tmp_path / src).exists()
    print(f"10,000 items: built in {build_s:.1f}s, {size_mb:.1f} MB, loaded in {load_s:.1f}s")
    context.close()
