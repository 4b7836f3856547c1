from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from pytest_httpx import HTTPXMock

from choreo_ingest.config import Config
from choreo_ingest.logs import (
    MAX_LEARNED_SECRETS,
    Redactor,
    configure_logging,
    get_logger,
    register_secret,
)
from choreo_ingest.testing import FakeClock

# Registered secrets live for the whole process: these are unlike anything other tests log.
REGISTERED_TOKEN = "tok-4f1c9e7a-registered-in-test-logs"


class TerminalStream(io.StringIO):
    """A stream that says it is a terminal, as stderr does in an interactive shell."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def log_one_json_event(**fields: Any) -> dict[str, Any]:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    get_logger().warning("request_failed", **fields)
    [event] = json_lines(stream)
    return event


DEFERRED = """
import sys
from choreo_ingest.logs import configure_logging, get_logger, register_secret
register_secret("tok-deferred-5e1f")
configure_logging()  # off a terminal: warnings and above, as JSON lines
log = get_logger("choreo_ingest.test")
log.info("page_committed", pages=7)
log.debug("request_sent", authorization="Bearer tok-deferred-5e1f")
assert "structlog" not in sys.modules, "a call below the level loaded structlog"
log.warning("request_failed", detail="Bearer tok-deferred-5e1f was refused")
assert "structlog" in sys.modules
assert "rich" not in sys.modules, "structlog was loaded with rich"
"""


class TestLoadedForALineToWrite:
    """A process that has not loaded structlog (the CLI) loads it for the first line to write."""

    def test_calls_below_the_level_load_nothing_and_the_first_line_is_configured_and_masked(
        self,
    ) -> None:
        done = subprocess.run(
            [sys.executable, "-c", DEFERRED],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert done.returncode == 0, done.stderr
        [event] = [json.loads(line) for line in done.stderr.splitlines()]
        assert (event["event"], event["level"]) == ("request_failed", "warning")
        assert event["logger"] == "choreo_ingest.test"
        assert event["detail"] == "Bearer *** was refused"

    def test_a_line_written_before_anything_configured_logging_goes_to_stderr_at_warning(
        self,
    ) -> None:
        """Unconfigured, structlog prints every level to stdout, which carries data only."""
        script = (
            "from choreo_ingest.logs import get_logger\n"
            "log = get_logger('choreo_ingest.test')\n"
            "log.debug('not_shown'); log.info('not_shown'); log.warning('shown', n=1)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
        )

        assert (done.returncode, done.stdout) == (0, "")
        [event] = [json.loads(line) for line in done.stderr.splitlines()]
        assert (event["event"], event["level"], event["n"]) == ("shown", "warning", 1)


class TestJsonOutput:
    def test_writes_one_json_object_per_line_with_event_level_and_timestamp(self) -> None:
        stream = io.StringIO()
        configure_logging(json=True, verbosity=1, stream=stream)
        log = get_logger()

        log.info("page_committed", pages=7, entities=50)
        log.warning("removals_blocked", provider="openchoreo", stale=12)

        first, second = json_lines(stream)
        assert first["event"] == "page_committed"
        assert first["level"] == "info"
        assert (first["pages"], first["entities"]) == (7, 50)
        assert second["event"] == "removals_blocked"
        assert second["level"] == "warning"

    def test_timestamps_are_iso_utc(self) -> None:
        event = log_one_json_event()

        assert event["timestamp"].endswith("Z")
        moment = datetime.fromisoformat(event["timestamp"])
        assert moment.utcoffset() == UTC.utcoffset(None)

    def test_is_the_default_off_a_terminal(self) -> None:
        stream = io.StringIO()
        configure_logging(stream=stream)

        get_logger().warning("burst_failed", attempts=3)

        assert json_lines(stream)[0]["event"] == "burst_failed"

    def test_names_the_logger(self) -> None:
        stream = io.StringIO()
        configure_logging(json=True, stream=stream)

        get_logger("choreo_ingest.engine").warning("lock_held")

        assert json_lines(stream)[0]["logger"] == "choreo_ingest.engine"

    def test_logger_made_before_configuration_follows_it(self) -> None:
        made_at_import_time = get_logger("early")
        stream = io.StringIO()
        configure_logging(json=True, stream=stream)

        made_at_import_time.warning("cursor_expired")

        assert json_lines(stream)[0]["event"] == "cursor_expired"

    def test_exception_traceback_is_rendered_into_the_event(self) -> None:
        stream = io.StringIO()
        configure_logging(json=True, stream=stream)

        try:
            raise RuntimeError("upstream closed the connection")
        except RuntimeError:
            get_logger().exception("burst_crashed")

        [event] = json_lines(stream)
        assert "RuntimeError: upstream closed the connection" in event["exception"]


class TestConsoleOutput:
    def test_is_the_default_on_a_terminal(self) -> None:
        stream = TerminalStream()
        configure_logging(stream=stream)

        get_logger().info("cycle_completed", entities=250)

        line = stream.getvalue()
        assert "cycle_completed" in line
        assert "entities" in line
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)

    def test_json_flag_overrides_the_terminal(self) -> None:
        stream = TerminalStream()
        configure_logging(json=True, stream=stream)

        get_logger().info("cycle_completed")

        assert json_lines(stream)[0]["event"] == "cycle_completed"

    def test_json_false_gives_console_lines_off_a_terminal(self) -> None:
        stream = io.StringIO()
        configure_logging(json=False, stream=stream)

        get_logger().warning("cycle_completed")

        assert "cycle_completed" in stream.getvalue()
        assert not stream.getvalue().startswith("{")

    def test_no_color_turns_colors_off(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("NO_COLOR", "1")
        stream = TerminalStream()
        configure_logging(stream=stream)

        get_logger().warning("cycle_completed")

        assert "\x1b[" not in stream.getvalue()

    def test_a_dumb_terminal_gets_no_colors(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.setenv("TERM", "dumb")
        stream = TerminalStream()
        configure_logging(stream=stream)

        get_logger().warning("cycle_completed")

        assert "cycle_completed" in stream.getvalue()
        assert "\x1b[" not in stream.getvalue()

    def test_with_stderr_closed_lines_go_nowhere_not_to_stdout(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setattr(sys, "stderr", None)
        configure_logging(verbosity=1)

        get_logger().warning("cycle_completed")

        assert capsys.readouterr().out == ""


class TestLevels:
    @pytest.mark.parametrize(
        ("verbosity", "stream_type", "shown"),
        [
            (0, io.StringIO, {"warning", "error"}),
            (0, TerminalStream, {"info", "warning", "error"}),
            (1, io.StringIO, {"info", "warning", "error"}),
            (2, io.StringIO, {"debug", "info", "warning", "error"}),
            (2, TerminalStream, {"debug", "info", "warning", "error"}),
        ],
        ids=["quiet-under-cron", "info-on-terminal", "v-info", "vv-debug", "vv-debug-on-terminal"],
    )
    def test_verbosity_and_terminal_pick_the_level(
        self, verbosity: int, stream_type: type[io.StringIO], shown: set[str]
    ) -> None:
        stream = stream_type()
        configure_logging(verbosity=verbosity, json=True, stream=stream)
        log = get_logger()

        log.debug("debug_logged")
        log.info("info_logged")
        log.warning("warning_logged")
        log.error("error_logged")

        assert {event["level"] for event in json_lines(stream)} == shown

    def test_successful_cron_run_prints_nothing(self) -> None:
        stream = io.StringIO()
        configure_logging(stream=stream)

        get_logger().info("burst_finished", pages=3)

        assert stream.getvalue() == ""


class TestStreams:
    def test_writes_to_stderr_and_never_stdout(self, capsys: pytest.CaptureFixture[str]) -> None:
        configure_logging(verbosity=2)
        log = get_logger()

        log.debug("debug_logged")
        log.warning("warning_logged")

        captured = capsys.readouterr()
        assert captured.out == ""
        assert "debug_logged" in captured.err
        assert "warning_logged" in captured.err


class TestRedaction:
    @pytest.mark.parametrize(
        ("fields", "path"),
        [
            ({"token": "abc123"}, ("token",)),
            ({"Authorization": "Bearer abc123"}, ("Authorization",)),
            ({"openchoreo_token": "abc123"}, ("openchoreo_token",)),
            ({"headers": {"authorization": "Bearer abc123"}}, ("headers", "authorization")),
            ({"config": {"db": {"Password": "abc123"}}}, ("config", "db", "Password")),
            ({"client": {"client_secret": "abc123"}}, ("client", "client_secret")),
            ({"request": {"API-Key": "abc123"}}, ("request", "API-Key")),
        ],
        ids=["token", "authorization", "suffix", "nested", "deep", "secret", "api-key"],
    )
    def test_masks_values_of_credential_named_keys(
        self, fields: dict[str, Any], path: tuple[str, ...]
    ) -> None:
        event = log_one_json_event(**fields)

        value: Any = event
        for key in path:
            value = value[key]
        assert value == "***"
        assert "abc123" not in json.dumps(event)

    def test_masks_credential_keys_inside_lists(self) -> None:
        event = log_one_json_event(attempts=[{"token": "abc123", "status": 401}])

        assert event["attempts"] == [{"token": "***", "status": 401}]

    def test_keeps_other_fields(self) -> None:
        event = log_one_json_event(status=401, path="/api/v1/orgs", headers={"accept": "json"})

        assert (event["status"], event["path"]) == (401, "/api/v1/orgs")
        assert event["headers"] == {"accept": "json"}

    @pytest.mark.parametrize(
        "fields",
        [
            {"url": f"https://choreo.example/api?access={REGISTERED_TOKEN}"},
            {"detail": {"body": f"invalid token {REGISTERED_TOKEN}"}},
            {"args": ["--token", REGISTERED_TOKEN]},
            {"error": RuntimeError(f"refused {REGISTERED_TOKEN}")},
        ],
        ids=["string", "nested-string", "list-item", "object-repr"],
    )
    def test_masks_a_registered_secret_inside_any_value(self, fields: dict[str, Any]) -> None:
        register_secret(REGISTERED_TOKEN)

        event = log_one_json_event(**fields)

        line = json.dumps(event)
        assert REGISTERED_TOKEN not in line
        assert "***" in line

    def test_masks_a_registered_secret_in_the_event_and_traceback(self) -> None:
        register_secret(REGISTERED_TOKEN)
        stream = io.StringIO()
        configure_logging(json=False, stream=stream)

        try:
            raise ValueError(f"bad header Bearer {REGISTERED_TOKEN}")
        except ValueError:
            get_logger().exception(f"auth_failed {REGISTERED_TOKEN}")

        output = stream.getvalue()
        assert REGISTERED_TOKEN not in output
        assert "ValueError: bad header Bearer ***" in output

    def test_redactor_masks_the_longest_secret_first(self) -> None:
        """A secret that holds another and a separator is masked whole, not as `***:efgh`."""
        redactor = Redactor()
        redactor.register("abcd")
        redactor.register("abcd:efgh")

        assert redactor.scrub("x abcd:efgh y abcd") == "x *** y ***"

    def test_redactor_ignores_an_empty_secret(self) -> None:
        redactor = Redactor()
        redactor.register("")

        assert redactor.scrub("nothing to hide") == "nothing to hide"


JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiJiYWNrc3RhZ2UiLCJleHAiOjE4MDAwMDM2MDB9"
    ".c2lnbmF0dXJlLW9mLXRoZS10b2tlbg_-"
)


class TestWholeTokenRedaction:
    @pytest.mark.parametrize(
        "text",
        [
            "GET /api/v1/namespaces/acme/projects: HTTP 500",
            "component checkout-service committed",
            '{"kind": "Component", "metadata": {"name": "checkout-c1"}}',
        ],
        ids=["path", "words", "json"],
    )
    def test_one_character_secret_does_not_mangle_words(self, text: str) -> None:
        redactor = Redactor()
        redactor.register("c")

        assert redactor.scrub(text) == text

    @pytest.mark.parametrize(
        "spelled",
        ["cs+SECRET/98 x=7", "cs%2BSECRET%2F98+x%3D7", "cs%2BSECRET%2F98%20x%3D7"],
        ids=["as-is", "form-encoded", "url-encoded"],
    )
    def test_a_secret_is_masked_percent_encoded_too(self, spelled: str) -> None:
        redactor = Redactor()
        redactor.register("cs+SECRET/98 x=7")

        assert redactor.scrub(f"refused client_secret={spelled}&a=1") == (
            "refused client_secret=***&a=1"
        )

    @pytest.mark.parametrize(
        ("secret", "text"),
        [
            ("k8s-token-ABCD-123\n", "Illegal header value b'Bearer k8s-token-ABCD-123\\n'"),
            ("k8s-token-ABCD-123\r", 'header "Bearer k8s-token-ABCD-123\\r" refused'),
            ("tökenABCD-1234", "Illegal header value b'Bearer t\\xc3\\xb6kenABCD-1234'"),
            ("tökenABCD-1234", 'token "t\\u00f6kenABCD-1234" refused'),
        ],
        ids=["bytes-repr-newline", "json-escaped-cr", "bytes-repr-not-ascii", "json-not-ascii"],
    )
    def test_a_secret_is_masked_escaped_as_repr_and_json_write_it(
        self, secret: str, text: str
    ) -> None:
        """An HTTP library that refuses a header value quotes it as a bytes repr."""
        redactor = Redactor()
        redactor.register(secret)

        assert "ABCD" not in redactor.scrub(text)

    @pytest.mark.parametrize("secret", ["Abc\tDefSecret-9876", "Abc  DefSecret-9876"])
    def test_a_secret_holding_whitespace_is_masked_as_one_line_shows_it(self, secret: str) -> None:
        redactor = Redactor()
        redactor.register(secret)

        assert redactor.scrub("client secret Abc DefSecret-9876 is wrong") == (
            "client secret *** is wrong"
        )

    @pytest.mark.parametrize("secret", ["c", "ab", "xyz"], ids=["one", "two", "three"])
    def test_short_secret_is_masked_where_it_stands_alone(self, secret: str) -> None:
        redactor = Redactor()
        redactor.register(secret)

        assert redactor.scrub(secret) == "***"
        assert redactor.scrub(f"Bearer {secret}") == "Bearer ***"
        assert redactor.scrub(f"token={secret}&x") == "token=***&x"
        assert redactor.scrub(f"zz{secret}zz projects") == f"zz{secret}zz projects"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"Authorization: Bearer {JWT}", "Authorization: Bearer ***"),
            (f'{{"access_token": "{JWT}", "expires_in": 3600}}', '{"access_token": "***", '),
            (f"RuntimeError('refused {JWT}')", "RuntimeError('refused ***')"),
            (f"https://idp.example/cb?token={JWT}&state=1", "https://idp.example/cb?token=***&"),
            (f"headers=[{JWT}]", "headers=[***]"),
            (f"line one\\n{JWT}\\n", "line one\\n***\\n"),
            (f"rejected {JWT}.", "rejected ***."),
            (JWT, "***"),
        ],
        ids=["bearer", "json", "repr", "query", "brackets", "json-escape", "sentence", "whole"],
    )
    def test_a_whole_token_is_masked_wherever_it_stands(self, text: str, expected: str) -> None:
        redactor = Redactor()
        redactor.register(JWT)

        scrubbed = redactor.scrub(text)

        assert JWT not in scrubbed
        assert scrubbed.startswith(expected)

    @pytest.mark.parametrize(
        "text",
        ["prefix-tok-8c1d2e", "tok-8c1d2e-suffix", "xtok-8c1d2e", "tok-8c1d2e.example.com"],
        ids=["prefixed", "suffixed", "glued", "hostname"],
    )
    def test_a_secret_inside_a_longer_word_is_left_alone(self, text: str) -> None:
        """Only a whole token is the secret; a longer word that contains it is something else."""
        redactor = Redactor()
        redactor.register("tok-8c1d2e")

        assert redactor.scrub(text) == text

    def test_secret_with_regex_characters_is_matched_literally(self) -> None:
        redactor = Redactor()
        redactor.register("a+b*c?d")

        assert redactor.scrub("secret a+b*c?d here, aab*c?d not") == "secret *** here, aab*c?d not"

    def test_a_value_equal_to_a_secret_is_masked_under_any_key(self) -> None:
        redactor = Redactor()
        redactor.register("x9")

        cleaned = redactor(None, "warning", {"event": "e", "detail": "x9", "ids": ["x9", "x99"]})

        assert cleaned == {"event": "e", "detail": "***", "ids": ["***", "x99"]}

    def test_access_token_registered_at_runtime_is_masked_from_then_on(self) -> None:
        access_token = "at-5e0b7c21-issued-at-runtime"
        before = log_one_json_event(detail=f"got {access_token}")

        register_secret(access_token)
        after = log_one_json_event(
            detail=f"sent Bearer {access_token}", error=KeyError(access_token)
        )

        assert before["detail"] == f"got {access_token}"  # not yet known
        assert access_token not in json.dumps(after)
        assert after["detail"] == "sent Bearer ***"

    def test_registering_from_many_threads_keeps_every_secret(self) -> None:
        redactor = Redactor()
        secrets = [f"token-{n:04d}-from-a-thread" for n in range(64)]
        threads = [threading.Thread(target=redactor.register, args=(s,)) for s in secrets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert redactor.scrub(" ".join(secrets)) == " ".join(["***"] * len(secrets))


class TestLearnedSecrets:
    def test_a_learned_secret_is_masked_and_only_the_latest_are_kept(self) -> None:
        """`serve` learns an access token an hour: the oldest stop being searched for, the
        configured ones never do."""
        redactor = Redactor()
        redactor.register("configured-secret-1")
        learned = [f"issued-token-{n:04d}" for n in range(MAX_LEARNED_SECRETS + 2)]
        for token in learned:
            redactor.register(token, learned=True)

        shown = redactor.scrub(" ".join(["configured-secret-1", *learned]))

        assert shown.split() == ["***", learned[0], learned[1]] + ["***"] * MAX_LEARNED_SECRETS

    def test_learning_token_after_token_holds_no_more_memory_than_the_latest_need(self) -> None:
        """`serve` learns a token at every renewal for as long as it runs: what the redactor
        holds for them stays as much as the latest MAX_LEARNED_SECRETS need, however many came
        before (each used to be compiled into a pattern of them all, which the `re` module's
        cache kept, 512 of them: tens of megabytes over weeks)."""
        redactor = Redactor()
        tokens = [f"issued-token-{n:05d}-{'x' * 400}" for n in range(2 * MAX_LEARNED_SECRETS + 100)]
        for token in tokens[: 2 * MAX_LEARNED_SECRETS]:
            redactor.register(token, learned=True)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for token in tokens[2 * MAX_LEARNED_SECRETS :]:
                redactor.register(token, learned=True)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()

        # the 100 patterns it used to compile held 6 MB, kept by `re`
        assert grown < 256 * 1024
        assert redactor.scrub(f"Bearer {tokens[-1]}") == "Bearer ***"


def test_the_openchoreo_provider_tells_the_log_of_the_tokens_it_is_issued(
    httpx_mock: HTTPXMock,
) -> None:
    """An access token a log line quotes (an IdP or a proxy echoing it) is masked, as the
    configured secrets are."""
    from choreo_ingest.config import AuthConfig, OAuthConfig, OpenChoreoConfig
    from choreo_ingest.providers.openchoreo import OpenChoreoProvider

    issued = "issued-access-token-7f3a9c"
    httpx_mock.add_response(
        url="https://idp.test/token",
        json={"access_token": issued, "token_type": "Bearer", "expires_in": 3600},
    )
    oauth = OAuthConfig(token_url="https://idp.test/token", client_id="c", client_secret="s-3cr3t")
    config = Config(
        openchoreo=OpenChoreoConfig(base_url="https://oc.test", auth=AuthConfig(oauth=oauth))
    )
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)

    credentials = OpenChoreoProvider(config).credentials(FakeClock())
    assert credentials.bearer() == issued
    get_logger("test").warning("echoed", detail=f"the proxy said: Bearer {issued}")

    assert issued not in stream.getvalue()
    assert "Bearer ***" in stream.getvalue()
