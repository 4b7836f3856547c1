"""What a request to `serve` carries, read and checked: whole-number and flag query parameters,
a JSON media type, a body of bounded size, a JSON object body, entity refs. What is wrong is an
HTTPProblem, which the app answers as `{"error": ...}` with its status.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.requests import ClientDisconnect, Request

from choreo_ingest.config import ServeConfig
from choreo_ingest.store import MAX_INTEGER

MAX_REF_LENGTH = 1_000
"""The longest entity ref `POST /entities/batch` takes (a ref the catalog can hold is far
shorter: a kind, and a namespace and name of at most 63 characters each)."""
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


class HTTPProblem(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.fields = fields or {}


def int_param(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not _WHOLE_NUMBER.fullmatch(text):  # int() also takes "1_000", " 1" and other digits
        raise HTTPProblem(400, f"{name}: expected a whole number, got {text!r}")
    value = int(text) if len(text) <= 20 else MAX_INTEGER + 1  # int() refuses 4,300 digits
    if abs(value) > MAX_INTEGER:
        raise HTTPProblem(400, f"{name}: {text} is out of range (±{MAX_INTEGER:,})")
    return value


def flag_param(request: Request, name: str) -> bool:
    text = request.query_params.get(name, "false").lower()
    if text not in ("true", "1", "false", "0"):
        raise HTTPProblem(400, f"{name}: expected true or false, got {text!r}")
    return text in ("true", "1")


JSON_MEDIA_TYPES = frozenset({"application/json", "application/x-ndjson", "application/ndjson"})
"""What an event body may be declared as (the forwarder sends `application/json`)."""


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON or NDJSON (parameters such as a charset aside). A
    browser page may post `text/plain` or a form to any origin without asking it first (no CORS
    preflight); it must ask before it sends JSON."""
    declared = request.headers.get("content-type", "")
    media_type = declared.partition(";")[0].strip().lower()
    if media_type not in JSON_MEDIA_TYPES:
        shown = f"not {declared[:100]!r}" if declared else "none was sent"
        raise HTTPProblem(
            415, f"Content-Type must be application/json (or application/x-ndjson); {shown}"
        )


async def body_of(request: Request, serve: ServeConfig) -> bytes:
    """The body, at most `serve.maxBodyBytes` (413), sent whole within `serve.readTimeout` (408,
    and the connection is closed: the rest of the body may still be on its way)."""
    limit = serve.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPProblem(413, f"request body of {int(declared):,} bytes; at most {limit:,}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(serve.read_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPProblem(413, f"request body over {limit:,} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPProblem(
            408,
            f"request body not sent whole within {serve.read_timeout:g} s",
            {"Connection": "close"},
        ) from None
    except ClientDisconnect:  # no one to answer: logged and counted as nginx does, 499
        message = "the client went away before its body came whole"
        raise HTTPProblem(CLIENT_WENT_AWAY, message) from None
    return b"".join(chunks)


CLIENT_WENT_AWAY = 499


def check_ref(number: int, ref: object) -> None:
    """A ref the store can look up: text of a sane length, with no lone surrogate (JSON's
    `"\\ud800"` escape decodes to one, which no UTF-8 text holds) and no NUL (which PostgreSQL
    cannot hold). What is not text is left to `entities_batch`, which names it."""
    if not isinstance(ref, str):
        return
    if len(ref) > MAX_REF_LENGTH:
        raise HTTPProblem(
            400,
            f"refs[{number}]: {len(ref):,} characters; an entity ref has at most "
            f"{MAX_REF_LENGTH:,}",
        )
    if "\x00" in ref:
        raise HTTPProblem(400, f"refs[{number}]: holds U+0000, which no entity ref holds")
    try:
        ref.encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPProblem(
            400,
            f"refs[{number}]: holds a lone surrogate (such as \\ud800), which is not Unicode text",
        ) from None


def json_body(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:  # ValueError: an integer of 4,300 digits too
        raise HTTPProblem(400, f"request body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise HTTPProblem(400, "request body: expected a JSON object")
    return document
