"""The client against a real TLS server whose certificate no system CA signed (a cluster's own
CA, as OpenChoreo installs often have): the failure names the setting that trusts it."""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from choreo_ingest.config import OpenChoreoConfig
from choreo_ingest.errors import TransientError
from choreo_ingest.providers.openchoreo.client import OpenChoreoClient

from fakes import FakeClock
from os_tools import require_tool


class _VersionHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"version": "v1.0.0"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with `openssl`."""
    openssl = require_tool("openssl", "openssl")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"]
    names = ["/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run([openssl, *request, *names, *files], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[str]:
    """`https://127.0.0.1:<port>`, answering every GET with a version document."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _VersionHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _get_version(config: OpenChoreoConfig) -> object:
    with OpenChoreoClient(config, clock=FakeClock(), deadline=None) as client:
        return client.get_public("/version")


def test_an_untrusted_certificate_names_the_setting_that_trusts_it(tls_server: str) -> None:
    with pytest.raises(TransientError) as caught:
        _get_version(OpenChoreoConfig(base_url=tls_server))

    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert str(caught.value).endswith("(openchoreo.caBundle names the CA to trust)")


def test_the_named_setting_trusts_it(tls_server: str, certificate: tuple[Path, Path]) -> None:
    config = OpenChoreoConfig(base_url=tls_server, ca_bundle=str(certificate[0]))

    assert _get_version(config) == {"version": "v1.0.0"}


def test_a_certificate_for_another_host_gives_no_such_advice(
    certificate: tuple[Path, Path], tls_server: str
) -> None:
    """Trusted, but not issued for the name asked: a CA would not help."""
    elsewhere = tls_server.replace("127.0.0.1", "localhost")
    config = OpenChoreoConfig(base_url=elsewhere, ca_bundle=str(certificate[0]))

    with pytest.raises(TransientError) as caught:
        _get_version(config)

    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert "caBundle" not in str(caught.value)
