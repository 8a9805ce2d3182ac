"""media/inputs.py: list files, tar shards, globs and limits, URLs; the same results as a folder."""

from __future__ import annotations

import csv
import http.server
import io
import json
import shutil
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipsieve.cli import main
from clipsieve.errors import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, DecodeError
from clipsieve.media.inputs import (
    Source,
    UrlPolicy,
    fetch_url,
    iter_sources,
    iter_tar,
    read_named,
    sniff_image,
)


@pytest.fixture()
def folder(tmp_path: Path, photos: dict[str, Path]) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    for p in photos.values():
        shutil.copy(p, d / p.name)
    return d


def _shard(folder: Path, dest: Path, captions: dict[str, str] | None = None) -> Path:
    """A webdataset-style shard: key.jpg (+ key.txt) per image, in name order."""
    with tarfile.open(dest, "w") as tf:
        for p in sorted(folder.iterdir()):
            tf.add(p, arcname=p.name)
            if captions and p.stem in captions:
                data = captions[p.stem].encode()
                info = tarfile.TarInfo(f"{p.stem}.txt")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return dest


def test_list_files_of_every_format_name_the_same_sources(folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(folder.iterdir())
    rel = [f"imgs/{p.name}" for p in files]
    (tmp_path / "l.txt").write_text("# my list\n" + "\n".join(rel) + "\n\n")
    with open(tmp_path / "l.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["caption", "path"])
        for r in rel:
            w.writerow([f"caption of {r}", r])
    pq.write_table(pa.table({"path": rel, "caption": [f"caption of {r}" for r in rel]}),
                   tmp_path / "l.parquet")
    (tmp_path / "l.jsonl").write_text(
        "".join(json.dumps({"path": r, "caption": f"caption of {r}"}) + "\n" for r in rel))
    want = [str(tmp_path / r) for r in rel]
    for name in ("l.txt", "l.csv", "l.parquet", "l.jsonl"):
        got = list(iter_sources(input_file=str(tmp_path / name)))
        assert [s.name for s in got] == want, name
        assert all(s.path == s.name for s in got)
        if name != "l.txt":
            assert [s.caption for s in got] == [f"caption of {r}" for r in rel]
    line = json.dumps({"path": want[2], "caption": "c"})
    stdin = io.StringIO("\n".join(want[:2]) + "\n" + line + "\n")
    got = list(iter_sources(input_file="-", stdin=stdin))
    assert [s.name for s in got] == want[:3] and got[2].caption == "c"


def test_malformed_lists_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"path": "a.jpg"}\n[1, 2]\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: expected a JSON object"):
        list(iter_sources(input_file=str(tmp_path / "bad.jsonl")))
    (tmp_path / "bad.csv").write_text("file,caption\na.jpg,x\n")
    with pytest.raises(ConfigError, match="no 'path' column"):
        list(iter_sources(input_file=str(tmp_path / "bad.csv")))
    with pytest.raises(ConfigError, match="no such input list"):
        list(iter_sources(input_file=str(tmp_path / "missing.txt")))
    with pytest.raises(ConfigError, match="cannot tell the list format"):
        list(iter_sources(input_file=str(tmp_path / "list.xyz")))


def test_include_exclude_and_limit(folder: Path) -> None:
    names = lambda srcs: [Path(s.name).name for s in srcs]  # noqa: E731
    assert names(iter_sources([folder], include=["c*.jpg"])) == ["chelsea.jpg", "coffee.jpg"]
    assert names(iter_sources([folder], exclude=["*/coffee.jpg", "rocket*"])) == [
        "astronaut.jpg", "chelsea.jpg"]
    assert names(iter_sources([folder], limit=2)) == ["astronaut.jpg", "chelsea.jpg"]
    assert names(iter_sources([folder, folder / "coffee.jpg"])) == sorted(
        p.name for p in folder.iterdir())  # each file once


def test_tar_members_are_read_in_place_with_webdataset_captions(folder: Path,
                                                               tmp_path: Path) -> None:
    shard = _shard(folder, tmp_path / "s.tar", {"chelsea": "a ginger cat"})
    srcs = list(iter_tar(str(shard)))
    assert [s.name for s in srcs] == [f"{shard}#{p.name}" for p in sorted(folder.iterdir())]
    for s in srcs:
        assert s.read() == (folder / s.name.split("#")[1]).read_bytes()
        assert read_named(s.name) == s.read()
    assert {s.name.split("#")[1]: s.caption for s in srcs}["chelsea.jpg"] == "a ginger cat"
    assert [s.caption for s in srcs].count(None) == 3
    got = list(iter_sources([shard], include=["*.jpg"], exclude=["s.tar#rocket*"]))
    assert len(got) == 3 and not any("rocket" in s.name for s in got)
    (tmp_path / "broken.tar").write_bytes(b"\0" * 100 + b"junk" * 300)
    bad = list(iter_sources([tmp_path / "broken.tar"]))
    assert len(bad) == 1 and bad[0].error is not None


def _scan_rows(*args: str, capsys: pytest.CaptureFixture[str],
               stdin: str | None = None, monkeypatch: pytest.MonkeyPatch | None = None,
               code: int = EXIT_OK) -> list[dict]:
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as exc:
        main(["scan", *args, "--no-store", "--embeddings", "-q"])
    out = capsys.readouterr()
    assert exc.value.code == code, out.err
    return [json.loads(x) for x in out.out.splitlines()]


def _comparable(r: dict) -> dict:
    """A result without what names the run or the input: path, timings, provenance run ids."""
    out = {k: v for k, v in r.items() if k not in ("path", "timing", "cached")}
    if isinstance(out.get("provenance"), dict):
        out["provenance"] = {h: {k: v for k, v in p.items() if k != "run"}
                             for h, p in out["provenance"].items()}
    return out


def test_tar_csv_parquet_and_stdin_give_the_same_results_as_the_folder(
    folder: Path, tmp_path: Path, tiny_clip: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    m = ["--model", str(tiny_clip), "--caption", "a photo"]
    ref = _scan_rows(str(folder), *m, capsys=capsys)
    assert len(ref) == 4 and all(r["status"] == "ok" for r in ref)
    files = [str(p) for p in sorted(folder.iterdir())]
    shard = _shard(folder, tmp_path / "s.tar")
    (tmp_path / "l.csv").write_text("path\n" + "\n".join(files) + "\n")
    pq.write_table(pa.table({"path": files}), tmp_path / "l.parquet")
    runs = {
        "tar": _scan_rows(str(shard), *m, capsys=capsys),
        "csv": _scan_rows("--input", str(tmp_path / "l.csv"), *m, capsys=capsys),
        "parquet": _scan_rows("--input", str(tmp_path / "l.parquet"), *m, capsys=capsys),
        "stdin": _scan_rows("--input", "-", *m, capsys=capsys, stdin="\n".join(files),
                            monkeypatch=monkeypatch),
    }
    for kind, rows in runs.items():
        assert [_comparable(r) for r in rows] == [_comparable(r) for r in ref], kind
    assert [r["path"] for r in runs["tar"]] == [f"{shard}#{Path(f).name}" for f in files]


def test_tar_captions_reach_moderation_and_tar_results_are_stored(
    folder: Path, tmp_path: Path, tiny_clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shard = _shard(folder, tmp_path / "s.tar", {"coffee": "buy cheap pills now"})
    store = tmp_path / "st.sqlite"
    with pytest.raises(SystemExit) as exc:
        main(["moderate", str(shard), "--model", str(tiny_clip), "--format", "jsonl",
              "--store", str(store), "--include", "*coffee*", "-q"])
    out = capsys.readouterr().out
    assert exc.value.code in (EXIT_OK, 5), out
    rows = [json.loads(x) for x in out.splitlines()]
    assert len(rows) == 1 and rows[0]["moderation"]["caption"]["text"] == "buy cheap pills now"
    assert rows[0]["moderation"]["caption"]["source"] == "input"
    from clipsieve.report.html import thumbnail_data_uri

    assert thumbnail_data_uri(rows[0]["path"]) is not None  # report thumbnails of members


# -- URLs -------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    jpeg = b""

    def log_message(self, *a: object) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str = "image/jpeg", **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        if "Content_Length" not in headers and body is not None:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        p = self.path
        port = self.server.server_address[1]
        if p == "/a.jpg":
            self._send(200, self.jpeg, "text/plain")  # Content-Type is not trusted either way
        elif p == "/page":
            self._send(200, b"<html>not an image</html>" * 10, "image/jpeg")
        elif p == "/redirect":
            self._send(302, b"", Location="/a.jpg")
        elif p == "/to-other-loopback":
            self._send(302, b"", Location=f"http://127.0.0.2:{port}/a.jpg")
        elif p == "/to-private":
            self._send(302, b"", Location="http://10.1.2.3/a.jpg")
        elif p == "/loop":
            self._send(302, b"", Location="/loop")
        elif p == "/big":
            self._send(200, self.jpeg + b"\0" * 5000)
        elif p == "/big-unsized":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(self.jpeg[:3] + b"\0" * 20000)
            self.close_connection = True
        elif p == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"\xff\xd8\xff" if _ == 0 else b"\0")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        else:
            self._send(404, b"no")


@pytest.fixture()
def server(photos: dict[str, Path]) -> Iterator[str]:
    _Handler.jpeg = photos["coffee"].read_bytes()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


LOCAL = UrlPolicy(allow_networks=("127.0.0.1/32",))


def test_sniffing() -> None:
    assert sniff_image(b"\xff\xd8\xff\xe0....") == "jpeg"
    assert sniff_image(b"RIFF\0\0\0\0WEBPVP8 ") == "webp"
    assert sniff_image(b"\0\0\0\x1cftypavif") == "avif"
    assert sniff_image(b"\0\0\0\x1cftypisom") is None  # a video
    assert sniff_image(b"<!doctype html>") is None


def test_urls_are_fetched_only_from_allowed_addresses(server: str, photos: dict[str, Path]) -> None:
    want = photos["coffee"].read_bytes()
    assert fetch_url(f"{server}/a.jpg", LOCAL) == want
    assert fetch_url(f"{server}/redirect", LOCAL) == want
    with pytest.raises(DecodeError, match="private or reserved address .*127.0.0.1"):
        fetch_url(f"{server}/a.jpg")  # loopback is refused by default
    with pytest.raises(DecodeError, match=r"127.0.0.2.*\(redirected to"):
        fetch_url(f"{server}/to-other-loopback", LOCAL)  # every hop is checked
    with pytest.raises(DecodeError, match=r"10.1.2.3.*redirected"):
        fetch_url(f"{server}/to-private", LOCAL)
    with pytest.raises(DecodeError, match="more than 5 redirects"):
        fetch_url(f"{server}/loop", LOCAL)
    with pytest.raises(DecodeError, match="HTTP 404"):
        fetch_url(f"{server}/missing.jpg", LOCAL)


def test_url_downloads_are_bounded_and_sniffed(server: str) -> None:
    small = UrlPolicy(max_bytes=len(_Handler.jpeg) + 100, allow_networks=("127.0.0.1/32",))
    with pytest.raises(DecodeError) as exc:
        fetch_url(f"{server}/big", small)
    assert exc.value.code == "too_large"
    tiny = UrlPolicy(max_bytes=10_000, allow_networks=("127.0.0.1/32",))
    with pytest.raises(DecodeError) as exc:
        fetch_url(f"{server}/big-unsized", tiny)  # no Content-Length: stopped while reading
    assert exc.value.code == "too_large"
    quick = UrlPolicy(timeout=0.8, allow_networks=("127.0.0.1/32",))
    t0 = time.monotonic()
    with pytest.raises(DecodeError, match="timed out"):
        fetch_url(f"{server}/slow", quick)  # a trickle never outlasts the deadline
    assert time.monotonic() - t0 < 5
    with pytest.raises(DecodeError) as exc:
        fetch_url(f"{server}/page", LOCAL)
    assert exc.value.code == "not_an_image" and "not an image" in exc.value.message


def test_cli_refuses_urls_without_the_flag_and_reads_them_with_it(
    server: str, tmp_path: Path, tiny_clip: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"{server}/a.jpg"
    m = ["--model", str(tiny_clip)]
    with pytest.raises(SystemExit) as exc:
        main(["scan", url, *m, "--no-store"])
    assert exc.value.code == EXIT_USAGE and "--allow-urls" in capsys.readouterr().err
    (tmp_path / "urls.txt").write_text(url + "\n")
    rows = _scan_rows("--input", str(tmp_path / "urls.txt"), *m, capsys=capsys,
                      code=EXIT_ITEMS_FAILED)
    assert rows[0]["error"]["message"].startswith("URL inputs are refused")
    rows = _scan_rows(url, "--allow-urls", *m, capsys=capsys, code=EXIT_ITEMS_FAILED)
    assert "private or reserved" in rows[0]["error"]["message"]  # no exemption by default
    monkeypatch.setenv("CLIPSIEVE_URL_ALLOW_NETWORKS", "127.0.0.1/32")
    rows = _scan_rows(url, f"{server}/page", "--allow-urls", *m, capsys=capsys,
                      code=EXIT_ITEMS_FAILED)
    assert rows[0]["path"] == url and rows[0]["status"] == "ok"
    assert rows[1]["error"]["code"] == "not_an_image"


def test_sources_pass_through_analyzer_scan(folder: Path, tiny_clip: Path) -> None:
    from clipsieve import Analyzer

    data = (folder / "rocket.jpg").read_bytes()
    an = Analyzer(model=str(tiny_clip), store=False)
    src = Source(name="mem://rocket", error=None, tar=None, path=str(folder / "rocket.jpg"))
    items = list(an.scan([src, folder / "coffee.jpg"]))
    assert [i.path for i in items] == ["mem://rocket", str(folder / "coffee.jpg")]
    assert all(i.ok for i in items) and items[0].sha256 is not None
    import hashlib

    assert items[0].sha256 == hashlib.sha256(data).hexdigest()


def test_filter_selects_with_globs_limit_and_lists_but_refuses_shards(
    folder: Path, tmp_path: Path, tiny_clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*args: str) -> tuple[int, list[str]]:
        manifest = tmp_path / "m.csv"
        if manifest.exists():
            manifest.unlink()
        with pytest.raises(SystemExit) as exc:
            main(["filter", *args, "--action", "none", "--manifest", str(manifest),
                  "--model", str(tiny_clip), "--no-store", "-q"])
        capsys.readouterr()
        if not manifest.exists():
            return int(exc.value.code or 0), []
        with open(manifest, newline="") as fh:
            return int(exc.value.code or 0), [Path(r["path"]).name for r in csv.DictReader(fh)]

    assert run(str(folder), "--include", "c*.jpg") == (0, ["chelsea.jpg", "coffee.jpg"])
    assert run(str(folder), "--exclude", "c*", "--limit", "1") == (0, ["astronaut.jpg"])
    (tmp_path / "l.txt").write_text("imgs/rocket.jpg\nimgs/coffee.jpg\n")
    assert run("--input", str(tmp_path / "l.txt")) == (0, ["coffee.jpg", "rocket.jpg"])
    _shard(folder, tmp_path / "s.tar")
    code, rows = run(str(tmp_path / "s.tar"))
    assert code == EXIT_USAGE and rows == []


def test_a_fifo_named_like_a_tar_shard_is_an_error_not_a_hang(tmp_path) -> None:
    """Issue #8: nothing that is not a regular file is ever opened."""
    import os

    from clipsieve.media.inputs import iter_tar

    os.mkfifo(tmp_path / "x.tar")
    (src,) = list(iter_tar(str(tmp_path / "x.tar")))
    assert src.error is not None and src.error.code == "io_error"
    assert src.error.message == "not a regular file (a FIFO)"
