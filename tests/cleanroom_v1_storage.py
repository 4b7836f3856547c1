"""The clean-room OpenChoreo v1 fake's storage and list layers (cleanroom_v1.py says what the fake
is): Kubernetes storage at resource versions, with continue tokens that expire at compaction, and
OpenChoreo's project/component filter (`PreFilteredList`) and authorization filter
(`FilteredList`) with their own cursors.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from cleanroom_v1_http import b64, unb64


class ListError(Exception):
    """What the handler answers with 500 INTERNAL_ERROR (a bad or expired continue token)."""


class Storage:
    """Namespaced objects at resource versions, listed the Kubernetes way."""

    def __init__(self) -> None:
        self.rv = 1
        self.current: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.history: dict[int, dict[tuple[str, str], dict[str, dict[str, Any]]]] = {}
        self.compacted = 0
        self.lock = threading.RLock()

    def put(self, kind: str, namespace: str, obj: dict[str, Any]) -> None:
        with self.lock:
            self.rv += 1
            bucket = dict(self.current.get((kind, namespace), {}))
            bucket[obj["metadata"]["name"]] = obj
            self.current = {**self.current, (kind, namespace): bucket}

    def delete(self, kind: str, namespace: str, name: str) -> None:
        with self.lock:
            self.rv += 1
            bucket = dict(self.current.get((kind, namespace), {}))
            bucket.pop(name, None)
            self.current = {**self.current, (kind, namespace): bucket}

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            return self.current.get((kind, namespace), {}).get(name)

    def compact(self) -> None:
        """etcd compaction: every continue token issued so far expires."""
        with self.lock:
            self.rv += 1
            self.compacted = self.rv
            self.history = {}

    def list(
        self,
        kind: str,
        namespace: str,
        *,
        limit: int,
        cont: str,
        match: Callable[[dict[str, Any]], bool] = lambda _: True,
    ) -> tuple[list[dict[str, Any]], str]:
        with self.lock:
            if cont:
                try:
                    token = unb64(cont)
                    rv, start = int(token["rv"]), str(token["start"]).partition("/")[2]
                    assert token["v"] == "meta.k8s.io/v1"
                except Exception as error:
                    raise ListError(f"continue key is not valid: {error}") from None
                if rv < self.compacted or rv not in self.history:
                    raise ListError("The provided continue parameter is too old (410 Expired)")
            else:
                rv, start = self.rv, ""
                self.history.setdefault(rv, self.current)
            snapshot = self.history[rv].get((kind, namespace), {})
            names = sorted(n for n in snapshot if not start or n >= start)  # start: "<last>\0"
            selected = [snapshot[n] for n in names if match(snapshot[n])]
            page = selected[:limit]
            more = len(selected) > limit
            last = page[-1]["metadata"]["name"] + "\x00" if more else ""
            nxt = (
                b64({"v": "meta.k8s.io/v1", "rv": rv, "start": f"{namespace}/{last}"})
                if more
                else ""
            )
            return [copy.deepcopy(item) for item in page], nxt


def pre_filtered(
    fetch: Callable[[int, str], tuple[list[dict[str, Any]], str]],
    keep: Callable[[dict[str, Any]], bool],
    limit: int,
    cursor: str,
) -> tuple[list[dict[str, Any]], str]:
    """services.PreFilteredList: the project/component filter, cursor `{"c","is"}`."""
    state = unb64(cursor) if cursor else {}
    return _refilled(fetch, keep, limit, state.get("c", ""), state.get("is", 0), "is")


def authz_filtered(
    fetch: Callable[[int, str], tuple[list[dict[str, Any]], str]],
    allowed: Callable[[dict[str, Any]], bool],
    limit: int,
    cursor: str,
    *,
    refill: bool = True,
) -> tuple[list[dict[str, Any]], str]:
    """services.FilteredList: the authorization filter, cursor `{"c","s"}`, refilled pages.
    Without `refill` (a server that filters each storage page and answers it as it is), pages
    come short, or empty, with a cursor all the same."""
    try:
        state = unb64(cursor) if cursor else {}
    except Exception as error:
        raise ListError(f"invalid cursor: {error}") from None
    cont, skip = state.get("c", ""), state.get("s", 0)
    if not refill:
        items, nxt = fetch(limit, cont)
        return [item for item in items if allowed(item)], b64({"c": nxt}) if nxt else ""
    return _refilled(fetch, allowed, limit, cont, skip, "s")


def _refilled(
    fetch: Callable[[int, str], tuple[list[dict[str, Any]], str]],
    keep: Callable[[dict[str, Any]], bool],
    limit: int,
    cont: str,
    skip: int,
    skip_key: str,
) -> tuple[list[dict[str, Any]], str]:
    """The loop both filters share: storage pages from `cont`, its first `skip` items passed
    over, until `limit` items `keep` takes. The cursor after the last one taken is `{"c": cont,
    skip_key: items of that page consumed}`, or `{"c": next}` once the page is used up."""
    found: list[dict[str, Any]] = []
    while len(found) < limit:
        items, nxt = fetch(limit, cont)
        rest = items
        if skip:
            if skip >= len(items):
                skip -= len(items)
                if not nxt:
                    break
                cont = nxt
                continue
            rest, skip = items[skip:], 0
        for i, item in enumerate(rest):
            if not keep(item):
                continue
            found.append(item)
            if len(found) == limit:
                consumed = (len(items) - len(rest)) + i + 1
                out: dict[str, Any] = {"c": cont, skip_key: consumed}
                if consumed >= len(items):
                    out = {"c": nxt}
                    if not nxt:
                        return found, ""
                return found, b64({k: v for k, v in out.items() if v})
        if not nxt:
            break
        cont = nxt
    return found, ""
