"""pipeline.py: the Analyzer end to end on the tiny CLIP and real photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from clipsieve import Analyzer, Store


@pytest.fixture()
def folder(tmp_path: Path, photos: dict[str, Path]) -> Path:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    for name, p in photos.items():
        shutil.copy(p, d / ("sub" if name == "rocket" else "") / p.name)
    (d / "broken.jpg").write_bytes(photos["coffee"].read_bytes()[:3000])
    (d / "empty.png").write_bytes(b"")
    return d


def test_scan_yields_typed_results_in_order_and_goes_on_past_errors(
    tiny_clip: Path, folder: Path
) -> None:
    an = Analyzer(model=str(tiny_clip), store=False, batch_size=2)
    results = list(an.scan([folder]))
    names = [Path(r.path).name for r in results]
    assert names == ["astronaut.jpg", "broken.jpg", "chelsea.jpg", "coffee.jpg", "empty.png",
                     "rocket.jpg"]
    by = {Path(r.path).name: r for r in results}
    assert by["broken.jpg"].status == "error" and by["broken.jpg"].error.code == "truncated"
    assert by["empty.png"].error.code == "not_an_image"
    ok = [r for r in results if r.ok]
    assert len(ok) == 4
    assert (by["coffee.jpg"].width, by["coffee.jpg"].height) == (600, 400)
    for r in ok:
        assert r.model == str(tiny_clip.resolve())
        assert len(r.sha256) == 64
        assert np.isclose(np.linalg.norm(r.embedding), 1, atol=1e-5)
        d = r.to_dict()
        assert set(d) >= {"path", "status", "error", "sha256", "width", "height", "model",
                          "timing"}
        assert d["error"] is None and d["timing"]["total_ms"] > 0


def test_embeddings_match_embed_images(tiny_clip: Path, photos: dict[str, Path]) -> None:
    an = Analyzer(model=str(tiny_clip), store=False, precision="float32")
    paths = list(photos.values())
    scanned = np.stack([r.embedding for r in an.scan(paths)])
    direct = an.embed_images(paths)
    assert np.allclose(scanned, direct, atol=1e-6)


def test_second_scan_does_no_model_work(tiny_clip: Path, folder: Path, tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    first = list(Analyzer(model=str(tiny_clip), store=db).scan([folder]))
    again = Analyzer(model=str(tiny_clip), store=db)
    second = list(again.scan([folder]))
    assert not again.model_loaded  # nothing decoded, nothing encoded, model never loaded
    assert [r.cached for r in second if r.ok] == [True] * 4
    for a, b in zip(first, second):
        assert a.path == b.path and a.status == b.status and a.sha256 == b.sha256
        if a.ok:
            assert np.array_equal(a.embedding, b.embedding)
            assert a.features == b.features


def test_copied_file_reuses_embedding_by_content(
    tiny_clip: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    db = Store(tmp_path / "s.sqlite")
    list(Analyzer(model=str(tiny_clip), store=db).scan([photos["chelsea"]]))
    copy = tmp_path / "renamed.jpg"
    shutil.copy(photos["chelsea"], copy)
    an = Analyzer(model=str(tiny_clip), store=db)
    (r,) = an.scan([copy])
    assert r.cached and not an.model_loaded


def test_interrupted_scan_resumes(tiny_clip: Path, folder: Path, tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    an = Analyzer(model=str(tiny_clip), store=db, batch_size=1, workers=1)
    it = an.scan([folder])
    first_two = [next(it), next(it)]
    it.close()  # the process "dies" here
    assert first_two[0].ok
    resumed = list(Analyzer(model=str(tiny_clip), store=db).scan([folder]))
    assert resumed[0].cached  # done before the interruption: not redone
    assert sum(r.cached for r in resumed) < 4  # the rest was really computed now
    assert all(r.ok for r in resumed if r.path.endswith(("chelsea.jpg", "rocket.jpg")))


def test_text_embeddings_cached_in_store(tiny_clip: Path, tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    a = Analyzer(model=str(tiny_clip), store=db).embed_texts(["a cat", "a dog", "a cat"])
    assert a.shape == (3, 16) and np.array_equal(a[0], a[2])
    an = Analyzer(model=str(tiny_clip), store=db)
    b = an.embed_texts(["a dog", "a cat"])
    assert not an.model_loaded
    assert np.array_equal(b, a[[1, 0]])


def test_no_store_mode_writes_nothing(tiny_clip: Path, photos: dict[str, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIPSIEVE_STORE", raising=False)
    list(Analyzer(model=str(tiny_clip), store=False).scan([photos["coffee"]]))
    assert not (tmp_path / "cache").exists()


def test_heads_receive_ok_items_and_matching_embeddings(
    tiny_clip: Path, folder: Path
) -> None:
    class Norms:
        field = "norms"

        def apply(self, items, embeddings, analyzer):
            assert len(items) == len(embeddings)
            for it, e in zip(items, embeddings):
                assert it.ok and np.array_equal(it.embedding, e)
                it.extra[self.field] = float(np.linalg.norm(e))

    results = list(Analyzer(model=str(tiny_clip), store=False).scan([folder], heads=[Norms()]))
    for r in results:
        assert ("norms" in r.to_dict()) == r.ok


def test_logit_scale_read_without_loading_the_model(tiny_clip: Path) -> None:
    an = Analyzer(model=str(tiny_clip), store=False)
    scale = an.logit_scale
    assert not an.model_loaded
    assert scale == an.backend.logit_scale  # one source of truth, bit for bit


def test_device_and_precision_recorded_fresh_and_cached(
    tiny_clip: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    db = tmp_path / "s.sqlite"
    (fresh,) = Analyzer(model=str(tiny_clip), store=db, precision="float32").scan(
        [photos["coffee"]])
    assert (fresh.device, fresh.precision) == ("cpu", "float32")
    (cached,) = Analyzer(model=str(tiny_clip), store=db, precision="bfloat16").scan(
        [photos["coffee"]])
    assert cached.cached and (cached.device, cached.precision) == ("cpu", "float32")
    assert cached.to_dict()["precision"] == "float32"


def test_decoding_runs_ahead_by_a_bounded_window(
    tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory stays flat: never more than the window of decoded images waits for the model."""
    from PIL import Image

    for i in range(120):
        Image.new("RGB", (40, 40), (i, 2 * i % 256, 90)).save(tmp_path / f"{i:03d}.png")
    an = Analyzer(model=str(tiny_clip), store=False, batch_size=4, workers=2)
    prepared = 0
    real = an._prepare

    def counting(path, prep, *rest):
        nonlocal prepared
        prepared += 1
        return real(path, prep, *rest)

    monkeypatch.setattr(an, "_prepare", counting)
    lags = []
    for yielded, _ in enumerate(an.scan([tmp_path]), start=1):
        lags.append(prepared - yielded)
    window = max(an.batch_size * 2, an.workers * 4)
    assert yielded == 120
    assert max(lags) <= window + an.batch_size


def test_copies_are_decoded_and_encoded_once_and_share_embedding_and_scores(
    tiny_clip: Path, photos: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files with the same bytes in one scan: one decode, one model row, identical numbers,
    even when the copies land in different batches and at different rows (issue #9)."""
    import clipsieve.pipeline as pipeline
    from clipsieve.moderation import ModerationHead
    from clipsieve.quality import QualityHead

    d = tmp_path / "in"
    d.mkdir()
    names = []
    for k, (name, p) in enumerate(sorted(photos.items())):
        for c in range(3 if k == 0 else 1):
            shutil.copy(p, d / f"{k}{c}_{name}.jpg")
            names.append(f"{k}{c}")
    (d / "99_broken.jpg").write_bytes(b"\xff\xd8 not really")
    shutil.copy(d / "99_broken.jpg", d / "9a_broken.jpg")
    decodes: list[str] = []
    real_decode = pipeline.decode_image

    def counting_decode(data, path, **kw):
        decodes.append(path)
        return real_decode(data, path, **kw)

    monkeypatch.setattr(pipeline, "decode_image", counting_decode)
    # a private copy of the model: prompt embeddings are cached per model in the process
    model = shutil.copytree(tiny_clip, tmp_path / "model")
    an = Analyzer(model=str(model), store=False, batch_size=2, workers=2)
    rows: list[int] = []
    real_encode = an.backend.encode_pixels

    def counting_encode(px):
        rows.append(len(px))
        return real_encode(px)

    monkeypatch.setattr(an.backend, "encode_pixels", counting_encode)
    results = list(an.scan([d], heads=[ModerationHead("default"), QualityHead()]))
    unique = len(photos) + 1  # the photos and the broken file
    assert len(results) == len(photos) + 2 + 2
    assert len(decodes) == unique
    assert sum(rows) == len(photos)
    copies = [r for r in results if Path(r.path).name.startswith("0")]
    assert len(copies) == 3 and len({r.sha256 for r in copies}) == 1
    first = copies[0]
    for r in copies[1:]:
        assert np.array_equal(r.embedding, first.embedding)
        assert r.quality.to_dict() == first.quality.to_dict()
        assert r.moderation.to_dict() == first.moderation.to_dict()
        assert r.features == first.features and (r.width, r.height) == (first.width, first.height)
    broken = [r for r in results if "broken" in r.path]
    assert len(broken) == 2 and all(r.status == "error" for r in broken)
    assert broken[0].error is not None and broken[1].error == broken[0].error


# -- the public two-phase batch step: prepare (decode pools, Ray tasks) + analyze (issue #12) --
def _same_result(got, want, *, tol: float = 1e-5, sha: bool = True) -> None:
    """Same sizes, hash, pixel statistics; embeddings and every score within ``tol``."""
    assert got.ok and want.ok, (got.error, want.error)
    assert (got.width, got.height) == (want.width, want.height)
    assert got.sha256 == (want.sha256 if sha else None)
    assert (got.model, got.device, got.precision, got.encoder) == (
        want.model, want.device, want.precision, want.encoder)
    assert got.features == want.features
    assert np.allclose(got.embedding, want.embedding, atol=tol)
    a, b = got.to_dict(), want.to_dict()
    for d in (a, b):
        for key in ("path", "timing", "cached", "provenance", *(() if sha else ("sha256",))):
            d.pop(key, None)
    assert list(a) == list(b)

    def close(x, y, where):
        if isinstance(x, dict):
            assert list(x) == list(y), where
            for k in x:
                close(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, list):
            assert len(x) == len(y), where
            for i, (p, q) in enumerate(zip(x, y)):
                close(p, q, f"{where}[{i}]")
        elif isinstance(x, float):
            assert y == pytest.approx(x, abs=tol), where
        else:
            assert x == y, where

    close(a, b, "result")


@pytest.fixture()
def jpegs(tmp_path: Path, photos: dict[str, Path], big_photo: Path) -> list[Path]:
    """Photos and a multi-megapixel JPEG (decoded with DCT scaling: original size differs)."""
    d = tmp_path / "jpegs"
    d.mkdir()
    out = [Path(shutil.copy(p, d / p.name)) for p in [*photos.values(), big_photo]]
    return sorted(out)


def test_prepare_then_analyze_equals_scan(tiny_clip: Path, jpegs: list[Path]) -> None:
    """Bytes, decoded images and prepared images through the public step give scan's results:
    original size (not the DCT-reduced one), JPEG-table statistics, features, scores."""
    from concurrent.futures import ThreadPoolExecutor

    from clipsieve import build_heads
    from clipsieve.media.decode import decode_image

    an = Analyzer(model=str(tiny_clip), store=False, precision="float32", device="cpu",
                  batch_size=8)
    heads = build_heads(an, policy="default", quality=True, labels=["cat", "rocket"])
    scanned = list(an.scan(jpegs, heads=heads))
    big = scanned[[p.name for p in jpegs].index("astronaut-big.jpg")]
    assert (big.width, big.height) == (2400, 2400)
    datas = [p.read_bytes() for p in jpegs]
    names = [str(p) for p in jpegs]
    # 1. bytes straight into analyze
    from_bytes = an.analyze(datas, heads=heads, ids=names)
    # 2. prepare in a thread pool (as the service's decode pool does), then one batch
    with ThreadPoolExecutor(4) as pool:
        prepared = list(pool.map(lambda a: an.prepare(a[0], id=a[1]), zip(datas, names)))
    assert all(p.pixels is not None and p.item.features for p in prepared)
    from_prepared = an.analyze(prepared, heads=heads)
    # 3. Decoded images, decoded by the caller with the analyzer's options
    decoded = [decode_image(d, n, min_side=an.decode_min_side, limits=an.limits,
                            **an.decode_options) for d, n in zip(datas, names)]
    assert decoded[names.index(str(big.path))].image.size != (2400, 2400)  # DCT-reduced
    from_decoded = an.analyze(decoded, heads=heads, ids=names)
    for results in (from_bytes, from_prepared, from_decoded):
        assert [r.path for r in results] == names
        for got, want in zip(results, scanned):
            _same_result(got, want, sha=results is not from_decoded)  # Decoded has no bytes
    assert from_bytes[0].timing["total_ms"] >= from_bytes[0].timing["decode_ms"] > 0


def test_prepare_never_raises_for_bad_bytes(tiny_clip: Path, photos: dict[str, Path]) -> None:
    from clipsieve.media.decode import DecodeLimits

    an = Analyzer(model=str(tiny_clip), store=False, limits=DecodeLimits(max_file_bytes=50_000))
    data = photos["coffee"].read_bytes()
    cut = an.prepare(data[:3000], id="cut.jpg")
    assert cut.pixels is None and cut.item.error.code == "truncated"
    assert cut.item.sha256 is not None and cut.item.path == "cut.jpg"
    assert an.prepare(b"", id="e").item.error.code == "not_an_image"
    assert an.prepare(data * 20, id="big").item.error.code == "too_large"
    results = an.analyze([cut, an.prepare(data[:40_000], id="ok?")])
    assert results[0].status == "error" and results[0].embedding is None


def test_head_sets_share_one_encoder_call_and_run_each_set_once(
    tiny_clip: Path, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A micro-batch whose images asked for different heads: one model call; each distinct
    set of heads computes once, over its own images; results as if analysed apart."""
    from clipsieve import build_heads

    an = Analyzer(model=str(tiny_clip), store=False, precision="float32", device="cpu",
                  batch_size=16)
    moderate = build_heads(an, policy="default", quality=True)
    classify = build_heads(an, policy=None, quality=False, labels=["cat", "dog"])
    datas = [p.read_bytes() for p in photos.values()] * 2
    names = [f"{k}-{i}" for i, k in enumerate(list(photos) * 2)]
    sets = [moderate if i % 3 else classify for i in range(len(datas))]
    apart = {}
    for hs in (moderate, classify):
        rows = [i for i, s in enumerate(sets) if s is hs]
        for i, r in zip(rows, an.analyze([datas[i] for i in rows], heads=hs,
                                         ids=[names[i] for i in rows])):
            apart[i] = r
    calls: list[int] = []
    real_encode = an.encoder.encode_pixels
    monkeypatch.setattr(an.encoder, "encode_pixels",
                        lambda px: calls.append(len(px)) or real_encode(px))
    computed: list[tuple[str, int]] = []
    for h in moderate + classify:
        real = h.compute

        def counting(embs, feats, captions=None, _real=real, _h=h):
            computed.append((_h.field, len(embs)))
            return _real(embs, feats, captions)

        monkeypatch.setattr(h, "compute", counting)
    mixed = an.analyze(datas, head_sets=sets, ids=names)
    assert calls == [len(photos)]  # copies (same bytes) share rows; one call for the batch
    n_mod = sum(s is moderate for s in sets)
    assert sorted(computed) == sorted([("moderation", len(photos)), ("quality", len(photos)),
                                       ("labels", len(datas) - n_mod)])
    for i, r in enumerate(mixed):
        assert r.path == names[i]
        _same_result(r, apart[i])
        assert (r.labels is None) == (sets[i] is moderate)
        assert (r.moderation is None) == (sets[i] is classify)
    with pytest.raises(ValueError, match="head_sets"):
        an.analyze(datas, heads=moderate, head_sets=sets)
