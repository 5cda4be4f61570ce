"""Firmware files on disk: streamed multipart uploads, byte-range downloads.

Uploads are never held in memory: the multipart body is parsed as it arrives and the ``file`` part is
written to a temporary file inside the release directory while its size and SHA-256 are computed; the
caller renames it into place once the release row exists. Downloads are streamed from disk in chunks.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from fastapi import HTTPException, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.responses import Response, StreamingResponse

CHUNK_SIZE = 256 * 1024
TEMP_PREFIX = ".upload-"
TEMP_SUFFIX = ".part"
MAX_FIELD_BYTES = 1024
MAX_PARTS = 16
BODY_TOO_LARGE = "Request body too large"


class UploadRejected(Exception):
    """The multipart body is unusable; ``errors`` are FastAPI-style validation errors (422)."""

    def __init__(self, errors: list[dict[str, object]]) -> None:
        super().__init__(errors)
        self.errors = errors


def release_dir(files_dir: Path) -> Path:
    return files_dir / "releases"


def release_filename(release_id: int) -> str:
    return f"release-{release_id}.bin"


def remove_stale_uploads(files_dir: Path) -> int:
    """Delete temporary upload files left by a server that stopped mid-upload (call at start-up)."""
    count = 0
    directory = release_dir(files_dir)
    if directory.is_dir():
        for path in directory.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            path.unlink(missing_ok=True)
            count += 1
    return count


@dataclass
class ReceivedUpload:
    """The outcome of :func:`receive_upload`: text fields plus the file part, stored in ``temp_path``."""

    fields: dict[str, str] = field(default_factory=dict)
    temp_path: Path | None = None
    filename: str | None = None
    size: int = 0
    sha256: str = ""
    file_parts: int = 0

    def discard(self) -> None:
        if self.temp_path is not None:
            self.temp_path.unlink(missing_ok=True)
            self.temp_path = None


class _PartCollector:
    """python-multipart callbacks: text fields in memory (small, bounded), ``file`` data queued for disk."""

    def __init__(self, file_field: str) -> None:
        self.file_field = file_field
        self.fields: dict[str, str] = {}
        self.pending: list[bytes] = []
        self.file_parts = 0
        self.filename: str | None = None
        self.complete = False
        self.parts = 0
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name: str | None = None
        self._is_file = False
        self._buffer = bytearray()
        self._skip = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise UploadRejected([_error("value_error", ("body",), f"At most {MAX_PARTS} parts allowed")])
        self._disposition = b""
        self._name = None
        self._is_file = False
        self._skip = False
        self._buffer = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise UploadRejected(
                [_error("value_error", ("body",), 'Every part needs a Content-Disposition "name"')]
            )
        self._name = options[b"name"].decode("utf-8", "replace")
        if self._name == self.file_field:
            self._is_file = True
            self.file_parts += 1
            if self.file_parts > 1:
                raise UploadRejected(
                    [_error("value_error", ("body", self.file_field), "Only one file allowed")]
                )
            if b"filename" in options:
                self.filename = options[b"filename"].decode("utf-8", "replace")
        elif b"filename" in options or self._name in self.fields:
            self._skip = True  # another file or a repeated field: ignored, like FastAPI does

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.pending.append(bytes(data[start:end]))
        elif not self._skip:
            self._buffer += data[start:end]
            if len(self._buffer) > MAX_FIELD_BYTES:
                raise UploadRejected(
                    [_error("string_too_long", ("body", self._name or ""), "Form field too long")]
                )

    def on_part_end(self) -> None:
        if not self._is_file and not self._skip and self._name is not None:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.complete = True


def _error(kind: str, loc: tuple[str, ...], msg: str) -> dict[str, object]:
    return {"type": kind, "loc": list(loc), "msg": msg, "input": None}


async def receive_upload(
    request: Request, files_dir: Path, max_file_size: int, file_field: str = "file"
) -> ReceivedUpload:
    """Parse a ``multipart/form-data`` request body as it streams in.

    Raises ``HTTPException`` (400 malformed body, 413 file over ``max_file_size``, 415 not multipart) or
    :class:`UploadRejected`; the temporary file is removed on every failure.
    """
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise HTTPException(status_code=415, detail="Expected a multipart/form-data body")
    collector = _PartCollector(file_field)
    try:
        parser = MultipartParser(params[b"boundary"], collector.callbacks())  # type: ignore[arg-type]
    except FormParserError as exc:
        raise HTTPException(status_code=400, detail="Invalid multipart body") from exc

    directory = release_dir(files_dir)
    await anyio.to_thread.run_sync(lambda: directory.mkdir(parents=True, exist_ok=True))
    result = ReceivedUpload()
    result.temp_path = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
    digest = hashlib.sha256()
    temp_path = result.temp_path
    handle: BinaryIO = await anyio.to_thread.run_sync(lambda: open(temp_path, "xb"))  # noqa: SIM115
    try:
        try:
            async for chunk in request.stream():
                if not chunk:
                    continue
                try:
                    parser.write(chunk)
                except FormParserError as exc:
                    raise HTTPException(status_code=400, detail="Invalid multipart body") from exc
                if collector.pending:
                    blocks, collector.pending = collector.pending, []
                    result.size += sum(len(b) for b in blocks)
                    if result.size > max_file_size:
                        raise HTTPException(status_code=413, detail=BODY_TOO_LARGE)
                    await anyio.to_thread.run_sync(_write_blocks, handle, digest, blocks)
            if not collector.complete:
                raise HTTPException(status_code=400, detail="Invalid multipart body")
            await anyio.to_thread.run_sync(_flush_and_sync, handle)
        finally:
            await anyio.to_thread.run_sync(handle.close)
    except BaseException:
        result.discard()
        raise
    result.fields = collector.fields
    result.filename = collector.filename
    result.file_parts = collector.file_parts
    result.sha256 = digest.hexdigest()
    return result


def _write_blocks(handle: BinaryIO, digest: Any, blocks: list[bytes]) -> None:
    for block in blocks:
        digest.update(block)
        handle.write(block)


def _flush_and_sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


# -------------------------------------------------------------------------------------------- downloads

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str, size: int) -> tuple[int, int]:
    """The inclusive byte range ``(first, last)`` a single-range ``Range`` header asks for.

    Supports ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n``; ``b`` past the end is clamped. Anything
    else (several ranges, another unit, ``a > b``, ``a`` past the end, ``-0``) raises
    :class:`RangeNotSatisfiable`.
    """
    match = _RANGE_RE.match(header.strip().replace(" ", ""))
    if match is None:
        raise RangeNotSatisfiable(header)
    first_s, last_s = match.groups()
    if first_s == "" and last_s == "":
        raise RangeNotSatisfiable(header)
    if first_s == "":
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - suffix), size - 1
    first = int(first_s)
    last = size - 1 if last_s == "" else min(int(last_s), size - 1)
    if first >= size or (last_s != "" and int(last_s) < first):
        raise RangeNotSatisfiable(header)
    return first, last


def file_response(
    path: Path, size: int, sha256: str, range_header: str | None, if_range: str | None
) -> Response:
    """200 with the whole file or 206 with one range (416 when the range cannot be served)."""
    etag = f'"{sha256}"'
    headers = {"accept-ranges": "bytes", "etag": etag, "cache-control": "no-cache"}
    if range_header is not None and if_range is not None and if_range.strip() != etag:
        range_header = None  # the file changed since the client's partial copy: send it whole
    if range_header is None:
        first, last, status = 0, size - 1, 200
    else:
        try:
            first, last = parse_range(range_header, size)
        except RangeNotSatisfiable:
            return Response(
                status_code=416,
                content=b'{"detail":"Requested range not satisfiable"}',
                media_type="application/json",
                headers={**headers, "content-range": f"bytes */{size}"},
            )
        status = 206
        headers["content-range"] = f"bytes {first}-{last}/{size}"
    length = last - first + 1 if size else 0
    headers["content-length"] = str(length)
    return StreamingResponse(
        _read_file(path, first, length),
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
    )


async def _read_file(path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as handle:
        await handle.seek(offset)
        remaining = length
        while remaining > 0:
            chunk = await handle.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                raise RuntimeError(f"{path} is shorter than recorded")
            remaining -= len(chunk)
            yield chunk
