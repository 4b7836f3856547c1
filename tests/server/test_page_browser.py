"""The status page in a real browser: headless Chromium against `choreo-ingest serve`.

The service runs as a subprocess over a state file that holds a completed cycle, with an
unreachable OpenChoreo and a long rest, so it serves without calling anything. Chromium then
takes a screenshot of `GET /` (kept as `status-page.png` in the test's tmp_path), dumps the DOM
it rendered (the provider, its state and its entity count must be in it), and loads the page
once more recording a net log, to show the page asked for nothing but itself. SIGTERM then
stops the service, which exits 0.

How the net log tells the page's requests from Chromium's own (update checks, the network time
service, account lookups, which no flag turns off entirely): a request the page made or caused
names the page's origin as its initiator, or has the page's site in its network isolation key,
or is a frame navigation. Each of those must go to the page's own origin, every host lookup made
for the page must be the page's own host, and no TCP connection may go anywhere else. Every run
also maps all host names but 127.0.0.1 to NOTFOUND (`--host-resolver-rules`), so nothing reaches
the outside even if something tried. A control page with an outside stylesheet and image, served
by `python -m http.server`, shows the check catches such requests.

Where no Chromium is installed (`chromium`, `chromium-browser` or `google-chrome` on PATH) these
tests skip; under CI (`CI=true`) they fail instead: `.ci/run` installs Debian's `chromium`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ports import free_port

from choreo_ingest.clock import SystemClock
from choreo_ingest.server.page import PAGE_CSP
from choreo_ingest.simulator import World

from fakes import FakeClock
from os_tools import missing
from sim_support import (
    INHERITED_SETTINGS,
    PROVIDER,
    expected_refs,
    ingest_world,
    write_config,
)

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
UNREACHABLE_URL = "http://127.0.0.1:9/api/v1"
REST_MINUTES = 24 * 60  # the cycle in the state file is done: nothing is due while the test runs
READY_SECONDS = 20.0
BROWSER_SECONDS = 60.0
STOP_SECONDS = 20.0
SCREENSHOT_BYTES = 20_000
"""A 1280x900 screenshot of an empty page is about 5 kB; of the status page, over 100 kB."""
LOOPBACK_ONLY = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    f"--host-resolver-rules={LOOPBACK_ONLY}",
)
PAGE_LOADS = ("main frame", "sub frame")
"""Net log `request_type`s of navigations, which are the page's even where nothing else says so."""


def find_browser() -> str:
    """The Chromium on PATH; skip where there is none, and fail under CI (`CI=true`)."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return missing(f"no headless browser on PATH (one of {', '.join(BROWSERS)}; Debian: chromium)")


@pytest.fixture
def browser() -> str:
    return find_browser()


def clean_environment(**extra: str) -> dict[str, str]:
    """The environment without the caller's choreo-ingest settings and secrets."""
    dropped = (*INHERITED_SETTINGS, "CHOREO_INGEST_SERVE_TOKEN")
    environment = {key: value for key, value in os.environ.items() if key not in dropped}
    environment.update(extra)
    return environment


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")


def start(name: str, command: list[str], cwd: Path, url: str, ready_path: str) -> Service:
    """`command` started in its own process group (its stderr in `cwd/NAME.stderr`), once
    `url + ready_path` answers 200."""
    stderr = cwd / f"{name}.stderr"
    with stderr.open("wb") as errors:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=clean_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )
    service = Service(process, url, stderr)
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"{command} exited {process.returncode} at start:\n{service.log()}")
        try:
            with urllib.request.urlopen(url + ready_path, timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return service
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet (refused), or not ready (503)
        if time.monotonic() > deadline:
            stop(service)
            pytest.fail(
                f"{url}{ready_path} did not answer 200 in {READY_SECONDS} s:\n{service.log()}"
            )
        time.sleep(0.1)


def stop(service: Service) -> int:
    """SIGTERM, then the exit code (SIGKILL to the process group if it does not end in time)."""
    if service.process.poll() is None:
        service.process.send_signal(signal.SIGTERM)
    try:
        return service.process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(service.process.pid, signal.SIGKILL)
        service.process.wait(timeout=STOP_SECONDS)
        pytest.fail(f"{service.url} did not stop within {STOP_SECONDS} s of SIGTERM")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Service, World]]:
    """`choreo-ingest serve` on a free loopback port over a state file with a completed cycle;
    stopped at the end whatever the test did (the test itself checks the SIGTERM exit)."""
    world = World.generate(2, 2, 3, seed=12)
    # Completed now: a completion in the future says the clock was set back, and serve would
    # start a cycle at once.
    ingest_world(tmp_path / "state.db", world, FakeClock(SystemClock().now()))
    config = write_config(
        tmp_path / "config.yaml",
        UNREACHABLE_URL,
        incremental={"restLength": REST_MINUTES},
        state={"path": "state.db"},
    )
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "choreo_ingest",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--config",
        str(config),
    ]
    service = start("serve", command, tmp_path, f"http://127.0.0.1:{port}", "/readyz")
    try:
        yield service, world
    finally:
        if service.process.poll() is None:
            stop(service)


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[Service]:
    """`python -m http.server` on a free loopback port, serving `tmp_path / "site"`."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!DOCTYPE html><title>up</title>", encoding="utf-8")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(site),
    ]
    service = start("http.server", command, tmp_path, f"http://127.0.0.1:{port}", "/index.html")
    try:
        yield service
    finally:
        stop(service)


def chromium(browser: str, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run with a fresh profile (and HOME) under `workdir`; its whole
    process group is killed if it does not finish within BROWSER_SECONDS."""
    profile = workdir / f"profile-{len(list(workdir.glob('profile-*')))}"
    home = profile / "home"
    home.mkdir(parents=True)
    command = [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args]
    with subprocess.Popen(
        command,
        env=clean_environment(HOME=str(home)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(timeout=BROWSER_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"Chromium did not finish within {BROWSER_SECONDS} s: {command}")
    done = subprocess.CompletedProcess(command, process.returncode, out, err)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{err[-3000:]}"
    return done


class RenderedPage(HTMLParser):
    """The text of a rendered DOM and its <dt>/<dd> pairs."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.chunks: list[str] = []
        self.fields: dict[str, str] = {}
        self._term = ""
        self._last = ""
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("meta", "link", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.open:
            del self.open[len(self.open) - 1 - self.open[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        if "style" in self.open or "head" in self.open:
            return
        self.chunks.append(data)
        if "dt" in self.open:
            self._term += data
        elif "dd" in self.open:
            if self._term:
                self._last, self._term = " ".join(self._term.split()), ""
                self.fields[self._last] = ""
            self.fields[self._last] += data

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())


def load_netlog(path: Path) -> dict[str, Any]:
    """A net log; one cut short (Chromium stopped mid-write) is closed first."""
    text = path.read_text(encoding="utf-8")
    try:
        document: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        document = json.loads(text.rstrip().rstrip(",") + "]}")
    return document


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class PageTraffic:
    own: list[str]
    """URLs the page requested from its own origin."""
    outside: list[str]
    """What the page requested, looked up or connected to anywhere else."""


def page_traffic(netlog: Path, page_url: str) -> PageTraffic:
    """The page's requests in a net log, by the rules of the module docstring."""
    document = load_netlog(netlog)
    names = {number: name for name, number in document["constants"]["logEventTypes"].items()}
    origin = origin_of(page_url)
    site = f"{urlsplit(page_url).scheme}://{urlsplit(page_url).hostname}"  # ports aside
    address = urlsplit(page_url).netloc
    traffic = PageTraffic([], [])
    for event in document["events"]:
        kind = names.get(event["type"], "")
        params: Mapping[str, Any] = event.get("params") or {}
        if kind == "URL_REQUEST_START_JOB" and "url" in params:
            from_page = (
                params.get("initiator") == origin
                or site in str(params.get("network_isolation_key", "")).split()
                or params.get("request_type") in PAGE_LOADS
            )
            if from_page:
                url = str(params["url"])
                (traffic.own if origin_of(url) == origin else traffic.outside).append(url)
        elif kind == "HOST_RESOLVER_MANAGER_REQUEST" and "host" in params:
            for_page = site in str(params.get("network_anonymization_key", "")).split()
            if for_page and params["host"] != origin:
                traffic.outside.append(f"host lookup {params['host']}")
        elif kind in ("TCP_CONNECT", "TCP_CONNECT_ATTEMPT"):
            peer = params.get("remote_address") or params.get("address")
            if peer and peer != address:
                traffic.outside.append(f"TCP connection to {peer}")
    return traffic


def record_traffic(browser: str, tmp_path: Path, url: str) -> PageTraffic:
    netlog = tmp_path / f"net-{len(list(tmp_path.glob('net-*.json')))}.json"
    chromium(browser, tmp_path, f"--log-net-log={netlog}", "--dump-dom", url)
    return page_traffic(netlog, url)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_the_status_page_in_a_browser(
    browser: str, served: tuple[Service, World], tmp_path: Path
) -> None:
    service, world = served
    page_url = service.url + "/"

    with urllib.request.urlopen(page_url, timeout=10) as answer:  # noqa: S310
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
        assert answer.headers["Content-Security-Policy"] == PAGE_CSP

    screenshot = tmp_path / "status-page.png"
    chromium(browser, tmp_path, f"--screenshot={screenshot}", "--window-size=1280,900", page_url)
    assert screenshot.is_file(), "Chromium wrote no screenshot"
    assert png_size(screenshot) == (1280, 900)
    assert screenshot.stat().st_size > SCREENSHOT_BYTES, "the screenshot looks blank"

    dom = chromium(browser, tmp_path, "--dump-dom", page_url).stdout
    rendered = RenderedPage(dom)
    assert "choreo-ingest" in rendered.text
    assert f"{PROVIDER} resting healthy" in rendered.text
    assert rendered.fields["Active entities"].strip() == str(len(expected_refs(world)))
    assert rendered.fields["API"].strip() == "orgs"
    assert "Last changes" in rendered.text

    traffic = record_traffic(browser, tmp_path, page_url)
    assert traffic.outside == [], "the page asked for something beyond its own origin"
    # Nor anything more of its own (not even /favicon.ico): the page is one request.
    assert traffic.own == [page_url], f"the net log shows {traffic.own}"

    assert stop(service) == 0, service.log()


def test_the_traffic_check_sees_what_a_page_asks_of_others(
    browser: str, standin: Service, tmp_path: Path
) -> None:
    """The control: a page that loads a stylesheet and an image from elsewhere (no CSP from
    http.server to stop it) is caught, and the lookups never leave the machine."""
    site = tmp_path / "site"
    (site / "outside.html").write_text(
        "<!DOCTYPE html><html><head><title>outside</title>"
        '<link rel="stylesheet" href="https://fonts.example.com/page.css"></head>'
        '<body><img src="http://images.example.net/logo.png" alt="">'
        '<img src="/own.png" alt=""></body></html>',
        encoding="utf-8",
    )
    page_url = standin.url + "/outside.html"

    traffic = record_traffic(browser, tmp_path, page_url)

    assert page_url in traffic.own
    assert standin.url + "/own.png" in traffic.own
    assert "https://fonts.example.com/page.css" in traffic.outside
    assert "http://images.example.net/logo.png" in traffic.outside
    assert not [item for item in traffic.outside if item.startswith("TCP connection")]
