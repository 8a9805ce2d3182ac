"""Request bodies: read while they stream in, with the size limit counted on the way.

A body larger than the limit is refused (413) as soon as its declared ``Content-Length`` or
the bytes received so far pass the limit: the rest is never read, so memory per request is
bounded by the limit. Multipart bodies are parsed incrementally (python-multipart); any other
body is one upload. What an upload is comes from its first bytes
(:func:`clipsieve.media.sniff.sniff`), never from its file name or a Content-Type.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from clipsieve.media.sniff import SNIFF_BYTES, Sniffed, sniff
from clipsieve.service.errors import ServiceError

__all__ = ["OPTION_FIELDS", "Body", "Upload", "read_body", "require_kind"]

#: Multipart parts with these names (and no file name) are options, not uploads.
OPTION_FIELDS = frozenset({"caption", "policy", "labels", "templates", "template", "url",
                           "name", "fps", "keyframes", "scenes", "max_frames", "stop_on_block"})
#: Longest option value accepted in a multipart part.
MAX_FIELD_BYTES = 64 * 1024


@dataclass
class Upload:
    """One uploaded file: its name (the multipart file name, else ``upload``) and content.

    Attributes:
        name: the multipart file name, else the part's name, else ``upload``.
        data: the bytes (uploads kept in memory), or ``b""`` when spooled to ``path``.
        path: where a spooled upload was written, else ``None``.
        size: bytes received.
        sha256: hex digest of the content.
        head: its first :data:`SNIFF_BYTES` bytes.
        sniffed: what :func:`require_kind` found.
    """

    name: str
    data: bytes = b""
    path: Path | None = None
    size: int = 0
    sha256: str = ""
    head: bytes = b""
    sniffed: Sniffed | None = None

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> Upload:
        return cls(name, data, None, len(data), hashlib.sha256(data).hexdigest(),
                   data[:SNIFF_BYTES])


class _Sink:
    """Collects one upload in memory, or in a file from ``spool()``."""

    def __init__(self, spool: Callable[[], Path] | None) -> None:
        self.path = spool() if spool is not None else None
        self.fh: BinaryIO | None = open(self.path, "wb") if self.path is not None else None
        self.buf = bytearray()
        self.hash = hashlib.sha256()
        self.head = bytearray()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        self.hash.update(chunk)
        if len(self.head) < SNIFF_BYTES:
            self.head += chunk[: SNIFF_BYTES - len(self.head)]
        if self.fh is not None:
            self.fh.write(chunk)
        else:
            self.buf += chunk

    def close(self, name: str) -> Upload:
        if self.fh is not None:
            self.fh.close()
        return Upload(name, bytes(self.buf), self.path, self.size, self.hash.hexdigest(),
                      bytes(self.head))

    def discard(self) -> None:
        if self.fh is not None:
            self.fh.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass
class Body:
    """What a request carried: uploads in order, and option fields (multipart only)."""

    uploads: list[Upload] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)


def too_large(limit: int) -> ServiceError:
    return ServiceError(413, "payload_too_large",
                        f"request body is larger than the limit of {limit} bytes")


async def _limited(receive_stream: AsyncIterator[bytes], declared: str | None,
                   limit: int) -> AsyncIterator[bytes]:
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ServiceError(400, "bad_request", "invalid Content-Length") from None
        if size > limit:
            raise too_large(limit)
    total = 0
    async for chunk in receive_stream:
        total += len(chunk)
        if total > limit:
            raise too_large(limit)
        if chunk:
            yield chunk


async def read_body(
    stream: AsyncIterator[bytes],
    headers: dict[str, str],
    *,
    limit: int,
    max_uploads: int,
    default_name: str = "upload",
    spool: Callable[[], Path] | None = None,
) -> Body:
    """Read a request body into :class:`Body`, refusing it once it passes ``limit`` bytes.

    Args:
        stream: the body chunks (Starlette's ``request.stream()``).
        headers: the request headers (lower-case names).
        limit: most bytes accepted.
        max_uploads: most uploads accepted in one multipart body.
        default_name: the name of a raw-body upload.
        spool: when given, uploads are written to the files it names instead of memory (on
            an error they are removed).

    Raises:
        ServiceError: 413 too large, 400 malformed multipart or too many parts.
    """
    chunks = _limited(stream, headers.get("content-length"), limit)
    ctype = headers.get("content-type", "")
    if ctype.lower().startswith("multipart/form-data"):
        return await _read_multipart(chunks, ctype, max_uploads, spool)
    sink = _Sink(spool)
    try:
        async for chunk in chunks:
            sink.write(chunk)
    except BaseException:
        sink.discard()
        raise
    body = Body()
    upload = sink.close(default_name)
    if upload.size:
        body.uploads.append(upload)
    else:
        sink.discard()
    return body


async def _read_multipart(chunks: AsyncIterator[bytes], ctype: str, max_uploads: int,
                          spool: Callable[[], Path] | None) -> Body:
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(ctype)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ServiceError(400, "bad_request", "multipart body without a boundary")
    body = Body()
    state: dict[str, object] = {}
    header_name = bytearray()
    header_value = bytearray()
    headers: dict[bytes, bytes] = {}
    data = bytearray()  # an option field's text
    sinks: list[_Sink] = []  # the current upload's, last

    def on_part_begin() -> None:
        headers.clear()
        data.clear()

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        header_name.extend(buf[start:end])

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        header_value.extend(buf[start:end])

    def on_header_end() -> None:
        headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        state["name"] = name
        state["filename"] = None if filename is None else filename.decode("utf-8", "replace")
        state["is_field"] = filename is None and name in OPTION_FIELDS
        if not state["is_field"]:
            if len(body.uploads) >= max_uploads:
                raise ServiceError(413, "too_many_images",
                                   f"more than {max_uploads} files in one request")
            sinks.append(_Sink(spool))

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        if not state.get("is_field"):
            sinks[-1].write(buf[start:end])
            return
        data.extend(buf[start:end])
        if len(data) > MAX_FIELD_BYTES:
            raise ServiceError(413, "payload_too_large",
                               f"field {state['name']!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end() -> None:
        name = str(state.get("name") or "")
        if state.get("is_field"):
            try:
                text = bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                raise ServiceError(400, "bad_request",
                                   f"field {name!r} is not UTF-8 text") from None
            body.fields.setdefault(name, []).append(text)
            return
        filename = state.get("filename")
        label = str(filename) if filename else (name or f"upload-{len(body.uploads) + 1}")
        body.uploads.append(sinks[-1].close(label))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
    })
    from python_multipart.exceptions import MultipartParseError

    try:
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        for sink in sinks:
            sink.discard()
        if isinstance(exc, MultipartParseError):
            raise ServiceError(400, "bad_request", f"malformed multipart body: {exc}") from None
        raise
    return body


def require_kind(upload: Upload, kind: str, endpoint: str) -> Sniffed:
    """Sniff ``upload`` and require ``kind`` (``image`` or ``video``); 415 otherwise."""
    got = sniff(upload.head)
    upload.sniffed = got
    if got is None:
        what = "empty" if not upload.size else "not an image or video format clipsieve reads"
        raise ServiceError(415, "unsupported_media_type",
                           f"{upload.name}: {what} (the content is checked, not the name or "
                           "Content-Type)")
    if got.kind != kind:
        other = "/v1/videos" if got.kind == "video" else "/v1/images"
        raise ServiceError(415, "unsupported_media_type",
                           f"{upload.name}: is a {got.kind} ({got.format}); {endpoint} takes "
                           f"{kind}s (send {got.kind}s to {other})")
    return got
