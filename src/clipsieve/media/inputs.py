"""Where images come from: files and folders, list files, tar shards, URLs.

Every command that reads images goes through :func:`iter_sources`, which turns what the user
named into :class:`Source` objects, in order:

* **a file or folder** — as :func:`clipsieve.media.discover.iter_files` finds them;
* **a tar shard** (a name ending ``.tar``) — each image member, read in place (seek + read
  of that member's bytes, never extracted), named ``archive.tar#member``. In the webdataset
  layout (``key.jpg`` with ``key.txt``) the ``.txt`` member is the image's caption;
* **a URL** (``http://`` or ``https://``) — refused unless ``allow_urls``; then downloaded in
  the decode workers with :func:`fetch_url` (bounded size and time, every hop's address
  checked, content sniffed);
* **a list file** (``input_file``): ``.txt`` (one entry a line; ``#`` comments), ``.csv`` or
  ``.parquet`` (a ``path`` column and an optional ``caption`` column), ``.jsonl`` (objects with
  ``path`` and optional ``caption``), or ``-`` for standard input (lines; a line starting with
  ``{`` is a JSON object). Each entry may itself be a file, folder, tar shard or URL; relative
  paths are relative to the list file's folder (standard input: the current folder).

``include`` / ``exclude`` globs (:func:`fnmatch.fnmatchcase`) are matched against a source's
whole name and its last part (``photos/a.jpg`` and ``a.jpg``; for a tar member
``d/s.tar#k/x.jpg``, also ``s.tar#k/x.jpg`` and ``x.jpg``); an excluded name is never read. ``limit`` stops after that many sources.
"""

from __future__ import annotations

import csv
import fnmatch
import http.client
import ipaddress
import json
import os
import socket
import ssl
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

from clipsieve.errors import ConfigError, DecodeError
from clipsieve.media.decode import DecodeLimits, read_bytes, stat_input
from clipsieve.media.discover import IMAGE_EXTENSIONS, iter_files

#: Bytes of a tar member read as a caption at most.
MAX_CAPTION_BYTES = 64 * 1024

#: List-file formats by name ending.
LIST_FORMATS = {".txt": "txt", ".lst": "txt", ".csv": "csv", ".parquet": "parquet",
                ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def is_url(name: str) -> bool:
    """``http://`` or ``https://`` (any case)."""
    low = name[:8].lower()
    return low.startswith("http://") or low.startswith("https://")


def is_tar(name: str) -> bool:
    return name.lower().endswith(".tar") and os.path.isfile(name)


@dataclass(frozen=True)
class UrlPolicy:
    """Limits on downloading URL inputs.

    Attributes:
        max_bytes: largest body accepted (the download stops one byte past it).
        timeout: seconds for the whole download of one URL, redirects included.
        max_redirects: redirects followed at most.
        allow_networks: networks exempt from the private-address rule, as CIDR strings
            (``"127.0.0.1/32"``). Empty by default: loopback, private (RFC 1918), link-local,
            carrier-grade NAT, multicast and reserved addresses are all refused, at every
            hop. Tests use it to reach a server on 127.0.0.1.
    """

    max_bytes: int = 50 * 1024 * 1024
    timeout: float = 30.0
    max_redirects: int = 5
    allow_networks: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, **kw: Any) -> UrlPolicy:
        """The default policy, with ``CLIPSIEVE_URL_ALLOW_NETWORKS`` (comma-separated CIDRs)
        as ``allow_networks`` when set."""
        raw = os.environ.get("CLIPSIEVE_URL_ALLOW_NETWORKS", "")
        nets = tuple(n.strip() for n in raw.split(",") if n.strip())
        return cls(allow_networks=nets, **kw)


@dataclass(frozen=True)
class Source:
    """One image to read.

    Attributes:
        name: what results call it (their ``path``): a file path, ``archive.tar#member`` or
            a URL.
        path: the local file to read, when it is one.
        caption: a caption that came with it (list file column, webdataset ``.txt``).
        tar: the shard, for a tar member; with ``offset`` and ``size`` of its data.
        url_policy: for a URL: how to download it (``None``: URLs are refused).
        error: a reason the source cannot be read, known before reading (raised by
            :meth:`read` as it is).
    """

    name: str
    path: str | None = None
    caption: str | None = None
    tar: str | None = None
    offset: int = 0
    size: int = 0
    url_policy: UrlPolicy | None = field(default=None, repr=False)
    error: DecodeError | None = field(default=None, repr=False)

    @property
    def is_local_file(self) -> bool:
        return self.path is not None

    def read(self, limits: DecodeLimits = DecodeLimits()) -> bytes:
        """The bytes of the image (bounded by ``limits.max_file_bytes``).

        Raises:
            DecodeError: ``io_error``, ``too_large`` or ``not_an_image`` (a URL's content).
        """
        if self.error is not None:
            raise self.error
        if self.path is not None:
            return read_bytes(self.path, limits)
        if self.tar is not None:
            if self.size > limits.max_file_bytes:
                raise DecodeError("too_large", f"member is {self.size} bytes, over the limit "
                                  f"of {limits.max_file_bytes}", self.name)
            try:
                with open(self.tar, "rb") as fh:
                    fh.seek(self.offset)
                    data = fh.read(self.size)
            except OSError as exc:
                raise DecodeError("io_error", f"cannot read the shard: {exc.strerror or exc}",
                                  self.name) from None
            if len(data) != self.size:
                raise DecodeError("truncated", "the shard ends inside this member", self.name)
            return data
        if is_url(self.name):
            if self.url_policy is None:
                raise DecodeError("io_error", "URL inputs are refused unless --allow-urls is "
                                  "given", self.name)
            policy = self.url_policy
            if limits.max_file_bytes < policy.max_bytes:
                policy = UrlPolicy(limits.max_file_bytes, policy.timeout, policy.max_redirects,
                                   policy.allow_networks)
            return fetch_url(self.name, policy)
        raise DecodeError("io_error", "nothing to read", self.name)


# -- URLs -----------------------------------------------------------------------------------

def sniff_image(data: bytes) -> str | None:
    """The image format the first bytes name (:func:`clipsieve.media.sniff.sniff`), or
    ``None`` when they are not an image clipsieve decodes (HTML, a video…)."""
    from clipsieve.media.sniff import SNIFF_BYTES, sniff

    found = sniff(data[:SNIFF_BYTES])
    return found.format if found is not None and found.kind == "image" else None


def _address_allowed(ip: str, policy: UrlPolicy) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for net in policy.allow_networks:
        if addr in ipaddress.ip_network(net, strict=False):
            return True
    return bool(addr.is_global) and not addr.is_multicast


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the address that was checked, not to a second DNS answer."""

    def __init__(self, host: str, port: int, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch_url(url: str, policy: UrlPolicy = UrlPolicy()) -> bytes:
    """Download an image over HTTP(S), safely.

    Every hop (the URL and each redirect) is resolved and refused when any of its addresses
    is not public (see :class:`UrlPolicy`); the connection goes to the address checked. The
    whole download, redirects included, must finish within ``policy.timeout`` seconds and the
    body may not exceed ``policy.max_bytes``. The body must start like an image (sniffed; the
    server's Content-Type is not trusted).

    Raises:
        DecodeError: ``io_error`` (refused address, network error, HTTP status, timeout, too
            many redirects), ``too_large`` or ``not_an_image``.
    """
    deadline = time.monotonic() + policy.timeout
    current = url
    for _hop in range(policy.max_redirects + 1):
        parts = urlsplit(current)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise DecodeError("io_error", f"not an http(s) URL: {current}", url)
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        left = deadline - time.monotonic()
        if left <= 0:
            raise DecodeError("io_error", f"timed out after {policy.timeout:g}s", url)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise DecodeError("io_error", f"cannot resolve {host}: {exc}", url) from None
        ips = list(dict.fromkeys(str(info[4][0]) for info in infos))
        bad = [ip for ip in ips if not _address_allowed(ip, policy)]
        if not ips or bad:
            via = "" if current == url else f" (redirected to {current})"
            raise DecodeError("io_error", f"refused: {host} resolves to a private or reserved "
                              f"address ({', '.join(bad)}){via}", url)
        conn_cls = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
        conn = conn_cls(host, port, ips[0], timeout=left)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", target, headers={
                "User-Agent": "clipsieve", "Accept": "image/*", "Accept-Encoding": "identity",
            })
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                loc = resp.getheader("Location")
                if not loc:
                    raise DecodeError("io_error", f"HTTP {resp.status} without Location", url)
                current = urljoin(current, loc)
                continue
            if resp.status != 200:
                raise DecodeError("io_error", f"HTTP {resp.status} {resp.reason}", url)
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > policy.max_bytes:
                raise DecodeError("too_large", f"{length} bytes, over the limit of "
                                  f"{policy.max_bytes}", url)
            data = _read_body(resp, conn, policy, deadline, url)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, (socket.timeout, TimeoutError)):
                raise DecodeError("io_error", f"timed out after {policy.timeout:g}s", url) \
                    from None
            raise DecodeError("io_error", f"download failed: {exc}", url) from None
        finally:
            conn.close()
        kind = sniff_image(data)
        if kind is None:
            ctype = resp.getheader("Content-Type") or "no Content-Type"
            raise DecodeError("not_an_image", f"the content is not an image ({ctype}, "
                              f"starts {data[:8]!r})", url)
        return data
    raise DecodeError("io_error", f"more than {policy.max_redirects} redirects", url)


def _read_body(resp: Any, conn: Any, policy: UrlPolicy, deadline: float, url: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DecodeError("io_error", f"timed out after {policy.timeout:g}s", url)
        if conn.sock is not None:
            conn.sock.settimeout(left)
        block = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
        if not block:
            break
        chunks.append(block)
        total += len(block)
        if total > policy.max_bytes:
            raise DecodeError("too_large", f"more than {policy.max_bytes} bytes, over the "
                              "limit", url)
    return b"".join(chunks)


# -- tar shards -----------------------------------------------------------------------------


def _wds_key(member: str) -> tuple[str, str]:
    """(key, extension) as webdataset splits a member name: at the first dot of its last
    part (``a/b.seg.jpg`` → ``a/b``, ``seg.jpg``)."""
    head, _, base = member.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), (ext if dot else "")


def iter_tar(path: str, limits: DecodeLimits = DecodeLimits()) -> Iterator[Source]:
    """The image members of a tar shard, in archive order, each with its caption.

    Only the headers are read while listing (the member data is skipped with seeks); a
    member's ``.txt`` sibling (same webdataset key) is read as its caption. A shard that
    cannot be opened is one error source.
    """
    try:
        stat_input(path)  # a FIFO or device named x.tar is refused, never opened
    except DecodeError as exc:
        yield Source(name=path, error=DecodeError("io_error", exc.message, path))
        return
    try:
        tf = tarfile.open(path, mode="r:")
    except (OSError, tarfile.TarError) as exc:
        yield Source(name=path, error=DecodeError("io_error", f"cannot read tar shard: {exc}",
                                                  path))
        return
    with tf:
        group: list[tarfile.TarInfo] = []
        key = None
        try:
            for info in tf:
                k, _ = _wds_key(info.name)
                if group and k != key:
                    yield from _tar_group(path, tf, group)
                    group = []
                key = k
                group.append(info)
        except (OSError, tarfile.TarError) as exc:
            yield from _tar_group(path, tf, group)
            group = []
            yield Source(name=f"{path}#", error=DecodeError(
                "truncated", f"tar shard is damaged after {key or 'its start'}: {exc}", path))
        yield from _tar_group(path, tf, group)


def _tar_group(path: str, tf: tarfile.TarFile, group: list[tarfile.TarInfo]) -> Iterator[Source]:
    caption = None
    for info in group:
        _, ext = _wds_key(info.name)
        if ext.lower() in ("txt", "caption", "caption.txt") and info.isfile():
            raw = tf.extractfile(info)
            if raw is not None:
                text = raw.read(MAX_CAPTION_BYTES).decode("utf-8", errors="replace")
                caption = text.strip().lstrip("\ufeff") or None
    for info in group:
        ext = os.path.splitext(info.name)[1].lower()
        if ext not in IMAGE_EXTENSIONS:
            continue
        name = f"{path}#{info.name}"
        if not info.isfile():
            yield Source(name=name, error=DecodeError(
                "io_error", "tar member is not a regular file (a link or device)", name))
            continue
        yield Source(name=name, caption=caption, tar=path, offset=info.offset_data,
                     size=info.size)


# -- list files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    target: str
    caption: str | None
    where: str


def _list_format(name: str) -> str:
    if name == "-":
        return "stdin"
    low = name.lower()
    for ext, fmt in LIST_FORMATS.items():
        if low.endswith(ext):
            return fmt
    raise ConfigError(f"{name}: cannot tell the list format from the name; use .txt, .csv, "
                      ".parquet or .jsonl (or - for standard input)")


def _json_entry(text: str, where: str) -> tuple[str, str | None]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise ConfigError(f'{where}: expected a JSON object with a "path" key')
    img = obj.get("path")
    if not isinstance(img, str) or not img.strip():
        raise ConfigError(f'{where}: "path" must be a non-empty string')
    cap = obj.get("caption")
    if cap is not None and not isinstance(cap, str):
        raise ConfigError(f'{where}: "caption" must be a string or null')
    return img, cap


def _read_lines(fh: IO[str], name: str, fmt: str) -> Iterator[tuple[str, str | None, str]]:
    for lineno, line in enumerate(fh, 1):
        text = line.strip().lstrip("\ufeff") if lineno == 1 else line.strip()
        where = f"{name}:{lineno}"
        if not text or (fmt != "jsonl" and text.startswith("#")):
            continue
        if fmt == "jsonl" or text.startswith("{"):
            img, cap = _json_entry(text, where)
            yield img, cap, where
        else:
            yield text, None, where


def _read_csv(name: str) -> Iterator[tuple[str, str | None, str]]:
    with open(name, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        if "path" not in cols:
            raise ConfigError(f"{name}: no 'path' column (columns: {', '.join(cols) or 'none'})")
        for row in reader:
            where = f"{name}:{reader.line_num}"
            img = (row.get("path") or "").strip()
            if not img:
                raise ConfigError(f"{where}: empty path")
            cap = row.get("caption")
            yield img, (cap if cap else None), where


def _read_parquet(name: str) -> Iterator[tuple[str, str | None, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("Parquet input lists need pyarrow: pip install 'clipsieve[parquet]'") \
            from None
    pf = pq.ParquetFile(name)
    cols = pf.schema_arrow.names
    if "path" not in cols:
        raise ConfigError(f"{name}: no 'path' column (columns: {', '.join(cols) or 'none'})")
    want = ["path"] + (["caption"] if "caption" in cols else [])
    row = 0
    for batch in pf.iter_batches(columns=want, batch_size=4096):
        paths = batch.column(0).to_pylist()
        caps = batch.column(1).to_pylist() if len(want) == 2 else [None] * len(paths)
        for img, cap in zip(paths, caps):
            row += 1
            where = f"{name}: row {row}"
            if not isinstance(img, str) or not img.strip():
                raise ConfigError(f"{where}: path must be a non-empty string")
            yield img, (str(cap) if cap not in (None, "") else None), where


def read_list(name: str, stdin: IO[str] | None = None) -> Iterator[_Entry]:
    """The entries of a list file (see the module docstring), relative paths resolved.

    Raises:
        ConfigError: the file cannot be read, or an entry is malformed (naming the line).
    """
    fmt = _list_format(name)
    base = "" if fmt == "stdin" else os.path.dirname(name)
    try:
        if fmt == "stdin":
            rows: Iterable[tuple[str, str | None, str]] = _read_lines(
                stdin or sys.stdin, "<stdin>", "txt")
        elif fmt in ("txt", "jsonl"):
            fh = open(name, encoding="utf-8")  # noqa: SIM115 - closed below
            rows = _read_lines(fh, name, fmt)
        elif fmt == "csv":
            rows = _read_csv(name)
        else:
            rows = _read_parquet(name)
        for img, cap, where in rows:
            if not is_url(img) and not os.path.isabs(img) and base:
                img = os.path.normpath(os.path.join(base, img))  # no "batch/../lib/…"
            yield _Entry(img, cap.strip() if cap and cap.strip() else None, where)
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such input list") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read input list: {exc}") from None
    except ConfigError:
        raise
    except Exception as exc:  # pyarrow and csv errors
        raise ConfigError(f"{name}: cannot read input list: {exc}") from None
    finally:
        if fmt in ("txt", "jsonl") and "fh" in locals():
            fh.close()


# -- everything together ----------------------------------------------------------------------


def matches_glob(name: str, globs: Sequence[str]) -> bool:
    """Whether a glob matches the whole name, its last path part, or (a tar member) the
    member's last part: ``d/s.tar#k/x.jpg`` is tried as itself, ``s.tar#k/x.jpg`` (the part
    after the shard's folder) and ``x.jpg``."""
    shard, hash_, member = name.rpartition("#")
    outer = (shard if hash_ else name).replace(os.sep, "/")
    base = outer.rsplit("/", 1)[-1] + (f"#{member}" if hash_ else "")
    last = (member if hash_ else outer).rsplit("/", 1)[-1]
    cands = {name, base, last}
    return any(fnmatch.fnmatchcase(c, g) for c in cands for g in globs)


def iter_sources(
    paths: Iterable[str | os.PathLike[str] | Source] = (),
    *,
    input_file: str | None = None,
    recursive: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    limit: int | None = None,
    allow_urls: bool = False,
    url_policy: UrlPolicy | None = None,
    limits: DecodeLimits = DecodeLimits(),
    stdin: IO[str] | None = None,
    extensions: frozenset[str] = IMAGE_EXTENSIONS,
) -> Iterator[Source]:
    """Every image named by ``paths`` and the list ``input_file``, in order (see the module
    docstring). :class:`Source` objects among ``paths`` pass through as they are. Local
    files are yielded at most once. Folder walks take the file endings in ``extensions``
    (videos add theirs: :data:`clipsieve.video.MEDIA_EXTENSIONS`).

    Raises:
        ConfigError: a malformed list file (naming the line).
    """
    policy = (url_policy or UrlPolicy.from_env()) if allow_urls else None
    seen: set[str] = set()
    count = 0

    def entries() -> Iterator[_Entry | Source]:
        for p in paths:
            yield p if isinstance(p, Source) else _Entry(os.fspath(p), None, "")
        if input_file is not None:
            yield from read_list(input_file, stdin)

    def expand(e: _Entry | Source) -> Iterator[Source]:
        if isinstance(e, Source):
            yield e
            return
        t = e.target
        if is_url(t):
            err = None if policy else DecodeError(
                "io_error", "URL inputs are refused unless --allow-urls is given", t)
            yield Source(name=t, caption=e.caption, url_policy=policy, error=err)
        elif is_tar(t):
            yield from iter_tar(t, limits)
        elif os.path.isdir(t):
            for f in iter_files([t], recursive=recursive, extensions=extensions):
                yield Source(name=f, path=f)
        else:
            yield Source(name=t, path=t, caption=e.caption)

    for e in entries():
        for src in expand(e):
            if include and not matches_glob(src.name, include):
                continue
            if exclude and matches_glob(src.name, exclude):
                continue
            if src.path is not None:
                key = os.path.realpath(src.path)
                if key in seen:
                    continue
                seen.add(key)
            yield src
            count += 1
            if limit is not None and count >= limit:
                return


def read_named(name: str, limits: DecodeLimits = DecodeLimits()) -> bytes:
    """The bytes of a result's ``path``: a file, or a tar member ``archive.tar#member``
    (found by reading the shard's headers). URLs are not fetched again.

    Raises:
        DecodeError: it cannot be read.
    """
    if "#" in name and not os.path.exists(name):
        shard, _, member = name.rpartition("#")
        if is_tar(shard):
            try:
                with tarfile.open(shard, mode="r:") as tf:
                    info = tf.getmember(member)
                    if info.size > limits.max_file_bytes:
                        raise DecodeError("too_large", "tar member over the size limit", name)
                    raw = tf.extractfile(info)
                    if raw is None:
                        raise DecodeError("io_error", "not a regular member", name)
                    return raw.read()
            except KeyError:
                raise DecodeError("io_error", "no such member in the shard", name) from None
            except (OSError, tarfile.TarError) as exc:
                raise DecodeError("io_error", f"cannot read the shard: {exc}", name) from None
    if is_url(name):
        raise DecodeError("io_error", "not fetched again", name)
    return read_bytes(name, limits)


def with_captions(sources: Iterable[Source], add: Callable[[str, str], None]) -> Iterator[Source]:
    """Pass ``sources`` through, calling ``add(name, caption)`` for each that has a caption
    (e.g. :meth:`clipsieve.moderation.CaptionSource.add`)."""
    for s in sources:
        if s.caption:
            add(s.name, s.caption)
        yield s


__all__ = [
    "LIST_FORMATS",
    "Source",
    "UrlPolicy",
    "fetch_url",
    "is_url",
    "iter_sources",
    "iter_tar",
    "matches_glob",
    "read_list",
    "read_named",
    "sniff_image",
    "with_captions",
]
