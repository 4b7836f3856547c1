"""What a simulated request answers (`SimResponse`), the handlers' error, and body helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

JSON_HEADERS: Final = {"Content-Type": "application/json"}
TEXT_HEADERS: Final = {"Content-Type": "text/plain; charset=utf-8"}


@dataclass(frozen=True)
class SimResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ApiError(Exception):
    """An error each API generation answers in its own envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        metadata: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        cursor_expired: bool = False,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.metadata = metadata
        self.headers = headers or {}
        self.cursor_expired = cursor_expired
        """The request's cursor had expired (counted in `SimulatorStats.expired_cursors`)."""
        super().__init__(message)


def json_response(status: int, document: Any, headers: dict[str, str] | None = None) -> SimResponse:
    return SimResponse(status, {**JSON_HEADERS, **(headers or {})}, dump(document))


def text_response(status: int, text: str, headers: dict[str, str] | None = None) -> SimResponse:
    return SimResponse(status, {**TEXT_HEADERS, **(headers or {})}, text.encode())


def unauthorized(error: str, message: str) -> SimResponse:
    """The JWT middleware's 401: `{error, message}`, not the usual envelope (both generations)."""
    return json_response(401, {"error": error, "message": message}, {"WWW-Authenticate": "Bearer"})


def dump(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
