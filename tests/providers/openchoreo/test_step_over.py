"""The parts of stepping over a listing that need no server (`step_over`): which failures count,
the facts the walk leaves, and the cursor that carries a cycle's listings stepped over."""

from __future__ import annotations

import json

import pytest

from choreo_ingest.errors import (
    CursorExpired,
    DeadlineExceeded,
    PermanentError,
    ProviderError,
    TokenUnavailable,
    TransientError,
)
from choreo_ingest.models import SKIPPED_FACT, SKIPPED_PATHS_FACT, QueuedItem
from choreo_ingest.providers.openchoreo.api_v1 import V1
from choreo_ingest.providers.openchoreo.step_over import (
    fails_on_content,
    remembered,
    skipped_facts,
    step_over,
)
from choreo_ingest.providers.openchoreo.traversal_cursor import (
    SKIPS_KEPT,
    TraversalCursor,
    restart_listing,
)

PATH = "/namespaces/shop/components"


def exhausted(error: TransientError) -> TransientError:
    """`error` as the client raises it once every attempt answered so."""
    error.exhausted = True
    return error


def get(kind: type[ProviderError], status: int | None, path: str = PATH) -> ProviderError:
    return kind(f"GET {path}: HTTP {status}", method="GET", path=path, status=status)


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (exhausted(TransientError("GET", method="GET", path=PATH, status=500)), True),
        (get(TransientError, 500), False),
        (get(ProviderError, 500), True),
        (exhausted(TransientError("GET", method="GET", path=PATH, status=502)), False),
        (exhausted(TransientError("GET", method="GET", path=PATH, status=503)), False),
        (get(DeadlineExceeded, 500), False),
        (exhausted(TransientError("GET", method="GET", path=PATH, code="TIMEOUT")), False),
        (get(PermanentError, 400), False),
        (
            exhausted(TokenUnavailable("POST", method="POST", path="/oauth2/token", status=500)),
            False,
        ),
        (exhausted(TokenUnavailable("GET", method="GET", path=PATH, status=500)), False),
        (get(ProviderError, 500, "/namespaces/other/components"), False),
        (get(CursorExpired, 500), True),
    ],
    ids=[
        "500-every-attempt",
        "500-cut-short",
        "fresh-cursors",
        "502",
        "503",
        "deadline",
        "timeout",
        "400",
        "token-endpoint",
        "token-for-the-listing",
        "another-listing",
        "500-on-a-cursor",
    ],
)
def test_only_a_500_to_the_listing_s_own_request_counts_as_failing_on_content(
    error: ProviderError, counts: bool
) -> None:
    assert fails_on_content(error, PATH) is counts


def test_no_listing_stepped_over_removes_both_facts() -> None:
    assert skipped_facts([], 0) == {SKIPPED_FACT: None, SKIPPED_PATHS_FACT: None}


def test_the_problem_names_five_listings_and_counts_the_rest() -> None:
    paths = [f"/namespaces/ns-{n}/workloads" for n in range(7)]

    facts = skipped_facts(paths, 3)

    problem = facts[SKIPPED_FACT] or ""
    assert problem.startswith("the walk stepped over 10 listings the server failed with HTTP 500")
    assert "what they held is kept" in problem
    assert "GET /namespaces/ns-4/workloads and 5 more;" in problem
    assert "ns-5" not in problem
    assert json.loads(facts[SKIPPED_PATHS_FACT] or "") == paths


def test_one_listing_is_named_alone() -> None:
    problem = skipped_facts([PATH], 0)[SKIPPED_FACT] or ""

    assert problem.startswith(
        f"the walk stepped over 1 listing the server failed with HTTP 500 again and again: "
        f"GET {PATH}; what it held is kept"
    )


def test_the_paths_remembered_are_bounded_and_the_rest_counted() -> None:
    paths = [f"/namespaces/ns-{n}/projects" for n in range(SKIPS_KEPT + 20)]

    facts = skipped_facts(paths, 0)

    assert len(json.loads(facts[SKIPPED_PATHS_FACT] or "")) == SKIPS_KEPT
    assert f"stepped over {SKIPS_KEPT + 20} listings" in (facts[SKIPPED_FACT] or "")


@pytest.mark.parametrize(
    ("stored", "paths"),
    [
        (None, []),
        ("not json", []),
        ('{"a": 1}', []),
        (json.dumps([PATH, 3, None]), [PATH]),
    ],
    ids=["none", "not-json", "not-a-list", "mixed"],
)
def test_an_unreadable_paths_fact_remembers_what_it_can(
    stored: str | None, paths: list[str]
) -> None:
    known = {} if stored is None else {SKIPPED_PATHS_FACT: stored}

    assert remembered(known) == paths


def test_a_cursor_carries_the_listings_stepped_over_and_counts_past_its_bound() -> None:
    state = TraversalCursor(api="v1")
    for n in range(SKIPS_KEPT + 2):
        state.note_skip(f"/namespaces/ns-{n}/components")

    again = TraversalCursor.from_json(json.loads(json.dumps(state.to_json(V1))))

    assert again.skipped == state.skipped
    assert len(again.skipped) == SKIPS_KEPT
    assert again.skipped_count == SKIPS_KEPT + 2


def test_a_cursor_that_stepped_over_nothing_says_nothing_of_it() -> None:
    written = TraversalCursor(api="v1").to_json(V1)

    assert "skipped" not in written
    assert "skippedCount" not in written
    assert TraversalCursor.from_json(written).skipped == []


def test_a_cursor_whose_listings_are_not_texts_is_refused() -> None:
    written = {**TraversalCursor(api="v1").to_json(V1), "skipped": [PATH, 7]}

    with pytest.raises(PermanentError, match="skipped is not a list of strings"):
        TraversalCursor.from_json(written)


def test_a_page_that_fails_again_at_the_same_place_counts_up_and_one_that_answers_ends_it() -> None:
    state = TraversalCursor(api="v1", head="svc-040")  # the page after the one from svc-040
    state.note_failure(PATH)
    state.head = None  # the listing restarts, and comes back to the same place
    assert state.failures_at(PATH) == 0
    state.passed(PATH)
    state.head = "svc-040"
    state.note_failure(PATH)

    again = TraversalCursor.from_json(json.loads(json.dumps(state.to_json(V1))))

    assert again.failures_at(PATH) == 2
    assert again.failures_at("/namespaces/other/components") == 0
    again.note_failure("/namespaces/other/components")  # another listing starts its own count
    assert again.failures_at("/namespaces/other/components") == 1
    state.passed(PATH)  # the page after svc-040's answered
    assert state.failing is None
    assert "failing" not in state.to_json(V1)


def test_a_page_after_one_without_items_is_not_counted() -> None:
    state = TraversalCursor(api="v1", head=None)
    state.note_failure(PATH)

    assert state.failing is None
    assert state.failures_at(PATH) == 0


def test_a_listing_stepped_over_before_fails_the_burst_at_its_first_failure() -> None:
    """Its place failed once: past the limit of 1 (`fails_at_most`), said in the singular."""
    state = TraversalCursor(api="v1", head="svc-040", api_cursor="c2")
    expired = CursorExpired("GET: HTTP 500", method="GET", path=PATH, status=500)

    with pytest.raises(ProviderError) as raised:
        restart_listing(state, {}, {}, None, PATH, expired, fresh=True, fails_at_most=1)

    assert "answered HTTP 500 1 time in a row, on cursors just handed out" in str(raised.value)
    assert raised.value.path == PATH
    assert raised.value.status == 500


def test_a_failure_on_a_stored_cursor_is_not_counted() -> None:
    """A cursor stored by an earlier burst may have expired: it restarts the listing."""
    state = TraversalCursor(api="v1", head="svc-040", api_cursor="c2")
    expired = CursorExpired("GET: HTTP 500", method="GET", path=PATH, status=500)

    restart_listing(state, {}, {}, None, PATH, expired, fresh=False, fails_at_most=1)

    assert state.failing is None
    assert state.api_cursor is None


def test_a_listing_stepped_over_ends_its_restarts_and_their_problem() -> None:
    """Stepped over, a listing has come to its end as far as its restarts go: the next one
    starts from none, and the problem they made goes with them."""
    state = TraversalCursor(api="v1", phase=2, restarts=3, api_cursor="c")
    facts: dict[str, str | None] = {"problem": "the workloads listing restarted 3 times"}
    item = QueuedItem(0, "shop", {"namespace": "shop"})

    step_over(state, V1, item, PATH, get(ProviderError, 500), facts, {}, "openchoreo")

    assert (state.restarts, state.api_cursor) == (0, None)
    assert facts["problem"] is None
