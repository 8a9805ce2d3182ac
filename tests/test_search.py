"""search.py: exact search against brute force, the FAISS indexes (pq, ivf), freshness, old
index files, the CLI."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from clipsieve import Analyzer, Store
from clipsieve.cli import main
from clipsieve.errors import ConfigError, StoreError
from clipsieve.search import (
    DEFAULT_RERANK,
    TopK,
    build_index,
    exact_search,
    index_paths,
    index_status,
    load_index,
    search,
    stored_prep,
)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _fill(store: Store, vecs: np.ndarray, model: str = "m", prep: str = "p",
          encoder: str = "torch") -> list[str]:
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(len(vecs))]
    store.put_items(({"path": f"/x/{i}.jpg", "sha256": s, "embedding": v}
                     for i, (s, v) in enumerate(zip(shas, vecs))), model=model, prep=prep,
                    encoder=encoder)
    store.put_results(({"path": f"/x/{i}.jpg", "status": "ok", "sha256": s, "model": model}
                       for i, s in enumerate(shas)), model=model)
    return shas


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command line; (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def _brute(mat: np.ndarray, keys: list[str], q: np.ndarray, k: int) -> list[tuple[str, float]]:
    s = mat @ q
    order = sorted(range(len(keys)), key=lambda i: (-float(s[i]), keys[i]))[:k]
    return [(keys[i], float(s[i])) for i in order]


@pytest.mark.parametrize("block", [1, 7, 64, 10_000])
def test_exact_search_equals_brute_force_whatever_the_block(block: int) -> None:
    rng = np.random.default_rng(1)
    mat = _unit(rng, 300, 16)
    mat[10] = mat[20]  # an exact tie: broken by key, whatever the block size
    keys = [f"k{i:04d}" for i in range(300)]
    qs = _unit(rng, 3, 16)
    qs[2] = mat[20]
    blocks = [(keys[i : i + block], mat[i : i + block]) for i in range(0, 300, block)]
    got = exact_search(qs, blocks, 10)
    for qi in range(3):
        want = _brute(mat, keys, qs[qi], 10)
        assert [k for k, _ in got[qi]] == [k for k, _ in want]
        assert np.allclose([s for _, s in got[qi]], [s for _, s in want], atol=1e-5)
    assert [k for k, _ in got[2][:2]] == ["k0010", "k0020"]


def test_topk_keeps_fewer_when_there_are_fewer() -> None:
    t = TopK(1, 5)
    t.add(np.array([[0.5, 0.9]], dtype=np.float32), ["a", "b"])
    assert t.result() == [("b", pytest.approx(0.9)), ("a", pytest.approx(0.5))]


def test_search_filters_where_and_excludes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    store = Store(tmp_path / "s.sqlite")
    vecs = _unit(rng, 50, 8)
    shas = _fill(store, vecs)
    # label half the items "cat"
    store.put_results(({"path": f"/x/{i}.jpg", "status": "ok", "sha256": s, "model": "m",
                        "labels": {"cat": 0.9 if i % 2 == 0 else 0.1}}
                       for i, s in enumerate(shas)), model="m")
    res = search(store, "m", "p", vecs[3], top=5, where="labels.cat > 0.5", exclude=[shas[0]])
    want = _brute(vecs, shas, vecs[3], 50)
    want = [(s, v) for s, v in want if shas.index(s) % 2 == 0 and s != shas[0]][:5]
    assert [h.sha256 for h in res.hits] == [s for s, _ in want]
    assert all(h.results[0]["labels"]["cat"] == 0.9 for h in res.hits)
    res = search(store, "m", "p", vecs[3], top=50, min_score=0.5)
    assert res.hits and all(h.score >= 0.5 for h in res.hits)


@pytest.fixture()
def scanned(tmp_path: Path, tiny_clip: Path, photos: dict[str, Path]) -> tuple[Path, Path]:
    """Real photos and variants of them (mirrored, greyscale, cropped), scanned with the tiny
    CLIP into a store."""
    d = tmp_path / "imgs"
    d.mkdir()
    for name, p in photos.items():
        shutil.copy(p, d / p.name)
        im = Image.open(p).convert("RGB")
        ImageOps.mirror(im).save(d / f"{name}-mirror.jpg", quality=90)
        ImageOps.grayscale(im).convert("RGB").save(d / f"{name}-grey.png")
        w, h = im.size
        im.crop((w // 8, h // 8, w - w // 8, h - h // 8)).save(d / f"{name}-crop.jpg")
    store = tmp_path / "s.sqlite"
    an = Analyzer(model=str(tiny_clip), store=store, pixel_features=False)
    assert all(r.ok for r in an.scan([d]))
    an.close()
    return d, store


def _all_embeddings(store: Store, model: str, prep: str) -> tuple[np.ndarray, list[str]]:
    keys, mats = [], []
    for k, m in store.iter_embeddings(model, prep, block=5):
        keys += k
        mats.append(m)
    return np.concatenate(mats), keys


def test_text_and_image_search_equal_brute_force_on_real_photos(
    scanned: tuple[Path, Path], tiny_clip: Path
) -> None:
    folder, store_path = scanned
    an = Analyzer(model=str(tiny_clip), store=store_path, pixel_features=False)
    prep = stored_prep(an.store, an.model_id)
    mat, keys = _all_embeddings(an.store, an.model_id, prep)
    assert mat.shape[0] == 16
    for text in ("a photo of a cat", "a rocket launch", "a cup of coffee"):
        res = an.search(text=text, top=6)
        q = an.embed_texts([text])[0]
        want = _brute(mat, keys, q, 6)
        assert res.method == "exact"
        assert [h.sha256 for h in res.hits] == [k for k, _ in want]
        assert np.allclose([h.score for h in res.hits], [s for _, s in want], atol=1e-5)
        assert all(h.path and Path(h.path).parent == folder for h in res.hits)
    photo = folder / "chelsea.jpg"
    res = an.search(image=photo, top=15)
    own = hashlib.sha256(photo.read_bytes()).hexdigest()
    want = [(k, s) for k, s in _brute(mat, keys, mat[keys.index(own)], 16) if k != own]
    assert [h.sha256 for h in res.hits] == [k for k, _ in want]
    from_pixels = an.search(image=Image.open(photo), top=5)  # a PIL image: encoded now
    assert len(from_pixels.hits) == 5 and from_pixels.method == "exact"
    scores = [h.score for h in from_pixels.hits]
    assert scores == sorted(scores, reverse=True)
    by_sha = an.search(image=own, top=3, include_self=True)
    assert by_sha.hits[0].sha256 == own and by_sha.hits[0].score == pytest.approx(1.0, abs=1e-5)
    an.close()


def test_search_does_no_image_model_work(scanned: tuple[Path, Path], tiny_clip: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _, store_path = scanned
    import clipsieve.media.decode as decode

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("decoded an image")

    monkeypatch.setattr(decode, "decode_image", boom)
    an = Analyzer(model=str(tiny_clip), store=store_path, pixel_features=False)
    prep = stored_prep(an.store, an.model_id)
    sha = next(iter(an.store.iter_embeddings(an.model_id, prep)))[0][0]
    res = an.search(image=sha, top=3)
    assert len(res.hits) == 3 and not an.model_loaded  # similar: not even the text encoder
    an.backend.encode_pixels = boom  # type: ignore[method-assign]
    assert len(an.search(text="a cat", top=3).hits) == 3
    an.close()


@pytest.mark.parametrize("kind", ["pq", "ivf"])
def test_index_returns_each_stored_vector_as_its_own_top1(tmp_path: Path, kind: str) -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    store = Store(tmp_path / "s.sqlite")
    vecs = _unit(rng, 3000, 32)
    shas = _fill(store, vecs)
    info = build_index(store, "m", "p", kind=kind)
    assert info.count == 3000 and info.kind == kind
    if kind == "pq":
        assert info.params == {"subquantizers": 16, "bits": 4, "padded_dim": 32,
                               "rerank": DEFAULT_RERANK}
    else:
        assert info.params == {"lists": 76, "probes": 8}
    vi = load_index(store, "m", "p")
    assert vi is not None and vi.info == info
    # a stored vector finds itself, even from the fast scan's single best candidate (pq) or
    # from one probed list (ivf), with its exact cosine
    got = vi.search(vecs, 1, probes=1, rerank=1)
    assert [g[0][0] for g in got] == shas
    assert np.allclose([g[0][1] for g in got], 1.0, atol=1e-5)
    res = search(store, "m", "p", vecs[7], top=10)
    assert res.method == "index" and res.hits[0].sha256 == shas[7]
    exact = search(store, "m", "p", vecs[7], top=10, exact=True)
    assert exact.method == "exact" and exact.hits[0].sha256 == shas[7]


@pytest.mark.parametrize("dim,n", [(33, 2000), (5, 300)])
def test_pq_index_pads_a_dimension_its_subquantizers_do_not_divide(tmp_path: Path, dim: int,
                                                                   n: int) -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(5)
    store = Store(tmp_path / "s.sqlite")
    vecs = _unit(rng, n, dim)
    shas = _fill(store, vecs)
    info = build_index(store, "m", "p")
    assert info.params["padded_dim"] == dim + 1 and info.dim == dim
    vi = load_index(store, "m", "p")
    assert vi is not None
    got = vi.search(vecs[:200], 3, rerank=16)  # 48 candidates: the fast scan still decides
    assert [g[0][0] for g in got] == shas[:200]
    for qi, hits in enumerate(got):  # scores are the exact cosines of the hits
        want = vecs[[shas.index(s) for s, _ in hits]] @ vecs[qi]
        assert np.allclose([v for _, v in hits], want, atol=1e-5)


def test_pq_index_recall_on_random_vectors(tmp_path: Path) -> None:
    """Structureless vectors, the case where inverted lists fail: recall@10 against exact."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(6)
    store = Store(tmp_path / "s.sqlite")
    vecs = _unit(rng, 20_000, 64)
    shas = _fill(store, vecs)
    build_index(store, "m", "p")
    vi = load_index(store, "m", "p")
    assert vi is not None
    queries = _unit(rng, 100, 64)
    got = vi.search(queries, 10)
    truth = np.argsort(-(queries @ vecs.T), axis=1)[:, :10]
    recall = np.mean([len({s for s, _ in g} & {shas[i] for i in t}) / 10
                      for g, t in zip(got, truth)])
    assert recall >= 0.9
    for q, hits in zip(queries, got):
        assert np.allclose([v for _, v in hits], vecs[[shas.index(s) for s, _ in hits]] @ q,
                           atol=1e-5)
        assert [v for _, v in hits] == sorted((v for _, v in hits), reverse=True)


def test_small_store_pq_index_scores_every_row(tmp_path: Path) -> None:
    """Fewer rows than the re-ranking depth (even fewer than 16, the codes' centroids): the
    index trains, and every row is scored exactly."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(7)
    for n in (1, 3, 40):
        store = Store(tmp_path / f"s{n}.sqlite")
        vecs = _unit(rng, n, 8)
        shas = _fill(store, vecs)
        build_index(store, "m", "p")
        res = search(store, "m", "p", vecs[0], top=n)
        assert res.method == "index"
        want = _brute(vecs, shas, vecs[0], n)
        assert [h.sha256 for h in res.hits] == [s for s, _ in want]
        store.close()


def test_index_search_with_where_and_exclude(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(8)
    store = Store(tmp_path / "s.sqlite")
    vecs = _unit(rng, 3000, 32)
    shas = _fill(store, vecs)
    store.put_results(({"path": f"/x/{i}.jpg", "status": "ok", "sha256": s, "model": "m",
                        "labels": {"cat": 0.9 if i % 2 == 0 else 0.1, "rare": float(i < 3)}}
                       for i, s in enumerate(shas)), model="m")
    build_index(store, "m", "p")
    res = search(store, "m", "p", vecs[4], top=10, where="labels.cat > 0.5",
                 exclude=[shas[4]])
    assert res.method == "index" and len(res.hits) == 10
    assert all(shas.index(h.sha256) % 2 == 0 and h.sha256 != shas[4] for h in res.hits)
    exact = search(store, "m", "p", vecs[4], top=10, where="labels.cat > 0.5",
                   exclude=[shas[4]], exact=True)
    assert len({h.sha256 for h in res.hits} & {h.sha256 for h in exact.hits}) >= 8
    # a condition that few pass: the index is asked for more, then exact over those few
    res = search(store, "m", "p", vecs[4], top=5, where="labels.rare > 0.5")
    assert res.method == "exact"
    assert [h.sha256 for h in res.hits] == [s for s, _ in _brute(vecs[:3], shas[:3],
                                                                vecs[4], 3)]


def test_index_is_used_only_while_fresh(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    store = Store(tmp_path / "s.sqlite")
    vecs = _unit(rng, 400, 16)
    _fill(store, vecs)
    build_index(store, "m", "p")
    assert index_status(store, "m", "p")[1] is None
    new = _unit(rng, 1, 16)[0]
    sha = hashlib.sha256(b"new").hexdigest()
    store.put_items([{"path": "/x/new.jpg", "sha256": sha, "embedding": new}], model="m",
                    prep="p")
    info, why = index_status(store, "m", "p")
    assert info is not None and why and "400" in why
    res = search(store, "m", "p", new, top=1)
    assert res.method == "exact" and res.hits[0].sha256 == sha and res.note
    build_index(store, "m", "p")
    res = search(store, "m", "p", new, top=1)
    assert res.method == "index" and res.hits[0].sha256 == sha


def test_index_of_an_earlier_version_loads_and_an_unknown_one_is_reported(
    tmp_path: Path,
) -> None:
    """Format 1 (clipsieve before index kinds: IVF, lists and probes at top level) still
    loads; a sidecar of an unknown format or a damaged index file makes search exact, with a
    note that says why."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(9)
    store = Store(tmp_path / "s.sqlite")
    vecs = _unit(rng, 500, 16)
    shas = _fill(store, vecs)
    info = build_index(store, "m", "p", kind="ivf")
    f_index, _, f_json = index_paths(store.path, "m", "p")
    old = {"model": "m", "prep": "p", "count": info.count, "newest": info.newest,
           "dim": 16, "lists": info.lists, "probes": info.probes,
           "ids_sha256": info.ids_sha256, "built_at": info.built_at,
           "build_seconds": info.build_seconds, "faiss_version": info.faiss_version,
           "format": 1}
    f_json.write_text(json.dumps(old))
    got, why = index_status(store, "m", "p")
    assert why is None and got is not None and got.kind == "ivf" and got.format == 1
    assert got.params == {"lists": info.lists, "probes": info.probes}
    res = search(store, "m", "p", vecs[9], top=3)
    assert res.method == "index" and res.hits[0].sha256 == shas[9]

    f_json.write_text(json.dumps({**old, "format": 99}))
    got, why = index_status(store, "m", "p")
    assert got is None and why and "another version" in why and "index build" in why
    res = search(store, "m", "p", vecs[9], top=3)
    assert res.method == "exact" and res.note == why and res.hits[0].sha256 == shas[9]

    build_index(store, "m", "p")
    f_index.write_bytes(b"not a faiss index")
    res = search(store, "m", "p", vecs[9], top=3)
    assert res.method == "exact" and res.note and "cannot be read" in res.note


def test_index_kind_follows_its_parameters(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    store = Store(tmp_path / "s.sqlite")
    _fill(store, _unit(np.random.default_rng(10), 100, 8))
    assert build_index(store, "m", "p", lists=4).kind == "ivf"  # the options of before
    assert build_index(store, "m", "p", rerank=8).params["rerank"] == 8
    with pytest.raises(ConfigError, match="lists and probes apply to an ivf index"):
        build_index(store, "m", "p", kind="pq", probes=2)
    with pytest.raises(ConfigError, match="rerank applies to a pq index"):
        build_index(store, "m", "p", kind="ivf", rerank=2)
    with pytest.raises(ConfigError, match="unknown index kind"):
        build_index(store, "m", "p", kind="hnsw")


def test_cli_search_similar_index_and_report(scanned: tuple[Path, Path], tiny_clip: Path,
                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, store_path = scanned
    st = Store(store_path)
    cat = st.get_result(str(folder / "chelsea.jpg"), str(tiny_clip.resolve()))
    assert cat is not None
    cat["moderation"] = {"decision": "block", "categories": {}}
    st.put_results([cat], model=str(tiny_clip.resolve()))
    st.close()
    common = ["--model", str(tiny_clip), "--store", str(store_path)]

    run = functools.partial(_cli, capsys)

    code, out, err = run("search", "a cat", "--top", "4", "--format", "jsonl", *common)
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert rows == sorted(rows, key=lambda r: -r["score"])
    assert "exact search" in err
    code, out, err = run("similar", str(folder / "chelsea.jpg"), "--format", "jsonl",
                         "--where", 'moderation.decision == "block"', "--include-self", *common)
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert len(rows) == 1 and rows[0]["path"].endswith("chelsea.jpg")
    code, _, err = run("index", "build", "--lists", "2", *common)  # the options of before
    assert code == 0 and "indexed 16 embeddings" in err and "ivf: 2 inverted lists" in err
    code, _, err = run("index", "build", "--kind", "pq", "--probes", "2", *common)
    assert code == 2 and "--probes apply to an ivf index only (the --kind is pq)" in err
    code, _, err = run("index", "build", *common)
    assert code == 0 and "indexed 16 embeddings" in err and "pq: PQ fast scan" in err
    code, out, _ = run("index", "status", *common)
    status = json.loads(out)
    assert status["fresh"] and status["kind"] == "pq" and status["params"]["rerank"] == 32
    report = tmp_path / "hits.html"
    code, out, err = run("similar", str(folder / "coffee.jpg"), "--top", "16", "--report",
                         str(report), "--include-self", *common)
    assert code == 0 and "index search" in err
    html = report.read_text()
    assert html.count('class="hit"') == 16
    assert html.count('class="blur"') == 1 and "data:image/jpeg;base64," in html
    assert "coffee.jpg" in out
    code, _, err = run("similar", str(tmp_path / "nope.jpg"), *common)
    assert code == 3 and "no such file" in err
    import tarfile

    with tarfile.open(tmp_path / "s.tar", "w") as tf:  # a member with the content of a file
        tf.add(folder / "rocket.jpg", arcname="k/rocket.jpg")
    code, out, err = run("similar", f"{tmp_path / 's.tar'}#k/rocket.jpg", "--top", "1",
                         "--include-self", "--format", "jsonl", *common)
    assert code == 0 and json.loads(out)["path"] == str(folder / "rocket.jpg")


def test_search_and_index_per_encoder(tmp_path: Path) -> None:
    """onnx / onnx-int8 scans store their own embeddings: searched, indexed and kept fresh
    apart from the torch ones."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(11)
    store = Store(tmp_path / "s.sqlite")
    torch_vecs, int8_vecs = _unit(rng, 300, 16), _unit(rng, 300, 16)
    shas = _fill(store, torch_vecs)
    assert _fill(store, int8_vecs, encoder="onnx-int8") == shas
    q = _unit(rng, 1, 16)[0]
    for enc, vecs in (("torch", torch_vecs), ("onnx-int8", int8_vecs)):
        res = search(store, "m", "p", q, top=5, encoder=enc)
        assert res.method == "exact" and res.encoder == enc
        assert [h.sha256 for h in res.hits] == [s for s, _ in _brute(vecs, shas, q, 5)]
    build_index(store, "m", "p", encoder="onnx-int8")
    assert index_paths(store.path, "m", "p", "onnx-int8") != index_paths(store.path, "m", "p")
    assert index_status(store, "m", "p") == (None, None)  # torch: no index
    res = search(store, "m", "p", int8_vecs[3], top=1, encoder="onnx-int8")
    assert res.method == "index" and res.hits[0].sha256 == shas[3]
    assert search(store, "m", "p", q, top=1).method == "exact"
    # new torch embeddings leave the onnx-int8 index fresh
    store.put_items([{"path": "/x/new.jpg", "sha256": hashlib.sha256(b"n").hexdigest(),
                      "embedding": q}], model="m", prep="p")
    info, why = index_status(store, "m", "p", encoder="onnx-int8")
    assert info is not None and info.encoder == "onnx-int8" and why is None
    with pytest.raises(StoreError, match="from the onnx encoder .*onnx-int8.*pass the encoder argument"):
        stored_prep(store, "m", encoder="onnx")


def test_cli_searches_the_embeddings_of_an_encoder(tiny_clip: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("faiss")
    model = str(tiny_clip.resolve())
    store_path = tmp_path / "s.sqlite"
    store = Store(store_path)
    vecs = _unit(np.random.default_rng(12), 40, 16)
    shas = _fill(store, vecs, model=model, encoder="onnx-int8")
    store.close()
    common = ["--model", str(tiny_clip), "--store", str(store_path)]

    run = functools.partial(_cli, capsys)

    code, _, err = run("similar", shas[0], *common)
    assert code == 3 and "from the torch encoder" in err and "pass --encoder" in err
    code, _, err = run("index", "build", "--encoder", "onnx-int8", *common)
    assert code == 0 and "indexed 40 embeddings" in err
    code, out, _ = run("index", "status", "--encoder", "onnx-int8", *common)
    assert json.loads(out)["fresh"] and json.loads(out)["encoder"] == "onnx-int8"
    code, out, err = run("similar", shas[0], "--encoder", "onnx-int8", "--top", "3",
                         "--format", "jsonl", *common)
    assert code == 0 and "(index search, onnx-int8 embeddings)" in err
    want = [s for s, _ in _brute(vecs, shas, vecs[0], 4)][1:]
    assert [json.loads(x)["sha256"] for x in out.splitlines()] == want
