"""video/analyze.py: the driver, with a deterministic fake embedder (a colour histogram).

The fake encoder embeds a frame as its colour histogram and a prompt "coffee …" as the
histogram of the coffee photo, so with a policy whose category ``violence`` is prompted by
"coffee" and ``drugs`` by "rocket", exactly the coffee and rocket shots of the test video
score high: segment boundaries can be checked against the known cut times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import photo_array
from PIL import Image

from clipsieve import Analyzer, build_heads
from clipsieve.media.preprocess import Preprocess
from clipsieve.testing import write_test_video
from clipsieve.video import Sampling, VideoOptions, analyze_video, scan_media

av = pytest.importorskip("av")

#: astronaut 0–3 s, coffee 3–6 s, black 6–8 s, chelsea 8–10 s, frozen 10–13 s, rocket 13–15 s
SHOTS = [("astronaut", 3), ("coffee", 3), ("black", 2), ("chelsea", 2), ("freeze", 3),
         ("rocket", 2)]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
INTERVAL = 1000  # ms between sampled frames at --fps 1

POLICY = """\
name = "fake"
version = "1"

[categories.violence]
review = 0.5
block = 0.9
prompts = ["coffee 1", "coffee 2", "coffee 3", "coffee 4", "coffee 5"]

[categories.drugs]
review = 0.5
block = 0.9
prompts = ["rocket 1", "rocket 2", "rocket 3", "rocket 4", "rocket 5"]

[neutral.person]
prompts = ["astronaut 1"]

[neutral.cat]
prompts = ["chelsea 1"]
"""


def _hist(pixels: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) normalised pixels → (N, 216) colour histograms, sqrt, L2-normalised."""
    v = ((pixels * 0.25 + 0.5).clip(0, 0.999) * 6).astype(int)
    idx = v[:, 0] * 36 + v[:, 1] * 6 + v[:, 2]
    h = np.stack([np.bincount(i.ravel(), minlength=216) for i in idx]).astype(np.float32)
    h = np.sqrt(h)
    return h / np.linalg.norm(h, axis=1, keepdims=True).clip(1e-6)


class FakeEncoder:
    """A deterministic embedder with the Encoder protocol: colour histograms."""

    kind = "fake"
    model_id = "fake-histogram"
    device = "cpu"
    precision = "float32"
    logit_scale = 100.0
    preprocess = Preprocess(shortest_edge=32, resize_hw=None, crop_hw=(32, 32),
                            rescale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

    def __init__(self) -> None:
        self.pixel_calls = 0
        self.refs = {n: _hist(self.preprocess(Image.fromarray(photo_array(n)))[None])[0]
                     for n in PHOTOS}

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        self.pixel_calls += 1
        return _hist(np.asarray(pixels))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            ref = self.refs.get(t.split()[0])
            if ref is None:  # any other text: a fixed pseudo-random direction
                rng = np.random.default_rng(sum(map(ord, t)))
                ref = rng.standard_normal(216).astype(np.float32)
                ref /= np.linalg.norm(ref)
            out.append(ref)
        return np.stack(out)


def shots() -> list[tuple[Any, float]]:
    return [(photo_array(n) if n in PHOTOS else n, s) for n, s in SHOTS]


@pytest.fixture(scope="module")
def vids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("vids")
    return {ext: write_test_video(folder / f"shots{ext}", shots(), fps=10,
                                  size=(160, 120) if ext == ".gif" else (320, 240))
            for ext in (".mp4", ".mkv", ".webm", ".gif")}


@pytest.fixture()
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "fake.toml"
    p.write_text(POLICY)
    return p


def analyzer(store: Any = False, **kw: Any) -> Analyzer:
    return Analyzer(encoder=FakeEncoder(), store=store, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".webm", ".gif"])
def test_segments_match_the_known_cuts(vids: dict[str, Path], policy_file: Path,
                                       ext: str) -> None:
    an = analyzer()
    heads = build_heads(an, policy=str(policy_file), quality=True)
    r = analyze_video(an, vids[ext], heads=heads)
    assert r.status == "ok", r.error
    assert r.kind == "video" and r.codec and r.duration_ms == pytest.approx(15000, abs=150)
    assert not r.partial and r.decoded_fraction == 1.0 and r.partial_reasons == []
    assert [f["timestamp_ms"] for f in r.frames] == list(range(0, 15000, 1000))
    segs = {s["category"]: s for s in r.segments or []}
    assert set(segs) == {"violence", "drugs"}, r.segments
    for cat, (a, b) in (("violence", (3000, 6000)), ("drugs", (13000, 15000))):
        assert abs(segs[cat]["start_ms"] - a) <= INTERVAL, segs[cat]
        assert abs(segs[cat]["end_ms"] - b) <= INTERVAL, segs[cat]
        assert segs[cat]["decision"] == "block" and segs[cat]["max_score"] > 0.9
        assert segs[cat]["duration_ms"] == segs[cat]["end_ms"] - segs[cat]["start_ms"]
    assert r.verdict is not None and r.verdict["decision"] == "block"
    assert r.verdict["category"] in ("violence", "drugs")
    checks = {c["kind"]: c for c in r.quality["checks"]}  # type: ignore[index]
    for kind, (a, b) in (("black", (6000, 8000)), ("frozen", (10000, 13000))):
        assert abs(checks[kind]["start_ms"] - a) <= INTERVAL, checks
        assert abs(checks[kind]["end_ms"] - b) <= INTERVAL, checks
    q = r.quality
    assert q is not None and 0 <= q["p10"] <= q["median"] <= 10 and q["frames"] == 15
    d = r.to_dict()
    for key in ("kind", "duration_ms", "fps", "width", "height", "codec", "frames_decoded",
                "frames", "segments", "verdict", "quality", "partial", "decoded_fraction"):
        assert key in d
    assert set(d["frames"][0]) >= {"timestamp_ms", "moderation", "quality"}


def test_rescoring_with_another_policy_decodes_nothing_and_runs_no_model(
    vids: dict[str, Path], policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "s.sqlite"
    an = analyzer(store)
    first = analyze_video(an, vids[".mp4"], heads=build_heads(an, policy=str(policy_file)))
    assert not first.cached and first.verdict["decision"] == "block"  # type: ignore[index]
    calls = an.encoder.pixel_calls  # type: ignore[attr-defined]
    assert calls > 0

    import clipsieve.video.analyze as driver

    class NoDecoding:
        def __init__(self, *a: Any, **k: Any) -> None:
            raise AssertionError("re-scoring must not open the video")

    monkeypatch.setattr(driver, "VideoReader", NoDecoding)
    swapped = tmp_path / "swapped.toml"  # violence and drugs swap their prompts
    swapped.write_text(POLICY.replace('"coffee', '"tmp').replace('"rocket', '"coffee')
                       .replace('"tmp', '"rocket').replace('version = "1"', 'version = "2"'))
    again = analyze_video(an, vids[".mp4"], heads=build_heads(an, policy=str(swapped),
                                                               labels=["coffee", "rocket"],
                                                               templates=["{} photo"]))
    assert again.cached and again.status == "ok"
    assert an.encoder.pixel_calls == calls  # type: ignore[attr-defined]
    before = [(s["category"], s["start_ms"], s["end_ms"]) for s in first.segments or []]
    after = [(s["category"], s["start_ms"], s["end_ms"]) for s in again.segments or []]
    swap = {"violence": "drugs", "drugs": "violence"}
    assert after == [(swap[c], a, b) for c, a, b in before]
    assert again.verdict["policy"] == {"name": "fake", "version": "2"}  # type: ignore[index]
    assert again.frames[3]["labels"]["coffee"] > 0.9  # labels from stored embeddings
    stored = an.store.get_video_frames(first.sha256, an.model_id,  # type: ignore[union-attr]
                                       an.preprocess.version, encoder="fake")
    assert sorted(stored) == list(range(0, 15000, 1000))
    # another sampling is not in the store: that one decodes
    monkeypatch.undo()
    other = analyze_video(an, vids[".mp4"], heads=build_heads(an, policy=str(policy_file)),
                          options=VideoOptions(sampling=Sampling(scenes=True)))
    assert not other.cached and len(other.frames) == 5


def test_stop_on_block_and_thumbnail(vids: dict[str, Path], policy_file: Path,
                                     tmp_path: Path) -> None:
    an = analyzer(batch_size=2)
    heads = build_heads(an, policy=str(policy_file))
    r = analyze_video(an, vids[".mkv"], heads=heads,
                      options=VideoOptions(stop_on_block=True, thumbnail_dir=str(tmp_path)))
    assert r.verdict["decision"] == "block" and r.verdict["category"] == "violence"  # type: ignore[index]
    assert r.partial and any("stop-on-block" in x for x in r.partial_reasons)
    assert len(r.frames) < 10 and r.frames_decoded < 150
    thumb = r.thumbnail
    assert thumb is not None and Path(thumb["path"]).is_file()
    t = thumb["timestamp_ms"]
    frame = next(f for f in r.frames if f["timestamp_ms"] == t)
    assert frame["moderation"]["decision"] == "allow"
    with Image.open(thumb["path"]) as im:
        assert im.format == "JPEG" and im.size == (320, 240)


def test_broken_videos_get_codes_or_partial_results(vids: dict[str, Path],
                                                    tmp_path: Path) -> None:
    an = analyzer()
    data = vids[".mkv"].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    r = analyze_video(an, cut)
    assert r.status == "ok" and r.partial and 0 < r.decoded_fraction < 0.9  # type: ignore[operator]
    assert "truncated" in r.partial_reasons[0]
    for ext in (".mp4", ".mkv"):  # corrupt bytes in the middle: skipped, the rest decoded
        raw = bytearray(vids[ext].read_bytes())
        rng = np.random.default_rng(0)
        mid = len(raw) // 2
        raw[mid : mid + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
        bad = tmp_path / f"corrupt{ext}"
        bad.write_bytes(bytes(raw))
        got = analyze_video(an, bad)
        assert got.status == "ok" and got.partial, (ext, got.partial_reasons)
        assert 0.5 < got.decoded_fraction < 1.0  # type: ignore[operator]
        assert got.frames[-1]["timestamp_ms"] >= 13000  # decoding went on after the damage
        assert any("corrupt" in x or "missing" in x for x in got.partial_reasons)
    for ext in (".mkv", ".mp4"):  # a video stream without a single frame
        empty = tmp_path / f"empty{ext}"
        out = av.open(str(empty), "w")
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
        out.close()
        got = analyze_video(an, empty)
        assert got.error.code == "empty_video", got.error  # type: ignore[union-attr]
        assert "zero duration" in got.error.message  # type: ignore[union-attr]
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    assert analyze_video(an, notes).error.code == "not_a_video"  # type: ignore[union-attr]
    timed = analyze_video(an, vids[".mp4"], options=VideoOptions(timeout_s=1e-6))
    assert timed.status == "error" and timed.error.code == "timeout"  # type: ignore[union-attr]
    d = timed.to_dict()
    assert d["kind"] == "video" and d["error"]["code"] == "timeout" and "frames" not in d


def test_scan_media_routes_videos_by_content_in_order(vids: dict[str, Path], tmp_path: Path,
                                                      photos: dict[str, Path]) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(photos["coffee"].read_bytes())
    (folder / "b.mp4").write_bytes(vids[".mp4"].read_bytes())
    (folder / "c.jpg").write_bytes(photos["rocket"].read_bytes())
    (folder / "d.gif").write_bytes(vids[".gif"].read_bytes())
    (folder / "e.dat").write_bytes(vids[".mkv"].read_bytes())  # not walked: unknown ending
    named = tmp_path / "clip.bin"  # named explicitly: sniffed, whatever its name
    named.write_bytes(vids[".mkv"].read_bytes())
    an = analyzer()
    heads = build_heads(an, policy=None, quality=True)
    got = list(scan_media(an, [folder, named], heads=heads,
                          options=VideoOptions(sampling=Sampling(max_frames=3))))
    assert [Path(r.path).name for r in got] == ["a.jpg", "b.mp4", "c.jpg", "d.gif", "clip.bin"]
    kinds = [r.to_dict().get("kind", "image") for r in got]
    assert kinds == ["image", "video", "image", "video", "video"]
    assert all(r.status == "ok" for r in got)
    assert len(got[1].frames) == 3 and got[1].verdict is None  # no policy: no verdict


def test_filter_routes_videos_by_verdict_and_exports_and_report(
    vids: dict[str, Path], policy_file: Path, tmp_path: Path, photos: dict[str, Path]
) -> None:
    from clipsieve.filtering import filter_collection
    from clipsieve.report import export_results, read_export, write_report

    src = tmp_path / "src"
    src.mkdir()
    (src / "blocked.mp4").write_bytes(vids[".mp4"].read_bytes())
    calm = write_test_video(src / "calm.mkv", [(photo_array("astronaut"), 3)], fps=10)
    (src / "cat.jpg").write_bytes(photos["chelsea"].read_bytes())
    an = analyzer(tmp_path / "s.sqlite")
    run = filter_collection([src], analyzer=an, accept=str(tmp_path / "ok"),
                            reject=str(tmp_path / "no"), action="copy",
                            policy=str(policy_file))
    got = {Path(d.path).name: d for d in run.decisions}
    assert got["blocked.mp4"].decision == "reject"
    assert any("video verdict: " in r for r in got["blocked.mp4"].reasons)
    assert got["calm.mkv"].decision == "accept" and got["cat.jpg"].decision == "accept"
    assert (tmp_path / "no" / "blocked.mp4").is_file()
    assert (tmp_path / "ok" / calm.name).is_file()

    results = list(an.store.iter_results(an.model_id))  # type: ignore[union-attr]
    video = next(r for r in results if r["path"].endswith("blocked.mp4"))
    assert video["kind"] == "video" and len(video["frames"]) == 15
    out = tmp_path / "rows.csv"
    n_rows = export_results(results, out)
    assert n_rows == 3
    rows = read_export(out)
    assert {r.get("kind") for r in rows} == {"video", None}
    assert all("frames" not in r for r in rows)
    n_frames = export_results(results, tmp_path / "frames.csv", frames=True)
    frames = [r for r in read_export(tmp_path / "frames.csv") if r.get("kind") == "frame"]
    assert n_frames == 3 + 15 + 3 and len(frames) == 18
    coffee = next(r for r in frames if r["path"].endswith("blocked.mp4")
                  and r["timestamp_ms"] == 4000)
    assert coffee["moderation"]["decision"] == "block"

    html_path = tmp_path / "report.html"
    write_report(results, html_path)
    html = html_path.read_text()
    assert '"v":{' in html and '"lane":"segments","kind":"block"' in html
    assert html.count("data:image/jpeg;base64,") >= 6  # the strips of the videos


def test_decoding_runs_at_most_a_bounded_queue_ahead_of_the_encoder(
    vids: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory stays flat for any length: the decoder thread waits on a bounded queue (two
    batches) instead of decoding the whole video ahead of a slow encoder."""
    import time as _time

    import clipsieve.video.analyze as driver

    produced = [0]
    ahead: list[int] = []

    class Counting(driver.VideoReader):  # type: ignore[misc, name-defined]
        def frames(self, *a: Any, **k: Any) -> Any:
            for f in super().frames(*a, **k):
                produced[0] += 1
                yield f

    class Slow(FakeEncoder):
        consumed = 0

        def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
            _time.sleep(0.05)
            Slow.consumed += len(pixels)
            ahead.append(produced[0] - Slow.consumed)
            return super().encode_pixels(pixels)

    monkeypatch.setattr(driver, "VideoReader", Counting)
    an = Analyzer(encoder=Slow(), store=False, batch_size=2)  # type: ignore[arg-type]
    r = analyze_video(an, vids[".mp4"], options=VideoOptions(sampling=Sampling(fps=5)))
    assert r.status == "ok" and len(r.frames) == 75
    # queue of 2 batches + the batch being collected + the frame waiting to be put
    assert max(ahead) <= 2 * 2 + 2 + 1, max(ahead)


def test_filter_dedupe_groups_copies_of_a_video_without_analysing_again(
    vids: dict[str, Path], policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipsieve.filtering import filter_collection

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.mkv").write_bytes(vids[".mkv"].read_bytes())
    (src / "b.mkv").write_bytes(vids[".mkv"].read_bytes())
    an = analyzer(tmp_path / "s.sqlite")
    run = filter_collection([src], analyzer=an, action="none", dedupe=0.95)
    got = {Path(d.path).name: d for d in run.decisions}
    assert got["a.mkv"].decision == "accept"
    assert got["b.mkv"].decision == "reject" and got["b.mkv"].duplicate_of.endswith("a.mkv")  # type: ignore[union-attr]

    import clipsieve.video.analyze as driver

    def no_video(*a: Any, **k: Any) -> Any:
        raise AssertionError("stored video results are reused")

    monkeypatch.setattr(driver, "analyze_video", no_video)
    again = filter_collection([src], analyzer=an, action="none", dedupe=0.95)
    assert [d.decision for d in again.decisions] == ["accept", "reject"]


class OtherFakeEncoder(FakeEncoder):
    """Another encoder kind of the same model (as onnx-int8 is of a torch model): slightly
    different embeddings, and its own cache entries."""

    kind = "fake-int8"
    precision = "int8"

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        out = super().encode_pixels(pixels) + 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_frames_of_another_encoder_are_not_reused(
    vids: dict[str, Path], policy_file: Path, tmp_path: Path
) -> None:
    store = tmp_path / "s.sqlite"
    a = analyzer(store)
    b = Analyzer(encoder=OtherFakeEncoder(), store=store)  # type: ignore[arg-type]
    assert a.model_id == b.model_id
    first = analyze_video(a, vids[".mp4"], heads=build_heads(a, policy=str(policy_file)))
    assert (first.encoder, first.precision, first.device, first.cached) == (
        "fake", "float32", "cpu", False)
    other = analyze_video(b, vids[".mp4"], heads=build_heads(b, policy=str(policy_file)))
    assert not other.cached and b.encoder.pixel_calls > 0  # type: ignore[attr-defined]
    assert (other.encoder, other.precision) == ("fake-int8", "int8")
    calls = (a.encoder.pixel_calls, b.encoder.pixel_calls)  # type: ignore[attr-defined]
    again_a = analyze_video(a, vids[".mp4"], heads=build_heads(a, policy=str(policy_file)))
    again_b = analyze_video(b, vids[".mp4"], heads=build_heads(b, policy=str(policy_file)))
    assert again_a.cached and again_b.cached
    assert (a.encoder.pixel_calls, b.encoder.pixel_calls) == calls  # type: ignore[attr-defined]
    assert (again_a.encoder, again_a.precision) == ("fake", "float32")
    assert (again_b.encoder, again_b.precision) == ("fake-int8", "int8")
    assert again_b.frames == other.frames and again_a.frames == first.frames
    prep = a.preprocess.version
    s = a.store
    assert s is not None and first.sha256 is not None
    fa = s.get_video_frames(first.sha256, a.model_id, prep, encoder="fake")
    fb = s.get_video_frames(first.sha256, a.model_id, prep, encoder="fake-int8")
    assert sorted(fa) == sorted(fb) and not np.allclose(fa[0][0], fb[0][0])


def test_video_results_carry_the_image_envelope(vids: dict[str, Path], policy_file: Path,
                                               tmp_path: Path) -> None:
    """One envelope (types.ResultEnvelope) for images and videos: every field an image result
    carries outside its head fields is in a video result too, in the same order."""
    from clipsieve.types import ItemResult, ResultEnvelope
    from clipsieve.video import VideoResult

    assert issubclass(ItemResult, ResultEnvelope) and issubclass(VideoResult, ResultEnvelope)
    an = analyzer()
    r = analyze_video(an, vids[".mp4"], heads=build_heads(an, policy=str(policy_file)))
    image = an.analyze([photo_array("coffee")], ids=["coffee"])[0].to_dict()
    video = r.to_dict()
    envelope = [k for k in image if k in ResultEnvelope.__dataclass_fields__]
    assert envelope == ["path", "status", "error", "sha256", "width", "height", "model",
                        "device", "precision", "encoder", "cached", "timing"]
    assert [k for k in video if k in envelope] == envelope
    assert list(video)[:4] == ["path", "status", "error", "kind"]
    assert (video["encoder"], video["precision"], video["device"]) == ("fake", "float32", "cpu")
    assert (image["encoder"], image["precision"]) == (video["encoder"], video["precision"])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    bad = analyze_video(an, broken).to_dict()
    assert bad["status"] == "error" and [k for k in bad if k in envelope] == envelope
