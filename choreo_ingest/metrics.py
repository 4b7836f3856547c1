"""Prometheus textfile export: stored per-provider state -> one `.prom` file, written atomically.

The text exposition format (version 0.0.4) is written here, not by prometheus-client: a `run` with
nothing due writes this file every minute, and importing prometheus-client would cost it more
than everything else it does (`tests/test_metrics.py` reads the output back with
prometheus-client's own parser and compares it with what its `generate_latest` writes).
Counters are rebuilt from totals persisted in the state DB, so they only ever grow across
processes; no `_created` samples, no sample timestamps.
A timestamp or duration that was never recorded (None) is left out rather than written as 0.

Cycle outcomes (`choreo_ingest_cycles_total{outcome}`):
    completed   the cycle completed and its sweep was applied
    blocked     the cycle completed but its removals were blocked by a guard
    abandoned   the cycle was given up before it completed, never to be swept (a refresh in
                place of events that were dropped began a new one, as did another `baseUrl`,
                or a `reset`)
A failed burst does not end a cycle (the cycle resumes from its cursor), so there is no `failed`
outcome: failures show in `choreo_ingest_bursts_total`, `choreo_ingest_consecutive_failures` and
`choreo_ingest_state`.

Burst outcomes (`choreo_ingest_bursts_total{outcome}`, `ProviderAction` of each burst):
    ok           the burst completed its cycle, or paused with work left (its deadline, a 429
                 after committed pages): the next burst resumes from its cursor
    failed       the burst failed (backoff scheduled), did not finish (its process was killed:
                 counted from the moment it shows, see `reporting`), or the provider could not
                 be loaded
    interrupted  SIGTERM or SIGINT stopped it after its last committed page
A burst cut short by the state store failing is not counted (nothing could be stored).

`choreo_ingest_events_pending` and `choreo_ingest_events_parked` are the provider's share of the
event inbox `status` counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from choreo_ingest.errors import ConfigError
from choreo_ingest.files import replace_atomically
from choreo_ingest.idle_answer import go_float
from choreo_ingest.models import ProviderState

PREFIX = "choreo_ingest"
Labels = tuple[tuple[str, str], ...]
"""Label (name, value) pairs."""
TEXTFILE_MODE = 0o644
"""node_exporter reads the textfile as another user, whatever our umask."""
CYCLE_OUTCOMES = ("completed", "blocked", "abandoned")
BURST_OUTCOMES = ("ok", "failed", "interrupted")
EVENT_OUTCOMES = ("applied", "rejected", "parked", "retried", "ignored", "dropped")
ENTITY_KINDS = ("Domain", "System", "Component", "API")
"""Kinds always exported (as 0 when absent) so alerts on them have a series to read."""


@dataclass(frozen=True)
class ProviderMetrics:
    """What the state DB knows about one provider, as of the end of this invocation."""

    provider: str
    state: ProviderState
    last_run_at: float | None = None
    """Epoch seconds of the last invocation that wrote the textfile (a burst or not)."""
    last_burst_at: float | None = None
    """Epoch seconds when the last burst started."""
    last_success_at: float | None = None
    """Epoch seconds when the last cycle completed (waiting never bumps it)."""
    last_cycle_duration: float | None = None
    last_burst_duration: float | None = None
    next_action_at: float | None = None
    consecutive_failures: int = 0
    entities_by_kind: Mapping[str, int] = field(default_factory=dict)
    entities_upserted_total: int = 0
    entities_removed_total: int = 0
    pages_total: int = 0
    removals_blocked: int = 0
    """Removals currently held back by a sweep guard."""
    cycles_total: Mapping[str, int] = field(default_factory=dict)
    """Outcome (`CYCLE_OUTCOMES`) -> cycles ended."""
    cursor_resets_total: int = 0
    events_total: Mapping[str, int] = field(default_factory=dict)
    """Outcome (`EVENT_OUTCOMES`) -> events handled."""
    bursts_total: Mapping[str, int] = field(default_factory=dict)
    """Outcome (`BURST_OUTCOMES`) -> bursts ended."""
    events_pending: int = 0
    """The provider's events waiting in the inbox for a run to apply them."""
    events_parked: int = 0
    """The provider's events parked in the inbox (their re-read kept failing)."""
    events_oldest_pending_at: float | None = None
    """When the provider's oldest event waiting in the inbox arrived; None when none waits."""
    events_held_until: float | None = None
    """Until when every event waits, a re-read having failed (the API, or a setting to mend);
    None when not held."""
    events_waiting_alone: int = 0
    """Objects whose events wait alone, their own re-reads failing (`event_retries`)."""
    api: str | None = None
    """The API generation the provider's source speaks, when it says (`v1`, `orgs`)."""
    health_problems: int = 0
    """How many problems `health` names for the provider (0: healthy)."""

    def __post_init__(self) -> None:
        ProviderState(self.state)  # an unknown state is a bug upstream: fail here, not in Grafana


def render_metrics(providers: Sequence[ProviderMetrics], labels: Labels = ()) -> bytes:
    """The text exposition of `providers` (what `write_metrics_textfile` writes), every series
    with `labels` too (`metrics.labels`: two installations on one host, one textfile each)."""
    names = [p.provider for p in providers]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"provider listed more than once in metrics: {', '.join(duplicates)}")
    families = [*_timestamps(providers), *_gauges(providers), *_counters(providers)]
    own = {label for family in families for label in family.labels}
    if clashing := sorted(own & {name for name, _ in labels}):
        raise ValueError(f"labels the series carry already: {', '.join(clashing)}")
    return "".join(family.text(labels) for family in families).encode("utf-8")


def render_state_readable(readable: bool) -> bytes:
    """`choreo_ingest_state_readable`, which `serve` answers on `/metrics` with every scrape: 0
    when the state store could not be read (or holds no state yet), whose series are then left
    out rather than written as zeros that would read as an empty catalog."""
    family = _Family(
        f"{PREFIX}_state_readable",
        "Whether this scrape could read the state store (1) or not (0: the series read from it "
        "are left out).",
        "gauge",
        [],
    )
    family.add([], 1.0 if readable else 0.0)
    return family.text().encode("utf-8")


def write_metrics_textfile(
    path: Path, providers: Sequence[ProviderMetrics], labels: Labels = ()
) -> None:
    """Write the metrics of `providers` to `path`: a temp file in the same directory, then a rename.

    Readers (node_exporter's textfile collector) see the old file or the new one, never a part.
    """
    write_textfile(path, render_metrics(providers, labels))


def write_textfile(path: Path, data: bytes) -> None:
    """Write rendered metrics (`render_metrics`) to `path`, as `write_metrics_textfile` does."""
    try:
        replace_atomically(path, data, TEXTFILE_MODE)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"cannot write metrics textfile {path}: {reason}", path="metrics.textfile"
        ) from exc


class _Family:
    """One metric family: its HELP and TYPE lines, then its samples (as `generate_latest` writes
    them: a counter's name ends in `_total`, labels are sorted by name)."""

    def __init__(self, name: str, help_text: str, kind: str, labels: Sequence[str]) -> None:
        self.name, self.help, self.type, self.labels = name, help_text, kind, labels
        self.samples: list[tuple[Labels, float]] = []

    def add(self, values: Sequence[str], value: float) -> None:
        self.samples.append((tuple(zip(self.labels, values, strict=True)), value))

    def text(self, constant: Labels = ()) -> str:
        """The family's lines, each sample with the `constant` labels too."""
        help_text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        head = f"# HELP {self.name} {help_text}\n# TYPE {self.name} {self.type}\n"
        return head + "".join(self._sample(pairs, value, constant) for pairs, value in self.samples)

    def _sample(self, pairs: Labels, value: float, constant: Labels) -> str:
        text = ",".join(f'{k}="{_escaped_label(v)}"' for k, v in sorted([*pairs, *constant]))
        labels = f"{{{text}}}" if text else ""
        return f"{self.name}{labels} {go_float(value)}\n"


def _escaped_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _gauge(suffix: str, help_text: str, *labels: str) -> _Family:
    return _Family(f"{PREFIX}_{suffix}", help_text, "gauge", ["provider", *labels])


def _counter(suffix: str, help_text: str, *labels: str) -> _Family:
    return _Family(f"{PREFIX}_{suffix}", help_text, "counter", ["provider", *labels])


_TIMESTAMPS: tuple[tuple[str, str, Callable[[ProviderMetrics], float | None]], ...] = (
    (
        "last_run_timestamp_seconds",
        "When choreo-ingest last ran (a run, or serve's tick), whether or not it burst.",
        lambda p: p.last_run_at,
    ),
    ("last_burst_timestamp_seconds", "When the last burst started.", lambda p: p.last_burst_at),
    (
        "last_success_timestamp_seconds",
        "When the last ingestion cycle completed.",
        lambda p: p.last_success_at,
    ),
    (
        "cycle_duration_seconds",
        "Wall time of the last completed cycle, from its first burst to its sweep.",
        lambda p: p.last_cycle_duration,
    ),
    ("burst_duration_seconds", "Wall time of the last burst.", lambda p: p.last_burst_duration),
    (
        "next_action_timestamp_seconds",
        "When the provider is next due to burst.",
        lambda p: p.next_action_at,
    ),
    (
        "events_oldest_pending_timestamp_seconds",
        "When the oldest event still waiting in the inbox arrived (none waiting: no sample).",
        lambda p: p.events_oldest_pending_at,
    ),
    (
        "events_held_until_timestamp_seconds",
        "Until when every event waits after a failed re-read: the API, or a setting to mend "
        "(not held: no sample).",
        lambda p: p.events_held_until,
    ),
)


def _timestamps(providers: Sequence[ProviderMetrics]) -> Iterator[_Family]:
    for suffix, help_text, read in _TIMESTAMPS:
        family = _gauge(suffix, help_text)
        for provider in providers:
            value = read(provider)
            if value is not None:
                family.add([provider.provider], value)
        yield family


def _gauges(providers: Sequence[ProviderMetrics]) -> Iterator[_Family]:
    state = _gauge(
        "state",
        "Current ingestion state of the provider (1 for the current state, 0 otherwise).",
        "state",
    )
    failures = _gauge(
        "consecutive_failures", "Bursts that failed in a row since the last successful one."
    )
    entities = _gauge("entities", "Catalog entities the provider currently owns, by kind.", "kind")
    blocked = _gauge(
        "removals_blocked",
        "Entity removals currently held back by a sweep guard, awaiting approval.",
    )
    pending = _gauge("events_pending", "Change events waiting in the inbox to be applied.")
    problems = _gauge(
        "health_problems", "Problems `choreo-ingest health` names for the provider (0: healthy)."
    )
    parked = _gauge(
        "events_parked", "Change events parked in the inbox after their re-read kept failing."
    )
    alone = _gauge(
        "events_waiting_alone",
        "Objects whose events wait alone, their own re-reads failing while the API answers.",
    )
    api = _gauge(
        "api_info",
        "The API generation the provider's source speaks (always 1; see the api label).",
        "api",
    )
    for provider in providers:
        name = provider.provider
        current = ProviderState(provider.state)
        for candidate in ProviderState:
            state.add([name, candidate.value], 1.0 if candidate is current else 0.0)
        failures.add([name], provider.consecutive_failures)
        for kind, count in _with_defaults(provider.entities_by_kind, ENTITY_KINDS):
            entities.add([name, kind], count)
        blocked.add([name], provider.removals_blocked)
        pending.add([name], provider.events_pending)
        parked.add([name], provider.events_parked)
        alone.add([name], provider.events_waiting_alone)
        problems.add([name], provider.health_problems)
        if provider.api is not None:
            api.add([name, provider.api], 1.0)
    yield from (state, failures, entities, blocked, pending, parked, alone, problems, api)


def _counters(providers: Sequence[ProviderMetrics]) -> Iterator[_Family]:
    upserted = _counter("entities_upserted_total", "Entities written (new or changed).")
    removed = _counter("entities_removed_total", "Entities removed by sweeps and events.")
    pages = _counter("pages_total", "Provider pages committed.")
    resets = _counter("cursor_resets_total", "Listings restarted because their API cursor expired.")
    cycles = _counter("cycles_total", "Ingestion cycles ended, by outcome.", "outcome")
    events = _counter("events_total", "Change events handled, by outcome.", "outcome")
    bursts = _counter("bursts_total", "Bursts ended, by outcome.", "outcome")
    for provider in providers:
        name = provider.provider
        upserted.add([name], provider.entities_upserted_total)
        removed.add([name], provider.entities_removed_total)
        pages.add([name], provider.pages_total)
        resets.add([name], provider.cursor_resets_total)
        for outcome, count in _with_defaults(provider.cycles_total, CYCLE_OUTCOMES):
            cycles.add([name, outcome], count)
        for outcome, count in _with_defaults(provider.events_total, EVENT_OUTCOMES):
            events.add([name, outcome], count)
        for outcome, count in _with_defaults(provider.bursts_total, BURST_OUTCOMES):
            bursts.add([name, outcome], count)
    yield from (upserted, removed, pages, resets, cycles, events, bursts)


def _with_defaults(counts: Mapping[str, int], always: Iterable[str]) -> list[tuple[str, int]]:
    """`counts` plus a 0 for each key of `always` it lacks; `always` keys first, then the rest."""
    known = list(always)
    extra = sorted(key for key in counts if key not in known)
    return [(key, counts.get(key, 0)) for key in [*known, *extra]]
