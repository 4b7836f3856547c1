"""The heap is trimmed every few pages where glibc offers it, and never fails where it does not."""

from __future__ import annotations

import sys

import pytest

from choreo_ingest.heap import HeapTrimmer, malloc_trim


def test_trims_after_every_nth_page() -> None:
    trims: list[int] = []
    trimmer = HeapTrimmer(every=3, trim=lambda: trims.append(1))

    for _ in range(7):
        trimmer.page_done()

    assert len(trims) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux's")
def test_malloc_trim_is_callable_on_linux() -> None:
    trim = malloc_trim()
    if trim is None:
        pytest.skip("this C library has no malloc_trim (musl)")
    assert trim() in (0, 1)
