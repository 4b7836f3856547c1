"""The human status page `serve` answers `GET /` with: the facts `choreo-ingest status` prints.

One small server-rendered HTML5 document: inline CSS only, no JavaScript, nothing loaded from
anywhere (the favicon is an empty `data:` URL, so a browser does not even ask this server for
one). Every text that comes from the config, the state file or the source (names, refs, errors,
reasons, the state file's path) goes through `html.escape`. `PAGE_CSP` is the
Content-Security-Policy the route sends with it, which forbids anything but the inline style.
Standard library only: the route, not this module, needs starlette.
"""

from __future__ import annotations

import html
import re
import shlex
from collections.abc import Sequence

from choreo_ingest.clock import parsed_time, rfc3339
from choreo_ingest.event_retries import object_path
from choreo_ingest.models import EVENTS_HELD_FACT
from choreo_ingest.reporting import ProviderStatus, StatusReport, shorten
from choreo_ingest.store import ChangeRow

PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
"""The Content-Security-Policy header `GET /` is served with."""
REFRESH_SECONDS = 10
"""The page reloads itself this often (`<meta http-equiv="refresh">`, no script)."""
ERROR_PAGE_CHARS = 300
"""The page shows this much of a provider's last error; `status --json` shows more."""

_CODE_SPAN = re.compile(r"`([^`]+)`")

_CSS = """
:root{color-scheme:light dark;--fg:#1b1f24;--muted:#57606a;--bg:#fff;--card:#f6f8fa;
--line:#d0d7de;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#8d96a0;--bg:#0d1117;
--card:#161b22;--line:#30363d;--ok:#3fb950;--bad:#f85149;--warn:#d29922}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:60rem;padding:1rem;font:15px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
h1{font-size:1.5rem;margin:0 0 .25rem}
h2{font-size:1.15rem;margin:0 0 .5rem;display:flex;flex-wrap:wrap;gap:.4rem;align-items:center}
h3{font-size:1rem;margin:1.5rem 0 .5rem}
code,pre{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
code{overflow-wrap:anywhere}
time{white-space:nowrap}
pre{margin:0;white-space:pre-wrap;overflow-wrap:anywhere}
.muted{color:var(--muted)}
.meta{margin:0;color:var(--muted);overflow-wrap:anywhere}
.summary{font-weight:600;margin:.5rem 0 1rem}
.ok{color:var(--ok)}
.bad{color:var(--bad)}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.75rem 1rem;
margin:0 0 1rem}
.badge{font-size:.8rem;font-weight:600;border:1px solid currentColor;border-radius:999px;
padding:0 .5rem}
.state-resting{color:var(--ok)}
.state-backing_off{color:var(--bad)}
.state-bursting,.state-interstitial{color:var(--warn)}
.state-idle{color:var(--muted)}
.problems{margin:0 0 .5rem;padding-left:1.2rem;color:var(--bad)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0}
dt{color:var(--muted)}
dd{margin:0;min-width:0;overflow-wrap:anywhere}
.blocked{color:var(--bad)}
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid var(--line);
white-space:nowrap;vertical-align:top}
tr:last-child td{border-bottom:0}
th{background:var(--card)}
td.num,th.num{text-align:right}
footer{margin-top:1.5rem;font-size:.85rem;color:var(--muted)}
@media (max-width:32rem){body{padding:.6rem}dl{grid-template-columns:1fr}dt{margin-top:.3rem}}
"""


def render_status_page(
    report: StatusReport, changes: Sequence[ChangeRow] | None, now: float
) -> str:
    """The whole page for `report` as of `now`, with `changes` (a short tail of the change log,
    in any order; shown newest first). None: the request lacks the API token, and the page shows
    no entity ref, only where to read them with it."""
    unhealthy = [item for item in report.providers if item.health_problems]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        '<meta name="color-scheme" content="light dark">',
        '<meta name="robots" content="noindex">',
        '<link rel="icon" href="data:,">',
        "<title>choreo-ingest</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        "<h1>choreo-ingest</h1>",
        f'<p class="meta">State store <code>{_text(str(report.state_file))}</code>'
        f" · schema {report.schema_version}"
        f" · {'a run is in progress' if report.running else 'no run in progress'}"
        f" · as of {_time(now)}</p>",
        *(f'<p class="summary bad">{_prose(problem)}</p>' for problem in report.problems),
        _summary(len(report.providers), len(unhealthy)),
        "</header>",
        "<main>",
        *(_provider(item, now) for item in report.providers),
        _inbox(report, now),
        _changes(changes, now),
        "</main>",
        f"<footer>Reloads every {REFRESH_SECONDS} s. The same facts: <code>choreo-ingest "
        "status</code>, <code>choreo-ingest changes</code>.</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def relative(at: float, now: float) -> str:
    """`at` seen from `now`: "now", "in 42 s", "42 s ago"; minutes, hours, days when longer."""
    delta = round(at - now)
    if delta == 0:
        return "now"
    span = _span(abs(delta))
    return f"in {span}" if delta > 0 else f"{span} ago"


def _span(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)


def _prose(value: str) -> str:
    """Escaped text whose `backticked` spans (commands, in problems) become <code>."""
    return _CODE_SPAN.sub(r"<code>\1</code>", _text(value))


def _time(at: float) -> str:
    stamp = _text(rfc3339(at))
    return f'<time datetime="{stamp}">{stamp}</time>'


def _when(at: float | None, now: float, *, missing: str) -> str:
    if at is None:
        return f'<span class="muted">{_text(missing)}</span>'
    return f'{_time(at)} <span class="muted">({_text(relative(at, now))})</span>'


def _summary(total: int, unhealthy: int) -> str:
    if total == 0:
        return '<p class="summary muted">No providers yet.</p>'
    if unhealthy:
        return f'<p class="summary bad">{unhealthy} of {total} providers unhealthy</p>'
    noun = "provider" if total == 1 else "providers"
    return f'<p class="summary ok">{"All " if total > 1 else ""}{total} {noun} healthy</p>'


def _command(*words: str) -> str:
    return f"<code>{_text(shlex.join(['choreo-ingest', *words]))}</code>"


def _provider(item: ProviderStatus, now: float) -> str:
    record = item.record
    state = record.state.value
    health = (
        '<span class="badge bad">unhealthy</span>'
        if item.health_problems
        else '<span class="badge ok">healthy</span>'
    )
    problems = (
        '<ul class="problems">'
        + "".join(f"<li>{_prose(problem)}</li>" for problem in item.problems_shown)
        + "</ul>"
        if item.health_problems
        else ""
    )
    facts = item.shown_facts  # as `status` shows them
    rows: list[tuple[str, str]] = []
    if "api" in facts:
        rows.append(("API", f"<code>{_text(facts.pop('api'))}</code>"))
    rows += [
        (
            "Cycle",
            f"#{record.cycle_id}, started "
            + _when(record.cycle_started_at, now, missing="not started yet"),
        ),
        ("Next action", _when(item.next_action_at, now, missing="not scheduled: due now")),
        ("Attempts", f"{record.attempts}" + (" failed in a row" if record.attempts else "")),
        ("Active entities", f'<span class="num">{item.active_entities}</span>'),
        ("Last burst", _when(record.last_burst_at, now, missing="never")),
        ("Last completed cycle", _when(record.last_completed_at, now, missing="never")),
        ("Cursor resets", str(item.cursor_resets)),
        ("Blocked removals", _removals(item)),
        ("Last error", _error(record.last_error, withheld=item.error_withheld)),
    ]
    rows += [(name, _text(value)) for name, value in sorted(facts.items())]
    details = "".join(f"<dt>{_text(name)}</dt><dd>{value}</dd>" for name, value in rows)
    return (
        '<section class="card">'
        f'<h2><span class="name">{_text(record.name)}</span>'
        f' <span class="badge state-{_text(state)}">{_text(state)}</span> {health}</h2>'
        f"{problems}<dl>{details}</dl></section>"
    )


def _removals(item: ProviderStatus) -> str:
    if not item.removals_blocked:
        return "none"
    reason = f": {_prose(item.removals_reason)}" if item.removals_reason else ""
    name = item.record.name
    return (
        f'<span class="blocked">{item.removals_blocked} blocked{reason}</span><br>\n'
        f"list them with {_command('removals', name)}, apply them with "
        f"{_command('removals', 'approve', name)}"
    )


def _error(error: str | None, *, withheld: bool) -> str:
    if error is None:
        return '<span class="muted">none</span>'
    if withheld:  # its text can name API paths: catalog content
        return (
            '<span class="bad">one, withheld</span> <span class="muted">(its text is shown with '
            "the API token only: read <code>/status</code> with "
            "<code>Authorization: Bearer &lt;token&gt;</code>)</span>"
        )
    return f"<pre>{_text(shorten(error, ERROR_PAGE_CHARS))}</pre>"


def _inbox(report: StatusReport, now: float) -> str:
    events = report.events
    parked = f'<span class="bad">{events.parked} parked</span>' if events.parked else "0 parked"
    waits = [f"<p>{events.pending} pending, {parked}</p>"]
    for item in report.providers:
        name = _text(item.record.name)
        if held := parsed_time(item.facts.get(EVENTS_HELD_FACT) or ""):
            waits.append(
                f'<p class="bad">{name}: every event waits until {_when(held, now, missing="")}'
                " (a re-read failed: the API, or a setting to mend; the log's events_held says)</p>"
            )
        for wait in item.events_waiting_alone:
            until = _when(parsed_time(wait["until"] or ""), now, missing="?")
            what = "an object (its name is shown with the API token)"
            if not item.error_withheld:
                what = f"{_text(wait['kind'])} <code>{_text(object_path(wait))}</code>"
            waits.append(f"<p>{name}: {what} waits alone until {until} (its re-reads fail)</p>")
    return "<h3>Event inbox</h3>" + "".join(waits)


def _changes(changes: Sequence[ChangeRow] | None, now: float) -> str:
    heading = "<h3>Last changes</h3>"
    if changes is None:
        return (
            heading + '<p class="muted">Their entity refs are shown with the API token only: '
            "read <code>/changes</code> with <code>Authorization: Bearer &lt;token&gt;</code>.</p>"
        )
    if not changes:
        return heading + '<p class="muted">No changes recorded yet.</p>'
    rows = "".join(
        "<tr>"
        f'<td class="num">{change.seq}</td>'
        f'<td>{_time(change.at)} <span class="muted">{_text(relative(change.at, now))}</span></td>'
        f"<td>{_text(change.op)}</td>"
        f"<td><code>{_text(change.ref)}</code></td>"
        f"<td>{_text(change.provider)}</td>"
        "</tr>"
        for change in sorted(changes, key=lambda change: change.seq, reverse=True)
    )
    return (
        f'{heading}<p class="muted">Newest first.</p>'
        '<div class="scroll"><table><thead><tr><th class="num">seq</th><th>time</th>'
        "<th>op</th><th>ref</th><th>provider</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )
