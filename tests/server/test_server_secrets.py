"""`serve`'s token and events secret are refused when no request could send them (a header
holds ASCII only): before, `serve` started and answered 401 / 403 to the exact secret."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from choreo_ingest.config import ServeConfig
from choreo_ingest.errors import ConfigError
from choreo_ingest.preflight import run_checks
from choreo_ingest.server.security import load_credentials

from fakes import FakeClock, make_config

REFUSED = [
    ("serve.auth.tokenFile", "tøken-7f3a"),
    ("serve.auth.tokenFile", "two words"),
    ("serve.events.secretFile", "sécret-9b1c"),
    ("serve.events.secretFile", "bell\x07secret"),
]


def with_secret(tmp_path: Path, key: str, content: str) -> ServeConfig:
    path = tmp_path / "secret"
    path.write_text(content + "\n", encoding="utf-8")
    path.chmod(0o600)
    if key == "serve.auth.tokenFile":
        return ServeConfig(token_file=path)
    return ServeConfig(events_secret_file=path)


@pytest.mark.parametrize(("key", "content"), REFUSED)
def test_a_secret_no_request_could_send_is_refused_naming_its_key_not_its_value(
    tmp_path: Path, key: str, content: str
) -> None:
    config = replace(make_config(tmp_path), serve=with_secret(tmp_path, key, content))

    with pytest.raises(ConfigError) as caught:
        load_credentials(config, env={})

    assert str(caught.value).startswith(f"{key}: no request could send it: it holds ")
    assert content not in str(caught.value)


@pytest.mark.parametrize(("key", "content"), REFUSED)
def test_check_says_serve_would_not_start(tmp_path: Path, key: str, content: str) -> None:
    config = replace(make_config(tmp_path), serve=with_secret(tmp_path, key, content))

    [said] = [
        check for check in run_checks(config, tmp_path / "s.db", FakeClock()) if check.name == key
    ]

    assert said.warning
    assert said.detail.startswith("no request could send it: it holds ")
    assert said.detail.endswith(": `serve` would not start (`run` does not read it)")


def test_the_token_from_the_environment_is_refused_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^\$CHOREO_INGEST_SERVE_TOKEN: no request could send"):
        load_credentials(make_config(tmp_path), env={"CHOREO_INGEST_SERVE_TOKEN": "tøken"})


def test_an_events_secret_with_spaces_is_taken(tmp_path: Path) -> None:
    """A header carries spaces; only a bearer token must be one word."""
    serve = with_secret(tmp_path, "serve.events.secretFile", "correct horse battery")
    config = replace(make_config(tmp_path), serve=serve)

    assert load_credentials(config, env={}).events_secret == "correct horse battery"


def test_check_says_serve_would_not_start_with_the_token_the_variable_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHOREO_INGEST_SERVE_TOKEN", "ab cd")

    checks = run_checks(make_config(tmp_path), tmp_path / "s.db", FakeClock())

    [said] = [check for check in checks if check.name == "$CHOREO_INGEST_SERVE_TOKEN"]
    assert (said.ok, said.warning) == (True, True)
    assert said.detail == (
        "no request could send it: it holds whitespace: `serve` would not start (`run` does not "
        "read it)"
    )
