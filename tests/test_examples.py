"""The cron and systemd examples work as shipped.

examples/crontab's job line runs the way cron runs it (`/bin/sh -c LINE` with nothing but cron's
environment and the crontab's own variables, in $HOME); examples/systemd/choreo-ingest.service's
ExecStart= runs the way systemd starts it (its Environment=, $STATE_DIRECTORY, the credential
in $CREDENTIALS_DIRECTORY, UMask=, an empty working directory standing for /, and
MemoryDenyWriteExecute= where the kernel can enforce it), each against a simulated OpenChoreo
API. `systemd-analyze verify` and `systemd-analyze security --offline=yes` check the unit files,
choreo-ingest-serve.service (`choreo-ingest serve`, the timer's long-running alternative) too,
whose paths, credentials and listen address are checked against config-serve.yaml.

The examples name the install location `/usr/local/bin/choreo-ingest`; the tests substitute the
script pip installed here (the scripts directory differs between machines) and every
`/etc/choreo-ingest/...` or `/var/lib/...` path with one below a temporary directory.
`systemd-analyze` comes with the Debian package `systemd`; under CI (`CI=true`) its absence
fails the tests instead of skipping them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from choreo_ingest.config import load_config
from choreo_ingest.simulator import SimulatorApi, SimulatorOptions, World, start_server
from choreo_ingest.simulator.oauth import TOKEN_PATH

from os_tools import require_tool
from sim_support import run_cli

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CRONTAB = EXAMPLES / "crontab"
CONFIG = EXAMPLES / "config.yaml"
SERVICE = EXAMPLES / "systemd" / "choreo-ingest.service"
TIMER = EXAMPLES / "systemd" / "choreo-ingest.timer"
SERVICE_CONFIG = EXAMPLES / "systemd" / "config.yaml"
SERVE_SERVICE = EXAMPLES / "systemd" / "choreo-ingest-serve.service"
SERVE_CONFIG = EXAMPLES / "systemd" / "config-serve.yaml"

SHIPPED_SCRIPT = "/usr/local/bin/choreo-ingest"  # where the examples say pip put the script
CRON_PATH = "/usr/bin:/bin"  # cron's own PATH for jobs
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_EXPOSURE = 5.0  # `systemd-analyze security` scores 0 (locked down) to 10 (UNSAFE)
CLIENT_ID = "choreo-ingest"  # examples/config.yaml's
CLIENT_SECRET = "examples-client-secret-93f0"  # a simulator's, made up here
CLIENT_SECRET_FILE = "/etc/choreo-ingest/client-secret"
TIMEOUT_SECONDS = 120

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # <linux/prctl.h>, Linux 6.3+
# Starts a command the way systemd would after its sandboxing: with UMask= applied and, when
# asked, the kernel's memory-deny-write-execute (refuse writable+executable mappings).
LAUNCHER = """
import ctypes, os, sys
os.umask(int(sys.argv[1], 8))
if sys.argv[2] == "mdwe" and ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_MDWE) failed: errno {ctypes.get_errno()}")
os.execv(sys.argv[3], sys.argv[3:])
"""


def installed_script() -> Path:
    """The choreo-ingest script pip installed for this Python (never a pyenv shim)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "choreo-ingest",
        Path(sysconfig.get_path("scripts", f"{os.name}_user")) / "choreo-ingest",
    ]
    for script in candidates:
        if script.is_file() and os.access(script, os.X_OK):
            return script
    pytest.fail(
        f"choreo-ingest is not installed for {sys.executable} (looked at "
        f"{', '.join(map(str, candidates))}); run `pip install -e .`"
    )


def mdwe_supported() -> bool:
    """Whether this kernel has prctl(PR_SET_MDWE) (Linux 6.3+), probed in a child process."""
    probe = (
        "import ctypes, sys\n"
        f"sys.exit(ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0))"
    )
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def relocated(root: Path, path: str) -> Path:
    """An absolute path of the examples (/etc/choreo-ingest/x), moved below `root`."""
    assert path.startswith("/"), f"the examples use absolute paths, not {path!r}"
    return root / path.lstrip("/")


def with_base_url(
    source: Path,
    target: Path,
    base_url: str,
    oauth: Mapping[str, str] | None = None,
    state_path: Path | None = None,
) -> Path:
    """A copy of the config `source` at `target` that calls `base_url` (and with `oauth`, those
    keys of `openchoreo.auth.oauth`; with `state_path`, that `state.path`), otherwise
    unchanged."""
    document = yaml.safe_load(source.read_text(encoding="utf-8"))
    document["openchoreo"]["baseUrl"] = base_url
    if oauth:
        document["openchoreo"]["auth"]["oauth"].update(oauth)
    if state_path is not None:
        document["state"]["path"] = str(state_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(document), encoding="utf-8")
    return target


def parse_crontab(text: str) -> tuple[dict[str, str], list[str]]:
    """The crontab's variables (NAME=value) and its jobs' command lines."""
    variables: dict[str, str] = {}
    commands: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if match := re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line):
            value = match.group(2)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            variables[match.group(1)] = value
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"not a job line (five time fields, then the command): {line}"
        commands.append(fields[5])
    return variables, commands


def parse_unit(path: Path, script: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, in order, of a unit file with the installed script in place of
    the shipped path."""
    settings: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for line in installed_unit_text(path, script).splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = settings.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return settings


def installed_unit_text(path: Path, script: Path) -> str:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".service":
        assert SHIPPED_SCRIPT in text, f"{path.name} no longer runs {SHIPPED_SCRIPT}"
    return text.replace(SHIPPED_SCRIPT, str(script))


def seconds(value: str) -> float:
    """A systemd time span (`120`, `90s`, `2min`, `1min 30s`) in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts, f"not a time span: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.fixture
def oauth_simulator() -> Iterator[tuple[str, str]]:
    """A small simulated OpenChoreo v1 API that grants tokens to CLIENT_ID and CLIENT_SECRET by
    client credentials, as every release's identity provider does; its URL and token URL."""
    options = SimulatorOptions(oauth_client_id=CLIENT_ID, oauth_client_secret=CLIENT_SECRET)
    server = start_server(SimulatorApi(World.generate(1, 2, 3, seed=7), options))
    yield server.url, f"{server.root_url}{TOKEN_PATH}"
    server.stop()


def run_launched(
    argv: list[str], env: Mapping[str, str], cwd: Path, umask: str = "0022", mdwe: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, umask, "mdwe" if mdwe else "-", *argv],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )


def status(state_file: Path, cwd: Path) -> dict[str, Any]:
    completed = run_cli("status", "--json", "--db", state_file, cwd=cwd)
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def assert_one_burst(state_file: Path, cwd: Path) -> None:
    assert state_file.is_file(), f"no state file at {state_file}"
    (provider,) = status(state_file, cwd)["providers"]
    assert provider["lastBurstAt"] is not None
    assert provider["attempts"] == 0, provider["lastError"]


# cron


def test_crontab_sets_path_or_uses_an_absolute_command() -> None:
    variables, commands = parse_crontab(CRONTAB.read_text(encoding="utf-8"))
    assert commands, "the crontab has no job"
    for command in commands:
        assert "%" not in command.replace(r"\%", ""), "cron turns an unescaped % into a newline"
        calls_absolute = SHIPPED_SCRIPT in command
        assert calls_absolute or str(Path(SHIPPED_SCRIPT).parent) in variables.get(
            "PATH", ""
        ).split(":"), f"cron's PATH ({CRON_PATH}) does not hold choreo-ingest: {command}"


def test_the_crontab_line_runs_a_burst_under_cron_environment(
    tmp_path: Path, oauth_simulator: tuple[str, str]
) -> None:
    """The job line under `env -i` with cron's variables and the crontab's (the install path
    and files substituted), examples/config.yaml's OAuth2 client credentials and its client
    secret file as the crontab's comment makes it: exit 0, nothing printed (cron would mail it),
    and the burst's state where the config's absolute `state.path` says, not in $HOME."""
    script = installed_script()
    variables, (command,) = parse_crontab(CRONTAB.read_text(encoding="utf-8"))
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "LOGNAME": "choreo", "SHELL": "/bin/sh", "PATH": CRON_PATH}
    for name, value in variables.items():
        if name == "PATH":
            shipped = str(Path(SHIPPED_SCRIPT).parent)
            value = ":".join(str(script.parent) if d == shipped else d for d in value.split(":"))
        elif value.startswith("/"):
            value = str(relocated(tmp_path, value))
        env[name] = value
    command = command.replace(SHIPPED_SCRIPT, str(script))
    base_url, token_url = oauth_simulator
    secret_file = relocated(tmp_path, CLIENT_SECRET_FILE)
    example = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["openchoreo"]["auth"]["oauth"]
    assert example["clientSecretFile"] == CLIENT_SECRET_FILE, "the crontab's comment makes it"
    token_cache = relocated(tmp_path, example["tokenCacheFile"])
    oauth = {
        "tokenUrl": token_url,
        "clientSecretFile": str(secret_file),
        "tokenCacheFile": str(token_cache),
    }
    assert CLIENT_SECRET_FILE in CRONTAB.read_text(encoding="utf-8")
    state_path = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["state"]["path"]
    assert state_path is not None, "state.path: null puts the state file in cron's $HOME"
    state_file = relocated(tmp_path, state_path)
    with_base_url(CONFIG, Path(env["CHOREO_INGEST_CONFIG"]), base_url, oauth, state_file)
    secret_file.write_text(CLIENT_SECRET + "\n", encoding="utf-8")
    secret_file.chmod(0o600)
    state_file.parent.mkdir(parents=True, exist_ok=True)

    completed = run_launched(["/bin/sh", "-c", command], env, cwd=home)

    assert completed.returncode != 127, f"cron cannot find choreo-ingest: {completed.stderr}"
    assert (completed.returncode, completed.stdout, completed.stderr) == (0, "", "")
    assert_one_burst(state_file, cwd=tmp_path)
    assert token_cache.stat().st_mode & 0o777 == 0o600, "the next cron call's token"
    # Only the parsed copy of the config (config_file.py) goes under $HOME, where XDG says.
    written = sorted(path.relative_to(home) for path in home.rglob("*") if path.is_file())
    assert [str(path.parent) for path in written] == [".cache/choreo-ingest"], written


def test_cron_default_path_alone_does_not_find_the_script(tmp_path: Path) -> None:
    """Why the crontab sets PATH: under cron's own PATH the command is not found (exit 127)."""
    script = installed_script()
    if str(script.parent) in CRON_PATH.split(":"):
        pytest.skip(f"choreo-ingest is installed in {script.parent}, on cron's own PATH")
    completed = run_launched(
        ["/bin/sh", "-c", "choreo-ingest --help"], {"PATH": CRON_PATH}, cwd=tmp_path
    )
    assert completed.returncode == 127


# systemd


def test_service_and_config_agree_on_state_and_credential_paths() -> None:
    """The unit's StateDirectory= and LoadCredential= are where the config looks, under
    systemd ($STATE_DIRECTORY, $CREDENTIALS_DIRECTORY) and by hand (their defaults): the state
    and the kept access token in the one, the OAuth2 client secret in the other."""
    service = parse_unit(SERVICE, Path(SHIPPED_SCRIPT))["Service"]
    assert len(service.get("StateDirectory", [])) == 1, "one StateDirectory= holds the state"
    assert len(service.get("LoadCredential", [])) == 1, "LoadCredential= passes the secret"
    (state_directory,) = service["StateDirectory"]
    (credential,) = service["LoadCredential"]
    name, _, source = credential.partition(":")
    under_systemd = load_config(
        SERVICE_CONFIG,
        env={"STATE_DIRECTORY": f"/var/lib/{state_directory}", "CREDENTIALS_DIRECTORY": "/cred"},
    )
    by_hand = load_config(SERVICE_CONFIG, env={})
    secret_files = []
    for config in (under_systemd, by_hand):
        oauth = config.openchoreo.auth.oauth
        assert oauth is not None, "OpenChoreo v1.x wants OAuth2 client credentials"
        assert config.state_path == Path(f"/var/lib/{state_directory}/state.db")
        assert oauth.token_cache_file == Path(f"/var/lib/{state_directory}/openchoreo-token.json")
        secret_files.append(oauth.client_secret_file)
    assert secret_files == [Path(f"/cred/{name}"), Path(source)]
    assert by_hand.warnings == ()


def test_service_timeout_leaves_room_for_a_burst() -> None:
    service = parse_unit(SERVICE, Path(SHIPPED_SCRIPT))["Service"]
    incremental = load_config(SERVICE_CONFIG, env={}).openchoreo.incremental
    burst = incremental.burst_length + incremental.request_timeout
    (timeout,) = service["TimeoutStartSec"]
    assert seconds(timeout) >= 2 * burst
    assert "75" in " ".join(service["SuccessExitStatus"]).split()
    assert service["Type"] == ["oneshot"]


def test_serve_service_and_config_agree() -> None:
    """choreo-ingest-serve.service and config-serve.yaml: the state in StateDirectory=, both
    tokens (OpenChoreo's, serve's own) from LoadCredential=, under systemd and by hand (their
    defaults); serve on loopback; a long-running unit that leaves time to finish a page on
    stop and keeps the timer from running beside it."""
    unit = parse_unit(SERVE_SERVICE, Path(SHIPPED_SCRIPT))
    service = unit["Service"]
    assert shlex.split(service["ExecStart"][0])[1:2] == ["serve"]
    (state_directory,) = service["StateDirectory"]
    sources = dict(item.partition(":")[::2] for item in service["LoadCredential"])
    under_systemd = load_config(
        SERVE_CONFIG,
        env={"STATE_DIRECTORY": f"/var/lib/{state_directory}", "CREDENTIALS_DIRECTORY": "/cred"},
    )
    by_hand = load_config(SERVE_CONFIG, env={})
    for config in (under_systemd, by_hand):
        assert config.state_path == Path(f"/var/lib/{state_directory}/state.db")
    systemd_oauth, hand_oauth = under_systemd.openchoreo.auth.oauth, by_hand.openchoreo.auth.oauth
    assert systemd_oauth is not None, "OpenChoreo v1.x wants OAuth2 client credentials"
    assert hand_oauth is not None, "OpenChoreo v1.x wants OAuth2 client credentials"
    token_files = [
        ("openchoreo.auth.oauth.clientSecretFile", systemd_oauth.client_secret_file,
         hand_oauth.client_secret_file),
        ("serve.auth.tokenFile", under_systemd.serve.token_file, by_hand.serve.token_file),
    ]  # fmt: skip
    for key, systemd_file, hand_file in token_files:
        assert isinstance(systemd_file, Path), f"{key}: no token file"
        assert systemd_file.parent == Path("/cred"), f"{key}: not a credential"
        assert systemd_file.name in sources, f"{key}: no LoadCredential={systemd_file.name}"
        assert hand_file == Path(sources[systemd_file.name])
    assert by_hand.warnings == ()
    host = by_hand.serve.listen.rpartition(":")[0].strip("[]")
    assert ipaddress.ip_address(host).is_loopback, by_hand.serve.listen
    assert service["Type"] == ["exec"]
    assert service["Restart"] == ["on-failure"]
    (stop_timeout,) = service["TimeoutStopSec"]
    assert seconds(stop_timeout) >= 2 * by_hand.incremental.burst_length
    assert TIMER.name in " ".join(unit["Unit"]["Conflicts"]).split()


def start_as_systemd(
    tmp_path: Path, simulator: tuple[str, str], *, mdwe: bool
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """Run the unit's ExecStart= the way systemd starts it, against `simulator` (its URL and
    token URL); (the process, $STATE_DIRECTORY, its working directory)."""
    script = installed_script()
    service = parse_unit(SERVICE, script)["Service"]
    (exec_start,) = service["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == str(script), f"ExecStart= runs {argv[0]}, not the installed script"

    env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8"}
    for assignment in service.get("Environment", []):
        for item in shlex.split(assignment):
            name, _, value = item.partition("=")
            env[name] = str(relocated(tmp_path, value)) if value.startswith("/") else value
    base_url, token_url = simulator
    with_base_url(
        SERVICE_CONFIG, Path(env["CHOREO_INGEST_CONFIG"]), base_url, {"tokenUrl": token_url}
    )

    (state_name,) = service["StateDirectory"]
    state_directory = tmp_path / "var" / "lib" / state_name
    state_directory.mkdir(parents=True)
    state_directory.chmod(int(service.get("StateDirectoryMode", ["0755"])[0], 8))
    env["STATE_DIRECTORY"] = str(state_directory)

    credentials = tmp_path / "run" / "credentials" / SERVICE.name
    credentials.mkdir(parents=True)
    for credential in service.get("LoadCredential", []):
        name, _, source = credential.partition(":")
        secret_file = relocated(tmp_path, source)  # root-only on the host; systemd copies it
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        secret_file.write_text(CLIENT_SECRET + "\n", encoding="utf-8")
        secret_file.chmod(0o600)
        shutil.copyfile(secret_file, credentials / name)
    env["CREDENTIALS_DIRECTORY"] = str(credentials)

    root = tmp_path / "root"  # stands for /: nothing may be written relative to it
    root.mkdir()
    (umask,) = service.get("UMask", ["0022"])
    completed = run_launched(argv, env, cwd=root, umask=umask, mdwe=mdwe)
    return completed, state_directory, root


def test_service_runs_a_burst_as_systemd_starts_it(
    tmp_path: Path, oauth_simulator: tuple[str, str]
) -> None:
    """ExecStart= with the unit's environment, $STATE_DIRECTORY, the token as a credential,
    UMask= and / as its working directory: the burst's state lands in the state directory,
    readable by nobody but the service's user and group."""
    completed, state_directory, root = start_as_systemd(tmp_path, oauth_simulator, mdwe=False)

    assert completed.returncode == 0, completed.stderr
    assert (completed.stdout, completed.stderr) == ("", "")
    assert_one_burst(state_directory / "state.db", cwd=tmp_path)
    assert list(root.iterdir()) == [], "the service wrote relative to its working directory"
    for path in state_directory.iterdir():
        assert path.stat().st_mode & 0o007 == 0, f"{path.name} is readable by others"


def test_service_runs_under_memory_deny_write_execute(
    tmp_path: Path, oauth_simulator: tuple[str, str]
) -> None:
    """MemoryDenyWriteExecute=yes must not break the Python runtime (the kernel's
    prctl(PR_SET_MDWE) stands in for systemd's seccomp filter)."""
    service = parse_unit(SERVICE, Path(SHIPPED_SCRIPT))["Service"]
    assert service["MemoryDenyWriteExecute"] == ["yes"]
    if not mdwe_supported():
        pytest.skip("this kernel has no prctl(PR_SET_MDWE) (Linux 6.3+)")
    completed, state_directory, _ = start_as_systemd(tmp_path, oauth_simulator, mdwe=True)
    assert completed.returncode == 0, completed.stderr
    assert_one_burst(state_directory / "state.db", cwd=tmp_path)


def installed_units(tmp_path: Path, shipped: tuple[Path, ...] = (SERVICE, TIMER)) -> list[Path]:
    script = installed_script()
    units = []
    for unit in shipped:
        target = tmp_path / unit.name  # verify finds the timer's service next to it
        target.write_text(installed_unit_text(unit, script), encoding="utf-8")
        units.append(target)
    return units


@pytest.mark.parametrize("shipped", [(SERVICE, TIMER), (SERVE_SERVICE,)], ids=["timer", "serve"])
def test_units_pass_systemd_analyze_verify(tmp_path: Path, shipped: tuple[Path, ...]) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    units = installed_units(tmp_path, shipped)
    completed = subprocess.run(
        [analyze, "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    ours = [line for line in completed.stderr.splitlines() if "choreo-ingest" in line]
    assert completed.returncode == 0, completed.stderr
    assert ours == []


@pytest.mark.parametrize("unit", [SERVICE, SERVE_SERVICE], ids=lambda unit: unit.name)
def test_service_exposure_is_low(tmp_path: Path, unit: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    (service,) = installed_units(tmp_path, (unit,))
    completed = subprocess.run(
        [
            analyze,
            "security",
            "--offline=yes",
            f"--threshold={round(MAX_EXPOSURE * 10)}",
            "--no-pager",
            str(service),
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=TIMEOUT_SECONDS,
        check=False,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\w+)", completed.stdout)
    assert found, f"no overall exposure level in:\n{completed.stdout}{completed.stderr}"
    exposure = float(found.group(1))
    failing = [line for line in completed.stdout.splitlines() if line.startswith("✗")]
    assert exposure <= MAX_EXPOSURE, "\n".join([found.group(0), *failing])
    assert completed.returncode == 0, completed.stderr
