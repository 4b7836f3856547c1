"""The parsed copy of the config file (config_file.py): used only while the file is unchanged,
never holding a secret (a copy without them answers only calls that need none), and never in
the way when it cannot be kept."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from choreo_ingest.config import WITHHELD, Config, load_config, reveal, with_secrets
from choreo_ingest.config_file import cache_directory
from choreo_ingest.errors import ConfigError

BASE = "http://openchoreo.test/api/v1"


def cached_copies() -> list[Path]:
    directory = cache_directory()
    assert directory is not None
    return sorted(directory.glob("config-*.json")) if directory.is_dir() else []


def tamper(copy: Path, base_url: str) -> None:
    """Change the kept document, identity untouched: a load that returns it used the copy."""
    kept = json.loads(copy.read_text())
    kept["document"]["openchoreo"]["baseUrl"] = base_url
    copy.write_text(json.dumps(kept))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "choreo-ingest.yaml"
    path.write_text(f"openchoreo:\n  baseUrl: {BASE}\n")
    return path


def test_an_unchanged_file_is_read_from_its_copy(config_file: Path) -> None:
    assert load_config(config_file).openchoreo.base_url == BASE
    [copy] = cached_copies()
    tamper(copy, "http://from-the-copy.test")

    assert load_config(config_file).openchoreo.base_url == "http://from-the-copy.test"


def test_the_copy_is_private(config_file: Path) -> None:
    load_config(config_file)
    [copy] = cached_copies()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700


def replaced_by_mv(path: Path) -> None:
    new = path.with_name("new.yaml")
    new.write_text(path.read_text())
    new.replace(path)


@pytest.mark.parametrize(
    "change",
    [
        lambda path: path.write_text(f"openchoreo:\n  baseUrl: {BASE}/v2\n"),
        lambda path: os.utime(path, ns=(1, path.stat().st_mtime_ns + 1)),
        replaced_by_mv,
    ],
    ids=["edited", "touched", "replaced-by-mv"],
)
def test_a_changed_file_is_parsed_again(
    config_file: Path, change: Callable[[Path], object]
) -> None:
    load_config(config_file)
    [copy] = cached_copies()
    tamper(copy, "http://stale.test")

    change(config_file)

    assert str(load_config(config_file).openchoreo.base_url).startswith(BASE)


def test_a_new_file_behind_a_symlink_is_seen(tmp_path: Path) -> None:
    """How a Kubernetes ConfigMap volume updates: the link moves to a new file."""
    (tmp_path / "v1.yaml").write_text(f"openchoreo:\n  baseUrl: {BASE}/one\n")
    (tmp_path / "v2.yaml").write_text(f"openchoreo:\n  baseUrl: {BASE}/two\n")
    link = tmp_path / "choreo-ingest.yaml"
    link.symlink_to("v1.yaml")
    assert load_config(link).openchoreo.base_url == f"{BASE}/one"

    link.unlink()
    link.symlink_to("v2.yaml")

    assert load_config(link).openchoreo.base_url == f"{BASE}/two"


def test_a_copy_not_written_for_30_days_is_removed_when_another_is_written(
    tmp_path: Path,
) -> None:
    """Temporary configs (tests', scripts') leave a copy each; copies of a month-old write go
    as soon as any config is copied again, and one still in use is only parsed once more."""
    for name in ("gone.yaml", "recent.yaml"):
        (tmp_path / name).write_text(f"openchoreo:\n  baseUrl: {BASE}\n")
        load_config(tmp_path / name)
    gone, recent = cached_copies()
    month = 30 * 86_400
    os.utime(gone, (gone.stat().st_atime, gone.stat().st_mtime - month - 60))
    os.utime(recent, (recent.stat().st_atime, recent.stat().st_mtime - month + 3600))
    kept = {gone: gone.read_text(), recent: recent.read_text()}

    (tmp_path / "new.yaml").write_text(f"openchoreo:\n  baseUrl: {BASE}\n")
    load_config(tmp_path / "new.yaml")

    copies = cached_copies()
    assert len(copies) == 2
    assert {kept.get(copy) for copy in copies} == {kept[recent], None}


def test_variables_are_read_at_every_call_not_kept(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file.write_text("openchoreo:\n  baseUrl: ${CHOREO_URL}\n")
    monkeypatch.setenv("CHOREO_URL", "http://first.test")
    assert load_config(config_file).openchoreo.base_url == "http://first.test"
    monkeypatch.setenv("CHOREO_URL", "http://second.test")

    assert load_config(config_file).openchoreo.base_url == "http://second.test"
    [copy] = cached_copies()
    assert "first.test" not in copy.read_text()


SECRETS = [
    "openchoreo:\n  token: plain-token-value\n",
    "openchoreo:\n  auth:\n    token: plain-token-value\n",
    "openchoreo:\n  auth:\n    oauth:\n      tokenUrl: http://idp.test/token\n"
    "      clientId: reader\n      clientSecret: plain-token-value\n",
    "openchoreo:\n  token: ${UNSET_IN_TESTS:-plain-token-value}\n",
]
SECRET_IDS = ["token", "auth.token", "oauth.clientSecret", "default-of-a-variable"]


def with_secret(config_file: Path, secret: str) -> None:
    config_file.write_text(f"openchoreo:\n  baseUrl: {BASE}\n" + secret.partition("\n")[2])
    config_file.chmod(0o600)


def given_secret(config: Config) -> object:
    auth = config.openchoreo.auth
    secret = auth.oauth.client_secret if auth.oauth is not None else auth.token
    return reveal(secret)


@pytest.mark.parametrize("secret", SECRETS, ids=SECRET_IDS)
def test_a_file_holding_a_secret_is_copied_without_it(config_file: Path, secret: str) -> None:
    with_secret(config_file, secret)

    full = load_config(config_file)

    assert given_secret(full) == "plain-token-value"
    assert not full.secrets_withheld
    [copy] = cached_copies()
    assert "plain-token-value" not in copy.read_text()
    assert json.loads(copy.read_text())["withheld"] is True


@pytest.mark.parametrize("secret", SECRETS, ids=SECRET_IDS)
def test_the_copy_without_the_secret_answers_only_calls_that_need_none(
    config_file: Path, secret: str
) -> None:
    with_secret(config_file, secret)
    load_config(config_file)
    [copy] = cached_copies()
    tamper(copy, "http://from-the-copy.test")

    lean = load_config(config_file, secrets=False)
    assert lean.openchoreo.base_url == "http://from-the-copy.test"
    assert lean.secrets_withheld
    assert given_secret(lean) == WITHHELD

    full = load_config(config_file)  # parses the file: the copy has no secret to give
    assert full.openchoreo.base_url == BASE
    assert given_secret(full) == "plain-token-value"
    assert with_secrets(lean) == full
    assert with_secrets(full) is full


def test_a_token_urls_query_values_are_withheld_from_the_copy(config_file: Path) -> None:
    """A signature (Azure's `?sig=`) is a credential under a name the config cannot know."""
    url = "https://idp.test/t?p=B2C_1_x&sig=S1gnature-Q"
    oauth = f"{{tokenUrl: '{url}', clientId: c, clientSecret: '${{SECRET}}'}}"
    config_file.write_text(f"openchoreo:\n  baseUrl: {BASE}\n  auth: {{oauth: {oauth}}}\n")

    full = load_config(config_file, env={"SECRET": "s"})

    [copy] = cached_copies()
    assert "S1gnature-Q" not in copy.read_text()
    assert json.loads(copy.read_text())["withheld"] is True
    assert full.openchoreo.auth.oauth is not None
    assert full.openchoreo.auth.oauth.token_url == url
    lean = load_config(config_file, env={"SECRET": "s"}, secrets=False)
    assert lean.secrets_withheld
    assert lean.openchoreo.auth.oauth is not None
    assert "S1gnature-Q" not in lean.openchoreo.auth.oauth.token_url
    assert with_secrets(lean).openchoreo.auth.oauth.token_url == url  # type: ignore[union-attr]


def test_a_token_url_with_a_query_in_a_default_is_withheld_whole(config_file: Path) -> None:
    """Its query's values cannot be told from the reference around them: the copy holds a
    stand-in that reads as a URL, so the calls that send nothing still read the copy."""
    oauth = "{tokenUrl: '${TOKEN_URL:-https://idp.test/t?sig=S1gQ}', clientId: c, clientSecret: s}"
    config_file.write_text(f"openchoreo:\n  baseUrl: {BASE}\n  auth: {{oauth: {oauth}}}\n")

    full = load_config(config_file, env={})
    lean = load_config(config_file, env={}, secrets=False)

    [copy] = cached_copies()
    assert "S1gQ" not in copy.read_text()
    assert full.openchoreo.auth.oauth is not None
    assert full.openchoreo.auth.oauth.token_url == "https://idp.test/t?sig=S1gQ"
    assert lean.secrets_withheld
    assert lean.openchoreo.auth.oauth is not None
    assert "S1gQ" not in lean.openchoreo.auth.oauth.token_url


def test_a_file_with_a_readable_secret_warns_the_same_from_its_copy(config_file: Path) -> None:
    with_secret(config_file, SECRETS[0])
    config_file.chmod(0o644)
    warned = load_config(config_file).warnings

    assert warned
    assert load_config(config_file, secrets=False).warnings == warned


@pytest.mark.parametrize(
    ("url", "meant"),
    [
        ("postgresql://reader:pg-pass-123@db.test/choreo", None),
        ("postgres://:pg-pass-123@db.test/choreo", None),
        (
            "postgresql://reader:${UNSET_IN_TESTS:-pg-pass-123}@db.test/choreo",
            "postgresql://reader:pg-pass-123@db.test/choreo",
        ),
    ],
    ids=["user-and-password", "password", "default-of-a-variable"],
)
def test_a_password_in_the_state_url_is_never_copied(
    config_file: Path, url: str, meant: str | None
) -> None:
    """Every call opens the state, so a copy without the password would answer none."""
    config_file.write_text(f"openchoreo:\n  baseUrl: {BASE}\nstate:\n  url: {url}\n")
    config_file.chmod(0o600)

    assert load_config(config_file).state_url == (meant or url)
    assert load_config(config_file, secrets=False).state_url == (meant or url)
    assert cached_copies() == []


SECRET_FILE_KEYS = [
    ("  auth:\n    tokenFile: {}\n", "openchoreo.auth.tokenFile"),
    (
        "  auth:\n    oauth:\n      tokenUrl: http://idp.test/token\n"
        "      clientId: reader\n      clientSecretFile: {}\n",
        "openchoreo.auth.oauth.clientSecretFile",
    ),
    ("serve:\n  auth:\n    tokenFile: {}\n", "serve.auth.tokenFile"),
    ("serve:\n  events:\n    secretFile: {}\n", "serve.events.secretFile"),
    ("state:\n  url: postgresql://u@db.test/x\n  passwordFile: {}\n", "state.passwordFile"),
]


@pytest.mark.parametrize(("section", "key"), SECRET_FILE_KEYS, ids=[k for _, k in SECRET_FILE_KEYS])
def test_a_secret_written_where_its_files_name_belongs_is_never_copied(
    config_file: Path, section: str, key: str
) -> None:
    """`tokenFile: <the token>`: a bare name no file has may be the secret itself, which errors
    do not show either (`secret_file_shown`); once the file is there, it is a name."""
    secret = "BareNameSecret-Q7x2"
    config_file.write_text(f"openchoreo:\n  baseUrl: {BASE}\n{section.format(secret)}")
    config_file.chmod(0o600)

    load_config(config_file)
    load_config(config_file, secrets=False)

    assert [copy for copy in cached_copies() if secret in copy.read_text()] == []
    (config_file.parent / secret).write_text("the-secret\n")
    load_config(config_file)
    [copy] = cached_copies()
    assert secret in copy.read_text()


def test_a_copy_an_earlier_release_kept_of_a_password_is_removed(config_file: Path) -> None:
    url = "postgresql://reader:pg-pass-123@db.test/choreo"
    load_config(config_file)
    [copy] = cached_copies()  # this file's copy, as a release that kept passwords wrote it
    config_file.write_text(f"openchoreo:\n  baseUrl: {BASE}\nstate:\n  url: {url}\n")
    copy.write_text(copy.read_text().replace(BASE, url))

    assert load_config(config_file).state_url == url
    assert cached_copies() == []


def test_a_password_from_the_environment_in_the_state_url_is_copied_as_its_reference(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASS", "pg-pass-123")
    url = "postgresql://reader:${PGPASS}@db.test/choreo"
    config_file.write_text(f"openchoreo:\n  baseUrl: {BASE}\nstate:\n  url: {url}\n")

    assert load_config(config_file).state_url == "postgresql://reader:pg-pass-123@db.test/choreo"
    [copy] = cached_copies()
    assert "${PGPASS}" in copy.read_text()
    assert "pg-pass-123" not in copy.read_text()


def test_a_secret_from_the_environment_is_copied_as_its_reference(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCHOREO_TOKEN", "token-from-env")
    config_file.write_text(f"openchoreo:\n  baseUrl: {BASE}\n  token: ${{OPENCHOREO_TOKEN}}\n")

    load_config(config_file)

    [copy] = cached_copies()
    assert "${OPENCHOREO_TOKEN}" in copy.read_text()
    assert "token-from-env" not in copy.read_text()


def test_what_json_cannot_hold_is_parsed_every_time(config_file: Path) -> None:
    config_file.write_text(f"openchoreo:\n  baseUrl: {BASE}\nsomeday: 2026-12-01\n")

    with pytest.raises(ConfigError, match="someday"):  # an unknown key; read, and not copied
        load_config(config_file)

    assert cached_copies() == []


def test_a_torn_copy_is_parsed_again_and_rewritten(config_file: Path) -> None:
    load_config(config_file)
    [copy] = cached_copies()
    copy.write_text('{"format": 1, "pa')

    assert load_config(config_file).openchoreo.base_url == BASE
    assert json.loads(copy.read_text())["document"]["openchoreo"]["baseUrl"] == BASE


def test_nowhere_to_keep_a_copy_only_means_parsing_every_time(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))

    assert load_config(config_file).openchoreo.base_url == BASE
    assert load_config(config_file).openchoreo.base_url == BASE


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"CACHE_DIRECTORY": "/var/cache/choreo-ingest", "HOME": "{home}"},
            "/var/cache/choreo-ingest",
        ),
        ({"XDG_CACHE_HOME": "/xdg", "HOME": "{home}"}, "/xdg/choreo-ingest"),
        ({"HOME": "{home}"}, "{home}/.cache/choreo-ingest"),
        ({"XDG_CACHE_HOME": "cache", "HOME": "{home}"}, "{home}/.cache/choreo-ingest"),
        ({"HOME": "{home}/gone"}, None),
        ({"HOME": "home"}, None),
        ({}, None),
    ],
    ids=["systemd", "xdg", "home", "relative-xdg", "missing-home", "relative-home", "none"],
)
def test_where_copies_go(tmp_path: Path, env: dict[str, str], expected: str | None) -> None:
    """A relative XDG_CACHE_HOME is ignored (the XDG spec), and a home that is not there is
    not made (HOME=/nonexistent, as some service users have)."""
    home = str(tmp_path)
    found = cache_directory({name: value.format(home=home) for name, value in env.items()})
    assert (str(found) if found else None) == (expected and expected.format(home=home))


def test_a_missing_cache_home_is_made_private_whatever_the_umask(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "made" / "cache"))
    previous = os.umask(0)
    try:
        load_config(config_file)
    finally:
        os.umask(previous)

    made = [tmp_path / "made", tmp_path / "made" / "cache", tmp_path / "made/cache/choreo-ingest"]
    assert [oct(stat.S_IMODE(path.stat().st_mode)) for path in made] == [oct(0o700)] * 3


KILLED_BEFORE_THE_COPY_IS_RENAMED = """
import os, pathlib, signal, sys
from choreo_ingest.config import load_config
os.replace = lambda *_: os.kill(os.getpid(), signal.SIGKILL)  # the rename
load_config(pathlib.Path(sys.argv[1]))
"""


def test_kills_while_the_copy_is_written_leave_one_temp_file_the_next_copy_removes(
    config_file: Path,
) -> None:
    for _ in range(3):
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_BEFORE_THE_COPY_IS_RENAMED, str(config_file)]
        )
        assert killed.returncode == -9
    directory = cache_directory()
    assert directory is not None
    assert len(list(directory.glob(".*.tmp"))) == 1, "one per copy, not one per kill"

    assert load_config(config_file).openchoreo.base_url == BASE

    assert sorted(p.name for p in directory.iterdir()) == [p.name for p in cached_copies()]


def test_an_invalid_file_is_never_copied(config_file: Path) -> None:
    """Nothing the schema does not know reaches the copy: a misspelt secret's key, say."""
    config_file.write_text(
        f"openchoreo:\n  baseUrl: {BASE}\n  auth:\n    oauth:\n"
        "      tokenUrl: http://idp.test/token\n      clientId: reader\n"
        "      client_secret: TypoSecretXYZ123456\n"
    )

    with pytest.raises(ConfigError, match="client_secret: unknown key"):
        load_config(config_file, secrets=False)

    assert cached_copies() == []


PLUGIN_OPTIONS = """
providers:
  - openchoreo
  - name: csv
    path: services.csv
    limit: 3
    apiToken: PluginSecretABC
    auth: {user: bot, pass: PluginPassDEF}
    source: https://bot:PluginUrlPassGHI@csv.test/export
    mirror: https://csv.test/export?api_key=PluginQueryMNO&page=1
    password: ${CSV_PASSWORD}
    bearer: PluginBearerJKL
"""


def test_custom_provider_options_that_look_secret_are_withheld_from_the_copy(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CSV_PASSWORD", "from-the-environment")
    config_file.write_text(f"openchoreo:\n  baseUrl: {BASE}\n{PLUGIN_OPTIONS}")

    full = load_config(config_file)

    [copy] = cached_copies()
    kept = copy.read_text()
    assert [word for word in ("Plugin", "environment") if word in kept] == []
    assert json.loads(kept)["withheld"] is True
    assert "services.csv" in kept
    assert "${CSV_PASSWORD}" in kept
    assert load_config(config_file, secrets=False).provider_options["csv"]["apiToken"] == WITHHELD
    assert with_secrets(load_config(config_file, secrets=False)) == full
    assert full.provider_options["csv"] == {
        "path": "services.csv",
        "limit": 3,
        "apiToken": "PluginSecretABC",
        "auth": {"user": "bot", "pass": "PluginPassDEF"},
        "source": "https://bot:PluginUrlPassGHI@csv.test/export",
        "mirror": "https://csv.test/export?api_key=PluginQueryMNO&page=1",
        "password": "from-the-environment",
        "bearer": "PluginBearerJKL",
    }


def test_custom_provider_options_without_a_secret_are_copied_whole(config_file: Path) -> None:
    config_file.write_text(
        f"openchoreo:\n  baseUrl: {BASE}\nproviders: [{{name: csv, path: services.csv}}]\n"
    )
    load_config(config_file)
    [copy] = cached_copies()
    tamper(copy, "http://from-the-copy.test")

    config = load_config(config_file)

    assert config.openchoreo.base_url == "http://from-the-copy.test"
    assert config.provider_options == {"csv": {"path": "services.csv"}}


def test_a_copy_of_format_3_holding_a_secret_default_is_not_trusted(config_file: Path) -> None:
    secret = "${OPENCHOREO_TOKEN:-s3cr3t-default}"
    config_file.write_text(f"openchoreo:\n  baseUrl: {BASE}\n  token: {secret}\n")
    load_config(config_file)
    [copy] = cached_copies()
    kept = json.loads(copy.read_text())
    kept.update(format=3, withheld=False)  # as releases before format 4 kept it
    kept["document"]["openchoreo"].update(baseUrl="http://from-the-copy.test", token=secret)
    copy.write_text(json.dumps(kept))

    assert load_config(config_file).openchoreo.base_url == BASE
    assert "s3cr3t-default" not in "".join(path.read_text() for path in cached_copies())


def test_a_copy_of_format_4_holding_a_token_urls_query_is_not_trusted(config_file: Path) -> None:
    oauth = "{tokenUrl: 'https://idp.test/t?sig=S1gQ', clientId: c, clientSecret: '${SECRET}'}"
    config_file.write_text(f"openchoreo:\n  baseUrl: {BASE}\n  auth: {{oauth: {oauth}}}\n")
    load_config(config_file, env={"SECRET": "s"})
    [copy] = cached_copies()
    kept = json.loads(copy.read_text())
    kept.update(format=4, withheld=False)  # as releases before format 5 kept it
    kept["document"]["openchoreo"]["baseUrl"] = "http://from-the-copy.test"
    kept["document"]["openchoreo"]["auth"]["oauth"]["tokenUrl"] = "https://idp.test/t?sig=S1gQ"
    copy.write_text(json.dumps(kept))

    lean = load_config(config_file, env={"SECRET": "s"}, secrets=False)

    assert lean.openchoreo.base_url == BASE
    assert "S1gQ" not in "".join(path.read_text() for path in cached_copies())


def test_a_config_path_that_is_not_utf8_is_read_and_copied(tmp_path: Path) -> None:
    path = tmp_path / os.fsdecode(b"lat\xe9.yaml")
    path.write_text(f"openchoreo:\n  baseUrl: {BASE}\n")

    assert load_config(path).openchoreo.base_url == BASE
    [copy] = cached_copies()
    tamper(copy, "http://from-the-copy.test")
    assert load_config(path).openchoreo.base_url == "http://from-the-copy.test"
