"""The HTML report (structure, self-containment, escaping) and the exports (round trips)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clipsieve.errors import ConfigError
from clipsieve.report import export_results, flatten, read_export, unflatten, write_report
from clipsieve.report.exports import columns_of
from clipsieve.store import Store
from clipsieve.types import ErrorInfo, ItemResult


def make_results(folder: Path) -> list[dict[str, Any]]:
    """Five results over real image files: allowed, blocked, review, an error, a filter route."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    spec = [
        ("sunset.jpg", 8.5, "allow", {"violence": 0.01, "nudity": 0.02}, {"cat": 0.1}),
        ("fight.jpg", 6.0, "block", {"violence": 0.93, "nudity": 0.01}, {"cat": 0.05}),
        ("beach.jpg", 4.2, "review", {"violence": 0.05, "nudity": 0.55}, {"cat": 0.3}),
        ("cat.jpg", 7.1, "allow", {"violence": 0.0, "nudity": 0.0}, {"cat": 0.97}),
    ]
    for name, q, decision, cats, labels in spec:
        p = folder / name
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(p)
        reasons = [f"{k} {v:.2f} >= 0.50" for k, v in cats.items() if v >= 0.5]
        out.append(
            {
                "path": str(p),
                "status": "ok",
                "error": None,
                "sha256": f"{hash(name):x}",
                "width": 400,
                "height": 300,
                "model": "tiny",
                "cached": True,
                "timing": {"total_ms": 1.5},
                "quality": {
                    "score": q,
                    "technical": q - 1,
                    "aesthetic": q + 0.5,
                    "components": {"sharpness": 0.7},
                    "version": "q1",
                },
                "moderation": {
                    "decision": decision,
                    "categories": cats,
                    "reasons": reasons,
                    "policy": {"name": "default", "version": 3},
                },
                "labels": labels,
            }
        )
    out.append(
        {
            "path": str(folder / "gone.jpg"),
            "status": "error",
            "error": {"code": "io_error", "message": "no such file"},
            "sha256": None,
            "width": None,
            "height": None,
            "model": "tiny",
            "cached": False,
            "timing": {},
        }
    )
    return out


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parse(html: str) -> list[tuple[str, dict[str, str | None]]]:
    p = _Collect()
    p.feed(html)
    return p.tags


def report_data(html: str) -> dict[str, Any]:
    """The JSON the page's script draws the table and gallery from."""
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    assert m, "no data block"
    return json.loads(m.group(1))


def test_report_structure(tmp_path: Path) -> None:
    results = make_results(tmp_path / "img")
    out = tmp_path / "report.html"
    assert write_report(results, out, title="My photos") == 5
    html = out.read_text(encoding="utf-8")
    tags = parse(html)
    data = report_data(html)
    rows = data["rows"]
    assert len(rows) == 5
    assert "<title>My photos</title>" in html
    # every row's thumbnail is embedded; the missing file has none
    assert [r["t"] is not None for r in rows] == [True, True, True, True, False]
    assert all(str(r["t"]).startswith("data:image/jpeg;base64,") for r in rows[:4])
    assert {r["n"] for r in rows if r["b"]} == {"fight.jpg", "beach.jpg"}
    # paths are shown relative to the scanned folder, the full path on hover
    assert [r["r"] for r in rows][:2] == ["sunset.jpg", "fight.jpg"]
    imgs = [a for t, a in tags if t == "img"]  # the flagged cards (block and review)
    assert all(str(a["src"]).startswith("data:image/jpeg;base64,") for a in imgs)
    blurred = [a for a in imgs if "blur" in (a.get("class") or "")]
    assert {a["alt"] for a in blurred} == {"fight.jpg", "beach.jpg"}
    # charts: the quality histogram (20 bars) and one distribution per category
    assert html.count('aria-label="quality score histogram"') == 1
    assert html.count('aria-label="violence histogram"') == 1
    assert html.count('aria-label="nudity histogram"') == 1
    assert len(re.findall(r'<rect [^>]*class="bar"', html)) == 20 * 3
    # flagged items with their reasons
    flagged = html.split('id="flagged"')[1].split("<h2>")[0]
    assert "fight.jpg" in flagged and "violence 0.93 &gt;= 0.50" in flagged
    assert "beach.jpg" in flagged and "sunset.jpg" not in flagged
    # sortable headers, filter box
    assert len([a for t, a in tags if t == "th" and a.get("data-sort") in ("num", "text")]) >= 8
    assert 'id="q"' in html


def test_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    results = make_results(tmp_path / "img")
    results[0]["labels"] = {"<script>alert(1)</script>": 0.9}
    results[1]["moderation"]["reasons"] = ['"><img src=x onerror=alert(1)>']
    html_text = tmp_path / "r.html"
    write_report(results, html_text)
    html = html_text.read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    # in the data block every < > & is escaped, so no text can close the script element
    data_block = html.split('id="data">')[1].split("</script>")[0]
    assert "<" not in data_block and ">" not in data_block
    assert report_data(html)["rows"][0]["l"][0][0] == "<script>alert(1)</script>"
    assert "&lt;img src=x" in html  # the flagged card, escaped by the template
    for tag, attrs in parse(html):
        for key in ("src", "href"):
            value = attrs.get(key)
            assert value is None or value.startswith("data:"), (tag, key, value)
        assert tag not in ("link", "iframe", "object")
    assert html.count("<script") == 2  # the data block and the inline script
    # the script never feeds data to innerHTML
    assert "innerHTML" not in html


def test_report_accepts_item_results_and_filter_fields(tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(img)
    item = ItemResult(path=str(img), sha256="ab", width=64, height=64, model="m")
    bad = ItemResult(
        path=str(tmp_path / "b.png"), status="error", error=ErrorInfo("truncated", "ends early")
    )
    moved = {
        **item.to_dict(),
        "path": str(tmp_path / "gone.png"),
        "filter": {"decision": "accept", "destination": str(img), "reasons": ["ok"]},
    }
    write_report([item, bad, moved], tmp_path / "r.html", thumbnails=True)
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    rows = report_data(html)["rows"]
    assert len(rows) == 3 and rows[1]["e"] == "ends early"
    # the moved file's thumbnail is read from its destination (the same bytes: one thumbnail)
    assert rows[0]["t"] and rows[2]["t"] == rows[0]["t"] and rows[1]["t"] is None
    assert rows[2]["f"] == "accept"


def test_report_without_thumbnails_or_scores(tmp_path: Path) -> None:
    results = [{"path": "x.jpg", "status": "ok"}, {"path": "y.jpg", "status": "ok"}]
    write_report(results, tmp_path / "r.html", thumbnails=False)
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert len(report_data(html)["rows"]) == 2
    assert "histogram" not in html and 'id="flagged"' not in html


# -- exports ----------------------------------------------------------------------------------------


def _strip(d: Any) -> Any:
    """Drop None values and empty dicts (what CSV and Parquet cannot tell apart)."""
    if isinstance(d, dict):
        out = {k: _strip(v) for k, v in d.items() if v is not None}
        return {k: v for k, v in out.items() if v != {}}
    return d


def test_flatten_round_trip_with_dotted_keys() -> None:
    d = {"a": {"b": 1, "c.d": {"e": [1, 2]}}, "f": None, "g": "x"}
    flat = flatten(d)
    assert flat == {"a.b": 1, "a.c\\.d.e": [1, 2], "g": "x"}
    assert unflatten(flat) == {"a": {"b": 1, "c.d": {"e": [1, 2]}}, "g": "x"}


def test_csv_columns_are_dotted_and_ordered(tmp_path: Path) -> None:
    results = make_results(tmp_path / "img")
    cols = columns_of([flatten(r) for r in results])
    assert cols[:5] == ["path", "status", "error.code", "error.message", "sha256"]
    assert "quality.score" in cols and "moderation.categories.violence" in cols
    assert "labels.cat" in cols and "moderation.reasons" in cols
    assert (
        cols.index("quality.score")
        < cols.index("moderation.decision")
        < cols.index("labels.cat")
        < cols.index("timing.total_ms")
    )


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_exports_round_trip(tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    results = make_results(tmp_path / "img")
    out = tmp_path / f"results.{fmt}"
    assert export_results(results, out) == 5
    back = read_export(out)
    if fmt == "jsonl":
        assert back == results
    else:
        assert back == [_strip(r) for r in results]


def test_parquet_columns_are_typed(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "r.parquet"
    export_results(make_results(tmp_path / "img"), out, "parquet")
    schema = pq.read_schema(out)
    assert str(schema.field("quality.score").type) == "double"
    assert str(schema.field("width").type) == "int64"
    assert str(schema.field("cached").type) == "bool"
    assert str(schema.field("moderation.reasons").type) == "string"


def test_parquet_without_pyarrow_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ConfigError, match=r"pip install 'clipsieve\[parquet\]'"):
        export_results([{"path": "a", "status": "ok"}], tmp_path / "r.parquet")


def test_cli_report_and_export_from_the_store(tmp_path: Path) -> None:
    results = make_results(tmp_path / "img")
    other = {"path": str(tmp_path / "elsewhere" / "z.jpg"), "status": "ok", "model": "tiny"}
    db = tmp_path / "s.sqlite"
    with Store(db) as store:
        store.put_results(results + [other], model="tiny")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-c",
                "from clipsieve.cli import main; main()",
                *args,
                "--store",
                str(db),
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )

    p = cli("report", str(tmp_path / "img"), "--out", str(tmp_path / "r.html"))
    assert p.returncode == 0, p.stderr
    assert len(report_data((tmp_path / "r.html").read_text())["rows"]) == 5
    p = cli("export")
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 6
    assert {json.loads(line)["path"] for line in p.stdout.splitlines()} == {
        r["path"] for r in results + [other]
    }
    p = cli("export", "--format", "csv", "--out", str(tmp_path / "r.csv"), str(tmp_path / "img"))
    assert p.returncode == 0 and len(read_export(tmp_path / "r.csv")) == 5
    p = cli("report", "--out", str(tmp_path / "x.html"), "--model", "other-model")
    assert p.returncode == 3 and "no stored results for model other-model" in p.stderr
    assert "has results of: tiny" in p.stderr and not (tmp_path / "x.html").exists()
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            "from clipsieve.cli import main; main()",
            "export",
            "--store",
            str(tmp_path / "missing.sqlite"),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 3 and "no store at" in p.stderr


def test_export_format_from_the_file_name_or_a_clear_error() -> None:
    from clipsieve.errors import ConfigError
    from clipsieve.report.exports import infer_format

    assert infer_format("r.csv") == "csv" and infer_format("r.JSONL") == "jsonl"
    assert infer_format("r.parquet") == "parquet" and infer_format("-") == "jsonl"
    assert infer_format("r.xlsx", "csv") == "csv"
    with pytest.raises(ConfigError, match="--format"):
        infer_format("r.xlsx")


def _mixed_store(tmp_path: Path) -> Path:
    """Results of two models; one item's moderation and quality from different runs."""
    db = tmp_path / "mixed.sqlite"
    base = {"status": "ok", "error": None, "width": 4, "height": 4, "cached": False,
            "timing": {}}
    prov_a = {"run": "run-a", "model": "model-1", "model_fingerprint": "w-1"}
    prov_b = {"run": "run-b", "model": "model-1", "model_fingerprint": "w-1"}
    with Store(db) as s:
        s.put_results([{
            **base, "path": str(tmp_path / "x.jpg"), "sha256": "aa", "model": "model-1",
            "moderation": {"decision": "allow", "policy": {"name": "default", "version": "1"}},
            "provenance": {"moderation": {**prov_a, "policy": "default", "policy_version": "1"}},
        }], model="model-1")
        s.put_results([{  # a later command adds quality: the result keeps both fields
            **base, "path": str(tmp_path / "x.jpg"), "sha256": "aa", "model": "model-1",
            "quality": {"score": 5.0, "version": "q1", "head": None},
            "provenance": {"quality": {**prov_b, "version": "q1", "head": None}},
        }], model="model-1")
        s.put_results([{
            **base, "path": str(tmp_path / "y.jpg"), "sha256": "bb", "model": "model-2",
            "quality": {"score": 7.0},
        }], model="model-2")
    return db


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "clipsieve", *args], capture_output=True,
                          text=True, env=full)


def test_export_shows_provenance_warns_on_mixed_runs_and_selects_a_run(tmp_path: Path) -> None:
    db = _mixed_store(tmp_path)
    out = tmp_path / "all.jsonl"
    p = _cli("export", "--store", str(db), "--out", str(out))
    assert p.returncode == 0, p.stderr
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"x.jpg", "y.jpg"}
    x = rows["x.jpg"]
    assert x["provenance"]["moderation"]["run"] == "run-a"  # kept with the older field
    assert x["provenance"]["quality"]["run"] == "run-b"
    assert "1 item has fields from different runs" in p.stderr and "run-a, run-b" in p.stderr
    p = _cli("export", "--store", str(db), "--out", str(out), "--run", "run-b")
    x = json.loads(out.read_text().splitlines()[0])
    assert "quality" in x and "moderation" not in x and set(x["provenance"]) == {"quality"}
    assert "different runs" not in p.stderr
    p = _cli("export", "--store", str(db), "--out", str(out), "--policy", "mine")
    assert all("moderation" not in json.loads(line) for line in out.read_text().splitlines())
    csv_out = tmp_path / "all.csv"
    assert _cli("export", "--store", str(db), "--out", str(csv_out)).returncode == 0
    header = csv_out.read_text().splitlines()[0].split(",")
    assert "provenance.quality.run" in header and "provenance.moderation.policy" in header


def test_report_and_export_ignore_clipsieve_model_and_warn_when_model_hides_rows(
    tmp_path: Path,
) -> None:
    db = _mixed_store(tmp_path)
    out = tmp_path / "e.jsonl"
    p = _cli("export", "--store", str(db), "--out", str(out), env={"CLIPSIEVE_MODEL": "model-2"})
    assert p.returncode == 0 and len(out.read_text().splitlines()) == 2  # all models
    p = _cli("export", "--store", str(db), "--out", str(out), "--model", "model-2")
    assert len(out.read_text().splitlines()) == 1
    assert "hides 1 stored result of other models (model-1)" in p.stderr
    html = tmp_path / "r.html"
    p = _cli("report", "--store", str(db), "--out", str(html), "--no-thumbnails",
             env={"CLIPSIEVE_MODEL": "model-2"})
    assert p.returncode == 0, p.stderr
    page = html.read_text()
    assert "x.jpg" in page and "y.jpg" in page
    assert "fields from different runs" in page and "policy default v1 (1)" in page
