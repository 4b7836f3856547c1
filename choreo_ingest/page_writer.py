"""Commits a burst's pages on one background thread, in order, while the next page is fetched.

Each page is still one transaction, committed in the order the provider returned the pages, so
the crash-safety argument of the single-threaded engine holds unchanged: a kill loses at most the
page in flight, and the next run resumes at the last committed cursor. What changes is only when
the main thread waits: page N's transaction (and the fsync of its COMMIT, which SQLite does
without holding the GIL) runs while the provider fetches page N+1.

The store is used by one thread at a time. The writer thread holds it from `submit` until the
commit ends; every other use during a burst waits for that first (`wait`): the next `submit`,
the provider's queue reads that are not settled yet (`StoreQueueReader(before_read=...)`), and
everything the engine does once the walk has ended (`__exit__`).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from choreo_ingest.logs import get_logger
from choreo_ingest.models import JSON, EntityIteratorResult, PageStats
from choreo_ingest.store import Store

log = get_logger("choreo_ingest.engine")


class PageWriter:
    """One burst's committer: `submit` pages in order, `wait` for the one in flight.

    `cursor`, `pages`, `upserted` and `unchanged` describe what is committed so far, never a page
    still in flight.
    """

    def __init__(self, store: Store, provider: str, cycle_id: int, cursor: JSON) -> None:
        self._store = store
        self._provider = provider
        self._cycle_id = cycle_id
        self.cursor = cursor
        self.pages = 0
        self.upserted = 0
        self.unchanged = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="page-writer")
        self._in_flight: tuple[Future[PageStats], EntityIteratorResult, str | None] | None = None

    def submit(self, page: EntityIteratorResult, cursor_text: str | None, now: float) -> None:
        """Commit `page` in the background, once the page before it is committed."""
        self.wait()
        future = self._executor.submit(
            self._store.commit_page, self._provider, self._cycle_id, page, cursor_text, now
        )
        self._in_flight = (future, page, cursor_text)

    def wait(self) -> None:
        """Block until the page in flight (if any) is committed; raise what its commit raised."""
        if self._in_flight is None:
            return
        (future, page, cursor_text), self._in_flight = self._in_flight, None
        stats = future.result()
        self.cursor = page.cursor
        self.pages += 1
        self.upserted += stats.upserted
        self.unchanged += stats.unchanged
        log_refused(self._provider, stats)
        log.debug(
            "page_committed",
            provider=self._provider,
            pages=self.pages,
            entities=len(page.entities),
            upserted=stats.upserted,
            cursor_bytes=len(cursor_text or ""),
        )

    def __enter__(self) -> PageWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.wait()
        finally:
            self._executor.shutdown(wait=True)


def log_refused(provider: str, stats: PageStats) -> None:
    """Say which of `provider`'s entities another provider wrote first (`PageStats.refused`):
    a warning, as two providers emit one ref only by mistake."""
    if not stats.refused:
        return
    log.warning(
        "entities_refused",
        provider=provider,
        count=len(stats.refused),
        refs=[ref for ref, _ in stats.refused[:5]],
        owned_by=sorted({owner for _, owner in stats.refused}),
        detail="another provider wrote them first: they stay its own until it no longer has "
        "them, or `choreo-ingest reset <it> --forget` removes them",
    )
