"""The kept answer of a `run` with nothing due: most cron calls, answered before anything else
is imported.

A `run` that finds nothing due (`idle.run_if_idle`) reads the config and the state, decides, and
rewrites the metrics textfile; the imports alone cost it several times what the interpreter
does, every minute, for a decision that stays the same until a wait ends or something changes.
So once it has decided, it keeps its answer (`idle.keep_answer`) in the cache directory the
config's parsed copy is kept in (`cache_files`), mode 0600: until when it holds (the end of the
first wait, at most KEPT_SECONDS ahead), what it was read from, and the textfile it wrote, cut
where the time of the run goes. The next `run` (`answered`) takes it only if every input is
still the one read:

- the command line is a plain `run` (with `--config`/`-c` and `--db` at most), off a terminal,
  and gives the same `--db` as the kept run, or none as it did;
- the config file (the one `--config`, `$CHOREO_INGEST_CONFIG` or `./choreo-ingest.yaml`
  names), by its identity (device, inode, size, modification and change times), and the
  files a run reads before it decides (the CA bundle, the secret files) by theirs; the working
  directory; the user; the installation (`installed`); and a digest, salted and never the
  values, of the environment variables the file refers to and of those that choose the state
  or the cache (a token unset or replaced since is seen: a run would refuse it);
- the YAML mirror (`catalog.directory`), where there is one: its directory, its marker and the
  first entity file in it, by identity, as they were before the kept run read them
  (`idle.mirror_identities`);
- the state: the file its path leads to now, by its identity, and its look
  (`store.write_mark`): a mark every write transaction of any process replaces (an equal mark
  means nothing was committed since) and the providers' records, facts and newest event,
  read again with it (a writer that does not replace the mark, a damaged page there);
- the clock: no earlier than when the answer was kept, and before it ends.

It then takes the run lock, as the full run does, rewrites the textfile with this run's time,
and the call ends: exit 0, nothing said. Anything else (an input that differs, no answer kept,
a torn file, the lock held, an error of any kind) leaves the call to the lean entry, which
decides as it always has, and keeps a new answer when it finds nothing due. What a kept answer
cannot check this way is never kept: a PostgreSQL state, providers other than the built-in one,
a state noted damaged, a mirror with no entity file to watch, events held or waiting alone
(their say in the metrics changes within a window of time). An answer file another user could
write is never read.

Nothing here imports typing, pathlib, json, re or dataclasses: beyond the interpreter's own,
a kept answer costs `sqlite3` (`store.write_mark`), `fcntl` and the textfile's writer
(`atomic_file`); `tests/test_idle_answer.py` pins the set. `metrics` formats its values with
`go_float`, so that the time written here reads as every other.
"""

from __future__ import annotations

import marshal
import os
import sys
from collections.abc import Mapping, Sequence

from choreo_ingest.atomic_file import replace_atomically
from choreo_ingest.cache_files import (
    ANSWER_SUFFIX,
    CONFIG_ENV,
    DEFAULT_CONFIG_NAME,
    STATE_ENV,
    absolute_path,
    file_identity,
    kept_file,
    new_digest,
)
from choreo_ingest.store.write_mark import read_look, state_identity, try_run_lock

FORMAT = 2
"""Bumped whenever what an answer holds changes (`installed` says more)."""
KEPT_SECONDS = 3600.0
"""The longest an answer is kept: a decision is made afresh at least this often."""
CHOOSING_VARIABLES = (CONFIG_ENV, STATE_ENV, "HOME", "CACHE_DIRECTORY", "XDG_CACHE_HOME")
"""What chooses the config, the state, a `~` in a path, or where answers are kept."""
SHARED_OPTIONS = {"--config": "config", "-c": "config", "--db": "db"}
"""The options every command takes, by the name they are kept under (`cli.lean` parses them too)."""


def go_float(value: float) -> str:
    """A sample value as prometheus-client writes it (Go's formatting, which uses an exponent
    from 1e7 where Python's repr waits until 1e16); `metrics` writes every value with it."""
    number = float(value)
    if number != number:
        return "NaN"
    if number in (float("inf"), float("-inf")):
        return "+Inf" if number > 0 else "-Inf"
    text = repr(number)
    dot = text.find(".")
    if number > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def installed() -> list[int]:
    """This answer's format, the Python and this installation of choreo-ingest: an upgrade or
    a reinstall rewrites this file (a new inode or change time), and a checkout that replaces
    any module of the package changes its directory, so that a textfile an earlier release
    rendered is not written again (an edit in place of another module is seen within
    KEPT_SECONDS)."""
    found, package = os.stat(__file__), os.stat(os.path.dirname(__file__))
    return [FORMAT, *sys.version_info[:2], found.st_ino, found.st_ctime_ns, package.st_mtime_ns]


def environment_digest(names: Sequence[str], env: Mapping[str, str], salt: bytes) -> bytes:
    """A digest of the values of `names` in `env` (unset and empty told apart), salted with
    the answer's own random `salt`: never the values themselves, which may be secrets (a token
    unset or replaced since must be seen: the full run would refuse it)."""
    digest = new_digest(salt)
    for name in names:
        value = env.get(name)
        digest.update(marshal.dumps((name, value)))
    return digest.digest()


def run_arguments(args: Sequence[str]) -> tuple[str | None, str | None] | None:
    """The `--config` and `--db` of a plain `run` command line (None where one is not given);
    None for any other command line."""
    given: dict[str, str] = {}
    command = False
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name, equals, value = arg.partition("=")
        option = SHARED_OPTIONS.get(name)
        if arg == "run" and not command:
            command = True
        elif option is not None and not equals and rest and option not in given:
            given[option] = rest.pop(0)
        elif option is not None and equals and name.startswith("--") and option not in given:
            given[option] = value
        else:
            return None
        if "" in given.values():
            return None
    return (given.get("config"), given.get("db")) if command else None


def config_path(given: str | None, env: Mapping[str, str]) -> str | None:
    """The config file a call reads (`config.find_config_path`), as an absolute path; None for
    none."""
    path = given if given is not None else env.get(CONFIG_ENV) or None
    if path is None:
        path = DEFAULT_CONFIG_NAME if os.path.exists(DEFAULT_CONFIG_NAME) else None
    if path is None:
        return None
    return absolute_path(os.path.expanduser(path) if path.startswith("~") else path)


def answered(args: Sequence[str], env: Mapping[str, str], now: float) -> bool:
    """Whether the command line `args` was a `run` the kept answer covers, now answered (the
    textfile written); False, having done nothing, for every other call."""
    if os.isatty(1) or os.isatty(2):
        return False  # a person is told what the run does
    given = run_arguments(args)
    if given is None:
        return False
    config = config_path(given[0], env)
    answer = None if config is None else kept_file(config, ANSWER_SUFFIX, env)
    if config is None or answer is None:
        return False
    try:
        with open(answer, "rb") as file:
            found = os.fstat(file.fileno())
            if found.st_uid != os.geteuid() or found.st_mode & 0o077:
                return False  # not written by this user alone (a shared cache directory)
            kept = marshal.load(file)  # noqa: S302 - this user's own file, mode 0600
    except (OSError, EOFError, ValueError, TypeError):
        return False
    return (
        isinstance(kept, dict)
        and kept.get("db") == given[1]
        and _still_holds(kept, config, env, now)
        and _answer(kept, now)
    )


def _still_holds(kept: dict[str, object], config: str, env: Mapping[str, str], now: float) -> bool:
    names, salt, files = kept.get("variables"), kept.get("salt"), kept.get("files")
    made, until = kept.get("made"), kept.get("until")
    return (
        kept.get("format") == installed()
        and kept.get("config") == config
        and kept.get("identity") == file_identity(config)
        and kept.get("cwd") == os.getcwd()
        and kept.get("user") == os.geteuid()
        and isinstance(names, list)
        and isinstance(salt, bytes)
        and kept.get("environment") == environment_digest(names, env, salt)
        and isinstance(files, list)
        and all(file_identity(path) == identity for path, identity in files)
        and isinstance(made, float)
        and isinstance(until, float)
        and made <= now < until
    )


def _answer(kept: dict[str, object], now: float) -> bool:
    """Under the run lock: the state unchanged since the answer was kept, the textfile written."""
    given, state, lock_file = kept.get("state_given"), kept.get("state"), kept.get("lock")
    if not (isinstance(given, str) and isinstance(state, str) and isinstance(lock_file, str)):
        return False
    if os.path.realpath(given) != state or state_identity(state) != kept.get("state_identity"):
        return False  # a symlink moved to another file, or the file replaced
    lock = try_run_lock(lock_file)
    if lock is None:
        return False  # another run holds it, or it is not as kept: the full run says which
    try:
        if os.path.exists(state + ".damaged") or read_look(state) != kept.get("look"):
            return False
        return _write_textfile(kept, now)
    finally:
        os.close(lock)  # releases the flock


def _write_textfile(kept: dict[str, object], now: float) -> bool:
    """The textfile kept, with this run's time where the kept run's was."""
    textfile, chunks, mode = kept.get("textfile"), kept.get("chunks"), kept.get("mode")
    if textfile is None:
        return True
    if not isinstance(textfile, str) or not isinstance(chunks, list) or not isinstance(mode, int):
        return False
    try:
        replace_atomically(textfile, go_float(now).join(chunks).encode(), mode)
    except OSError:
        return False  # the full run writes it again, or says why it cannot
    return True
