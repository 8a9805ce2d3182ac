"""The service's web page in headless Chromium (Debian's, driven by Playwright) against a real
``clipsieve serve`` on 127.0.0.1: pick a real photo, see its verdict, score and category bars;
a flagged photo stays blurred until clicked. Screenshot: ``test-artifacts/service.png``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from service_support import flag_all_policy, server_process

pytest.importorskip("fastapi")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser() -> Any:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_page_analyses_a_real_photo(browser: Any, tiny_clip: Path, photos: dict[str, Path],
                                    tmp_path: Path) -> None:
    strict = flag_all_policy(tmp_path, "strict")
    args = ["--model", str(tiny_clip), "--store", str(tmp_path / "store.sqlite"),
            "--device", "cpu", "--precision", "float32", "--policy", "default",
            "--policy", str(strict)]
    with server_process(args) as server:
        context = browser.new_context(viewport={"width": 1300, "height": 1000})
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        outside: list[str] = []
        pg.on("request", lambda r: outside.append(r.url)
              if not r.url.startswith((server.url, "blob:", "data:")) else None)
        pg.goto(server.url + "/")
        pg.wait_for_selector("#status.ready", timeout=30_000)
        assert pg.locator("#policy option").all_inner_texts() == ["default (v1)", "strict (v1)"]

        # a real photo under the default policy, with labels
        pg.fill("#labels", "astronaut, cat, rocket")
        pg.set_input_files("#files", str(photos["astronaut"]))
        score = pg.locator("[data-testid=quality-score]").first
        score.wait_for(timeout=30_000)
        value = float(score.inner_text())
        assert 0.0 <= value <= 10.0
        card = pg.locator("article.card").first
        assert card.locator(".verdict").inner_text().lower() in ("allow", "review", "block")
        assert card.locator(".categories .bar").count() == 10
        assert card.locator(".categories .mark.block").count() == 10
        assert card.locator(".labels .bar").count() == 3
        # bars are drawn to scale: fills as wide as the score, block marks right of review marks
        geometry = card.locator(".categories .bar").evaluate_all("""bars => bars.map(b => {
            const t = b.querySelector('.track').getBoundingClientRect();
            const x = (sel) => (b.querySelector(sel).getBoundingClientRect().left - t.left) / t.width;
            return {fill: b.querySelector('.fill').getBoundingClientRect().width / t.width,
                    value: parseFloat(b.querySelector('.val').textContent),
                    review: x('.mark.review'), block: x('.mark.block')};
        })""")
        for g in geometry:
            assert abs(g["fill"] - g["value"]) < 0.02, g
            assert 0.05 < g["review"] < g["block"] < 1.0, g
        assert "technical" in card.locator(".score .parts").inner_text()

        # under a policy that flags everything the photo is blurred until clicked
        pg.select_option("#policy", "strict")
        pg.set_input_files("#files", str(photos["coffee"]))
        pg.wait_for_function(
            "() => document.querySelectorAll('[data-testid=quality-score]').length === 2",
            timeout=30_000)
        flagged = pg.locator("article.card").first
        assert flagged.locator(".verdict").inner_text().lower() == "block"
        thumb = flagged.locator(".thumb")
        img = thumb.locator("img")
        assert "blur" in img.evaluate("el => getComputedStyle(el).filter")
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / "service.png"), full_page=True)
        thumb.click()
        assert img.evaluate("el => getComputedStyle(el).filter") == "none"

        # a video becomes a job whose verdict appears when it is done
        from service_support import mp4_bytes

        clip = tmp_path / "clip.mp4"
        clip.write_bytes(mp4_bytes(tmp_path, seconds=3, fps=5))
        pg.select_option("#policy", "default")
        pg.set_input_files("#files", str(clip))
        pg.wait_for_function(
            "() => [...document.querySelectorAll('article.card')].some(c => "
            "c.querySelector('.name')?.textContent === 'clip.mp4' && c.querySelector('.verdict'))",
            timeout=60_000)
        video_card = pg.locator("article.card", has_text="clip.mp4")
        assert video_card.locator(".verdict").inner_text().lower() in ("allow", "review", "block")
        assert "frames" in video_card.inner_text()

        # a non-image is refused by the server, and the page says why
        bad = tmp_path / "notes.jpg"
        bad.write_text("this is text, not a photo")
        pg.set_input_files("#files", str(bad))
        pg.locator("article.card .error-msg").first.wait_for(timeout=30_000)
        assert "unsupported_media_type" in pg.locator("article.card .error-msg").first.inner_text()

        assert errors == []
        assert outside == []
        context.close()
    assert (ARTIFACTS / "service.png").stat().st_size > 10_000
