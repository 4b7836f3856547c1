from __future__ import annotations

import errno
import json
import os
import re
import textwrap
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from choreo_ingest.config import (
    AuthConfig,
    Config,
    DeferredSecret,
    EventsConfig,
    IncrementalConfig,
    MappingConfig,
    OAuthConfig,
    OpenChoreoConfig,
    config_warnings,
    effective_chunk_size,
    find_config_path,
    load_config,
    read_secret_file,
    require_api,
    require_secrets,
    resolve_state_path,
    secret_values,
    state_origin,
)
from choreo_ingest.config_values import MAX_COUNT
from choreo_ingest.errors import ConfigError
from choreo_ingest.providers.openchoreo.auth import credentials_for
from choreo_ingest.providers.openchoreo.client_auth import FormAnswer
from choreo_ingest.store import MAX_INTEGER

from fakes import FakeClock
from privileges import as_nobody

EXAMPLE = Path(__file__).parent.parent / "examples" / "config.yaml"
SECRET = "s3cr3t-t0ken-value"
LONG_SECRET = "Zk3q9X7vLm2Pw8Rt5Yh1Nc6Bd4Gf0Js3Kx7Qa9We2Ur5Ti8Oy1Pl4Mn6Vb0Cz3Dx"
"""64 characters, as Auth0 issues client secrets: longer than an error quotes a value whole."""
LONG_SECRET_SHOWN = 12
"""No run this long of a secret's start may show."""
PEM_BUNDLE = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
OAUTH = """
openchoreo:
  auth:
    oauth:
      tokenUrl: http://thunder.openchoreo.localhost:8080/oauth2/token/
      clientId: choreo-ingest
      {secret}
"""


def write(directory: Path, text: str, name: str = "choreo-ingest.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def write_bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def load_text(directory: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(directory, text), env=env or {})


def refuse_to_open(monkeypatch: pytest.MonkeyPatch, refused: Path) -> None:
    """`os.open` of `refused` fails as for a file this user may not read (root reads all)."""
    real_open = os.open

    def opened(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path) == refused:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", opened)


def fifo(path: Path) -> Path:
    """A FIFO no one writes to: read as a file, it blocks for ever."""
    os.mkfifo(path)
    return path


def sparse(path: Path, size: int) -> Path:
    """A file of `size` zero bytes that takes no room on disk."""
    with path.open("wb") as file:
        file.truncate(size)
    return path


def write_ca_bundle(path: Path) -> Path:
    """A file that looks like a PEM bundle (config load checks no more than that)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PEM_BUNDLE, encoding="ascii")
    return path


def leaf_paths(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict) and node:
        return set().union(*(leaf_paths(value, f"{prefix}{key}.") for key, value in node.items()))
    return {prefix.rstrip(".")}


class TestDefaults:
    def test_no_config_file_gives_defaults(self) -> None:
        assert load_config(None) == Config()
        assert load_config(None).source is None

    @pytest.mark.parametrize(
        "text",
        ["", "# only a comment\n", "openchoreo:\n  incremental:\nmapping:\n"],
        ids=["empty", "comments-only", "empty-sections"],
    )
    def test_file_without_settings_gives_defaults(self, tmp_path: Path, text: str) -> None:
        path = write(tmp_path, text)
        assert load_config(path, env={}) == Config(source=path)


class TestExample:
    EVERY_KEY = frozenset(
        {
            "openchoreo.baseUrl",
            "openchoreo.api",
            "openchoreo.token",
            "openchoreo.auth.token",
            "openchoreo.auth.tokenFile",
            *(
                f"openchoreo.auth.oauth.{key}"
                for key in (
                    "tokenUrl",
                    "clientId",
                    "clientSecret",
                    "clientSecretFile",
                    "scope",
                    "audience",
                    "clientAuthMethod",
                    "tokenCacheFile",
                )
            ),
            "openchoreo.caBundle",
            "openchoreo.insecureSkipVerify",
            "openchoreo.events.maxPending",
            *(
                f"openchoreo.incremental.{key}"
                for key in (
                    "burstLength",
                    "burstInterval",
                    "restLength",
                    "chunkSize",
                    "backoff",
                    "maxAttempts",
                    "rejectRemovalsAbovePercentage",
                    "rejectEmptySourceCollections",
                    "maxConcurrentRequests",
                    "maxRequestsPerSecond",
                    "requestTimeout",
                )
            ),
            "mapping.defaultOwner",
            "mapping.lifecycle",
            "mapping.apisWithoutSchema",
            "state.path",
            "state.url",
            "state.passwordFile",
            "state.schema",
            "metrics.textfile",
            "metrics.labels",
            "catalog.directory",
            "events.inboxCapacity",
            "changes.retainDays",
            "changes.maxRows",
            "serve.listen",
            "serve.auth.tokenFile",
            "serve.events.secretFile",
            "serve.maxBodyBytes",
            "serve.readTimeout",
            "serve.shutdownDelay",
            "serve.allowedHosts",
            "providers",
        }
    )

    def test_example_loads_to_the_defaults_with_oauth_a_removal_guard_and_a_state_path(
        self,
    ) -> None:
        """Every key at its default but `baseUrl`, the OAuth2 client credentials every
        OpenChoreo release wants (the secret in a file: nothing secret in the config; the token
        kept for the next cron call), a guard against a sweep removing more than 20%, and an
        absolute state path (cron's calls and one by hand find the same state)."""
        config = load_config(EXAMPLE, env={})
        oauth = OAuthConfig(
            token_url="https://thunder.openchoreo.example.com/oauth2/token",
            client_id="choreo-ingest",
            client_secret_file=Path("/etc/choreo-ingest/client-secret"),
            token_cache_file=Path("/var/lib/choreo-ingest/openchoreo-token.json"),
        )
        assert config == Config(
            openchoreo=OpenChoreoConfig(
                base_url="https://api.openchoreo.example.com",
                auth=AuthConfig(oauth=oauth),
                incremental=IncrementalConfig(reject_removals_above_percentage=20.0),
            ),
            state_path=Path("/var/lib/choreo-ingest/state.db"),
            source=EXAMPLE,
        )
        assert config.openchoreo.auth.config_key == "openchoreo.auth.oauth.clientSecretFile"
        assert config.warnings == ()

    def test_commented_static_token_example_loads(self, tmp_path: Path) -> None:
        """The commented static-token alternative is valid once uncommented."""
        text = EXAMPLE.read_text(encoding="utf-8")
        block = text[text.index("# A static bearer token instead") :].splitlines()[3:]
        config = load_text(tmp_path, "\n".join(line.removeprefix("# ") for line in block))
        assert config.openchoreo.auth == AuthConfig(token_file=Path("/etc/choreo-ingest/token"))
        assert config.openchoreo.auth.config_key == "openchoreo.auth.tokenFile"

    def test_example_documents_every_key_with_a_comment(self) -> None:
        text = EXAMPLE.read_text(encoding="utf-8")
        assert leaf_paths(yaml.safe_load(text)) == self.EVERY_KEY
        for line in text.splitlines():
            if ":" in line and not line.lstrip().startswith("#") and not line.endswith(":"):
                assert "  # " in line, f"undocumented: {line}"


class TestValues:
    def test_every_key_sets_its_field(self, tmp_path: Path) -> None:
        write_ca_bundle(tmp_path / "certs/ca.pem")
        config = load_text(
            tmp_path,
            """
            openchoreo:
              baseUrl: https://api.example/api/v1/
              api: v1
              token: tok
              caBundle: certs/ca.pem
              insecureSkipVerify: false
              events: {maxPending: 20}
              incremental:
                burstLength: 3.5
                burstInterval: 60
                restLength: 2
                chunkSize: 1024
                backoff: [1, 2.5]
                maxAttempts: 7
                rejectRemovalsAbovePercentage: 0
                rejectEmptySourceCollections: false
                maxConcurrentRequests: 1
                maxRequestsPerSecond: 0.5
                requestTimeout: 4
            mapping: {defaultOwner: "user:team-a/jane.doe", lifecycle: experimental,
                      apisWithoutSchema: stub}
            state: {path: state/ingest.db}
            metrics: {textfile: /var/lib/node_exporter/choreo.prom}
            catalog: {directory: ~/catalog}
            events: {inboxCapacity: 5000}
            providers: [openchoreo, {name: csv, path: things.csv, limit: 3}]
            """,
        )
        assert config == Config(
            openchoreo=OpenChoreoConfig(
                base_url="https://api.example/api/v1",
                api="v1",
                token="tok",
                ca_bundle=str(tmp_path / "certs/ca.pem"),
                events=EventsConfig(max_pending=20),
                incremental=IncrementalConfig(
                    burst_length=3.5,
                    burst_interval=60.0,
                    rest_length=120.0,
                    chunk_size=1024,
                    backoff=(1.0, 2.5),
                    max_attempts=7,
                    reject_removals_above_percentage=0.0,
                    reject_empty_source_collections=False,
                    max_concurrent_requests=1,
                    max_requests_per_second=0.5,
                    request_timeout=4.0,
                ),
            ),
            mapping=MappingConfig(
                default_owner="user:team-a/jane.doe",
                lifecycle="experimental",
                apis_without_schema="stub",
            ),
            state_path=tmp_path / "state/ingest.db",
            metrics_textfile=Path("/var/lib/node_exporter/choreo.prom"),
            catalog_directory=Path("~/catalog").expanduser(),
            inbox_capacity=5000,
            providers=("openchoreo", "csv"),
            provider_options={"csv": {"path": "things.csv", "limit": 3}},
            source=tmp_path / "choreo-ingest.yaml",
        )

    def test_metrics_labels_are_kept_by_name(self, tmp_path: Path) -> None:
        config = load_text(
            tmp_path,
            "metrics: {labels: {platform: '${PLATFORM}', dc: eu-1}}\n",
            env={"PLATFORM": "prod"},
        )
        assert config.metrics_labels == (("dc", "eu-1"), ("platform", "prod"))

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("metrics: {labels: null}\n", ()),  # every label commented out
            ("metrics: {labels: {platform: '${UNSET_PLATFORM:-}', dc: 1}}\n", (("dc", "1"),)),
        ],
        ids=["none", "empty-left-out-number-as-text"],
    )
    def test_metrics_labels_left_empty_are_left_out(
        self, tmp_path: Path, text: str, expected: tuple[tuple[str, str], ...]
    ) -> None:
        assert load_text(tmp_path, text).metrics_labels == expected

    def test_unquoted_keys_yaml_reads_as_booleans_are_kept_as_written(self, tmp_path: Path) -> None:
        config = load_text(tmp_path, "metrics:\n  labels:\n    on: a\n    No: b\n    null: c\n")
        assert config.metrics_labels == (("No", "b"), ("null", "c"), ("on", "a"))

    def test_a_key_written_twice_once_quoted_is_a_duplicate(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="duplicate key 'yes'"):
            load_text(tmp_path, "metrics:\n  labels:\n    yes: a\n    'yes': b\n")

    def test_merge_keys_still_merge(self, tmp_path: Path) -> None:
        text = "metrics:\n  labels:\n    <<: {on: eu-1, dc: x}\n    platform: p\n    dc: y\n"
        assert load_text(tmp_path, text).metrics_labels == (
            ("dc", "y"),  # given again: it overrides the merged one
            ("on", "eu-1"),  # merged keys are read as written too
            ("platform", "p"),
        )

    @pytest.mark.parametrize(("written", "seconds"), [("0", 0.0), ("7.5", 7.5), ("'5'", 5.0)])
    def test_a_shutdown_delay_may_be_0(self, tmp_path: Path, written: str, seconds: float) -> None:
        config = load_text(tmp_path, f"serve: {{shutdownDelay: {written}}}\n")
        assert config.serve.shutdown_delay == seconds

    def test_allowed_hosts_are_kept_as_a_host_header_names_them(self, tmp_path: Path) -> None:
        config = load_text(tmp_path, "serve: {allowedHosts: [Ingest.Example., '*', a-b_c]}\n")
        assert config.serve.allowed_hosts == ("ingest.example", "*", "a-b_c")
        assert load_text(tmp_path, "serve: {allowedHosts: null}\n").serve.allowed_hosts == ()

    def test_bare_provider_names_have_no_options(self, tmp_path: Path) -> None:
        config = load_text(tmp_path, "providers: [csv, openchoreo]\n")
        assert config.providers == ("csv", "openchoreo")
        assert config.provider_options == {}

    def test_numbers_and_flags_may_come_from_the_environment(self, tmp_path: Path) -> None:
        config = load_text(
            tmp_path,
            """
            openchoreo:
              insecureSkipVerify: ${INSECURE}
              incremental: {chunkSize: "${CHUNK}", backoff: ["${FIRST}", 9]}
            """,
            env={"INSECURE": "True", "CHUNK": "200", "FIRST": "1.5"},
        )
        assert config.openchoreo.insecure_skip_verify is True
        assert config.incremental.chunk_size == 200
        assert config.incremental.backoff == (1.5, 9.0)

    @pytest.mark.parametrize(
        "value", ["null", '""', "'${UNSET_TOKEN:-}'"], ids=["null", "empty", "empty-default"]
    )
    def test_empty_optional_value_leaves_it_unset(self, tmp_path: Path, value: str) -> None:
        config = load_text(tmp_path, f"openchoreo: {{token: {value}, baseUrl: {value}}}\n")
        assert config.openchoreo.token is None
        assert config.openchoreo.base_url is None


BAD_CONFIGS = [
    # (yaml, key path, message fragment)
    (
        "openchoreo: {incremental: {burstLenght: 5}}",
        "openchoreo.incremental.burstLenght",
        "unknown key (did you mean burstLength?)",
    ),
    ("mapping: {owner: x}", "mapping.owner", "unknown key (expected one of: defaultOwner, "),
    ("openchoreoo: {}", "openchoreoo", "did you mean openchoreo?"),
    ("incremental: {burstLength: 5}", "incremental", "did you mean openchoreo.incremental?"),
    ("openchoreo: {oauth: {}}", "openchoreo.oauth", "did you mean openchoreo.auth.oauth?"),
    (
        "openchoreo: {incremental: {tokenUrl: x}}",
        "openchoreo.incremental.tokenUrl",
        "did you mean openchoreo.auth.oauth.tokenUrl?",
    ),
    ("serve: {token: x}", "serve.token", "did you mean serve.auth.tokenFile?"),
    ("metrics: {path: x}", "metrics.path", "unknown key (expected one of: textfile, labels)"),
    (
        "openchoreo: {burstLenght: 5}",
        "openchoreo.burstLenght",
        "did you mean openchoreo.incremental.burstLength?",
    ),
    (
        "openchoreo: {incremental: {chunkSize: 99999999999999999999999}}",
        "openchoreo.incremental.chunkSize",
        "must be at most 1024 (the API's largest page)",
    ),
    (
        "openchoreo: {incremental: {burstLength: abc}}",
        "openchoreo.incremental.burstLength",
        "expected a number, got 'abc'",
    ),
    (
        "openchoreo: {incremental: {burstLength: true}}",
        "openchoreo.incremental.burstLength",
        "expected a number, got true",
    ),
    (
        "openchoreo: {incremental: {requestTimeout: .inf}}",
        "openchoreo.incremental.requestTimeout",
        "expected a number, got inf",
    ),
    (
        "openchoreo: {incremental: {burstInterval: 0}}",
        "openchoreo.incremental.burstInterval",
        "must be greater than 0, got 0",
    ),
    (
        "openchoreo: {incremental: {restLength: -1}}",
        "openchoreo.incremental.restLength",
        "must be greater than 0, got -1",
    ),
    (
        "openchoreo: {incremental: {chunkSize: 1025}}",
        "openchoreo.incremental.chunkSize",
        "must be at most 1024",
    ),
    (
        "openchoreo: {incremental: {chunkSize: 2.5}}",
        "openchoreo.incremental.chunkSize",
        "expected a whole number, got 2.5",
    ),
    (
        "openchoreo: {incremental: {maxAttempts: 0}}",
        "openchoreo.incremental.maxAttempts",
        "must be greater than 0",
    ),
    (
        "openchoreo: {incremental: {maxConcurrentRequests: null}}",
        "openchoreo.incremental.maxConcurrentRequests",
        "expected a number, got null",
    ),
    (
        "openchoreo: {incremental: {maxRequestsPerSecond: 0}}",
        "openchoreo.incremental.maxRequestsPerSecond",
        "must be greater than 0",
    ),
    (
        "openchoreo: {incremental: {backoff: []}}",
        "openchoreo.incremental.backoff",
        "must list at least one delay",
    ),
    (
        "openchoreo: {incremental: {backoff: 30}}",
        "openchoreo.incremental.backoff",
        "expected a list of seconds, got 30",
    ),
    (
        "openchoreo: {incremental: {backoff: [30, 0]}}",
        "openchoreo.incremental.backoff[1]",
        "must be greater than 0, got 0",
    ),
    (
        "openchoreo: {incremental: {requestTimeout: 1e12}}",
        "openchoreo.incremental.requestTimeout",
        "must be at most 31,536,000 seconds (a year), got '1e12'",
    ),
    (
        "openchoreo: {incremental: {restLength: 1e10}}",
        "openchoreo.incremental.restLength",
        "must be at most 525,600 minutes (a year)",
    ),
    (
        "openchoreo: {incremental: {backoff: [30, 4e7]}}",
        "openchoreo.incremental.backoff[1]",
        "must be at most 31,536,000 seconds (a year)",
    ),
    (
        "changes: {maxRows: 10000000000000000000}",
        "changes.maxRows",
        "must be at most 9,223,372,036,854,775,807",
    ),
    (
        "openchoreo: {incremental: {rejectRemovalsAbovePercentage: 101}}",
        "openchoreo.incremental.rejectRemovalsAbovePercentage",
        "must be between 0 and 100, got 101",
    ),
    (
        "openchoreo: {incremental: {rejectRemovalsAbovePercentage: -5}}",
        "openchoreo.incremental.rejectRemovalsAbovePercentage",
        "must be between 0 and 100",
    ),
    (
        "openchoreo: {incremental: {rejectEmptySourceCollections: 1}}",
        "openchoreo.incremental.rejectEmptySourceCollections",
        "expected true or false, got 1",
    ),
    ("openchoreo: {baseUrl: ftp://x/api}", "openchoreo.baseUrl", "expected an http:// or https://"),
    ("openchoreo: {baseUrl: 'http:///api'}", "openchoreo.baseUrl", "with a host"),
    ("openchoreo: {baseUrl: 'http://h:0/api'}", "openchoreo.baseUrl", "port from 1 to 65535"),
    ("openchoreo: {baseUrl: 'http://h/api?x=1'}", "openchoreo.baseUrl", "no query"),
    ("openchoreo: {baseUrl: 'http://h/api#x'}", "openchoreo.baseUrl", "with no fragment (#...)"),
    (
        "openchoreo: {baseUrl: 'http://u:p@h/api'}",
        "openchoreo.baseUrl",
        "must not hold credentials",
    ),
    ("openchoreo: {baseUrl: 8080}", "openchoreo.baseUrl", "expected a non-empty string, got 8080"),
    ("openchoreo: {incremental: [1]}", "openchoreo.incremental", "expected a mapping, got a list"),
    ("openchoreo: yes", "openchoreo", "expected a mapping, got true"),
    ("mapping: {defaultOwner: guests}", "mapping.defaultOwner", "expected a full ref"),
    ("mapping: {defaultOwner: 'group:Default/x'}", "mapping.defaultOwner", "kind:namespace/name"),
    ("mapping: {lifecycle: ''}", "mapping.lifecycle", "expected a non-empty string, got ''"),
    ("state: {path: [a]}", "state.path", "expected a non-empty string, got a list"),
    ("providers: []", "providers", "must name at least one provider"),
    ("providers: openchoreo", "providers", "expected a list of names"),
    ("providers: [openchoreo, 3]", "providers[1]", "expected a provider name (a string), got 3"),
    ("providers: [{name: [a]}]", "providers[0].name", "expected a provider name (a string)"),
    ("providers: [{path: x.csv}]", "providers[0]", "missing name"),
    ("providers: ['my provider']", "providers[0]", "expected letters, digits"),
    ("providers: [csv, {name: csv}]", "providers[1].name", "duplicate provider name 'csv'"),
    (
        "providers: [{name: openchoreo, chunkSzie: 7, token: ProviderOptSecretABC}]",
        "providers[0].chunkSzie",
        "unknown key (the built-in openchoreo provider takes no options; "
        "did you mean openchoreo.incremental.chunkSize?)",
    ),
    (
        "providers: [csv, {name: openchoreo, incremental: {burstLength: -5}}]",
        "providers[1].incremental",
        "did you mean openchoreo.incremental?",
    ),
    (
        "providers: [{name: openchoreo, colour: blue}]",
        "providers[0].colour",
        "takes no options; set openchoreo.* instead",
    ),
    ("!!binary aGk= : x", None, "keys must be strings, got "),
    ("1: x", "1", "unknown key (expected one of: openchoreo, "),
    ("openchoreo: {api: v2}", "openchoreo.api", "expected one of: auto, v1, orgs, got 'v2'"),
    ("openchoreo: {api: null}", "openchoreo.api", "expected one of: auto, v1, orgs, got null"),
    (
        "openchoreo: {events: {maxPending: 0}}",
        "openchoreo.events.maxPending",
        "must be greater than 0",
    ),
    (
        "openchoreo: {events: {maxPending: 1.5}}",
        "openchoreo.events.maxPending",
        "expected a whole number",
    ),
    ("openchoreo: {events: {maxPendng: 5}}", "openchoreo.events.maxPendng", "did you mean"),
    ("events: {inboxCapacity: -1}", "events.inboxCapacity", "must be greater than 0"),
    ("serve: {shutdownDelay: -1}", "serve.shutdownDelay", "must be 0 or more, got -1"),
    ("serve: {shutdownDelay: 4000}", "serve.shutdownDelay", "must be at most 3,600 seconds"),
    ("serve: {listen: localhost}", "serve.listen", "expected host:port"),
    ("serve: {listen: '127.0.0.1:70000'}", "serve.listen", "expected host:port"),
    ("serve: {listen: '::1:8080'}", "serve.listen", "IPv6 host goes in brackets"),
    ("serve: {listen: 'http://127.0.0.1:8080'}", "serve.listen", "expected host:port, not a URL"),
    ('state: {path: "a\\0b.db"}', "state.path", "holds a NUL byte, which no path can"),
    ("state: {path: data/}", "state.path", "names a directory (it ends in /, . or ..); give a"),
    ("state: {path: data/.}", "state.path", "names a directory (it ends in /, . or ..)"),
    ("metrics: {textfile: /var/lib/node/}", "metrics.textfile", "names a directory (it ends in /"),
    ('metrics: {textfile: "m\\0.prom"}', "metrics.textfile", "holds a NUL byte"),
    (
        "openchoreo: {incremental: {maxRequestsPerSecond: 1e19}}",
        "openchoreo.incremental.maxRequestsPerSecond",
        "must be at most 1,000,000",
    ),
    ("changes: {retainDays: 1e300}", "changes.retainDays", "must be at most 3,650 (ten years)"),
    ("serve: {allowedHosts: ingest.example}", "serve.allowedHosts", "expected a list of host"),
    ("metrics: {labels: [platform]}", "metrics.labels", "expected a mapping of label names"),
    ("metrics: {labels: {1x: a}}", "metrics.labels.1x", "expected a label name (letters, digit"),
    (
        "metrics: {labels: {provider: a}}",
        "metrics.labels.provider",
        "a label name of Prometheus's or of the series' own (api, instance, job, kind, le, ",
    ),
    ("metrics: {labels: {__name: a}}", "metrics.labels.__name", "a label name of Prometheus"),
    ("metrics: {labels: {platform: true}}", "metrics.labels.platform", "a non-empty string"),
    (
        "serve: {allowedHosts: [ok.example, 'ingest.example:8080']}",
        "serve.allowedHosts[1]",
        "expected a host name without a port (ingest.example.com), or *, got 'ingest.example:80",
    ),
    ("changes: {maxRows: 0}", "changes.maxRows", "must be greater than 0"),
    ("state: {url: 'mysql://u@h/db'}", "state.url", "expected postgresql://"),
    ("state: {url: 'postgresql://u:pw@/'}", "state.url", "expected postgresql://"),
    ("state: {url: 'postgresql://u:pw@h:99999/db'}", "state.url", "a port is out of range"),
    (
        "state: {url: 'postgresql://u:pw@h/db?port=0'}",
        "state.url",
        "a port is out of range (1-65535); exp",
    ),
    (
        "state: {url: 'postgresql://u:pw@h:5o32/db'}",
        "state.url",
        "a port is not a number (1-65535);",
    ),
    (
        "state: {url: 'postgresql://u:A/B@h:5432/db'}",
        "state.url",
        "a port is not a number (1-65535) (a password holding `/`, `?` or `#` must be "
        "percent-encoded); expected postgresql://",
    ),
    ("state: {url: 'postgresql://h/db', path: x.db}", "state.url", "cannot be combined"),
    ("state: {schema: Bad-Name}", "state.schema", "expected a lower-case SQL name"),
    ("state: {schema: pg_toast}", "state.schema", "names starting with pg_ are PostgreSQL's own"),
    ("state: {schema: pg_temp}", "state.schema", "names starting with pg_ are PostgreSQL's own"),
    (
        "mapping: {apisWithoutSchema: drop}",
        "mapping.apisWithoutSchema",
        "expected one of: skip, stub, got 'drop'",
    ),
    ("openchoreo: {auth: {tokenFile: [a]}}", "openchoreo.auth.tokenFile", "expected a non-empty"),
    (
        "openchoreo: {auth: {oauth: {tokenUrl: 'ftp://idp/token', clientId: c, clientSecret: s}}}",
        "openchoreo.auth.oauth.tokenUrl",
        "expected an http:// or https:// URL",
    ),
    (
        "openchoreo: {auth: {oauth: {tokenUrl: 'https://idp/t#x', clientId: c, clientSecret: s}}}",
        "openchoreo.auth.oauth.tokenUrl",
        "no fragment",
    ),
    (
        "openchoreo: {auth: {oauth: {tokenUrl: 'https://u:p@idp/t'}}}",
        "openchoreo.auth.oauth.tokenUrl",
        "must not hold credentials",
    ),
    (
        "openchoreo: {auth: {oauth: {tokenUrl: 'https://idp/t?realm=x&client_secret=QQ99'}}}",
        "openchoreo.auth.oauth.tokenUrl",
        "must not hold credentials in its query",
    ),
]


class TestErrors:
    @pytest.mark.parametrize(
        ("text", "key_path", "fragment"),
        BAD_CONFIGS,
        ids=[f"{path or 'top'}:{fragment[:24]}" for _, path, fragment in BAD_CONFIGS],
    )
    def test_bad_value_names_key_path_and_problem(
        self, tmp_path: Path, text: str, key_path: str | None, fragment: str
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, text + "\n")
        assert caught.value.path == key_path
        assert fragment in str(caught.value)
        assert str(caught.value).startswith(f"{key_path}: " if key_path else "")
        assert "\n" not in str(caught.value)

    def test_a_url_whose_password_holds_a_slash_is_refused_without_it(self, tmp_path: Path) -> None:
        """`id:Zq7x+/=x@host`: the slash ends the authority, so the URL cannot even be split;
        the message must neither call it a fragment nor show the password."""
        oauth = "{tokenUrl: 'http://id:Zq7x+/=x@idp/t', clientId: c, clientSecret: s}"
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, f"openchoreo: {{auth: {{oauth: {oauth}}}}}\n")
        assert str(caught.value) == (
            "openchoreo.auth.oauth.tokenUrl: expected an http:// or https:// URL with a host, "
            "its port (if any) digits"
        )

    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            ("https://h.example/t?sig=S1gQ&x=a b", "must not hold spaces or control characters"),
            (
                "https://h..example/t?sig=S1gQ",
                "expected an http:// or https:// URL with a host: not",
            ),
            ("ftp://h.example/t?sig=S1gQ", "expected an http:// or https:// URL with a host"),
            ("https://h.example/t?sig=S1gQ#frag", "expected a URL with no fragment"),
        ],
    )
    def test_a_refused_token_url_is_shown_without_its_query_values(
        self, tmp_path: Path, url: str, problem: str
    ) -> None:
        oauth = f"{{tokenUrl: '{url}', clientId: c, clientSecret: s}}"
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, f"openchoreo: {{auth: {{oauth: {oauth}}}}}\n")
        assert str(caught.value).startswith(f"openchoreo.auth.oauth.tokenUrl: {problem}")
        assert "sig=***" in str(caught.value)
        assert "S1gQ" not in str(caught.value)

    def test_an_option_given_to_the_built_in_provider_is_refused_without_its_value(
        self, tmp_path: Path
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, "providers: [{name: openchoreo, token: ProviderOptSecretABC}]\n")
        assert str(caught.value) == (
            "providers[0].token: unknown key (the built-in openchoreo provider takes no options; "
            "did you mean openchoreo.token?)"
        )

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("- a\n- b\n", "expected a mapping at the top level, got a list"),
            ("just text\n", "expected a mapping at the top level, got 'just text'"),
            ("openchoreo:\n  baseUrl: [x\n", "invalid YAML at line 3, column 1: "),
            ("a: 1\n\tb: 2\n", "invalid YAML at line 2, column 1: "),
            ("mapping: {lifecycle: a, lifecycle: b}\n", "line 1, column 25: duplicate key"),
            ("x: !!python/object:os.system {}\n", "invalid YAML at line 1, column 4: "),
        ],
        ids=["list", "scalar", "unclosed-flow", "tab", "duplicate-key", "unsafe-tag"],
    )
    def test_unusable_file_is_named(self, tmp_path: Path, text: str, fragment: str) -> None:
        path = write(tmp_path, text)
        with pytest.raises(ConfigError, match=f"^{path}: ") as caught:
            load_config(path, env={})
        assert fragment in str(caught.value)
        assert "\n" not in str(caught.value)

    @pytest.mark.parametrize(
        ("make", "problem"),
        [
            (lambda tmp: tmp / "missing.yaml", "No such file or directory"),
            (lambda tmp: tmp, "Is a directory"),
            (
                lambda tmp: write_bytes(tmp / "x.yaml", b"\xff\xfe"),
                "UTF-8",
            ),
            (lambda tmp: fifo(tmp / "config.fifo"), r"not a regular file \(a FIFO\)"),
        ],
        ids=["missing", "directory", "not-utf8", "fifo"],
    )
    def test_unreadable_file_says_why(self, tmp_path: Path, make: Any, problem: str) -> None:
        path = make(tmp_path)
        with pytest.raises(ConfigError, match=f"^{path}: cannot read: .*{problem}"):
            load_config(path, env={})

    def test_permission_denied_is_reported(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = write(tmp_path, "openchoreo: {}\n")
        refuse_to_open(monkeypatch, path)
        with pytest.raises(ConfigError) as caught:
            load_config(path, env={})
        assert str(caught.value) == f"{path}: cannot read: Permission denied"

    def test_file_without_read_permission_is_reported(self, tmp_path: Path) -> None:
        """Root reads any file, and CI runs as root: the read is done as another user."""
        path = write(tmp_path, "providers: [openchoreo]\n")
        path.chmod(0o000)
        with as_nobody(), pytest.raises(ConfigError, match="cannot read: Permission denied"):
            load_config(path, env={})


class TestInterpolation:
    @pytest.mark.parametrize(
        ("raw", "env", "expected"),
        [
            ("${LIFE}", {"LIFE": "beta"}, "beta"),
            ("pre-${LIFE}-post", {"LIFE": "beta"}, "pre-beta-post"),
            ("${A}${B}", {"A": "x", "B": "y"}, "xy"),
            ("${LIFE:-fallback}", {}, "fallback"),
            ("${LIFE:-fallback}", {"LIFE": ""}, "fallback"),
            ("${LIFE:-fallback}", {"LIFE": "set"}, "set"),
            ("${LIFE:-with spaces: and colons}", {}, "with spaces: and colons"),
            ("x${LIFE}", {"LIFE": ""}, "x"),
            ("cost$$5", {}, "cost$5"),
            ("$${LIFE}", {"LIFE": "beta"}, "${LIFE}"),
            ("$$$${LIFE}", {"LIFE": "beta"}, "$${LIFE}"),
            ("a$b$", {}, "a$b$"),
            ("${LIFE}", {"LIFE": "${NOT_AGAIN}"}, "${NOT_AGAIN}"),
        ],
        ids=[
            "whole",
            "inside",
            "two",
            "default-unset",
            "default-empty",
            "default-unused",
            "default-punctuation",
            "set-but-empty",
            "escaped-dollar",
            "escaped-reference",
            "two-escapes",
            "lone-dollars",
            "no-recursion",
        ],
    )
    def test_string_values_are_interpolated(
        self, tmp_path: Path, raw: str, env: dict[str, str], expected: str
    ) -> None:
        config = load_text(tmp_path, f"mapping: {{lifecycle: '{raw}'}}\n", env=env)
        assert config.mapping.lifecycle == expected

    def test_provider_options_are_interpolated(self, tmp_path: Path) -> None:
        config = load_text(
            tmp_path,
            "providers: [{name: csv, files: ['${DIR}/a.csv'], auth: {user: '${USER_NAME}'}}]\n",
            env={"DIR": "/data", "USER_NAME": "bot"},
        )
        assert config.provider_options["csv"] == {"files": ["/data/a.csv"], "auth": {"user": "bot"}}

    def test_environment_defaults_to_os_environ(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CHOREO_TEST_LIFECYCLE", "staging")
        config = load_config(write(tmp_path, "mapping: {lifecycle: '${CHOREO_TEST_LIFECYCLE}'}\n"))
        assert config.mapping.lifecycle == "staging"

    @pytest.mark.parametrize(
        ("text", "key_path", "fragment"),
        [
            (
                "openchoreo: {caBundle: '${CA_FILE}'}",
                "openchoreo.caBundle",
                "environment variable CA_FILE is not set",
            ),
            (
                "providers: [{name: csv, files: [a, '${CSV_DIR}/b']}]",
                "providers[0].files[1]",
                "environment variable CSV_DIR is not set",
            ),
            ("mapping: {lifecycle: '${1BAD}'}", "mapping.lifecycle", "bad substitution ${1BAD}"),
            ("mapping: {lifecycle: '${OPEN'}", "mapping.lifecycle", "bad substitution ${OPEN"),
            ("mapping: {lifecycle: '${}'}", "mapping.lifecycle", "bad substitution ${}"),
        ],
        ids=["unset", "unset-in-options", "bad-name", "unterminated", "empty"],
    )
    def test_bad_reference_names_variable_and_key_path(
        self, tmp_path: Path, text: str, key_path: str, fragment: str
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, text + "\n")
        assert caught.value.path == key_path
        assert fragment in str(caught.value)


class TestSecrets:
    @pytest.mark.parametrize(
        "text",
        [
            f"openchoreo: {{token: [{SECRET}]}}",
            f"openchoreo: {{token: {{{SECRET}: 1}}}}",
            "openchoreo: {token: 123456789}",
            f"openchoreo: {{token: '${{{SECRET}-x}}'}}",
            f"openchoreo: {{token: '{SECRET}${{UNSET}}'}}",
            f"openchoreo: {{token: '{SECRET}${{'}}",
            f'openchoreo:\n  token: "{SECRET}\n',
            f"openchoreo:\n  token: {SECRET}\n  token: {SECRET}",
            f"openchoreo:\n  token: {SECRET}\n  bad key {SECRET}",
            f"openchoreo: {{token: *{SECRET}}}",
            f"openchoreo:\n  token: !{SECRET}",
            f"openchoreo:\n  token: !{SECRET}!x",
        ],
        ids=[
            "list",
            "mapping",
            "number",
            "bad-reference",
            "unset-variable",
            "unterminated",
            "unclosed-quote",
            "duplicate",
            "yaml-error-after-token",
            "read-as-an-alias",
            "read-as-a-tag",
            "read-as-a-tag-handle",
        ],
    )
    def test_token_value_never_appears_in_errors(self, tmp_path: Path, text: str) -> None:
        """Whether the error comes at load or, for an unset variable, when the API needs it."""
        with pytest.raises(ConfigError) as caught:
            require_secrets(load_text(tmp_path, text + "\n"))
        for secret in (SECRET, "123456789"):
            assert secret not in str(caught.value)
            assert secret not in repr(caught.value.args)

    @pytest.mark.parametrize(
        "text",
        [
            f"openchoreo: {{auth: {{token: [{SECRET}]}}}}",
            f"openchoreo: {{auth: {{oauth: {{clientSecret: [{SECRET}]}}}}}}",
            f"openchoreo: {{auth: {{oauth: {{clientSecret: '{SECRET}${{UNSET}}'}}}}}}",
            f"openchoreo: {{auth: {SECRET}}}",
            f"openchoreo: {{auth: {{oauth: {SECRET}}}}}",
            "openchoreo: {auth: {oauth: 123456789}}",
            f"openchoreo: {{auth: {{token: {SECRET}, tokenFile: f}}}}",
            f"openchoreo: {{token: {SECRET}, auth: {{token: {SECRET}}}}}",
            f"serve: {{auth: {SECRET}}}",
            f"serve: {{events: {SECRET}}}",
            f"state: postgresql://u:{SECRET}@db/x",
            f"state: {{url: 'postgresql://u:${{PW:-{SECRET}@db/x'}}",
            f"state: {{url: [postgresql://u:{SECRET}@db/x]}}",
        ],
        ids=[
            "auth-token-list",
            "client-secret-list",
            "client-secret-unset-variable",
            "auth-scalar",
            "oauth-scalar",
            "oauth-number",
            "two-modes",
            "shorthand-and-token",
            "serve-auth-scalar",
            "serve-events-scalar",
            "state-scalar",
            "state-url-bad-substitution",
            "state-url-list",
        ],
    )
    def test_auth_secrets_never_appear_in_errors(self, tmp_path: Path, text: str) -> None:
        """Whether the error comes at load or, for an unset variable, when the API needs it."""
        with pytest.raises(ConfigError) as caught:
            require_secrets(load_text(tmp_path, text + "\n"))
        for secret in (SECRET, "123456789"):
            assert secret not in str(caught.value)
            assert secret not in repr(caught.value.args)

    @pytest.mark.parametrize("secret", [SECRET, LONG_SECRET], ids=["short", "64-characters"])
    @pytest.mark.parametrize(
        ("text", "env"),
        [
            ("openchoreo: {{baseUrl: {s}, token: {s}}}", {}),
            ("openchoreo: {{baseUrl: 'https://h/{s}?a=b', auth: {{token: {s}}}}}", {}),
            ("openchoreo: {{baseUrl: '${{TOKEN}}', token: '${{TOKEN}}'}}", {"TOKEN": "{s}"}),
            (
                "openchoreo: {{baseUrl: https://h, auth: {{oauth: {{tokenUrl: https://idp/t, "
                "clientId: c, clientSecret: {s}}}}}}}\nmapping: {{defaultOwner: {s}}}",
                {},
            ),
            ("openchoreo: {{token: {s}, {s}: 1}}", {}),
        ],
        ids=["base-url", "base-url-path", "from-the-environment", "client-secret", "a-key"],
    )
    def test_a_secret_written_in_another_key_too_is_masked_in_its_error(
        self, tmp_path: Path, text: str, env: dict[str, str], secret: str
    ) -> None:
        """A token pasted into the wrong key as well as its own: that key's error would show it,
        or the 57 characters of a long value an error quotes, which may end inside it."""
        environment = {name: value.format(s=secret) for name, value in env.items()}
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, text.format(s=secret) + "\n", environment)

        shown = f"{caught.value} {caught.value.path}"
        assert secret[:LONG_SECRET_SHOWN] not in shown
        assert "***" in str(caught.value)

    @pytest.mark.parametrize("secret", [SECRET, LONG_SECRET], ids=["short", "64-characters"])
    @pytest.mark.parametrize(
        "section",
        [
            "openchoreo: {{auth: {{tokenFile: {f}}}}}",
            "openchoreo: {{auth: {{oauth: {{tokenUrl: https://idp/t, clientId: c, "
            "clientSecretFile: {f}}}}}}}",
            "serve: {{auth: {{tokenFile: {f}}}}}",
            "serve: {{events: {{secretFile: {f}}}}}",
            "state: {{url: 'postgresql://u@db/x', passwordFile: {f}}}",
        ],
        ids=["token-file", "client-secret-file", "serve-token-file", "events-secret", "password"],
    )
    def test_a_secret_files_content_written_in_another_key_is_masked_in_its_error(
        self, tmp_path: Path, section: str, secret: str
    ) -> None:
        """The secret pasted into a key as well as saved in its file: the file, which a load
        never reads, is read for the error, and what it holds is masked as a written one is."""
        (tmp_path / "secret.txt").write_text(f"\ufeff{secret}\n", encoding="utf-8")
        text = section.format(f="secret.txt") + f"\nmapping: {{defaultOwner: '{secret} x'}}\n"

        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, text)

        shown = f"{caught.value} {caught.value.path}"
        assert caught.value.path == "mapping.defaultOwner"
        assert secret[:LONG_SECRET_SHOWN] not in shown
        assert "***" in str(caught.value)

    @pytest.mark.parametrize(
        ("written", "env"),
        [
            ("'{home}/keys/secret.txt'", {}),
            ("'${{KEYS}}/secret.txt'", {"KEYS": "{home}/keys"}),
            ("keys/secret.txt", {}),
        ],
        ids=["absolute", "from-the-environment", "in-the-files-directory"],
    )
    def test_a_secret_file_is_found_for_masking_as_the_load_finds_it(
        self, tmp_path: Path, written: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Relative to the config file's directory, not the working directory (cron's is /)."""
        (tmp_path / "keys").mkdir()
        (tmp_path / "keys" / "secret.txt").write_text(SECRET, encoding="utf-8")
        monkeypatch.chdir("/")
        file = written.format(home=tmp_path)
        text = f"openchoreo: {{baseUrl: {SECRET}, auth: {{tokenFile: {file}}}}}\n"

        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, text, {k: v.format(home=tmp_path) for k, v in env.items()})

        assert caught.value.path == "openchoreo.baseUrl"
        assert SECRET not in str(caught.value)

    @pytest.mark.parametrize("secret", ["hunter2-t0ken", LONG_SECRET], ids=["short", "long"])
    @pytest.mark.parametrize(
        "content",
        ["{s}\n# issued 2026-12-01\n", "utf-16:{s}\r\n", "{s}\n" * 6000],
        ids=["two-lines", "utf-16", "over-64-KiB"],
    )
    def test_a_secret_file_its_key_would_refuse_is_masked_all_the_same(
        self, tmp_path: Path, content: str, secret: str
    ) -> None:
        """A file the token's own key refuses (two lines, UTF-16 as Windows tools write it, too
        large) still holds the secret that was pasted into another key."""
        text = content.format(s=secret)
        raw = text.removeprefix("utf-16:").encode("utf-16" if "utf-16:" in text else "utf-8")
        (tmp_path / "token").write_bytes(raw)
        config = f"openchoreo: {{baseUrl: {secret}, auth: {{tokenFile: token}}}}\n"

        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, config)

        assert caught.value.path == "openchoreo.baseUrl"
        assert secret[:LONG_SECRET_SHOWN] not in str(caught.value)

    def test_a_config_file_over_4_mib_is_refused(self, tmp_path: Path) -> None:
        """`--config /dev/zero` ran the machine out of memory."""
        path = sparse(tmp_path / "config.yaml", 4 * 2**20 + 1)

        with pytest.raises(ConfigError, match=f"^{path}: over 4 MiB, not a config file$"):
            load_config(path, env={})

    def test_a_secret_file_that_is_a_fifo_is_refused_at_once(self, tmp_path: Path) -> None:
        """Read, it blocked every call for ever (under cron, one more stuck process a minute)."""
        path = fifo(tmp_path / "token")

        with pytest.raises(ConfigError) as caught:
            read_secret_file(path, "openchoreo.auth.tokenFile")

        assert str(caught.value) == (
            f"openchoreo.auth.tokenFile: cannot read {path}: not a regular file (a FIFO)"
        )

    def test_a_count_at_the_largest_is_taken_as_written(self, tmp_path: Path) -> None:
        """Compared as a float, 2**63 - 2 was refused as more than 2**63 - 1."""
        config = load_text(
            tmp_path, "openchoreo: {incremental: {maxAttempts: 9223372036854775806}}"
        )

        assert config.openchoreo.incremental.max_attempts == 2**63 - 2

    def test_a_secret_file_over_64_kib_is_refused_where_it_is_used(self, tmp_path: Path) -> None:
        (tmp_path / "token").write_bytes(b"t" * (64 * 1024 + 1))

        with pytest.raises(ConfigError) as caught:
            read_secret_file(tmp_path / "token", "openchoreo.auth.tokenFile")

        assert caught.value.path == "openchoreo.auth.tokenFile"
        assert "over 64 KiB" in str(caught.value)
        assert "tttt" not in str(caught.value)

    @pytest.mark.parametrize("shown", [4, 9, 15])
    def test_the_start_of_a_secret_that_ends_a_value_cut_short_is_masked(
        self, tmp_path: Path, shown: int
    ) -> None:
        """A long value is quoted cut after 57 characters: a secret in it past that point shows
        only its start, which is masked however short (down to 4 characters)."""
        value = "x" * (57 - shown) + LONG_SECRET
        text = f"openchoreo: {{token: {LONG_SECRET}}}\nmapping: {{defaultOwner: {value}}}\n"

        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, text)

        assert f"{'x' * (57 - shown)}***...'" in str(caught.value)

    def test_a_key_named_with_a_short_secret_is_masked_in_its_path(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, "openchoreo: {token: hunter2}\nmapping: {hunter2: x}\n")

        assert caught.value.path == "mapping.***"
        assert "hunter2" not in str(caught.value)

    def test_a_secret_file_that_is_a_pipe_is_not_read_for_an_error(self, tmp_path: Path) -> None:
        """Opening a pipe with no writer blocks, and a read would take the secret from its
        reader: the error comes back at once, its value shown."""
        os.mkfifo(tmp_path / "secret.pipe")
        text = "openchoreo: {baseUrl: not-a-url, auth: {tokenFile: secret.pipe}}\n"
        errors: list[ConfigError] = []

        def load() -> None:
            with pytest.raises(ConfigError) as caught:
                load_text(tmp_path, text)
            errors.append(caught.value)

        loading = threading.Thread(target=load, daemon=True)
        loading.start()
        loading.join(timeout=30)

        assert not loading.is_alive(), "the error waited on the pipe"
        assert [error.path for error in errors] == ["openchoreo.baseUrl"]
        assert "not-a-url" in str(errors[0])

    @pytest.mark.parametrize(
        ("providers", "key"),
        [("[openchoreo, SECRET]", "providers[1]"), ("[{name: SECRET}]", "providers[0].name")],
        ids=["a-name", "a-mapping"],
    )
    @pytest.mark.parametrize(
        ("auth", "env"),
        [
            ("{token: SECRET}", {}),
            ("{token: '${TOKEN}'}", {"TOKEN": "SECRET"}),
            (
                "{auth: {oauth: {tokenUrl: 'http://idp/t', clientId: c, clientSecret: SECRET}}}",
                {},
            ),
        ],
        ids=["token", "from-the-environment", "client-secret"],
    )
    def test_a_secret_given_as_a_providers_name_is_refused_unshown(
        self, tmp_path: Path, providers: str, key: str, auth: str, env: dict[str, str]
    ) -> None:
        """A token pasted into `providers`: valid as a name, it would be shown by `status`, kept in
        the state and a label of every metric; refused at load, where the key is named."""
        secret = "tok-S3CRET"
        environment = {name: value.replace("SECRET", secret) for name, value in env.items()}
        text = f"openchoreo: {auth}\nproviders: {providers}\n".replace("SECRET", secret)

        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, text, environment)

        assert caught.value.path == key
        assert secret not in str(caught.value)
        assert "not a provider's name" in str(caught.value)

    def test_a_token_spelt_like_the_default_provider_is_no_providers_name(
        self, tmp_path: Path
    ) -> None:
        """No `providers` key: the default list is nobody's pasted secret."""
        config = load_text(tmp_path, "openchoreo: {token: openchoreo}\n", {})
        assert config.providers == ("openchoreo",)

    def test_token_value_not_in_repr_or_warnings(self, tmp_path: Path) -> None:
        path = write(tmp_path, f"openchoreo: {{token: {SECRET}, insecureSkipVerify: true}}\n")
        path.chmod(0o644)
        config = load_config(path, env={})
        assert config.openchoreo.token == SECRET
        assert SECRET not in repr(config)
        assert len(config.warnings) == 2
        assert all(SECRET not in warning for warning in config.warnings)


DEFERRED = {
    "token": ("openchoreo: {token: '${OPENCHOREO_TOKEN}'}", "openchoreo.token"),
    "auth-token": (
        "openchoreo: {auth: {token: 'prefix-${OPENCHOREO_TOKEN}'}}",
        "openchoreo.auth.token",
    ),
    "client-secret": (
        OAUTH.format(secret="clientSecret: '${CLIENT_SECRET}'"),
        "openchoreo.auth.oauth.clientSecret",
    ),
}
DEFERRED_FILES = {
    "token-file": (
        "openchoreo: {auth: {tokenFile: '${CREDENTIALS_DIRECTORY}/token'}}",
        "openchoreo.auth.tokenFile",
    ),
    "client-secret-file": (
        OAUTH.format(secret="clientSecretFile: '${CREDENTIALS_DIRECTORY}/secret'"),
        "openchoreo.auth.oauth.clientSecretFile",
    ),
}


class TestDeferredSecrets:
    """A secret from an unset variable loads; it fails only where the API needs it."""

    @pytest.mark.parametrize(("text", "key"), DEFERRED.values(), ids=DEFERRED)
    def test_unset_variable_is_reported_by_require_secrets_naming_the_key(
        self, tmp_path: Path, text: str, key: str
    ) -> None:
        config = load_text(tmp_path, text + "\n")

        assert secret_values(config) == []
        with pytest.raises(ConfigError) as caught:
            require_secrets(config)
        variable = "CLIENT_SECRET" if "CLIENT" in text else "OPENCHOREO_TOKEN"
        assert str(caught.value).startswith(f"{key}: environment variable {variable} is not set")
        assert caught.value.path == key

    @pytest.mark.parametrize("empty", ["", "  \n"], ids=["empty", "blank"])
    @pytest.mark.parametrize(("text", "key"), DEFERRED.values(), ids=DEFERRED)
    def test_a_set_but_empty_variable_is_reported_naming_the_key(
        self, tmp_path: Path, text: str, key: str, empty: str
    ) -> None:
        """An empty token file read into the variable is a mistake, not "no authentication"."""
        env = {"OPENCHOREO_TOKEN": empty, "CLIENT_SECRET": empty}
        config = load_text(tmp_path, text + "\n", env=env)

        with pytest.raises(ConfigError) as caught:
            require_secrets(config)
        variable = "CLIENT_SECRET" if "CLIENT" in text else "OPENCHOREO_TOKEN"
        assert str(caught.value) == (
            f"{key}: environment variable {variable} is empty (${{{variable}:-}} would allow that)"
        )

    def test_an_empty_variable_with_an_empty_default_leaves_the_token_unset(
        self, tmp_path: Path
    ) -> None:
        text = "openchoreo: {token: '${OPENCHOREO_TOKEN:-}'}\n"
        config = load_text(tmp_path, text, env={"OPENCHOREO_TOKEN": ""})
        assert config.openchoreo.auth == AuthConfig()

    @pytest.mark.parametrize(("text", "key"), DEFERRED.values(), ids=DEFERRED)
    def test_credentials_for_a_deferred_secret_raise_its_error(
        self, tmp_path: Path, text: str, key: str
    ) -> None:
        auth = load_text(tmp_path, text + "\n").openchoreo.auth

        with pytest.raises(ConfigError, match=f"^{re.escape(key)}: environment variable"):
            credentials_for(
                auth, clock=FakeClock(), post_form=lambda url, form, headers: FormAnswer(500, None)
            )

    @pytest.mark.parametrize(("text", "key"), DEFERRED_FILES.values(), ids=DEFERRED_FILES)
    def test_a_secret_files_path_from_an_unset_variable_fails_only_where_it_is_read(
        self, tmp_path: Path, text: str, key: str
    ) -> None:
        config = load_text(tmp_path, text + "\n")

        with pytest.raises(ConfigError, match=f"^{re.escape(key)}: environment variable"):
            require_secrets(config)
        auth = config.openchoreo.auth
        with pytest.raises(ConfigError, match=f"^{re.escape(key)}: environment variable"):
            credentials_for(
                auth, clock=FakeClock(), post_form=lambda url, form, headers: FormAnswer(500, None)
            ).bearer()

    @pytest.mark.parametrize(("text", "key"), DEFERRED_FILES.values(), ids=DEFERRED_FILES)
    def test_a_secret_files_path_from_a_set_variable_is_that_path(
        self, tmp_path: Path, text: str, key: str
    ) -> None:
        config = load_text(tmp_path, text + "\n", env={"CREDENTIALS_DIRECTORY": "/run/creds"})

        require_secrets(config)
        auth = config.openchoreo.auth
        path = auth.oauth.client_secret_file if auth.oauth else auth.token_file
        assert str(path).startswith("/run/creds/")

    def test_require_api_checks_the_secrets_too(self, tmp_path: Path) -> None:
        config = load_text(
            tmp_path, "openchoreo: {baseUrl: 'http://127.0.0.1:8080', token: '${TOKEN}'}\n"
        )
        with pytest.raises(ConfigError, match=r"^openchoreo\.token: environment variable TOKEN"):
            require_api(config)

    @pytest.mark.parametrize(("text", "key"), DEFERRED.values(), ids=DEFERRED)
    def test_a_set_variable_is_the_secret(self, tmp_path: Path, text: str, key: str) -> None:
        env = {"OPENCHOREO_TOKEN": SECRET, "CLIENT_SECRET": SECRET}
        config = load_text(tmp_path, text + "\n", env=env)

        require_secrets(config)
        [value] = secret_values(config)
        assert value.endswith(SECRET)

    def test_a_deferred_secret_still_counts_as_its_auth_mode(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"^openchoreo\.auth\.tokenFile: cannot be combined"):
            load_text(tmp_path, "openchoreo: {auth: {token: '${UNSET}', tokenFile: t}}\n")
        config = load_text(tmp_path, "openchoreo: {token: '${UNSET}'}\n")
        assert config.openchoreo.auth.config_key == "openchoreo.token"
        assert config.openchoreo.token == DeferredSecret(
            "openchoreo.token", "environment variable UNSET is not set (or use ${UNSET:-default})"
        )

    @pytest.mark.parametrize(
        "value",
        ["'${1BAD}'", "'${UNCLOSED'", "'${}'", "['${UNSET}']"],
        ids=["bad-name", "unclosed", "empty", "list"],
    )
    def test_a_secret_the_file_itself_gets_wrong_fails_at_load(
        self, tmp_path: Path, value: str
    ) -> None:
        with pytest.raises(ConfigError, match=r"^openchoreo\.token(\[0\])?: "):
            load_text(tmp_path, f"openchoreo: {{token: {value}}}\n")


class TestCaBundle:
    """`openchoreo.caBundle` is checked at load: `run` would fail only inside its burst."""

    def test_a_pem_file_is_kept_as_its_path(self, tmp_path: Path) -> None:
        bundle = write_ca_bundle(tmp_path / "ca.pem")
        config = load_text(tmp_path, "openchoreo: {caBundle: ca.pem}\n")
        assert config.openchoreo.ca_bundle == str(bundle)

    @pytest.mark.parametrize(
        ("make", "problem"),
        [
            (lambda tmp: tmp / "missing.pem", "cannot read: No such file or directory"),
            (lambda tmp: tmp, "is a directory, not a PEM file"),
            (
                lambda tmp: write_bytes(tmp / "x.pem", b"not a certificate\n"),
                "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
            ),
            (lambda tmp: fifo(tmp / "ca.fifo"), "cannot read: not a regular file (a FIFO)"),
            (lambda tmp: sparse(tmp / "big.pem", 16 * 2**20 + 1), "over 16 MiB, not a CA bundle"),
        ],
        ids=["missing", "directory", "not-pem", "fifo", "too-large"],
    )
    def test_an_unusable_bundle_names_the_key_and_the_file(
        self, tmp_path: Path, make: Any, problem: str
    ) -> None:
        path = make(tmp_path)
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, f"openchoreo: {{caBundle: '{path}'}}\n")
        assert str(caught.value) == f"openchoreo.caBundle: {path}: {problem}"
        assert caught.value.path == "openchoreo.caBundle"

    def test_a_bundle_this_user_may_not_read_is_reported(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """(As uid 65534 through the command line: test_readonly.py.)"""
        bundle = write_ca_bundle(tmp_path / "ca.pem")
        refuse_to_open(monkeypatch, bundle)
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, "openchoreo: {caBundle: ca.pem}\n")
        assert str(caught.value) == f"openchoreo.caBundle: {bundle}: cannot read: Permission denied"


class TestWarnings:
    def test_literal_token_in_readable_file_is_warned(self, tmp_path: Path) -> None:
        path = write(tmp_path, "openchoreo: {token: abc}\n")
        path.chmod(0o644)
        assert config_warnings(load_config(path, env={})) == [
            f"{path} holds openchoreo.token and is readable by others (mode 0644); chmod 600 it"
        ]

    @pytest.mark.parametrize(
        ("token", "mode"),
        [("abc", 0o600), ("abc", 0o400), ("'${TOKEN}'", 0o644), ("null", 0o644)],
        ids=["private-file", "read-only-private", "token-from-env", "no-token"],
    )
    def test_no_warning_when_token_is_safe(self, tmp_path: Path, token: str, mode: int) -> None:
        path = write(tmp_path, f"openchoreo: {{token: {token}}}\n")
        path.chmod(mode)
        assert config_warnings(load_config(path, env={"TOKEN": "t"})) == []

    def test_group_readable_counts_as_readable_by_others(self, tmp_path: Path) -> None:
        path = write(tmp_path, "openchoreo: {token: abc}\n")
        path.chmod(0o640)
        assert "(mode 0640)" in config_warnings(load_config(path, env={}))[0]

    @pytest.mark.parametrize(
        ("text", "key_path"),
        [
            ("openchoreo: {auth: {token: abc}}", "openchoreo.auth.token"),
            (OAUTH.format(secret="clientSecret: abc"), "openchoreo.auth.oauth.clientSecret"),
        ],
        ids=["auth-token", "client-secret"],
    )
    def test_literal_auth_secret_in_readable_file_is_warned(
        self, tmp_path: Path, text: str, key_path: str
    ) -> None:
        path = write(tmp_path, text)
        path.chmod(0o644)
        assert config_warnings(load_config(path, env={})) == [
            f"{path} holds {key_path} and is readable by others (mode 0644); chmod 600 it"
        ]

    @pytest.mark.parametrize(
        "secret",
        ["clientSecret: '${CS}'", "clientSecretFile: /run/secrets/cs"],
        ids=["from-environment", "from-file"],
    )
    def test_no_warning_for_a_client_secret_kept_elsewhere(
        self, tmp_path: Path, secret: str
    ) -> None:
        path = write(tmp_path, OAUTH.format(secret=secret))
        path.chmod(0o644)
        assert config_warnings(load_config(path, env={"CS": "s"})) == []

    @pytest.mark.parametrize(
        ("url", "warned"),
        [
            ("postgresql://ingest:s3cret@db.internal/catalog", True),
            ("postgresql://ingest:${PGPASS}@db.internal/catalog", False),
            ("postgresql://ingest@db.internal/catalog", False),
        ],
        ids=["password", "password-from-env", "no-password"],
    )
    def test_a_password_in_state_url_in_a_readable_file_is_warned(
        self, tmp_path: Path, url: str, warned: bool
    ) -> None:
        path = write(tmp_path, f"state: {{url: '{url}'}}\n")
        path.chmod(0o644)
        expected = f"{path} holds state.url with a password and is readable by others (mode 0644)"
        assert config_warnings(load_config(path, env={"PGPASS": "p"})) == (
            [f"{expected}; chmod 600 it"] if warned else []
        )

    def test_insecure_skip_verify_is_warned(self, tmp_path: Path) -> None:
        path = write(tmp_path, "openchoreo: {insecureSkipVerify: true}\n")
        warnings = config_warnings(load_config(path, env={}))
        assert len(warnings) == 1
        assert "openchoreo.insecureSkipVerify" in warnings[0]

    def test_warnings_do_not_change_equality(self, tmp_path: Path) -> None:
        path = write(tmp_path, "openchoreo: {insecureSkipVerify: true}\n")
        config = load_config(path, env={})
        expected = Config(openchoreo=OpenChoreoConfig(insecure_skip_verify=True), source=path)
        assert config == expected


class TestAuth:
    def test_no_credentials_by_default(self) -> None:
        auth = Config().openchoreo.auth
        assert auth == AuthConfig()
        assert (auth.mode_key, auth.config_key) == (None, "")

    def test_token_shorthand_and_auth_token_load_alike(self, tmp_path: Path) -> None:
        shorthand = load_text(tmp_path, "openchoreo: {token: tok}\n")
        explicit = load_text(tmp_path, "openchoreo: {auth: {token: tok}}\n")
        assert shorthand.openchoreo == explicit.openchoreo
        assert shorthand.openchoreo.token == explicit.openchoreo.token == "tok"
        assert shorthand.openchoreo.auth.token == explicit.openchoreo.auth.token == "tok"

    def test_messages_name_the_key_the_token_was_given_under(self, tmp_path: Path) -> None:
        shorthand = load_text(tmp_path, "openchoreo: {token: tok}\n")
        explicit = load_text(tmp_path, "openchoreo: {auth: {token: tok}}\n")
        assert shorthand.openchoreo.auth.config_key == "openchoreo.token"
        assert explicit.openchoreo.auth.config_key == "openchoreo.auth.token"

    def test_token_file_is_a_path_relative_to_the_config_and_not_read(self, tmp_path: Path) -> None:
        config = load_text(tmp_path, "openchoreo: {auth: {tokenFile: secrets/token}}\n")
        auth = config.openchoreo.auth
        assert auth == AuthConfig(token_file=tmp_path / "secrets/token")  # need not exist yet
        assert config.openchoreo.token is None
        assert auth.config_key == "openchoreo.auth.tokenFile"

    def test_oauth_with_a_literal_secret(self, tmp_path: Path) -> None:
        config = load_text(tmp_path, OAUTH.format(secret=f"clientSecret: {SECRET}"))
        assert config.openchoreo.auth == AuthConfig(
            oauth=OAuthConfig(
                token_url="http://thunder.openchoreo.localhost:8080/oauth2/token/",  # kept as given
                client_id="choreo-ingest",
                client_secret=SECRET,
            )
        )
        assert config.openchoreo.token is None
        assert config.openchoreo.auth.config_key == "openchoreo.auth.oauth.clientSecret"
        assert SECRET not in repr(config)

    def test_oauth_with_a_secret_file_and_scope(self, tmp_path: Path) -> None:
        secret = "clientSecretFile: ~/cs\n      scope: 'openid catalog:read'"
        secret += "\n      audience: https://openchoreo.example/api"
        secret += "\n      tokenCacheFile: ~/state/token.json"
        oauth = load_text(tmp_path, OAUTH.format(secret=secret)).openchoreo.auth.oauth
        assert oauth is not None
        assert oauth.client_secret_file == Path("~/cs").expanduser()
        assert oauth.scope == "openid catalog:read"
        assert oauth.audience == "https://openchoreo.example/api"
        assert oauth.token_cache_file == Path("~/state/token.json").expanduser()
        assert oauth.secret_key == "openchoreo.auth.oauth.clientSecretFile"

    @pytest.mark.parametrize(
        ("cache", "what"),
        [
            ("cs", "is also openchoreo.auth.oauth.clientSecretFile's file"),
            ("./state/../state.db", "is also state.path's file"),
            ("state.db-wal", "is also state.path's -wal file"),
            ("state.db.lock", "is also state.path's .lock file"),
            ("metrics.prom", "is also metrics.textfile's file"),
            ("choreo-ingest.yaml", "is also the config file"),
            ("catalog/token.json", "is in catalog.directory"),
        ],
        ids=["secret", "state", "wal", "lock", "metrics", "config", "catalog"],
    )
    def test_a_token_cache_file_the_tool_uses_for_something_else_is_refused(
        self, tmp_path: Path, cache: str, what: str
    ) -> None:
        """Each new token replaces the file whole: the state, a secret or the config is lost."""
        secret = f"clientSecretFile: cs\n      tokenCacheFile: {cache}"
        others = "state:\n  path: state.db\nmetrics:\n  textfile: metrics.prom\n"
        others += "catalog:\n  directory: catalog\n"

        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, OAUTH.format(secret=secret) + others)

        assert caught.value.path == "openchoreo.auth.oauth.tokenCacheFile"
        assert f"{Path(cache).name} {what}, " in str(caught.value)

    @pytest.mark.parametrize(
        ("textfile", "what"),
        [
            ("cs", "is also openchoreo.auth.oauth.clientSecretFile's file"),
            ("state.db", "is also state.path's file"),
            ("state.db-shm", "is also state.path's -shm file"),
            ("choreo-ingest.yaml", "is also the config file"),
            ("catalog/metrics.prom", "is in catalog.directory"),
        ],
        ids=["secret", "state", "shm", "config", "catalog"],
    )
    def test_a_metrics_textfile_the_tool_uses_for_something_else_is_refused(
        self, tmp_path: Path, textfile: str, what: str
    ) -> None:
        """Every run replaces the file whole: the state, a secret or the config was lost, and
        `check` and the run said nothing."""
        others = f"state:\n  path: state.db\nmetrics:\n  textfile: {textfile}\n"
        others += "catalog:\n  directory: catalog\n"

        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, OAUTH.format(secret="clientSecretFile: cs") + others)

        assert caught.value.path == "metrics.textfile"
        assert f"{Path(textfile).name} {what}, " in str(caught.value)

    def test_a_token_cache_file_of_its_own_is_taken(self, tmp_path: Path) -> None:
        secret = "clientSecretFile: cs\n      tokenCacheFile: token.json"
        others = "state:\n  path: state.db\ncatalog:\n  directory: catalog\n"

        oauth = load_text(tmp_path, OAUTH.format(secret=secret) + others).openchoreo.auth.oauth

        assert oauth is not None
        assert oauth.token_cache_file == tmp_path / "token.json"

    @pytest.mark.parametrize(
        ("given", "method"),
        [
            ("", "auto"),
            ("\n      clientAuthMethod: client_secret_basic", "client_secret_basic"),
            ("\n      clientAuthMethod: client_secret_post", "client_secret_post"),
            ("\n      clientAuthMethod: auto", "auto"),
        ],
        ids=["default", "basic", "post", "auto"],
    )
    def test_oauth_client_auth_method(self, tmp_path: Path, given: str, method: str) -> None:
        text = OAUTH.format(secret=f"clientSecret: s{given}")
        oauth = load_text(tmp_path, text).openchoreo.auth.oauth
        assert oauth is not None
        assert oauth.client_auth_method == method

    def test_an_unknown_client_auth_method_names_the_key_and_the_choices(
        self, tmp_path: Path
    ) -> None:
        text = OAUTH.format(secret="clientSecret: s\n      clientAuthMethod: basic")
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, text)
        assert str(caught.value) == (
            "openchoreo.auth.oauth.clientAuthMethod: expected one of: auto, client_secret_post, "
            "client_secret_basic, got 'basic'"
        )

    def test_oauth_keys_all_null_configure_nothing(self, tmp_path: Path) -> None:
        text = "openchoreo: {auth: {oauth: {tokenUrl: null, clientId: null, scope: null}}}\n"
        assert load_text(tmp_path, text).openchoreo.auth == AuthConfig()

    def test_token_url_may_carry_a_query(self, tmp_path: Path) -> None:
        url = "https://login.example/tenant/token?p=b2c_1_machine"
        text = OAUTH.format(secret="clientSecret: s").replace(
            "http://thunder.openchoreo.localhost:8080/oauth2/token/", url
        )
        oauth = load_text(tmp_path, text).openchoreo.auth.oauth
        assert oauth is not None
        assert oauth.token_url == url

    @pytest.mark.parametrize(
        ("auth", "key_path", "names"),
        [
            ("token: a\n  auth: {token: b}", "openchoreo.auth.token", "openchoreo.token"),
            ("token: a\n  auth: {tokenFile: f}", "openchoreo.auth.tokenFile", "openchoreo.token"),
            (
                "token: a\n  auth: {oauth: {clientId: c}}",
                "openchoreo.auth.oauth",
                "openchoreo.token",
            ),
            (
                "auth: {token: a, tokenFile: f}",
                "openchoreo.auth.tokenFile",
                "openchoreo.auth.token",
            ),
            (
                "auth: {tokenFile: f, oauth: {tokenUrl: 'http://idp/t'}}",
                "openchoreo.auth.oauth",
                "openchoreo.auth.tokenFile",
            ),
        ],
        ids=[
            "shorthand-and-token",
            "shorthand-and-file",
            "shorthand-and-oauth",
            "token-and-file",
            "file-and-oauth",
        ],
    )
    def test_two_auth_modes_name_both_keys(
        self, tmp_path: Path, auth: str, key_path: str, names: str
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, f"openchoreo:\n  {auth}\n")
        assert caught.value.path == key_path
        assert f"cannot be combined with {names}" in str(caught.value)
        assert "set exactly one of" in str(caught.value)

    @pytest.mark.parametrize(
        ("secret", "key_path", "fragment"),
        [
            (
                "clientSecret: s\n      clientSecretFile: f",
                "openchoreo.auth.oauth.clientSecretFile",
                "cannot be combined with openchoreo.auth.oauth.clientSecret",
            ),
            (
                "scope: x",
                "openchoreo.auth.oauth.clientSecret",
                "required: set it or openchoreo.auth.oauth.clientSecretFile",
            ),
            (
                "clientSecret: '${UNSET_SECRET:-}'",
                "openchoreo.auth.oauth.clientSecret",
                "required",
            ),
        ],
        ids=["both-secrets", "no-secret", "empty-secret"],
    )
    def test_oauth_needs_exactly_one_client_secret(
        self, tmp_path: Path, secret: str, key_path: str, fragment: str
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, OAUTH.format(secret=secret))
        assert caught.value.path == key_path
        assert fragment in str(caught.value)

    @pytest.mark.parametrize(
        ("oauth", "key_path"),
        [
            ("{clientId: c, clientSecret: s}", "openchoreo.auth.oauth.tokenUrl"),
            ("{tokenUrl: 'http://idp/t', clientSecret: s}", "openchoreo.auth.oauth.clientId"),
        ],
        ids=["token-url", "client-id"],
    )
    def test_oauth_needs_token_url_and_client_id(
        self, tmp_path: Path, oauth: str, key_path: str
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, f"openchoreo: {{auth: {{oauth: {oauth}}}}}\n")
        assert caught.value.path == key_path
        assert str(caught.value) == f"{key_path}: required for OAuth2 client credentials"

    def test_built_in_code_token_and_auth_token_agree(self) -> None:
        assert OpenChoreoConfig(token="tok").auth.token == "tok"
        assert OpenChoreoConfig(auth=AuthConfig(token="tok")).token == "tok"
        assert OpenChoreoConfig(token="tok") == OpenChoreoConfig(auth=AuthConfig(token="tok"))
        assert OpenChoreoConfig(token="") == OpenChoreoConfig()

    def test_replace_keeps_the_credentials(self) -> None:
        config = OpenChoreoConfig(auth=AuthConfig(token="tok"))
        assert replace(config, base_url="http://h").auth == config.auth

    @pytest.mark.parametrize(
        "auth",
        [AuthConfig(token="other"), AuthConfig(token_file=Path("t"))],
        ids=["other-token", "token-file"],
    )
    def test_built_in_code_token_conflicting_with_auth_is_an_error(self, auth: AuthConfig) -> None:
        with pytest.raises(ConfigError, match=r"^openchoreo\.token: cannot be combined with"):
            OpenChoreoConfig(token="tok", auth=auth)

    def test_built_in_code_two_modes_are_an_error(self) -> None:
        with pytest.raises(ConfigError) as caught:
            AuthConfig(token="tok", token_file=Path("t"))
        assert caught.value.path == "openchoreo.auth.tokenFile"

    def test_secret_values_lists_the_secrets_the_config_holds(self, tmp_path: Path) -> None:
        oauth = load_text(tmp_path, OAUTH.format(secret=f"clientSecret: {SECRET}"))
        from_file = load_text(tmp_path, OAUTH.format(secret="clientSecretFile: f"))
        assert secret_values(oauth) == [SECRET]
        assert secret_values(from_file) == []
        assert secret_values(Config(openchoreo=OpenChoreoConfig(token="tok"))) == ["tok"]
        assert secret_values(Config()) == []


class TestEffectiveChunkSize:
    @pytest.mark.parametrize(
        ("chunk_size", "api", "expected"),
        [(50, "v1", 50), (100, "v1", 100), (1024, "orgs", 1024), (500, "orgs", 500)],
        ids=["v1-small", "v1-largest", "orgs-largest", "orgs-large"],
    )
    def test_fitting_size_is_kept_without_warning(
        self, chunk_size: int, api: str, expected: int
    ) -> None:
        config = Config(
            openchoreo=OpenChoreoConfig(incremental=IncrementalConfig(chunk_size=chunk_size))
        )
        assert effective_chunk_size(config, api) == (expected, None)

    def test_v1_caps_at_100_and_says_so(self) -> None:
        config = OpenChoreoConfig(incremental=IncrementalConfig(chunk_size=500))
        size, warning = effective_chunk_size(config, "v1")
        assert size == 100
        assert (
            warning == "500, but the OpenChoreo v1 API serves at most 100 items a page; using 100"
        )

    def test_auto_must_be_resolved_first(self) -> None:
        with pytest.raises(ValueError, match="once detected"):
            effective_chunk_size(Config(), "auto")


class TestWithoutAHome:
    """A container's random UID: no $HOME, no passwd entry. A `~` is a config error naming where
    it was given (it was an internal error), and an absolute path still works."""

    @pytest.fixture(autouse=True)
    def homeless(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import pwd

        def unknown(uid: int) -> Any:
            raise KeyError(f"getpwuid(): uid not found: {uid}")

        monkeypatch.delenv("HOME", raising=False)
        monkeypatch.setattr(pwd, "getpwuid", unknown)

    PROBLEM = (
        f"`~` cannot be expanded: $HOME is not set and uid {os.getuid()} has no home directory; "
        "give an absolute path"
    )

    def test_a_config_key_names_itself(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, "state: {path: ~/state.db}\n")
        assert str(caught.value) == f"state.path: {self.PROBLEM}"

    @pytest.mark.parametrize(
        ("flag", "env", "origin"),
        [("~/state.db", {}, "--db"), (None, {"CHOREO_INGEST_DB": "~/s.db"}, "$CHOREO_INGEST_DB")],
    )
    def test_a_state_path_names_where_it_came_from(
        self, flag: str | None, env: dict[str, str], origin: str
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            resolve_state_path(flag, Config(), env=env)
        assert str(caught.value) == f"{origin}: {self.PROBLEM}"

    def test_the_config_file_from_the_environment_names_the_variable(self) -> None:
        with pytest.raises(ConfigError) as caught:
            find_config_path(None, env={"CHOREO_INGEST_CONFIG": "~/c.yaml"})
        assert str(caught.value) == f"$CHOREO_INGEST_CONFIG: {self.PROBLEM}"

    def test_absolute_paths_need_no_home(self, tmp_path: Path) -> None:
        config = load_text(tmp_path, f"state: {{path: {tmp_path}/state.db}}\n")
        assert config.state_path == tmp_path / "state.db"


class TestFindConfigPath:
    def test_flag_wins_over_environment_and_local_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        flag, from_env = write(tmp_path, "", "flag.yaml"), write(tmp_path, "", "env.yaml")
        write(tmp_path, "")
        assert find_config_path(flag, env={"CHOREO_INGEST_CONFIG": str(from_env)}) == flag

    def test_environment_wins_over_local_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        from_env = write(tmp_path, "", "env.yaml")
        write(tmp_path, "")
        assert find_config_path(None, env={"CHOREO_INGEST_CONFIG": str(from_env)}) == from_env

    @pytest.mark.parametrize("env", [{}, {"CHOREO_INGEST_CONFIG": ""}], ids=["unset", "empty"])
    def test_local_file_is_used_when_present(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
    ) -> None:
        monkeypatch.chdir(tmp_path)
        write(tmp_path, "")
        assert find_config_path(None, env=env) == Path("choreo-ingest.yaml")

    def test_no_config_anywhere_is_none(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        assert find_config_path(None, env={}) is None

    @pytest.mark.parametrize(
        ("flag", "env", "origin"),
        [
            (Path("nope.yaml"), {}, "--config"),
            (None, {"CHOREO_INGEST_CONFIG": "nope.yaml"}, "$CHOREO_INGEST_CONFIG"),
        ],
        ids=["flag", "environment"],
    )
    def test_explicit_missing_file_is_an_error(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        flag: Path | None,
        env: dict[str, str],
        origin: str,
    ) -> None:
        monkeypatch.chdir(tmp_path)
        write(tmp_path, "")  # a local file must not stand in for a wrong explicit one
        with pytest.raises(
            ConfigError, match=re.escape(f"nope.yaml: no such config file (given by {origin})")
        ):
            find_config_path(flag, env=env)


def test_yaml_aliases_that_expand_past_the_limit_are_refused(tmp_path: Path) -> None:
    """A billion laughs among a custom provider's options: `status` spun for minutes walking
    the options for the kept copy."""
    levels = ["    o0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"    o{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, 8)]
    text = "providers:\n  - openchoreo\n  - name: csv\n" + "\n".join(levels) + "\n"

    with pytest.raises(ConfigError, match=r"holds more than 100,000 values once its YAML aliases"):
        load_text(tmp_path, text)


def test_yaml_aliases_within_the_limit_are_taken(tmp_path: Path) -> None:
    text = "providers:\n  - openchoreo\n  - {name: csv, columns: &c [name, owner]}\n"
    text += "  - {name: tsv, columns: *c}\n"

    options = load_text(tmp_path, text).provider_options

    assert options["tsv"]["columns"] == options["csv"]["columns"] == ["name", "owner"]


def test_the_largest_count_is_what_the_state_store_holds() -> None:
    assert MAX_COUNT == MAX_INTEGER


class TestResolveStatePath:
    CONFIGURED = Config(state_path=Path("/srv/from-config.db"))

    @pytest.mark.parametrize(
        ("flag", "env", "config", "expected"),
        [
            (Path("flag.db"), {"CHOREO_INGEST_DB": "env.db"}, CONFIGURED, Path("flag.db")),
            (None, {"CHOREO_INGEST_DB": "env.db"}, CONFIGURED, Path("env.db")),
            (None, {"CHOREO_INGEST_DB": ""}, CONFIGURED, Path("/srv/from-config.db")),
            (None, {}, CONFIGURED, Path("/srv/from-config.db")),
            (None, {}, Config(), Path("choreo-ingest.db")),
        ],
        ids=["flag", "environment", "empty-environment", "config", "default"],
    )
    def test_precedence(
        self, flag: Path | None, env: dict[str, str], config: Config, expected: Path
    ) -> None:
        assert resolve_state_path(flag, config, env=env) == expected

    @pytest.mark.parametrize(
        ("flag", "env", "config", "origin"),
        [
            ("flag.db", {"CHOREO_INGEST_DB": "env.db"}, CONFIGURED, "--db"),
            ("postgresql://h/db", {}, CONFIGURED, "--db"),
            (None, {"CHOREO_INGEST_DB": "postgres://h/db"}, CONFIGURED, "$CHOREO_INGEST_DB"),
            (None, {"CHOREO_INGEST_DB": ""}, CONFIGURED, "state.path"),
            (None, {}, Config(state_url="postgresql://configured/db"), "state.url"),
            (None, {}, Config(), "state.path"),
        ],
        ids=["flag", "flag-url", "environment", "empty-environment", "config-url", "default"],
    )
    def test_the_origin_is_named_as_errors_name_it(
        self, flag: str | None, env: dict[str, str], config: Config, origin: str
    ) -> None:
        """What `check` names the state store's line: where `resolve_state_path` took it."""
        assert state_origin(flag, config, env=env) == origin

    def test_an_empty_db_option_is_refused_not_taken_for_the_configured_state(self) -> None:
        """`--db "$DB"` with DB unset would otherwise work on the config's state file."""
        with pytest.raises(ConfigError) as caught:
            resolve_state_path("", self.CONFIGURED, env={})

        assert str(caught.value) == "--db: empty; give a state file or a PostgreSQL URL"

    def test_a_db_option_naming_a_directory_is_refused_not_made_a_file(self) -> None:
        """`--db /var/lib/choreo-ingest/` would otherwise make a state file of that name."""
        with pytest.raises(ConfigError) as caught:
            resolve_state_path("data/", self.CONFIGURED, env={})

        assert str(caught.value) == (
            "--db: names a directory (it ends in /, . or ..); give a file's path"
        )

    def test_relative_config_path_is_relative_to_the_file(self, tmp_path: Path) -> None:
        config = load_text(tmp_path, "state: {path: data/ingest.db}\n")
        assert resolve_state_path(None, config, env={}) == tmp_path / "data" / "ingest.db"

    @pytest.mark.parametrize(
        ("flag", "env", "origin"),
        [
            ("metrics.prom", {}, "--db"),
            (None, {"CHOREO_INGEST_DB": "metrics.prom"}, "$CHOREO_INGEST_DB"),
            ("token.json", {}, "--db"),
        ],
        ids=["db-metrics", "environment-metrics", "db-token-cache"],
    )
    def test_a_state_file_the_config_rewrites_whole_is_refused(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        flag: str | None,
        env: dict[str, str],
        origin: str,
    ) -> None:
        """`--db metrics.prom` beside `metrics.textfile: metrics.prom`: the run wrote its
        metrics over the state it had just committed, and every later call exited 4."""
        monkeypatch.chdir(tmp_path)
        config = load_text(
            tmp_path,
            OAUTH.format(secret="clientSecretFile: cs\n      tokenCacheFile: token.json")
            + "metrics:\n  textfile: metrics.prom\n",
        )

        with pytest.raises(ConfigError) as caught:
            resolve_state_path(flag, config, env=env)

        assert caught.value.path == origin
        assert "which choreo-ingest replaces whole: give the state another file" in str(
            caught.value
        )

    @pytest.mark.parametrize(
        "given",
        [
            "postgresql+psycopg://app:Zq9pgpass@db.internal:5432/backstage",
            "postgresql:/app:Zq9pgpass@db.internal:5432/backstage",
            "mysql://app:Zq9pgpass@db.internal/backstage",
            "/srv/state/http://app:Zq9pgpass@db.internal/x.db",
            "host=db.internal user=app password=Zq9pgpass dbname=backstage",
        ],
        ids=["driver-scheme", "one-slash", "other-scheme", "url-inside-a-path", "libpq-keywords"],
    )
    @pytest.mark.parametrize("origin", ["--db", "$CHOREO_INGEST_DB", "--copy-to"])
    def test_a_url_not_taken_for_postgresql_is_refused_without_echoing_it(
        self, given: str, origin: str
    ) -> None:
        """Taken as a file path, it was shown whole in the error: password and all."""
        flag, env = (None, {"CHOREO_INGEST_DB": given}) if origin.startswith("$") else (given, {})
        option = "--copy-to" if origin == "--copy-to" else "--db"

        with pytest.raises(ConfigError) as caught:
            resolve_state_path(flag, self.CONFIGURED, env=env, option=option)

        assert caught.value.path == origin
        assert "Zq9pgpass" not in str(caught.value)
        assert str(caught.value) == (
            f"{origin}: looks like a URL or a connection string, but only postgresql:// (or "
            "postgres://) URLs are taken; give a file path or a postgresql:// URL"
        )

    @pytest.mark.parametrize("given", [" postgresql://u:Zq9pw@h/db", "postgres://u:Zq9pw@h/db\n"])
    def test_spaces_around_a_postgresql_url_are_dropped(self, given: str) -> None:
        assert resolve_state_path(given, self.CONFIGURED, env={}) == given.strip()

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("state: {path: 'postgresql://u:Zq9pgpass@h/db'}\n", "takes a file path; a "),
            ("state: {path: ' postgresql+psycopg://u:Zq9pgpass@h/db'}\n", "looks like a URL"),
        ],
        ids=["postgresql", "other-scheme"],
    )
    def test_state_path_refuses_a_url_without_echoing_it(
        self, tmp_path: Path, text: str, problem: str
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, text)

        assert caught.value.path == "state.path"
        assert str(caught.value).startswith(f"state.path: {problem}")
        assert "Zq9pgpass" not in str(caught.value)

    def test_a_windows_drive_path_is_still_a_path(self) -> None:
        assert resolve_state_path("C:/state/ingest.db", Config(), env={}) == Path(
            "C:/state/ingest.db"
        )


class TestRequireApi:
    def test_missing_base_url_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as caught:
            require_api(Config(source=tmp_path / "choreo-ingest.yaml"))
        assert str(caught.value) == "openchoreo.baseUrl: required to call the API"
        assert caught.value.path == "openchoreo.baseUrl"

    def test_missing_base_url_without_a_config_file_says_where_one_is_looked_for(self) -> None:
        """cron's environment without $CHOREO_INGEST_CONFIG: the file was not found, not the key."""
        with pytest.raises(ConfigError) as caught:
            require_api(Config())
        assert str(caught.value) == (
            "openchoreo.baseUrl: required to call the API, and no config file was found "
            "(--config, $CHOREO_INGEST_CONFIG, ./choreo-ingest.yaml)"
        )

    def test_configured_base_url_passes(self) -> None:
        require_api(Config(openchoreo=OpenChoreoConfig(base_url="http://127.0.0.1:8080/api/v1")))

    def test_base_url_set_in_code_is_validated_too(self) -> None:
        with pytest.raises(ConfigError, match=r"^openchoreo\.baseUrl: expected an http"):
            require_api(Config(openchoreo=OpenChoreoConfig(base_url="127.0.0.1:8080")))

    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            ("http://a..b", "not a host name"),
            ("http://.openchoreo.test", "not a host name"),
            (f"http://{'a' * 64}.test", "not a host name"),
            ("http://a\tb", "must not hold spaces or control characters"),
            ("http://api.test/api\n/v1", "must not hold spaces or control characters"),
            ("http://api.test/a b", "must not hold spaces or control characters"),
        ],
        ids=["empty-label", "leading-dot", "label-too-long", "tab", "newline", "space"],
    )
    def test_a_base_url_no_request_could_be_sent_to_is_a_config_error(
        self, tmp_path: Path, url: str, problem: str
    ) -> None:
        """Not a provider crash (exit 1) when the first request is built or connects."""
        for key in ("baseUrl", "auth: {oauth: {clientId: c, clientSecret: s, tokenUrl"):
            closing = "}}" if key.startswith("auth") else ""
            text = f"openchoreo: {{{key}: {json.dumps(url)}{closing}}}\n"
            with pytest.raises(ConfigError, match=problem) as caught:
                require_api(load_text(tmp_path, text))
            assert caught.value.path in ("openchoreo.baseUrl", "openchoreo.auth.oauth.tokenUrl")

    @pytest.mark.parametrize("url", ["http://bücher.test", "http://api.test.", "http://[::1]:8080"])
    def test_host_names_a_client_connects_to_pass(self, url: str) -> None:
        require_api(Config(openchoreo=OpenChoreoConfig(base_url=url)))

    def test_commands_without_the_api_load_without_base_url(self, tmp_path: Path) -> None:
        assert load_text(tmp_path, "mapping: {lifecycle: beta}\n").openchoreo.base_url is None


class TestStateUrl:
    @pytest.mark.parametrize(
        ("text", "path", "shown"),
        [
            (
                "state: postgresql://ingest:pw-4f2a9c@db/x\n",
                "state",
                "expected a mapping, got 'postgresql://ingest:***@db/x'",
            ),
            (
                "openchoreo: {baseUrl: 'http://h/api/v1?access_token=tok-4f2a9c'}\n",
                "openchoreo.baseUrl",
                "got 'http://h/api/v1?access_token=***'",
            ),
        ],
        ids=["url-for-a-section", "token-in-a-query"],
    )
    def test_a_url_in_the_wrong_place_is_shown_without_its_credentials(
        self, tmp_path: Path, text: str, path: str, shown: str
    ) -> None:
        """README: a password in a URL is shown redacted everywhere, errors included."""
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, text)

        assert caught.value.path == path
        assert str(caught.value).endswith(shown)
        assert "4f2a9c" not in str(caught.value)

    def test_a_bad_url_never_shows_the_password(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, "state: {url: 'postgresql://u:hunter2@:0/db'}\n")
        assert "hunter2" not in str(caught.value)

    @pytest.mark.parametrize(
        ("db", "env", "expected"),
        [
            ("postgresql://h/db", {}, "postgresql://h/db"),
            (None, {"CHOREO_INGEST_DB": "postgres://h/db"}, "postgres://h/db"),
            ("other.db", {"CHOREO_INGEST_DB": "postgres://h/db"}, Path("other.db")),
            (None, {}, "postgresql://configured/db"),
        ],
        ids=["option", "environment", "option-wins", "config"],
    )
    def test_db_and_the_environment_take_a_path_or_a_url(
        self, tmp_path: Path, db: str | None, env: dict[str, str], expected: object
    ) -> None:
        config = load_text(tmp_path, "state: {url: 'postgresql://configured/db'}\n")
        assert resolve_state_path(db, config, env) == expected

    @pytest.mark.parametrize(
        ("db", "env", "origin"),
        [
            ("postgresql://u:hunter2@h:99999/x", {}, "--db"),
            (None, {"CHOREO_INGEST_DB": "postgres://u:hunter2@h:99999/x"}, "$CHOREO_INGEST_DB"),
        ],
        ids=["option", "environment"],
    )
    def test_a_url_with_a_port_out_of_range_is_a_usage_error_naming_where_it_came_from(
        self, tmp_path: Path, db: str | None, env: dict[str, str], origin: str
    ) -> None:
        """A malformed value on the command line, not a state store that cannot be reached."""
        config = load_text(tmp_path, "state: {url: 'postgresql://configured/db'}\n")

        with pytest.raises(ConfigError) as caught:
            resolve_state_path(db, config, env)

        assert caught.value.path == origin
        assert str(caught.value) == (
            f"{origin}: a port is out of range (1-65535); expected "
            "postgresql://[user[:password]@]host[:port]/database[?sslmode=...]"
        )

    @pytest.mark.parametrize(
        "url",
        [
            "postgresql://u@h1:5432,h2:5433/x",
            "postgresql://u@[::1]:5432,h2/x?port=5432,6432",
            "postgresql:///x?host=/run/postgresql&port=5433",
            "postgresql://h:/x",
        ],
        ids=["hosts-with-ports", "ipv6-and-query-ports", "socket", "empty-port"],
    )
    def test_a_url_libpq_takes_is_taken(self, tmp_path: Path, url: str) -> None:
        """Several hosts, each with its port (libpq tries them in turn), are one URL."""
        config = load_text(tmp_path, f"state: {{url: '{url}'}}\n")

        assert config.state_url == url
        assert resolve_state_path(url, Config(), {}) == url

    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            ("postgresql://u:Zq9%ZZsecret@127.0.0.1:1/db", "the password holds a `%` that"),
            ("postgresql://u:Zq9%Zsecret@127.0.0.1:1/db", "the password holds a `%` that"),
            ("postgresql://u:Zq9secret%@127.0.0.1:1/db", "the password holds a `%` that"),
            ("postgresql://u:Zq9 secret@127.0.0.1:1/db", "the password holds whitespace"),
            ("postgresql://u:Zq9\tsecret@127.0.0.1:1/db", "the password holds whitespace"),
            ("postgresql://u:Zq9%00secret@127.0.0.1:1/db", "the password holds `%00`"),
            ("postgresql://u:Zq9\x01secret@127.0.0.1:1/db", "the password holds a control"),
            ("postgresql://u:Zq9@a%ZZsecret@127.0.0.1:1/db", "the password holds a `%` that"),
            (
                "postgresql://u@127.0.0.1:1/db?password=Zq9%ZZsecret",
                "the password (`?password=`) holds a `%`",
            ),
            (
                "postgresql://u@127.0.0.1:1/db?sslmode=require&password=Zq9 secret",
                "the password (`?password=`) holds whitespace",
            ),
        ],
        ids=[
            "bad-percent",
            "short-percent",
            "trailing-percent",
            "space",
            "tab",
            "nul",
            "control",
            "at-in-password",
            "query-percent",
            "query-space",
        ],
    )
    def test_a_password_libpq_would_quote_is_refused_without_showing_it(
        self, tmp_path: Path, url: str, problem: str
    ) -> None:
        """libpq's own parse error quotes the password it cannot read."""
        expected = "expected postgresql://[user[:password]@]host[:port]/database[?sslmode=...]"
        env = {"CHOREO_INGEST_DB": url}
        for origin, attempt in [
            ("--db", lambda: resolve_state_path(url, Config(), {})),
            ("$CHOREO_INGEST_DB", lambda: resolve_state_path(None, Config(), env)),
            ("--copy-to", lambda: resolve_state_path(url, Config(), {}, option="--copy-to")),
            ("state.url", lambda: load_text(tmp_path, "state: {url: '${URL}'}\n", {"URL": url})),
        ]:
            with pytest.raises(ConfigError) as caught:
                attempt()
            assert caught.value.path == origin
            assert str(caught.value).startswith(f"{origin}: {problem}")
            assert str(caught.value).endswith(expected)
            assert "secret" not in str(caught.value)

    def test_a_percent_encoded_password_is_taken(self) -> None:
        url = "postgresql://u:Zq9%25%20%2Fs@127.0.0.1:1/db?password=a%25b&sslmode=require"
        assert resolve_state_path(url, Config(), {}) == url

    def test_the_password_file_is_a_deferred_secret_path(self, tmp_path: Path) -> None:
        config = load_text(tmp_path, "state: {passwordFile: '${CREDENTIALS_DIRECTORY}/pg'}\n")
        assert isinstance(config.state_password_file, DeferredSecret)


class TestRequireApiSecrets:
    """Found before the first request, an unusable secret is a usage error (exit 2); found in a
    burst, it was a failure that backed off while the operator had already fixed it."""

    @pytest.mark.parametrize(
        ("token", "problem"),
        [
            ("tok en-123", "it holds whitespace"),
            ("tok\\nen", "expected one token on one line"),
            ("tökén", "not ASCII"),
        ],
        ids=["inner-space", "inner-newline", "non-ascii"],
    )
    def test_an_unusable_token_is_a_config_error_naming_its_key_not_its_value(
        self, tmp_path: Path, token: str, problem: str
    ) -> None:
        text = f'openchoreo: {{baseUrl: "http://127.0.0.1:8080", auth: {{token: "{token}"}}}}\n'
        config = load_text(tmp_path, text)

        with pytest.raises(ConfigError, match=rf"^openchoreo\.auth\.token: .*{problem}") as caught:
            require_api(config)
        assert token.replace("\\n", "\n") not in str(caught.value)

    def test_a_token_with_a_trailing_newline_is_usable(self, tmp_path: Path) -> None:
        text = 'openchoreo: {baseUrl: "http://127.0.0.1:8080", auth: {token: "tok-123\\n"}}\n'
        require_api(load_text(tmp_path, text))

    @pytest.mark.parametrize("key", ["tokenFile", "oauth"])
    def test_a_missing_secret_file_is_a_config_error_naming_its_key(
        self, tmp_path: Path, key: str
    ) -> None:
        missing = tmp_path / "absent"
        auth = (
            f"tokenFile: {missing}"
            if key == "tokenFile"
            else f"oauth: {{tokenUrl: 'http://idp/t', clientId: c, clientSecretFile: {missing}}}"
        )
        config = load_text(
            tmp_path, f"openchoreo: {{baseUrl: 'http://127.0.0.1:8080', auth: {{{auth}}}}}\n"
        )

        with pytest.raises(ConfigError, match=rf"openchoreo\.auth\.{key}.*cannot read"):
            require_api(config)

    @pytest.mark.parametrize(
        "key",
        [
            "openchoreo.auth.tokenFile",
            "openchoreo.auth.oauth.clientSecretFile",
            "serve.auth.tokenFile",
            "serve.events.secretFile",
            "state.passwordFile",
        ],
    )
    @pytest.mark.parametrize(
        "written", ["Zq9-the-secret-itself", "Zq9/with/a/slash", "a.b.c-jwt-like"]
    )
    def test_a_secret_written_where_its_files_path_belongs_is_not_shown(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, written: str
    ) -> None:
        monkeypatch.chdir(tmp_path)
        with pytest.raises(ConfigError) as caught:
            read_secret_file(written, key)
        assert str(caught.value) == (
            f"{key}: cannot read the file it names (not shown: it may be the secret itself): "
            "No such file or directory"
        )

    @pytest.mark.parametrize(
        ("key", "document", "field"),
        [
            ("openchoreo.auth.tokenFile", "openchoreo: {auth: {tokenFile: %s}}",
             lambda c: c.openchoreo.auth.token_file),
            ("openchoreo.auth.oauth.clientSecretFile",
             "openchoreo: {auth: {oauth: {tokenUrl: 'http://idp/t', clientId: c, "
             "clientSecretFile: %s}}}",
             lambda c: c.openchoreo.auth.oauth.client_secret_file),
            ("serve.auth.tokenFile", "serve: {auth: {tokenFile: %s}}",
             lambda c: c.serve.token_file),
            ("serve.events.secretFile", "serve: {events: {secretFile: %s}}",
             lambda c: c.serve.events_secret_file),
            ("state.passwordFile", "state: {url: 'postgresql://u@db/x', passwordFile: %s}",
             lambda c: c.state_password_file),
        ],
        ids=["tokenFile", "clientSecretFile", "serve-tokenFile", "secretFile", "passwordFile"],
    )  # fmt: skip
    @pytest.mark.parametrize("written", ["Zq9-the-secret-itself", "'${SECRET}'"])
    def test_a_secret_in_the_config_file_where_its_files_path_belongs_is_not_shown(
        self,
        tmp_path: Path,
        key: str,
        document: str,
        field: Callable[[Config], Any],
        written: str,
    ) -> None:
        """Taken in the config file's directory, the bare name became a path there, which was
        shown whole: cron mailed the token every minute."""
        config = load_text(tmp_path, document % written + "\n", {"SECRET": "Zq9-from-env"})

        with pytest.raises(ConfigError) as caught:
            read_secret_file(field(config), key)

        assert str(caught.value) == (
            f"{key}: cannot read the file it names (not shown: it may be the secret itself): "
            "No such file or directory"
        )

    def test_a_secret_files_bare_name_is_shown_once_the_file_is_there(self, tmp_path: Path) -> None:
        (tmp_path / "token").mkdir()  # there, but no file to read
        config = load_text(tmp_path, "openchoreo: {auth: {tokenFile: token}}\n")

        with pytest.raises(ConfigError) as caught:
            read_secret_file(config.openchoreo.auth.token_file, "openchoreo.auth.tokenFile")

        assert str(caught.value) == (
            f"openchoreo.auth.tokenFile: cannot read {tmp_path / 'token'}: Is a directory"
        )

    def test_a_secret_files_path_is_shown_where_it_is_one(self, tmp_path: Path) -> None:
        for path, problem in [
            (tmp_path / "missing", "No such file or directory"),
            (tmp_path, "Is a directory"),
        ]:
            with pytest.raises(ConfigError) as caught:
                read_secret_file(str(path), "openchoreo.auth.tokenFile")
            assert str(caught.value) == f"openchoreo.auth.tokenFile: cannot read {path}: {problem}"

    def test_an_empty_token_file_is_a_config_error(self, tmp_path: Path) -> None:
        (tmp_path / "token").write_text("\n")
        auth = f"{{tokenFile: {tmp_path}/token}}"
        text = f"openchoreo: {{baseUrl: 'http://127.0.0.1:8080', auth: {auth}}}\n"
        with pytest.raises(ConfigError, match=r"^openchoreo\.auth\.tokenFile: .* is empty"):
            require_api(load_text(tmp_path, text))

    def test_a_secret_file_s_byte_order_mark_is_not_part_of_the_secret(
        self, tmp_path: Path
    ) -> None:
        (tmp_path / "password").write_bytes(b"\xef\xbb\xbfpg-Zq7x\r\n")

        assert read_secret_file(str(tmp_path / "password"), "state.passwordFile") == "pg-Zq7x"

    def test_a_utf16_secret_file_says_so_not_what_the_codec_said(self, tmp_path: Path) -> None:
        (tmp_path / "password").write_bytes("pg-Zq7x".encode("utf-16"))

        with pytest.raises(ConfigError) as caught:
            read_secret_file(str(tmp_path / "password"), "state.passwordFile")

        assert str(caught.value) == (
            f"state.passwordFile: {tmp_path / 'password'}: not UTF-8 text (UTF-16? save it as "
            "UTF-8)"
        )


def test_a_token_url_with_a_secret_in_its_query_is_refused_without_echoing_it(
    tmp_path: Path,
) -> None:
    text = (
        "openchoreo: {auth: {oauth: {tokenUrl: 'https://idp/t?client_secret=QQ99-zz', "
        "clientId: c}}}"
    )
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text + "\n")

    assert "QQ99-zz" not in str(caught.value)


def test_a_token_url_with_another_query_is_kept_as_given(tmp_path: Path) -> None:
    text = (
        "openchoreo: {auth: {oauth: {tokenUrl: 'https://idp/t?realm=x', clientId: c, "
        "clientSecret: s}}}"
    )
    config = load_text(tmp_path, text + "\n")

    assert config.openchoreo.auth.oauth is not None
    assert config.openchoreo.auth.oauth.token_url == "https://idp/t?realm=x"
