"""review.py: reading review exports, human labels in the store, prefer-human filtering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipsieve.errors import ConfigError
from clipsieve.filtering.rules import Rules
from clipsieve.review import attach_human, labels_to_csv, read_review_file
from clipsieve.store import MIGRATIONS, Store


def test_json_and_csv_exports_read_alike(tmp_path: Path) -> None:
    items = [
        {"path": "/p/a.jpg", "sha256": "aa", "decision": "block", "category": "violence",
         "note": "fight", "marked_at": "2026-11-29T13:59:10Z", "model_decision": "review"},
        {"path": "/p/b.jpg", "sha256": "", "decision": "allow", "note": ""},
    ]
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"report_id": "r1", "reviewer": "ana", "items": items}))
    from_json = read_review_file(j)
    c = tmp_path / "m.csv"
    c.write_text(labels_to_csv([{**it, "reviewer": "ana", "report_id": "r1"} for it in items]))
    from_csv = read_review_file(c)
    for got in (from_json, from_csv):
        assert [g["decision"] for g in got] == ["block", "allow"]
        assert got[0]["reviewer"] == "ana" and got[0]["category"] == "violence"
        assert got[0]["reviewed_at"] == 1795960750.0
        assert got[1]["sha256"] is None and got[1]["note"] is None


def test_bad_review_files_name_the_item(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"items": [{"path": "a.jpg", "decision": "maybe"}]}))
    with pytest.raises(ConfigError, match=r"bad.json: items\[0\]: decision must be one of"):
        read_review_file(bad)
    nocol = tmp_path / "x.csv"
    nocol.write_text("path,verdict\na.jpg,block\n")
    with pytest.raises(ConfigError, match='no "decision" column'):
        read_review_file(nocol)


def test_human_labels_table_is_a_recorded_migration_and_latest_wins(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as s:
        assert "human review labels" in [n for _, n in s.migrations()]
        assert s.migrations()[-1][0] == MIGRATIONS[-1][0]
        s.put_human_labels([{"path": "/p/a.jpg", "sha256": "aa", "decision": "block",
                             "reviewer": "ana", "reviewed_at": 10.0}])
        s.put_human_labels([{"path": "/p/a.jpg", "sha256": "aa", "decision": "allow",
                             "reviewer": "bo", "reviewed_at": 20.0},
                            {"path": "/p/b.jpg", "decision": "review", "reviewed_at": 5.0}])
        labels = s.human_labels()
    assert [(x["path"], x["decision"], x["reviewer"]) for x in labels] == [
        ("/p/b.jpg", "review", None), ("/p/a.jpg", "allow", "bo")]


def test_attach_human_matches_content_then_path() -> None:
    labels = [{"path": "/old/a.jpg", "sha256": "aa", "decision": "block"},
              {"path": "/p/b.jpg", "sha256": "bb", "decision": "allow"}]
    results = [{"path": "/new/a.jpg", "sha256": "aa"},   # moved: matched by content
               {"path": "/p/b.jpg", "sha256": "changed"},  # same path, other bytes: stale
               {"path": "/p/c.jpg", "sha256": "cc"}]
    out = attach_human(results, labels)
    assert out[0]["human"]["decision"] == "block"
    assert "human" not in out[1] and "human" not in out[2]


def test_prefer_human_overrides_the_model_decision_only_when_asked() -> None:
    r = {"status": "ok", "moderation": {"decision": "block", "reasons": ["violence 0.9"]},
         "human": {"decision": "allow", "reviewer": "ana", "note": "film still"}}
    assert Rules().decide(r).decision == "reject"
    v = Rules(prefer_human=True).decide(r)
    assert v.decision == "accept"
    assert v.reasons == ["human: allow by ana: film still, model said block"]
    r2 = {**r, "human": {"decision": "block"}, "moderation": {"decision": "allow"}}
    assert Rules(prefer_human=True).decide(r2).decision == "reject"
    # a human label counts as a moderation decision when one is required
    r3 = {"status": "ok", "human": {"decision": "allow"}}
    assert Rules(require_moderation=True, prefer_human=True).decide(r3).decision == "accept"
    assert Rules(require_moderation=True).decide(r3).decision == "review"
