"""The status page `serve` answers `GET /` with, rendered from reports built here.

The output is parsed with `html.parser`: every provider and its state appear, text from the
state file and the source is escaped (a hostile error stays text), nothing is loaded from
anywhere (no URL in any attribute, no @import or url() in the style), the page renders with no
providers at all, and blocked removals name the command that approves them.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

from choreo_ingest.clock import rfc3339
from choreo_ingest.config import Config, OpenChoreoConfig
from choreo_ingest.models import EVENTS_HELD_FACT, ProviderRecord, ProviderState
from choreo_ingest.reporting import ProviderStatus, StatusReport, reading, status_report
from choreo_ingest.server import page
from choreo_ingest.server.page import PAGE_CSP, relative, render_status_page
from choreo_ingest.simulator import World
from choreo_ingest.store import ChangeRow, InboxCounts

from fakes import FakeClock
from sim_support import PROVIDER, expected_refs, ingest_world

NOW = 1_800_000_000.0
HOSTILE = "<script>alert(1)</script>"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
LOADING_TAGS = {"script", "img", "iframe", "frame", "object", "embed", "audio", "video", "base"}
LOADING_TAGS |= {"form", "source", "track", "picture", "svg", "math", "applet", "portal"}


class Page(HTMLParser):
    """A parsed page: its tags and attributes, its text, and per <section> its text and its
    <dt>/<dd> pairs; `problems` lists tags closed out of order."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.open: list[str] = []
        self.problems: list[str] = []
        self.texts: list[str] = []
        self.style = ""
        self.title = ""
        self.sections: list[list[str]] = []
        self.fields: list[dict[str, str]] = []
        self._term = ""
        self._last = ""
        self.other: list[str] = []
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))
        if tag == "section":
            self.sections.append([])
            self.fields.append({})
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1:]}")
            return
        self.open.pop()

    def handle_decl(self, decl: str) -> None:
        if decl != "DOCTYPE html":
            self.other.append(decl)

    def handle_comment(self, data: str) -> None:
        self.other.append(data)

    def handle_pi(self, data: str) -> None:
        self.other.append(data)

    def unknown_decl(self, data: str) -> None:
        self.other.append(data)

    def handle_data(self, data: str) -> None:
        if "style" in self.open:
            self.style += data
            return
        if "title" in self.open:
            self.title += data
        self.texts.append(data)
        if "section" in self.open:
            self.sections[-1].append(data)
            fields = self.fields[-1]
            if "dt" in self.open:
                self._term += data
            elif "dd" in self.open:
                if self._term:
                    fields[self._term] = ""
                    self._last, self._term = self._term, ""
                fields[self._last] += data

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.texts).split())

    def section_text(self, index: int) -> str:
        return " ".join(" ".join(self.sections[index]).split())

    def field(self, index: int, name: str) -> str:
        return " ".join(self.fields[index][name].split())


def provider(
    name: str,
    state: ProviderState = ProviderState.RESTING,
    *,
    error: str | None = None,
    problems: list[str] | None = None,
    blocked: int = 0,
    reason: str | None = None,
    facts: dict[str, str] | None = None,
    active: int = 42,
) -> ProviderStatus:
    record = ProviderRecord(
        name=name,
        state=state,
        cycle_id=7,
        next_action_at=NOW + 30,
        attempts=2 if error else 0,
        last_error=error,
        last_burst_at=NOW - 90,
        cycle_started_at=NOW - 600,
        last_completed_at=NOW - 3 * 3600,
    )
    return ProviderStatus(
        record=record,
        next_action_at=record.next_action_at,
        active_entities=active,
        removals_blocked=blocked,
        removals_reason=reason,
        cursor_resets=3,
        health_problems=problems or [],
        facts=facts or {},
    )


def report(*providers: ProviderStatus, pending: int = 0, parked: int = 0) -> StatusReport:
    return StatusReport(
        state_file=Path("/var/lib/choreo-ingest/state.db"),
        schema_version=4,
        running=False,
        providers=list(providers),
        events=InboxCounts(pending=pending, parked=parked),
    )


def change(seq: int, ref: str = "component:default/orders", op: str = "upsert") -> ChangeRow:
    return ChangeRow(seq=seq, at=NOW - 100 + seq, op=op, ref=ref, provider="openchoreo")


def render(status: StatusReport, changes: list[ChangeRow] | None = None, now: float = NOW) -> Page:
    parsed = Page(render_status_page(status, changes or [], now))
    assert not parsed.problems, parsed.problems
    assert not parsed.open, f"never closed: {parsed.open}"
    return parsed


def test_every_provider_and_its_state_appear() -> None:
    states = list(ProviderState)
    parsed = render(report(*(provider(f"p-{s.value}", s) for s in states)))

    assert parsed.title == "choreo-ingest"
    assert len(parsed.sections) == len(states)
    for index, state in enumerate(states):
        heading = parsed.section_text(index)
        assert heading.startswith(f"p-{state.value} {state.value} healthy"), heading
    assert f"All {len(states)} providers healthy" in parsed.text
    assert "/var/lib/choreo-ingest/state.db" in parsed.text


def test_a_provider_shows_the_facts_status_prints() -> None:
    item = provider(
        "openchoreo",
        error="GET /namespaces: 503 Service Unavailable",
        problems=["6 consecutive failed bursts (maxAttempts 5)"],
        facts={"api": "v1", "problem": "the provider could not load"},
        active=1234,
    )
    parsed = render(report(item))

    fields = parsed.fields[0]
    assert parsed.field(0, "API") == "v1"
    assert parsed.field(0, "Cycle").startswith("#7, started ")
    assert parsed.field(0, "Cycle").endswith("(10 min ago)")
    assert parsed.field(0, "Next action").endswith("(in 30 s)")
    assert parsed.field(0, "Last burst").endswith("(90 s ago)")
    assert parsed.field(0, "Last completed cycle").endswith("(3 h ago)")
    assert parsed.field(0, "Attempts") == "2 failed in a row"
    assert parsed.field(0, "Active entities") == "1234"
    assert parsed.field(0, "Cursor resets") == "3"
    assert parsed.field(0, "Blocked removals") == "none"
    assert parsed.field(0, "Last error") == "GET /namespaces: 503 Service Unavailable"
    assert "problem" not in fields, "a problem fact is a health problem, not a field"
    text = parsed.section_text(0)
    assert text.startswith("openchoreo resting unhealthy 6 consecutive failed bursts")
    assert "1 of 1 providers unhealthy" in parsed.text
    times = [attrs["datetime"] for tag, attrs in parsed.tags if tag == "time"]
    assert "2027-01-15T08:00:30Z" in times  # NOW + 30, the next action


def test_the_facts_status_leaves_out_are_left_out_here_too() -> None:
    """Bookkeeping of the sources a cycle read: `status` shows `source` (for the current
    cycle) and none of the rest."""
    facts = {
        "api": "v1",
        "source": "https://b.test/api/v1",
        "sourceCycle": "7",
        "sourceBefore": "https://a.test/api/v1",
        "sourceBeforeCycle": "7",
    }
    fields = render(report(provider("openchoreo", facts=facts))).fields[0]

    assert "source" in fields
    assert not {"sourceCycle", "sourceBefore", "sourceBeforeCycle"} & set(fields)


def test_a_long_error_is_shortened() -> None:
    parsed = render(report(provider("openchoreo", error="x" * 5000)))

    shown = parsed.field(0, "Last error")
    assert len(shown) == page.ERROR_PAGE_CHARS
    assert shown.endswith("…")


def test_hostile_text_is_escaped_everywhere() -> None:
    item = provider(
        HOSTILE,
        error=f"GET /orgs: {HOSTILE} & more",
        problems=[f"`{HOSTILE}`"],
        blocked=3,
        reason=HOSTILE,
        facts={"api": HOSTILE, HOSTILE: '"quoted" <b>'},
    )
    status = report(item)
    status = StatusReport(
        Path(f"/srv/{HOSTILE}/state.db"), 4, True, status.providers, status.events
    )
    document = render_status_page(status, [change(1, ref=HOSTILE, op=HOSTILE)], NOW)
    parsed = render(status, [change(1, ref=HOSTILE, op=HOSTILE)])

    assert "<script" not in document.lower()
    assert "<b>" not in document
    assert not [tag for tag, _ in parsed.tags if tag in ("script", "b")]
    assert document.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 9
    assert parsed.field(0, "Last error") == f"GET /orgs: {HOSTILE} & more"
    assert parsed.field(0, HOSTILE) == '"quoted" <b>'
    assert parsed.section_text(0).startswith(f"{HOSTILE} resting unhealthy")
    assert f"/srv/{HOSTILE}/state.db" in parsed.text
    assert f"{HOSTILE} {HOSTILE} openchoreo" in parsed.text  # the change's op, ref, provider


def test_nothing_is_loaded_from_anywhere() -> None:
    item = provider(
        "openchoreo",
        error="GET https://api.example.com/api/v1/namespaces: connect failed //x",
        reason="see http://example.com/why",
        blocked=1,
        facts={"api": "v1"},
    )
    changes = [change(seq, ref=f"api:default/orders-{seq}") for seq in range(1, 21)]
    parsed = render(report(item), changes)

    assert not [tag for tag, _ in parsed.tags if tag in LOADING_TAGS]
    for tag, attrs in parsed.tags:
        for name, value in attrs.items():
            assert "//" not in value, f"<{tag} {name}={value!r}>"
            assert not re.match(r"\s*(https?|ftp|wss?|javascript|file):", value, re.I), value
            assert not name.startswith("on"), f"<{tag} {name}>: no scripts"
    links = [attrs for tag, attrs in parsed.tags if tag == "link"]
    assert links == [{"rel": "icon", "href": "data:,"}], "the favicon is empty, not fetched"
    refresh = [a for t, a in parsed.tags if t == "meta" and a.get("http-equiv") == "refresh"]
    assert refresh == [{"http-equiv": "refresh", "content": str(page.REFRESH_SECONDS)}]
    for loader in ("@import", "url(", "//", "expression(", "image-set("):
        assert loader not in parsed.style.lower()
    assert not parsed.other, "no comments, processing instructions or declarations but the doctype"
    # The URLs of the report are text, shown as text:
    assert "GET https://api.example.com/api/v1/namespaces" in parsed.field(0, "Last error")
    assert "see http://example.com/why" in parsed.field(0, "Blocked removals")


def test_the_policy_allows_nothing_but_the_inline_style() -> None:
    directives = dict(part.strip().split(" ", 1) for part in PAGE_CSP.split(";"))
    assert directives == {
        "default-src": "'none'",
        "style-src": "'unsafe-inline'",
        "img-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }


def test_it_reads_on_a_phone() -> None:
    parsed = render(report(provider("openchoreo")), [change(1)])

    metas = [attrs for tag, attrs in parsed.tags if tag == "meta"]
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in metas
    assert {"charset": "utf-8"} in metas
    tables = [i for i, (tag, _) in enumerate(parsed.tags) if tag == "table"]
    assert len(tables) == 1
    assert parsed.tags[tables[0] - 1] == ("div", {"class": "scroll"})
    assert ".scroll{overflow-x:auto" in parsed.style
    assert "@media (max-width:" in parsed.style


def test_it_renders_with_no_providers() -> None:
    parsed = render(report())

    assert parsed.title == "choreo-ingest"
    assert parsed.sections == []
    assert "No providers yet." in parsed.text
    assert "Event inbox 0 pending, 0 parked" in parsed.text
    assert "No changes recorded yet." in parsed.text
    assert not [tag for tag, _ in parsed.tags if tag == "table"]


def test_the_state_store_is_named_as_either_kind_is() -> None:
    """A PostgreSQL schema is no file (its URL shown as `status --json` shows it)."""
    for store in ("/var/lib/choreo-ingest/state.db", "postgresql://ingest:***@db.internal/bs"):
        parsed = render(replace(report(), state_file=store))

        assert f"State store {store} · schema 4" in parsed.text
        assert "file" not in parsed.text


def test_blocked_removals_show_how_to_approve_them() -> None:
    reason = "the cycle would remove 412 of 500 entities (82%), more than `maxRemovalRatio` 50%"
    item = provider(
        "openchoreo",
        blocked=412,
        reason=reason,
        problems=["412 removals blocked; see `choreo-ingest removals`"],
    )
    parsed = render(report(item, provider("other name")))

    shown = parsed.field(0, "Blocked removals")
    assert shown.startswith(f"412 blocked: {reason.replace('`', '')} list them with")
    assert "choreo-ingest removals approve openchoreo" in shown
    assert "choreo-ingest removals openchoreo" in shown
    codes = [attrs for tag, attrs in parsed.tags if tag == "code"]
    assert len(codes) >= 4  # the problem's command, the reason's key, list, approve
    assert parsed.field(1, "Blocked removals") == "none"
    assert "1 of 2 providers unhealthy" in parsed.text


def test_a_name_in_the_hint_is_quoted_for_the_shell() -> None:
    parsed = render(report(provider("odd name;rm", blocked=1, reason="guard")))

    assert "choreo-ingest removals approve 'odd name;rm'" in parsed.field(0, "Blocked removals")


def test_the_event_inbox_and_the_last_changes() -> None:
    changes = [change(seq, op="delete" if seq % 2 else "upsert") for seq in range(5, 25)]
    parsed = render(report(provider("openchoreo"), pending=17, parked=2), changes)

    assert "Event inbox 17 pending, 2 parked" in parsed.text
    rows = [attrs for tag, attrs in parsed.tags if tag == "tr"]
    assert len(rows) == 1 + 20
    assert "24 2027-01-15T07:58:44Z 76 s ago upsert component:default/orders openchoreo" in (
        parsed.text
    )
    newest_first = [int(match) for match in re.findall(r" (\d+) 2027-", parsed.text)]
    assert newest_first == list(range(24, 4, -1))


def test_events_held_and_objects_waiting_alone_are_said_and_their_names_withheld() -> None:
    """The page said only how many events were pending: not that every event waited, nor
    which object's own re-reads failed."""
    cart = {"kind": "Component", "namespace": "acme", "name": "cart", "until": rfc3339(NOW + 60)}
    held = provider("openchoreo", facts={EVENTS_HELD_FACT: rfc3339(NOW + 30)})
    alone = replace(provider("other"), events_waiting_alone=[cart])

    shown = render(report(held, alone, pending=3)).text
    withheld = render(report(replace(alone, error_withheld=True), pending=1)).text

    assert "openchoreo: every event waits until 2027-01-15T08:00:30Z (in 30 s)" in shown
    assert "other: Component acme/cart waits alone until 2027-01-15T08:01:00Z (in 60 s)" in shown
    assert "cart" not in withheld
    assert "other: an object (its name is shown with the API token) waits alone" in withheld


def test_changes_withheld_say_where_to_read_them() -> None:
    """None: the request lacks the API token (the route then reads no change at all)."""
    document = render_status_page(report(provider("openchoreo")), None, NOW)
    parsed = Page(document)

    assert not parsed.problems
    assert not [tag for tag, _ in parsed.tags if tag == "table"]
    assert (
        "Last changes Their entity refs are shown with the API token only: read /changes with "
        "Authorization: Bearer <token>"
    ) in parsed.text


def test_relative_times() -> None:
    assert relative(NOW, NOW) == "now"
    assert relative(NOW + 0.4, NOW) == "now"
    assert relative(NOW + 42, NOW) == "in 42 s"
    assert relative(NOW - 42, NOW) == "42 s ago"
    assert relative(NOW + 119, NOW) == "in 119 s"
    assert relative(NOW - 600, NOW) == "10 min ago"
    assert relative(NOW + 5 * 3600, NOW) == "in 5 h"
    assert relative(NOW - 3 * 86400, NOW) == "3 d ago"


def test_a_real_state_file(tmp_path: Path) -> None:
    """What the route renders: `status_report` and the change log of a completed cycle."""
    world = World.generate(2, 2, 3, seed=12)
    clock = FakeClock()
    state_path = tmp_path / "state.db"
    ingest_world(state_path, world, clock)
    config = Config(openchoreo=OpenChoreoConfig(base_url="http://127.0.0.1:9/api/v1"))
    now = clock.now() + 5
    status = status_report(state_path, config, now)
    with reading(state_path) as store:
        changes = store.changes(max(0, store.last_change_seq() - 20), 20)

    parsed = render(status, changes, now)

    assert parsed.section_text(0).startswith(f"{PROVIDER} resting healthy")
    assert parsed.field(0, "Active entities") == str(len(expected_refs(world)))
    assert parsed.field(0, "API") == "orgs"
    assert parsed.field(0, "Cycle").endswith("(5 s ago)")
    assert len([tag for tag, _ in parsed.tags if tag == "tr"]) == 1 + 20
    assert str(state_path) in parsed.text


def test_the_page_module_needs_only_the_standard_library() -> None:
    """page.py is imported by the route, but must not need starlette to be tested or reused."""
    tree = ast.parse(Path(page.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    ours = ("reporting", "store", "clock", "models", "event_retries")
    allowed = {f"choreo_ingest.{name}" for name in ours}
    for name in imported:
        top = name.split(".")[0]
        assert top in sys.stdlib_module_names or name in allowed or top == "__future__", name
