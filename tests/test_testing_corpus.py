"""testing_corpus.py: the nasty corpus, scanned in ONE `clipsieve scan` process (issue #8)."""

from __future__ import annotations

from pathlib import Path

from clipsieve.testing_corpus import run_nasty_scan


def test_one_scan_over_the_nasty_corpus_gives_every_entry_its_line(tiny_clip: Path) -> None:
    run = run_nasty_scan(tiny_clip, timeout=600)
    counts = run.counts()
    assert counts["entries"] >= 60
    assert run.problems == []
    expected_lines = sum(e.expect != "skip" for e in run.entries)
    assert counts["lines"] == expected_lines
    assert counts.get("missing", 0) == 0
    # every kind of outcome occurs: the corpus exercises each code
    for key in ("ok", "not_an_image", "truncated", "too_large", "unsupported", "io_error",
                "skipped (hidden)"):
        assert counts.get(key, 0) > 0, key
