"""The plumbing the clean-room OpenChoreo v1 fake's two loopback servers share (cleanroom_v1.py
says what the fake is): a request as a server sees it, JSON answers, base64url JSON (as JWT parts,
cursors and continue tokens travel), and the http.server handler that serves them the way Go's
net/http does.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit


def b64(data: Any) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> Any:
    padded = text + "=" * (-len(text) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode()).decode())


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


def json_answer(
    status: int, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )


def error_answer(status: int, message: str, code: str) -> tuple[int, dict[str, str], bytes]:
    return json_answer(status, {"error": message, "code": code})


def handler_class(
    serve: Callable[[Request], tuple[int, dict[str, str], bytes]],
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes

        def _do(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Request(
                method=self.command,
                path=split.path,
                query=parse_qs(split.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            status, headers, payload = serve(request)
            request.status = status
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if len(payload) > 4096:  # Go's net/http streams what outgrows its 4 KiB buffer
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(payload), 4096):
                    chunk = payload[start : start + 4096]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _do  # noqa: N815 (http.server's names)
        do_POST = _do  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
