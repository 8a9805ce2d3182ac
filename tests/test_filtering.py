"""Filtering: rules and the --where parser, file actions, manifest, dedupe, undo, bad input."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clipsieve.filtering import (
    MANIFEST_COLUMNS,
    FilterError,
    Journal,
    Rules,
    WhereError,
    WhereExpr,
    default_heads,
    duplicate_groups,
    filter_collection,
    naive_groups,
    near_duplicate_groups,
    parse_where,
    undo_run,
    write_manifest,
)
from clipsieve.filtering import actions as actions_mod
from clipsieve.filtering.actions import leftover_parts
from clipsieve.store import Store

MODEL = "test/no-model"
PREP = "prep-test"


# -- helpers ------------------------------------------------------------------------------------


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_image(path: Path, seed: int, size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def seed(store: Store, path: Path, *, embedding: Any = None, **fields: Any) -> dict[str, Any]:
    """Record ``path`` as scanned (files, images, embeddings, results) with result ``fields``."""
    st = path.stat()
    digest = sha(path)
    store.put_items(
        [
            {
                "path": str(path),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "sha256": digest,
                "width": 12,
                "height": 12,
                "format": "PNG",
                "features": None,
                "features_version": None,
                "embedding": None if embedding is None else np.asarray(embedding, np.float32),
            }
        ],
        model=MODEL,
        prep=PREP,
    )
    result = {
        "path": str(path),
        "status": "ok",
        "error": None,
        "sha256": digest,
        "width": 12,
        "height": 12,
        "model": MODEL,
        "cached": False,
        "timing": {},
    }
    result.update(fields)
    store.put_results([result], model=MODEL)
    return result


class _Audit:
    """Routes the filter's audit events to ``step`` (a test sets it; audit hooks stay)."""

    step: Any = None

    def __call__(self, event: str, args: tuple) -> None:
        if event == actions_mod.AUDIT_EVENT and self.step is not None:
            self.step(args[0])


_audit = _Audit()
sys.addaudithook(_audit)


class FakeAnalyzer:
    """Enough of an Analyzer for filter_collection; fails loudly on any model work."""

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self.model_id = MODEL
        self.scanned: list[str] = []

    @property
    def preprocess(self) -> Any:
        raise RuntimeError("no model config in this test")

    def scan(self, paths: Any, **kw: Any) -> Any:
        from clipsieve.types import ErrorInfo, ItemResult

        for p in paths:  # unscanned files become errors here (a real scan would run the model)
            self.scanned.append(str(p))
            yield ItemResult(
                path=str(p),
                status="error",
                model=MODEL,
                error=ErrorInfo("io_error", "not scanned in this test"),
            )


def tree(*roots: Path) -> dict[str, tuple[bytes, int]]:
    """{path: (bytes, mtime_ns)} of every file under the roots."""
    out = {}
    for root in roots:
        if root.exists():
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    out[str(p)] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def contents(*roots: Path) -> list[str]:
    return sorted(sha(p) for r in roots if r.exists() for p in r.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store.sqlite")
    yield s
    s.close()


@pytest.fixture
def collection(tmp_path: Path, store: Store) -> dict[str, Any]:
    """Six scanned files in src/ (two in a sub-folder) with quality and moderation results."""
    src = tmp_path / "src"
    spec = {
        "good.png": {
            "quality": {"score": 8.0, "aesthetic": 7.0},
            "labels": {"cat": 0.9},
            "moderation": {"decision": "allow", "categories": {"violence": 0.01}},
        },
        "blurry.png": {
            "quality": {"score": 3.0, "aesthetic": 2.0},
            "labels": {"cat": 0.95},
            "moderation": {"decision": "allow", "categories": {"violence": 0.02}},
        },
        "sub/gore.png": {
            "quality": {"score": 9.0, "aesthetic": 8.0},
            "labels": {"cat": 0.1},
            "moderation": {
                "decision": "block",
                "categories": {"violence": 0.97},
                "reasons": ["violence 0.97 >= 0.50"],
            },
        },
        "sub/maybe.png": {
            "quality": {"score": 7.0, "aesthetic": 6.0},
            "labels": {"cat": 0.85},
            "moderation": {"decision": "review", "categories": {"violence": 0.4}},
        },
        "dog.png": {
            "quality": {"score": 7.5, "aesthetic": 6.5},
            "labels": {"cat": 0.05},
            "moderation": {"decision": "allow", "categories": {"violence": 0.0}},
        },
        "nolabels.png": {
            "quality": {"score": 7.2, "aesthetic": 5.5},
            "moderation": {"decision": "allow", "categories": {"violence": 0.0}},
        },
    }
    paths = {}
    for i, (rel, fields) in enumerate(spec.items()):
        p = make_image(src / rel, seed=i)
        seed(store, p, **fields)
        paths[rel] = p
    return {"src": src, "paths": paths, "spec": spec}


# -- the --where parser ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr,result,expected",
    [
        ("labels.cat > 0.8", {"labels": {"cat": 0.9}}, True),
        ("labels.cat > 0.8", {"labels": {"cat": 0.8}}, False),
        ("labels.cat >= 0.8", {"labels": {"cat": 0.8}}, True),
        (
            "quality.aesthetic >= 5 and moderation.categories.violence < 0.2",
            {"quality": {"aesthetic": 5}, "moderation": {"categories": {"violence": 0.1}}},
            True,
        ),
        (
            "quality.aesthetic >= 5 and moderation.categories.violence < 0.2",
            {"quality": {"aesthetic": 5}, "moderation": {"categories": {"violence": 0.3}}},
            False,
        ),
        ("labels.cat > 0.8 or labels.dog > 0.8", {"labels": {"cat": 0.1, "dog": 0.9}}, True),
        ("not labels.cat > 0.8", {"labels": {"cat": 0.1}}, True),
        ("a > 1 or b > 1 and c > 1", {"a": 2, "b": 0, "c": 0}, True),  # and binds tighter
        ("(a > 1 or b > 1) and c > 1", {"a": 2, "b": 0, "c": 0}, False),
        ('labels."a cat" > 0.5', {"labels": {"a cat": 0.7}}, True),
        ('labels["a.b"] > 0.5', {"labels": {"a.b": 0.7}}, True),
        ("moderation.decision == 'allow'", {"moderation": {"decision": "allow"}}, True),
        ('moderation.decision != "block"', {"moderation": {"decision": "block"}}, False),
        (
            "moderation.categories.violence < 0.2",  # a category reported as {score: ...}
            {"moderation": {"categories": {"violence": {"score": 0.1, "threshold": 0.5}}}},
            True,
        ),
        ("0.8 < labels.cat", {"labels": {"cat": 0.9}}, True),
        ("width >= 1e3", {"width": 1000}, True),
        ("x > -1.5", {"x": -1}, True),
        ("cached == false", {"cached": False}, True),
        ("error == null", {"error": None}, True),
        ("error != null", {"error": {"code": "x"}}, True),
        ("exists(labels.cat)", {"labels": {}}, False),
        ("NOT exists(labels) OR labels.cat > 0.5", {}, True),
        # unknowns: missing fields, wrong types; Kleene logic
        ("labels.cat > 0.8", {}, None),
        ("labels.cat > 0.8", {"labels": {"cat": "high"}}, None),
        ("labels > 0.8", {"labels": {"cat": 0.9}}, None),
        ("labels.cat > 0.8 or quality.score > 5", {"quality": {"score": 6}}, True),
        ("labels.cat > 0.8 or quality.score > 5", {"quality": {"score": 4}}, None),
        ("labels.cat > 0.8 and quality.score > 5", {"quality": {"score": 4}}, False),
        ("not labels.cat > 0.8", {}, None),
    ],
)
def test_where_evaluates_with_three_valued_logic(
    expr: str, result: dict[str, Any], expected: bool | None
) -> None:
    assert WhereExpr(expr).evaluate(result).value is expected


def test_where_reasons_name_fields_and_values() -> None:
    t = WhereExpr("labels.cat > 0.8").evaluate({"labels": {"cat": 0.31}})
    assert t.value is False and t.why == ["labels.cat = 0.31"]
    t = WhereExpr("labels.cat > 0.8").evaluate({})
    assert t.value is None and t.why == ["labels.cat is missing"]


@pytest.mark.parametrize(
    "bad",
    [
        "__import__('os').system('touch PWNED')",
        "open('/etc/passwd').read() > 0",
        "labels.cat > 0.8; import os",
        "labels.cat.__class__ > 0",  # parses as a field that never exists: harmless
        "[x for x in ()] > 0",
        "lambda: 0",
        "labels.cat > 0.8 or",
        "labels.cat >",
        "(labels.cat > 1",
        "labels.cat > 0.8)",
        "a > b > c",
        "1 > 2",
        "labels.cat",
        "",
        "   ",
        "labels.cat > `ls`",
        "labels.cat > 0.8 && quality.score > 1",
        "a > 1 " + "and (" * 100 + "a > 1" + ")" * 100,
    ],
)
def test_where_rejects_anything_but_comparisons(
    bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if bad == "labels.cat.__class__ > 0":
        w = WhereExpr(bad)
        assert w.evaluate({"labels": {"cat": 0.5}}).value is None
        return
    with pytest.raises(WhereError) as info:
        WhereExpr(bad)
    assert "--where" in str(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_where_parser_never_evaluates_code() -> None:
    import inspect

    from clipsieve.filtering import rules

    source = inspect.getsource(rules)
    assert re.findall(r"(?<![\w.])(eval|exec|compile|getattr|__import__)\(", source) == []


def test_where_error_points_at_the_position() -> None:
    with pytest.raises(WhereError) as info:
        WhereExpr("labels.cat >> 0.8")
    msg = str(info.value)
    assert "position 13" in msg and "^" in msg


def test_repeated_where_options_are_anded() -> None:
    w = parse_where(["labels.cat > 0.5", "quality.score > 5 or quality.score < 1"])
    assert w.evaluate({"labels": {"cat": 0.6}, "quality": {"score": 6}}).value is True
    assert w.evaluate({"labels": {"cat": 0.4}, "quality": {"score": 6}}).value is False


# -- rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [6.5, 0.0, 10.0, 3.14159])
def test_min_quality_is_inclusive_at_exactly_the_limit(limit: float) -> None:
    """--min-quality X rejects score < X: a score of exactly X is accepted."""
    rules = Rules(min_quality=limit)
    at = rules.decide({"status": "ok", "quality": {"score": limit}})
    assert at.decision == "accept", at.reasons
    below = rules.decide({"status": "ok", "quality": {"score": limit - 1e-9}})
    assert below.decision == "reject"


def test_rules_route_moderation_quality_and_where() -> None:
    rules = Rules(min_quality=6.5, where=parse_where("labels.cat > 0.8"), review=True)
    ok = {
        "status": "ok",
        "quality": {"score": 7},
        "labels": {"cat": 0.9},
        "moderation": {"decision": "allow"},
    }
    assert rules.decide(ok).decision == "accept"
    v = rules.decide({**ok, "moderation": {"decision": "block", "reasons": ["violence 0.97"]}})
    assert v.decision == "reject" and v.reasons == ["moderation: block (violence 0.97)"]
    v = rules.decide(
        {**ok, "moderation": {"decision": "review", "categories": {"violence": 0.4, "drugs": 0.1}}}
    )
    assert v.decision == "review" and v.reasons == ["moderation: review (violence 0.40)"]
    v = rules.decide({**ok, "quality": {"score": 5.25}})
    assert v.decision == "reject" and v.reasons == ["quality 5.25 < 6.5"]
    v = rules.decide({**ok, "labels": {"cat": 0.2}})
    assert v.decision == "reject" and v.reasons == ["where false: labels.cat = 0.2"]
    # unknown → review, never accept
    v = rules.decide({"status": "ok", "labels": {"cat": 0.9}})
    assert v.decision == "review" and v.reasons == ["unknown: quality.score is missing"]
    v = rules.decide({"status": "ok", "quality": {"score": 9}})
    assert v.decision == "review" and v.reasons == ["unknown: labels.cat is missing"]
    # failed scans are errors, not decisions
    v = rules.decide({"status": "error", "error": {"code": "truncated", "message": "ends early"}})
    assert v.decision == "error" and "truncated" in v.reasons[0]


def test_review_without_review_folder_is_reject() -> None:
    rules = Rules(review=False)
    v = rules.decide({"status": "ok", "moderation": {"decision": "review"}})
    assert v.decision == "reject"
    assert v.reasons[-1] == "needs review but there is no review folder"


def test_policy_requires_moderation() -> None:
    assert Rules(require_moderation=True).decide({"status": "ok"}).decision == "review"
    assert Rules().decide({"status": "ok"}).decision == "accept"


def test_a_rule_on_a_field_no_result_has_stops_the_run(
    collection: dict[str, Any], store: Store
) -> None:
    with pytest.raises(FilterError, match=r"no result has labels\.horse"):
        filter_collection(
            [collection["src"]], analyzer=FakeAnalyzer(store), where="labels.horse > 0.5"
        )
    with pytest.raises(FilterError, match="did you mean quality.aesthetic"):
        filter_collection(
            [collection["src"]], analyzer=FakeAnalyzer(store), where="quality.aesthetik > 5"
        )


def test_heads_run_only_for_files_whose_stored_results_lack_their_field(
    collection: dict[str, Any], store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipsieve.moderation import ModerationHead
    from clipsieve.quality import QualityHead

    heads = default_heads(FakeAnalyzer(store), policy="default", need_quality=True)
    assert [type(h) for h in heads] == [ModerationHead, QualityHead]
    assert default_heads(FakeAnalyzer(store)) == []
    # filter without --policy adds an optional head of the policy scan uses, which replaces
    # stored decisions made under another policy and is never a reason to scan a file
    from clipsieve.filtering.engine import stale_moderation_head

    optional = stale_moderation_head(FakeAnalyzer(store))
    assert optional.optional and optional.policy.name == "default"

    class Recording(FakeAnalyzer):
        def scan(self, paths: Any, **kw: Any) -> Any:
            self.heads = kw.get("heads")
            return super().scan(paths, **kw)

    # every stored result has quality: the quality head needs no scan
    an = Recording(store)
    filter_collection([collection["src"]], analyzer=an, action="none", min_quality=5)
    assert an.scanned == []
    # results moderated with the "default" policy are re-judged under "strict"
    from clipsieve.moderation import load_policy

    default = load_policy("default")
    strict = default.with_thresholds({}, name="strict").save(tmp_path / "strict.toml")
    for r in collection["spec"].values():
        r["moderation"]["policy"] = {"name": "default", "version": default.version}
    for rel, p in collection["paths"].items():
        seed(store, p, **collection["spec"][rel])
    an = Recording(store)
    filter_collection([collection["src"]], analyzer=an, action="none", policy=str(strict))
    assert len(an.scanned) == 6 and [type(h).__name__ for h in an.heads] == ["ModerationHead"]
    an = Recording(store)
    filter_collection([collection["src"]], analyzer=an, action="none", policy="default")
    assert an.scanned == []


# -- filter runs --------------------------------------------------------------------------------------


def test_copy_keeps_structure_and_routes_with_reasons(
    collection: dict[str, Any], store: Store, tmp_path: Path
) -> None:
    acc, rej, rev = tmp_path / "acc", tmp_path / "rej", tmp_path / "rev"
    an = FakeAnalyzer(store)
    run = filter_collection(
        [collection["src"]],
        analyzer=an,
        accept=str(acc),
        reject=str(rej),
        review=str(rev),
        action="copy",
        min_quality=6.5,
        where="labels.cat > 0.8",
    )
    assert an.scanned == []  # every file came from the store: no model work
    got = {Path(d.path).relative_to(collection["src"]).as_posix(): d for d in run.decisions}
    assert {k: d.decision for k, d in got.items()} == {
        "blurry.png": "reject",
        "dog.png": "reject",
        "good.png": "accept",
        "nolabels.png": "review",
        "sub/gore.png": "reject",
        "sub/maybe.png": "review",
    }
    assert got["blurry.png"].reasons == ["quality 3.00 < 6.5"]
    assert got["sub/gore.png"].reasons[0].startswith("moderation: block")
    assert got["nolabels.png"].reasons == ["unknown: labels.cat is missing"]
    assert (acc / "good.png").read_bytes() == collection["paths"]["good.png"].read_bytes()
    assert (rej / "sub" / "gore.png").is_file() and (rev / "sub" / "maybe.png").is_file()
    assert all(p.exists() for p in collection["paths"].values())  # copies: sources stay
    rows = Journal(store).rows(run.run_id)
    assert len(rows) == 6 and {r["state"] for r in rows} == {"done"}
    assert all(r["started_at"] and r["finished_at"] for r in rows)
    assert leftover_parts(tmp_path) == []


def test_collisions_get_new_names_and_nothing_is_overwritten(
    collection: dict[str, Any], store: Store, tmp_path: Path
) -> None:
    acc = tmp_path / "acc"
    acc.mkdir()
    (acc / "good.png").write_bytes(b"someone else's file")
    (acc / "good_1.png").write_bytes(b"and another")
    run = filter_collection(
        [collection["src"]],
        analyzer=FakeAnalyzer(store),
        accept=str(acc),
        action="move",
        min_quality=6.5,
        where="labels.cat > 0.8",
    )
    good = next(d for d in run.decisions if d.path.endswith("good.png"))
    assert good.destination == str(acc / "good_2.png")
    assert (acc / "good.png").read_bytes() == b"someone else's file"
    assert (acc / "good_1.png").read_bytes() == b"and another"
    assert sha(acc / "good_2.png") == good.result["sha256"]
    # no --reject / --review: those files stayed where they were
    kept = [d for d in run.decisions if d.decision != "accept"]
    assert kept and all(d.outcome == "kept" and Path(d.path).exists() for d in kept)


def test_same_name_from_two_sources_never_collides(tmp_path: Path, store: Store) -> None:
    a, b = make_image(tmp_path / "a" / "x.png", 1), make_image(tmp_path / "b" / "x.png", 2)
    seed(store, a), seed(store, b)
    run = filter_collection(
        [tmp_path / "a", tmp_path / "b"],
        analyzer=FakeAnalyzer(store),
        accept=str(tmp_path / "acc"),
        action="move",
    )
    assert sorted(Path(d.destination).name for d in run.decisions) == ["x.png", "x_1.png"]
    assert contents(tmp_path / "acc") == sorted([d.result["sha256"] for d in run.decisions])


def test_dry_run_touches_nothing(collection: dict[str, Any], store: Store, tmp_path: Path) -> None:
    before = tree(tmp_path / "src")
    acc = tmp_path / "acc"
    run = filter_collection(
        [collection["src"]],
        analyzer=FakeAnalyzer(store),
        accept=str(acc),
        reject=str(tmp_path / "rej"),
        action="move",
        min_quality=6.5,
        dry_run=True,
    )
    assert tree(tmp_path / "src") == before
    assert not acc.exists() and not (tmp_path / "rej").exists()
    assert run.run_id is None and Journal(store).runs() == []
    planned = {Path(d.path).name: d for d in run.decisions}
    assert planned["good.png"].outcome == "planned"
    assert planned["good.png"].destination == str(acc / "good.png")
    assert planned["blurry.png"].destination == str(tmp_path / "rej" / "blurry.png")


def test_manifest_has_one_row_per_item_with_reasons(
    collection: dict[str, Any], store: Store, tmp_path: Path
) -> None:
    run = filter_collection(
        [collection["src"]],
        analyzer=FakeAnalyzer(store),
        accept=str(tmp_path / "acc"),
        reject=str(tmp_path / "rej"),
        action="copy",
        min_quality=6.5,
    )
    out = tmp_path / "decisions.csv"
    assert write_manifest(run.decisions, out) == 6
    with open(out, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
        rows = {Path(r["path"]).name: r for r in reader}
    assert set(rows) == {p.name for p in collection["paths"].values()}
    b = rows["blurry.png"]
    assert (b["decision"], b["outcome"], b["quality"], b["moderation"]) == (
        "reject",
        "done",
        "3",
        "allow",
    )
    assert b["reasons"] == "quality 3.00 < 6.5" and b["destination"].endswith("rej/blurry.png")
    m = rows["maybe.png"]
    assert m["decision"] == "reject"  # review without --review
    assert "moderation: review" in m["reasons"] and "no review folder" in m["reasons"]
    g = rows["gore.png"]
    assert g["moderation"] == "block" and g["destination"].endswith("rej/sub/gore.png")


def test_link_action_makes_hard_links(
    collection: dict[str, Any], store: Store, tmp_path: Path
) -> None:
    run = filter_collection(
        [collection["src"]],
        analyzer=FakeAnalyzer(store),
        accept=str(tmp_path / "acc"),
        action="link",
    )
    linked = [d for d in run.decisions if d.decision == "accept"]
    assert len(linked) == 4  # blocked and review items have no folder here: they stay
    for d in linked:
        assert os.path.samefile(d.path, d.destination)
    assert all(d.outcome == "kept" for d in run.decisions if d.decision != "accept")


# -- dedupe -------------------------------------------------------------------------------------------


def test_dedupe_exact_and_near_keeps_best_quality(tmp_path: Path, store: Store) -> None:
    src = tmp_path / "src"
    e1 = np.zeros(8, np.float32)
    e1[0] = 1
    near = e1.copy()
    near[1] = 0.2  # cosine 0.98 with e1
    far = np.zeros(8, np.float32)
    far[2] = 1
    a = make_image(src / "a.png", 1)
    b = make_image(src / "b_near.png", 2)
    c = make_image(src / "c.png", 3)
    d = src / "d_copy_of_c.png"
    shutil.copyfile(c, d)  # exact duplicate: same bytes, same hash
    e = make_image(src / "e_tie.png", 4)
    f = make_image(src / "f_tie.png", 5)
    tie = np.zeros(8, np.float32)
    tie[3] = 1
    seed(store, a, embedding=e1, quality={"score": 6.0})
    seed(store, b, embedding=near, quality={"score": 7.0})  # better: kept
    seed(store, c, embedding=far, quality={"score": 5.0})
    seed(store, d, embedding=far, quality={"score": 5.0})  # tie on quality: earliest path kept
    seed(store, e, embedding=tie, quality={"score": 4.0})
    seed(store, f, embedding=tie * 0.5, quality={"score": 4.0})  # same direction, other norm
    run = filter_collection([src], analyzer=FakeAnalyzer(store), action="none", dedupe=0.95)
    got = {Path(x.path).name: x for x in run.decisions}
    assert got["b_near.png"].decision == "accept"
    assert got["a.png"].decision == "reject"
    assert got["a.png"].reasons == [f"duplicate of {b}"]
    assert got["c.png"].decision == "accept"
    assert got["d_copy_of_c.png"].reasons == [f"duplicate of {c}"]
    assert got["e_tie.png"].decision == "accept" and got["f_tie.png"].duplicate_of == str(e)
    assert run.counts()["duplicates"] == 3
    # a threshold above the near pair's cosine leaves only the exact duplicate
    run = filter_collection([src], analyzer=FakeAnalyzer(store), action="none", dedupe=0.99)
    assert {Path(x.path).name for x in run.decisions if x.duplicate_of} == {
        "d_copy_of_c.png",
        "f_tie.png",
    }


def test_dedupe_prefers_an_accepted_copy_over_a_blocked_one(tmp_path: Path, store: Store) -> None:
    a = make_image(tmp_path / "src" / "a.png", 1)
    b = tmp_path / "src" / "b.png"
    shutil.copyfile(a, b)
    seed(store, a, quality={"score": 9.0}, moderation={"decision": "block"})
    seed(store, b, quality={"score": 9.0}, moderation={"decision": "allow"})
    run = filter_collection(
        [tmp_path / "src"], analyzer=FakeAnalyzer(store), action="none", dedupe=0.95
    )
    got = {Path(x.path).name: x for x in run.decisions}
    assert got["b.png"].decision == "accept"
    assert got["a.png"].reasons[0] == f"duplicate of {b}"
    assert got["a.png"].reasons[1].startswith("moderation: block")


def test_dedupe_keeper_ignores_quality_differences_below_1e6(
    tmp_path: Path, store: Store
) -> None:
    """Copies whose scores differ in the last float bits (another CPU, another batch row) tie:
    the earliest path is kept (issue #9)."""
    a = make_image(tmp_path / "src" / "a.png", 1)
    b = tmp_path / "src" / "b.png"
    shutil.copyfile(a, b)
    seed(store, a, quality={"score": 2.98445012})
    seed(store, b, quality={"score": 2.98445038})  # 2.6e-7 higher: noise, not better
    run = filter_collection(
        [tmp_path / "src"], analyzer=FakeAnalyzer(store), action="none", dedupe=0.95
    )
    got = {Path(x.path).name: x for x in run.decisions}
    assert got["a.png"].decision == "accept" and got["b.png"].duplicate_of == str(a)
    # a real difference (2e-6) still wins
    seed(store, b, quality={"score": 2.984452})
    run = filter_collection(
        [tmp_path / "src"], analyzer=FakeAnalyzer(store), action="none", dedupe=0.95
    )
    got = {Path(x.path).name: x for x in run.decisions}
    assert got["b.png"].decision == "accept" and got["a.png"].duplicate_of == str(b)


@pytest.mark.parametrize("threshold", [0.95, 0.9999, 0.5])
def test_dedupe_threshold_is_inclusive_at_exactly_the_limit(threshold: float) -> None:
    """cosine == threshold (to 1e-6) groups; 2e-6 below does not, in every code path."""
    def pair(cos: float) -> np.ndarray:
        return np.array([[1.0, 0.0, 0.0], [cos, np.sqrt(1 - cos * cos), 0.0]], np.float32)

    at, below = pair(threshold), pair(threshold - 2e-6)
    assert near_duplicate_groups(at, threshold) == [[0, 1]] == naive_groups(at, threshold)
    assert near_duplicate_groups(below, threshold) == [] == naive_groups(below, threshold)
    emb = {"x": at[0], "y": at[1]}
    assert duplicate_groups(["x", "y"], emb, threshold) == [[0, 1]]
    emb = {"x": below[0], "y": below[1]}
    assert duplicate_groups(["x", "y"], emb, threshold) == []


def test_exact_groups_without_embeddings() -> None:
    assert duplicate_groups(["x", "y", "x", None, "y", "z"]) == [[0, 2], [1, 4]]


@pytest.mark.parametrize("block", [7, 64, 300, 4096])
def test_blocked_groups_equal_naive_groups(block: int) -> None:
    rng = np.random.default_rng(block)
    base = rng.standard_normal((40, 24)).astype(np.float32)
    labels = rng.integers(0, 40, 500)
    x = base[labels] + 0.08 * rng.standard_normal((500, 24)).astype(np.float32)
    x[:100] = rng.standard_normal((100, 24))  # some singletons
    groups = near_duplicate_groups(x, 0.97, block=block)
    assert groups == naive_groups(x, 0.97)
    assert len(groups) > 10


def test_a_dense_cluster_spanning_many_tiles_is_one_group() -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal(16).astype(np.float32)
    x = np.tile(v, (3000, 1)) + 1e-4 * rng.standard_normal((3000, 16)).astype(np.float32)
    x[::2] = rng.standard_normal((1500, 16))  # interleave singletons
    groups = near_duplicate_groups(x, 0.999, block=512)
    assert groups == [list(range(1, 3000, 2))]


# -- undo ---------------------------------------------------------------------------------------------


def test_undo_reverses_a_move_run(collection: dict[str, Any], store: Store, tmp_path: Path) -> None:
    before = tree(collection["src"])
    acc, rej = tmp_path / "acc", tmp_path / "rej"
    run = filter_collection(
        [collection["src"]],
        analyzer=FakeAnalyzer(store),
        accept=str(acc),
        reject=str(rej),
        action="move",
        min_quality=6.5,
    )
    assert not any(p.exists() for p in collection["paths"].values())
    res = undo_run(store, run.run_id)
    assert len(res.results) == 6 and not res.failed
    assert {k: v[0] for k, v in tree(collection["src"]).items()} == {
        k: v[0] for k, v in before.items()
    }
    assert contents(acc, rej) == []
    assert not (rej / "sub").exists()  # emptied sub-folders the run made are removed
    assert Journal(store).run(run.run_id)["status"] == "undone"
    with pytest.raises(FilterError, match="already undone"):
        undo_run(store, run.run_id)
    with pytest.raises(FilterError, match="no run"):
        undo_run(store, "nope")


def test_undo_puts_a_file_next_to_a_newcomer(
    collection: dict[str, Any], store: Store, tmp_path: Path
) -> None:
    good = collection["paths"]["good.png"]
    original = good.read_bytes()
    run = filter_collection(
        [good], analyzer=FakeAnalyzer(store), accept=str(tmp_path / "acc"), action="move"
    )
    good.write_bytes(b"a new file with the old name")
    res = undo_run(store, run.run_id)
    assert res.results[0].dest == str(good.with_name("good_1.png"))
    assert good.read_bytes() == b"a new file with the old name"
    assert good.with_name("good_1.png").read_bytes() == original


def test_undo_of_a_copy_run_deletes_only_intact_copies(
    collection: dict[str, Any], store: Store, tmp_path: Path
) -> None:
    acc = tmp_path / "acc"
    run = filter_collection(
        [collection["src"]], analyzer=FakeAnalyzer(store), accept=str(acc), action="copy"
    )
    (acc / "good.png").write_bytes(b"edited since")  # differs from its original: kept
    res = undo_run(store, run.run_id)
    assert len(res.failed) == 1 and "differ" in (res.failed[0].error or "")
    assert [p.name for p in acc.rglob("*") if p.is_file()] == ["good.png"]
    assert all(p.exists() for p in collection["paths"].values())
    assert Journal(store).run(run.run_id)["status"] == "partly_undone"


# -- moves across file systems -----------------------------------------------------------------------


def _other_filesystem(tmp_path: Path) -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        return shm
    return None


def test_move_across_file_systems_copies_verifies_and_unlinks(
    collection: dict[str, Any], store: Store, tmp_path: Path
) -> None:
    other = _other_filesystem(tmp_path)
    if other is None:
        pytest.skip("no second file system (/dev/shm) here")
    dest = Path(os.path.join(other, f"clipsieve-test-{os.getpid()}-{tmp_path.name}"))
    try:
        originals = contents(collection["src"])
        mtimes = {p.name: p.stat().st_mtime_ns for p in collection["src"].rglob("*")
                  if p.is_file()}
        run = filter_collection(
            [collection["src"]],
            analyzer=FakeAnalyzer(store),
            accept=str(dest / "a"),
            reject=str(dest / "r"),
            review=str(dest / "v"),
            action="move",
        )
        assert contents(dest) == originals and contents(collection["src"]) == []
        rows = Journal(store).rows(run.run_id)
        assert {r["method"] for r in rows} == {"copy"} and {r["state"] for r in rows} == {"done"}
        for d in run.decisions:  # mtime preserved exactly by the copy
            assert os.stat(d.destination).st_mtime_ns == mtimes[Path(d.path).name]
        for r in rows:  # the journalled hash is the destination's
            assert r["sha256"] == sha(Path(r["dest"]))
        undo_run(store, run.run_id)
        assert contents(collection["src"]) == originals and contents(dest) == []
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def _old_mtime_file(tmp_path: Path) -> Path:
    src = make_image(tmp_path / "src.png", 3)
    os.utime(src, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    return src


def test_verified_copy_keeps_the_exact_mtime_and_fsyncs_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _old_mtime_file(tmp_path)
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(actions_mod.os, "fsync", recording_fsync)
    tmp = tmp_path / "copy.part"
    digest = actions_mod._copy_verified(str(src), str(tmp), sha(src))
    assert digest == sha(src) == sha(tmp)
    assert tmp.stat().st_mtime_ns == 1_500_000_000_987_654_321
    assert str(tmp) in synced  # the copy's data reached the disk before it is trusted


def test_verified_copy_refuses_a_copy_whose_bytes_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the bytes on disk are corrupted after writing (a storage error)."""
    src = _old_mtime_file(tmp_path)
    tmp = tmp_path / "copy.part"

    def corrupt(name: str) -> None:
        if name == "copy_written":
            data = bytearray(tmp.read_bytes())
            data[len(data) // 2] ^= 0xFF
            tmp.write_bytes(bytes(data))

    monkeypatch.setattr(_audit, "step", corrupt)
    with pytest.raises(actions_mod._Fail, match="differ from the source"):
        actions_mod._copy_verified(str(src), str(tmp), sha(src))
    assert not tmp.exists() and src.is_file()


def test_verified_copy_refuses_a_source_changed_since_it_was_scanned(tmp_path: Path) -> None:
    src = _old_mtime_file(tmp_path)
    tmp = tmp_path / "copy.part"
    with pytest.raises(actions_mod._Fail, match="changed since it was scanned"):
        actions_mod._copy_verified(str(src), str(tmp), "0" * 64)
    assert not tmp.exists() and src.is_file()


# -- bad input ----------------------------------------------------------------------------------------


def test_destination_inside_a_source_is_refused(collection: dict[str, Any], store: Store) -> None:
    src = collection["src"]
    with pytest.raises(FilterError, match="inside the source"):
        filter_collection(
            [src], analyzer=FakeAnalyzer(store), accept=str(src / "keep"), action="move"
        )
    with pytest.raises(FilterError, match="is inside reject ") as info:
        filter_collection(
            [src / "sub"], analyzer=FakeAnalyzer(store), reject=str(src), action="copy"
        )
    assert not (src / "keep").exists()
    # the library names its parameters; the CLI renders them as its flags
    from clipsieve.cli import option_flag

    assert "is inside --reject " in info.value.render(option_flag)


def test_missing_source_is_a_clear_error(tmp_path: Path, store: Store) -> None:
    with pytest.raises(FilterError, match="source not found: .*nowhere"):
        filter_collection(
            [tmp_path / "nowhere"],
            analyzer=FakeAnalyzer(store),
            accept=str(tmp_path / "a"),
            action="copy",
        )


def test_action_without_store_or_folder_is_refused(
    collection: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(FilterError, match="needs accept=, reject= or review="):
        filter_collection([collection["src"]], analyzer=FakeAnalyzer(None), action="move")
    with pytest.raises(FilterError, match=r"needs the store.*drop store=False") as info:
        filter_collection(
            [collection["src"]],
            analyzer=FakeAnalyzer(None),
            accept=str(tmp_path / "a"),
            action="move",
        )
    from clipsieve.cli import option_flag

    assert info.value.render(option_flag).endswith("drop --no-store (or use --dry-run)")
    with pytest.raises(FilterError, match=r"^dedupe 1.5 is outside") as bad:
        filter_collection([collection["src"]], analyzer=FakeAnalyzer(None), dedupe=1.5)
    assert bad.value.render(option_flag) == "--dedupe 1.5 is outside (0, 1]"


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Any:
    """A folder nobody can create files in (chattr +i as root, chmod otherwise)."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() == 0:
        if (
            not shutil.which("chattr")
            or subprocess.run(["chattr", "+i", str(d)], check=False, capture_output=True).returncode
            != 0
        ):
            pytest.skip("running as root without chattr: cannot make a read-only folder")
        undo = ["chattr", "-i", str(d)]
    else:
        d.chmod(0o555)
        undo = None
    try:
        (d / "probe").write_bytes(b"")
        pytest.skip("the folder is still writable here")
    except OSError:
        pass
    yield d
    if undo:
        subprocess.run(undo, check=True)
    else:
        d.chmod(0o755)


def test_read_only_destination_is_a_per_file_failure(
    collection: dict[str, Any], store: Store, read_only_dir: Path
) -> None:
    before = tree(collection["src"])
    run = filter_collection(
        [collection["src"]], analyzer=FakeAnalyzer(store), accept=str(read_only_dir), action="move"
    )
    assert len(run.failed) == 4  # the accepted ones; blocked and review ones stay
    assert all(d.outcome == "failed" and "cannot write into" in (d.error or "") for d in run.failed)
    assert tree(collection["src"]) == before  # nothing moved, nothing half-written
    assert {r["state"] for r in Journal(store).rows(run.run_id)} == {"failed"}


def test_a_file_that_disappears_mid_run_is_a_recorded_failure(
    collection: dict[str, Any], store: Store, tmp_path: Path
) -> None:
    victim = collection["paths"]["sub/maybe.png"]

    def on_item(d: Any) -> None:
        if d.path.endswith("good.png") and victim.exists():
            victim.unlink()  # vanishes after the decision, before its action

    run = filter_collection(
        [collection["src"]],
        analyzer=FakeAnalyzer(store),
        accept=str(tmp_path / "acc"),
        review=str(tmp_path / "rev"),
        reject=str(tmp_path / "rej"),
        action="move",
        on_item=on_item,
    )
    gone = next(d for d in run.decisions if d.path == str(victim))
    assert gone.outcome == "failed" and "vanished" in (gone.error or "")
    assert [d.path for d in run.failed] == [str(victim)]
    assert len(contents(tmp_path / "acc", tmp_path / "rev", tmp_path / "rej")) == 5


def test_an_error_after_the_rename_puts_the_file_back(
    collection: dict[str, Any], store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(name: str) -> None:
        if name == "dest_journaled":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(_audit, "step", boom)
    before = tree(collection["src"])
    run = filter_collection(
        [collection["src"]],
        analyzer=FakeAnalyzer(store),
        accept=str(tmp_path / "acc"),
        action="move",
    )
    assert len(run.failed) == 4 and "No space left" in (run.failed[0].error or "")
    assert {k: v[0] for k, v in tree(collection["src"]).items()} == {
        k: v[0] for k, v in before.items()
    }
    assert leftover_parts(tmp_path) == []


def test_the_store_lock_refuses_a_concurrent_run(
    collection: dict[str, Any], store: Store, tmp_path: Path
) -> None:
    from clipsieve.filtering import run_lock

    with run_lock(store):
        code = (
            "import sys\n"
            "from clipsieve.store import Store\n"
            "from clipsieve.filtering import run_lock, FilterError\n"
            f"s = Store({str(store.path)!r})\n"
            "try:\n"
            "    with run_lock(s):\n"
            "        sys.exit(0)\n"
            "except FilterError as e:\n"
            "    print(e); sys.exit(7)\n"
        )
        p = subprocess.run(
            [sys.executable, "-c", code], check=False, capture_output=True, text=True
        )
    assert p.returncode == 7 and "another clipsieve filter" in p.stdout


# -- the command line and the real scan path ------------------------------------------------------------


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from clipsieve.cli import main; main()", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_cli_filter_dry_run_then_move_then_undo(
    collection: dict[str, Any], store: Store, tmp_path: Path
) -> None:
    src = collection["src"]
    common = [
        "--store",
        str(store.path),
        "--model",
        MODEL,
        "--accept",
        str(tmp_path / "acc"),
        "--reject",
        str(tmp_path / "rej"),
        "--review",
        str(tmp_path / "rev"),
        "--min-quality",
        "6.5",
        "--where",
        "moderation.categories.violence < 0.5",
    ]
    p = run_cli("filter", str(src), "--action", "move", "--dry-run", *common)
    assert p.returncode == 0, p.stderr
    assert "accept  " in p.stdout and "dry run: 6 files" in p.stderr
    assert contents(tmp_path / "acc") == []
    manifest = tmp_path / "m.csv"
    p = run_cli("filter", str(src), "--action", "move", "--manifest", str(manifest), *common)
    assert p.returncode == 0, p.stderr
    run_id = p.stderr.split("undo with: clipsieve undo ")[1].split()[0]
    assert len(manifest.read_text().splitlines()) == 7
    assert contents(src) == []
    p = run_cli("undo", "--list", "--store", str(store.path))
    assert run_id in p.stdout
    p = run_cli("undo", run_id, "--store", str(store.path))
    assert p.returncode == 0 and "reversed 6 of 6" in p.stderr
    assert len(contents(src)) == 6
    p = run_cli(
        "filter",
        str(src),
        "--action",
        "move",
        "--accept",
        str(src / "in"),
        "--store",
        str(store.path),
        "--model",
        MODEL,
    )
    assert p.returncode == 3 and "inside the source" in p.stderr
    p = run_cli(
        "filter",
        str(src),
        "--action",
        "copy",
        "--where",
        "labels.cat > ",
        "--accept",
        str(tmp_path / "x"),
        "--store",
        str(store.path),
        "--model",
        MODEL,
    )
    assert p.returncode == 2 and "--where" in p.stderr


def test_real_scan_then_filter_uses_the_store(tiny_clip: Path, tmp_path: Path) -> None:
    from clipsieve.pipeline import Analyzer

    src = tmp_path / "src"
    for i in range(5):
        make_image(src / f"{i}.png", seed=i, size=40)
    shutil.copyfile(src / "0.png", src / "dup.png")
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    db = tmp_path / "s.sqlite"
    try:
        import clipsieve.quality.technical  # noqa: F401

        pixel = True
    except ImportError:
        pixel = False
    an = Analyzer(model=str(tiny_clip), store=db, pixel_features=pixel)
    results = list(an.scan([src], heads=default_heads(an, need_quality=True)))
    assert len(results) == 7 and an.model_loaded
    an.close()
    an = Analyzer(model=str(tiny_clip), store=db, pixel_features=pixel)
    run = filter_collection(
        [src],
        analyzer=an,
        accept=str(tmp_path / "acc"),
        reject=str(tmp_path / "rej"),
        action="copy",
        dedupe=0.9999,
    )
    assert not an.model_loaded  # stored results and embeddings: no model work
    got = {Path(d.path).name: d for d in run.decisions}
    assert got["broken.png"].decision == "error" and got["broken.png"].outcome == "skipped"
    assert got["dup.png"].reasons[0] == f"duplicate of {src / '0.png'}"
    assert (tmp_path / "acc" / "0.png").is_file() and (tmp_path / "rej" / "dup.png").is_file()
    an.close()


def test_dedupe_rescans_results_whose_embedding_is_from_another_preprocessing(
    tiny_clip: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    """Stored results whose embedding was made under an older preprocessing version are not
    silently left out of near-duplicate grouping: the files are embedded again."""
    from clipsieve import Analyzer

    src = tmp_path / "src"
    src.mkdir()
    Image.open(photos["astronaut"]).save(src / "a.jpg", quality=95)
    Image.open(photos["astronaut"]).save(src / "b.jpg", quality=80)
    db = tmp_path / "s.sqlite"
    an = Analyzer(model=str(tiny_clip), store=db)
    list(an.scan([src], heads=default_heads(an, need_quality=True)))  # results are complete
    an.store.execute("UPDATE embeddings SET prep='p-old'")  # as after an upgrade
    run = filter_collection([src], analyzer=Analyzer(model=str(tiny_clip), store=db),
                            action="none", dedupe=0.95)
    reasons = {Path(d.path).name: d.reasons for d in run.decisions}
    assert any("duplicate of" in r for r in reasons["b.jpg"] + reasons["a.jpg"])


def test_stored_results_follow_moved_files_and_back_on_undo(
    tiny_clip: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    from clipsieve import Analyzer
    from clipsieve.filtering.actions import undo_run

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    shutil.copy(photos["coffee"], src / "sub" / "coffee.jpg")
    db = tmp_path / "s.sqlite"
    an = Analyzer(model=str(tiny_clip), store=db)
    run = filter_collection([src], analyzer=an, accept=str(tmp_path / "keep"),
                            reject=str(tmp_path / "aside"), action="move")
    moved = tmp_path / "keep" / "sub" / "coffee.jpg"
    assert moved.exists() and not (src / "sub" / "coffee.jpg").exists()
    store = an.store
    assert store.get_result(str(moved), an.model_id)["path"] == str(moved)
    assert store.get_result(str(src / "sub" / "coffee.jpg"), an.model_id) is None
    again = Analyzer(model=str(tiny_clip), store=db)
    (r,) = again.scan([moved])
    assert r.cached and not again.model_loaded  # the hash record moved with the file
    undo_run(store, run.run_id)
    back = src / "sub" / "coffee.jpg"
    assert back.exists() and store.get_result(str(back), an.model_id)["path"] == str(back)


MINE_POLICY = """
name = "mine"
version = "3"
[categories.anything]
review = 0.0001
block = 0.0002
prompts = ["a photo", "an image", "a picture", "a snapshot", "a frame"]
[neutral.nothing]
prompts = ["zzz qqq"]
"""


def test_filter_reuses_stored_heads_only_when_made_as_it_would_make_them_now(
    tiny_clip: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    """`moderate -p mine` or `quality --quality-head` between two identical filter commands
    do not change the second one's answer (issue #9)."""
    from clipsieve.moderation import ModerationHead
    from clipsieve.pipeline import Analyzer
    from clipsieve.quality import QualityHead
    from clipsieve.quality.learned import train_quality_head

    src = tmp_path / "lib"
    src.mkdir()
    for p in photos.values():
        shutil.copy(p, src / p.name)
    db = tmp_path / "s.sqlite"
    # a private copy of the model: its prompt embeddings (default policy) are cached per
    # model in the process, which other tests' store counts must not see
    tiny_clip = Path(shutil.copytree(tiny_clip, tmp_path / "model"))

    def run_filter() -> dict[str, tuple[str, float | None, Any]]:
        an = Analyzer(model=str(tiny_clip), store=db)
        run = filter_collection([src], analyzer=an, action="none", min_quality=0.0)
        an.close()
        return {
            Path(d.path).name: (d.decision, d.quality, (d.result.get("moderation") or {})
                                .get("policy", {}).get("name"))
            for d in run.decisions
        }

    an = Analyzer(model=str(tiny_clip), store=db)
    list(an.scan([src], heads=[ModerationHead("default"), QualityHead()]))
    an.close()
    before = run_filter()
    assert all(v[2] == "default" for v in before.values())
    mine = tmp_path / "mine.toml"
    mine.write_text(MINE_POLICY)
    an = Analyzer(model=str(tiny_clip), store=db)
    moderated = list(an.scan([src], heads=[ModerationHead(str(mine))]))
    assert all(r.moderation.decision == "block" for r in moderated)
    emb = np.stack([r.embedding for r in moderated] * 4)
    feats = [r.features for r in moderated] * 4
    y = np.linspace(1, 9, len(emb))
    head = train_quality_head(emb, feats, y, model_id=an.model_id, folds=2)
    npz, _ = head.save(tmp_path / "head.npz")
    with_head = {Path(r.path).name: r.quality.score
                 for r in an.scan([src], heads=[QualityHead(str(npz))])}
    an.close()
    after = run_filter()
    assert after == before
    assert any(abs(with_head[k] - before[k][1]) > 1e-3 for k in before)  # the head differs
    assert all(v[0] == "accept" for v in after.values())  # not blocked by "mine"
    # with --policy mine, its stored decisions are used
    an = Analyzer(model=str(tiny_clip), store=db)
    run = filter_collection([src], analyzer=an, action="none", policy=str(mine))
    an.close()
    assert all(d.decision == "reject" for d in run.decisions)
