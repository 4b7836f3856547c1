"""A real loopback HTTP/1.1 server (keep-alive, one thread per connection) around `SimulatorApi`.

`http.server` spends more time parsing than the simulator spends answering, so this is a
small HTTP/1.1 server of its own: it reads a request head and its body (only the token
endpoint reads one), calls the pure handler and writes the response in one send. It speaks
enough HTTP for httpx, curl and browsers (keep-alive, pipelining, `Connection: close`,
HTTP/1.0); it does not take chunked request bodies, which no OpenChoreo client sends.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
import traceback
from http import HTTPStatus
from types import FrameType, TracebackType
from typing import Final

from choreo_ingest.simulator.api import SimResponse, SimulatorApi, SimulatorOptions
from choreo_ingest.simulator.oauth import TOKEN_PATH
from choreo_ingest.simulator.options import ApiGeneration
from choreo_ingest.simulator.world import World

MAX_HEAD_BYTES: Final = 65_536
RECEIVE_BYTES: Final = 65_536


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class _Request:
    __slots__ = ("headers", "keep_alive", "method", "path", "query")

    def __init__(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "malformed request line")
        self.method, target, version = parts
        if "://" in target.split("?", 1)[0]:  # absolute-form: keep the path only
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        self.path, _, self.query = target.partition("?")
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _BadRequest(400, "malformed header line")
            self.headers[name.lower()] = value.strip()
        connection = self.headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            self.keep_alive = connection != "close"
        else:
            self.keep_alive = connection == "keep-alive"

    def body_length(self) -> int:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            raise _BadRequest(411, "chunked request bodies are not supported")
        raw = self.headers.get("content-length", "0").strip() or "0"
        if not raw.isdigit():
            raise _BadRequest(400, "bad Content-Length")
        return int(raw)


_STATUSES: Final = frozenset(status.value for status in HTTPStatus)


def _serialize(response: SimResponse, keep_alive: bool, with_body: bool) -> bytes:
    phrase = HTTPStatus(response.status).phrase if response.status in _STATUSES else ""
    lines = [f"HTTP/1.1 {response.status} {phrase}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + response.body if with_body else head


ACCEPT_WAKE_SECONDS: Final = 0.25
"""How long the accept loop waits for a connection before it looks at its signals again."""


class _LoopbackServer:
    """Accepts connections and serves each on its own daemon thread."""

    def __init__(self, api: SimulatorApi, host: str, port: int) -> None:
        self.api = api
        self._listener = socket.create_server((host, port), backlog=128)
        self.port: int = self._listener.getsockname()[1]
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._stop_asked = False
        self.accepted_connections = 0

    def serve(self) -> None:
        # Woken while idle: a SIGTERM that another thread received (any thread may take a
        # process-directed signal) runs its Python handler only once the main thread leaves
        # accept(). A connection accepted from it still blocks (no default socket timeout).
        self._listener.settimeout(ACCEPT_WAKE_SECONDS)
        while not (self._stop_asked or self._closing.is_set()):
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closing.is_set():
                    return
                self._closing.wait(0.05)  # e.g. out of file descriptors: let clients hang up
                continue
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.add(connection)
                self.accepted_connections += 1
            threading.Thread(target=self._serve_connection, args=(connection,), daemon=True).start()

    def stop_soon(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM's handler: `serve` returns at its next wake, and the caller closes. Raised
        from the handler, SystemExit could land inside `Thread.start`'s wait on a condition,
        between its release and its restore, and end as `RuntimeError: release unlocked lock`
        (exit 1); no lock is taken here either (the main thread may hold the one it needs)."""
        self._stop_asked = True

    def close(self) -> None:
        self._closing.set()
        for sock in [self._listener, *self._open_connections()]:
            with contextlib.suppress(OSError):  # already closed by its client
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept() or recv()
        self._listener.close()

    def _open_connections(self) -> list[socket.socket]:
        with self._lock:
            return list(self._connections)

    def _serve_connection(self, connection: socket.socket) -> None:
        try:
            self._converse(connection)
        except OSError:
            pass  # the client went away, timed out, or the server is closing
        finally:
            with self._lock:
                self._connections.discard(connection)
            connection.close()

    def _converse(self, connection: socket.socket) -> None:
        buffer = b""
        while True:
            buffer = buffer.lstrip(b"\r\n")
            head_end = buffer.find(b"\r\n\r\n")
            while head_end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    connection.sendall(_plain_error(431, "request head too large"))
                    return
                chunk = connection.recv(RECEIVE_BYTES)
                if not chunk:
                    return
                buffer = (buffer + chunk).lstrip(b"\r\n")
                head_end = buffer.find(b"\r\n\r\n")
            head, buffer = buffer[:head_end], buffer[head_end + 4 :]
            try:
                request = _Request(head)
                length = request.body_length()
            except _BadRequest as error:
                connection.sendall(_plain_error(error.status, str(error)))
                return
            while len(buffer) < length:
                chunk = connection.recv(RECEIVE_BYTES)
                if not chunk:
                    return
                buffer += chunk
            body, buffer = buffer[:length], buffer[length:]
            response = self._answer(request, body)
            with_body = request.method != "HEAD"
            connection.sendall(_serialize(response, request.keep_alive, with_body))
            if not request.keep_alive:
                return

    def _answer(self, request: _Request, body: bytes) -> SimResponse:
        try:
            return self.api.handle(
                request.method, request.path, request.query, request.headers, body
            )
        except Exception:  # a simulator bug: answer 500 and say why, keep serving
            traceback.print_exc(file=sys.stderr)
            body = b'{"success":false,"error":"simulator bug","code":"INTERNAL_ERROR"}'
            return SimResponse(500, {"Content-Type": "application/json"}, body)


def _plain_error(status: int, message: str) -> bytes:
    response = SimResponse(status, {"Content-Type": "text/plain"}, message.encode())
    return _serialize(response, keep_alive=False, with_body=True)


def _url(host: str, port: int, base_path: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{base_path.rstrip('/')}"


class RunningServer:
    """A simulator serving on a background thread; `url` includes the API root (`/api/v1` for
    v1, the base path for orgs), `root_url` does not (public routes, the token endpoint)."""

    def __init__(self, server: _LoopbackServer, host: str, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.api = server.api
        self.host = host
        self.port = server.port
        self.url = _url(host, server.port, self.api.options.api_root)
        self.root_url = _url(host, server.port, "")

    @property
    def accepted_connections(self) -> int:
        """Connections accepted so far (a keep-alive client should need one)."""
        return self._server.accepted_connections

    def stop(self) -> None:
        """Stop accepting, close open connections and wait for the accept loop to end."""
        self._server.close()
        self._thread.join()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_server(api: SimulatorApi, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve `api` on host:port (0 picks a free port) until `stop()`."""
    server = _LoopbackServer(api, host, port)
    thread = threading.Thread(
        target=server.serve, name=f"openchoreo-simulator:{server.port}", daemon=True
    )
    thread.start()
    return RunningServer(server, host, thread)


def serve_forever(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    orgs: int = 3,
    projects: int = 4,
    components: int = 25,
    seed: int = 0,
    endpoints_max: int = 3,
    hidden_fraction: float = 0.05,
    error_rate: float = 0.0,
    rate_limit: float | None = None,
    cursor_ttl: float | None = 300.0,
    latency: float = 0.0,
    token: str | None = None,
    forbidden: bool = False,
    cursor_first_page_always: bool = False,
    no_cursor_support: bool = False,
    repeat_cursor_bug: bool = False,
    base_path: str = "/api/v1",
    control: bool = False,
    api: ApiGeneration = "v1",
    oauth_client_id: str | None = None,
    oauth_client_secret: str | None = None,
    oauth_client_auth: str | None = None,
    token_lifetime: int = 3600,
    webhooks: tuple[str, ...] = (),
) -> None:
    """Build a world and serve it until SIGINT or SIGTERM; prints only its URL, to stderr.

    With `webhooks`, every change made through the control routes is POSTed there as OpenChoreo's
    event forwarder would post it."""
    world = World.generate(orgs, projects, components, seed, endpoints_max, hidden_fraction)
    options = SimulatorOptions(
        api=api,
        base_path=base_path,
        token=token,
        oauth_client_id=oauth_client_id,
        oauth_client_secret=oauth_client_secret,
        oauth_client_auth=oauth_client_auth,
        token_lifetime=token_lifetime,
        forbidden=forbidden,
        cursor_ttl=cursor_ttl,
        cursor_first_page_always=cursor_first_page_always,
        no_cursor_support=no_cursor_support,
        repeat_cursor_bug=repeat_cursor_bug,
        error_rate=error_rate,
        rate_limit_rps=rate_limit,
        latency=latency,
        fault_seed=seed,
        control=control,
        webhooks=webhooks,
    )
    api_handler = SimulatorApi(world, options)
    try:
        server = _LoopbackServer(api_handler, host, port)
    except BaseException:
        api_handler.close()
        raise
    if threading.current_thread() is threading.main_thread():
        # before the URL is announced: a caller may send SIGTERM as soon as it has read it
        signal.signal(signal.SIGTERM, server.stop_soon)
    print(f"openchoreo simulator at {_url(host, server.port, options.api_root)}", file=sys.stderr)
    if options.oauth:  # a line of its own: callers read the API's URL as the first line's end
        print(f"its token endpoint: {_url(host, server.port, TOKEN_PATH)}", file=sys.stderr)
    sys.stderr.flush()
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        api_handler.close()
