from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from choreo_ingest.errors import DeadlineExceeded
from choreo_ingest.providers.openchoreo.ratelimit import RequestLimiter


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """Most of `times` inside any half-open window [t, t + window)."""
    ordered = sorted(times)
    return max(
        (
            sum(1 for later in ordered[i:] if later < first + window)
            for i, first in enumerate(ordered)
        ),
        default=0,
    )


def start_requests(limiter: RequestLimiter, clock, threads: int, each: int) -> list[float]:
    """`threads` workers each start `each` requests; returns every start time."""
    starts: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(each):
                with limiter.slot():
                    now = clock.monotonic()
                    with lock:
                        starts.append(now)
        except BaseException as error:  # surfaced in the main thread below
            errors.append(error)
        finally:
            clock.worker_finished()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=20)
    assert not errors, errors
    assert len(starts) == threads * each
    return starts


class TestRequestRate:
    @pytest.mark.parametrize(
        ("rate", "window", "per_window"),
        [(5.0, 1.0, 5), (2.5, 1.0, 2), (0.5, 2.0, 1)],
        ids=["whole-rate", "fractional-rate-rounds-down", "below-one-per-second"],
    )
    def test_threads_never_exceed_the_rate_in_any_window(
        self, stepping_clock, rate: float, window: float, per_window: int
    ) -> None:
        clock = stepping_clock(4)
        limiter = RequestLimiter(max_concurrent=4, max_per_second=rate, clock=clock)

        starts = start_requests(limiter, clock, threads=4, each=5)

        assert max_in_window(starts, window) == per_window
        assert max_in_window(starts, 1.0) <= max(rate, 1.0)
        # as fast as the cap allows: 20 starts fill ceil(20 / per_window) windows exactly
        assert max(starts) - min(starts) == pytest.approx(window * (20 // per_window - 1))

    def test_uncapped_rate_never_sleeps(self, stepping_clock) -> None:
        clock = stepping_clock(3)
        limiter = RequestLimiter(max_concurrent=3, max_per_second=None, clock=clock)

        starts = start_requests(limiter, clock, threads=3, each=10)

        assert set(starts) == {1000.0}

    def test_window_counts_from_when_a_request_ended(self, clock) -> None:
        limiter = RequestLimiter(max_concurrent=2, max_per_second=1.0, clock=clock)
        with limiter.slot():
            clock.advance(0.5)  # a slow response: the server may have seen it arrive late

        with limiter.slot():
            started = clock.monotonic()

        assert started == 1001.5

    def test_waits_for_the_request_a_window_back_to_end(self, clock) -> None:
        limiter = RequestLimiter(max_concurrent=2, max_per_second=1.0, clock=clock)
        first_started, release = threading.Event(), threading.Event()
        second_started: list[float] = []

        def first() -> None:
            with limiter.slot():
                first_started.set()
                release.wait(timeout=10)
                clock.advance(3)

        def second() -> None:
            with limiter.slot():
                second_started.append(clock.monotonic())

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        threads[0].start()
        assert first_started.wait(timeout=10)
        threads[1].start()
        threads[1].join(timeout=0.2)
        assert second_started == []  # still waiting for the first request to end
        release.set()
        for thread in threads:
            thread.join(timeout=10)

        assert second_started == [1004.0]

    def test_wait_past_the_deadline_raises_without_taking_a_place(self, clock) -> None:
        limiter = RequestLimiter(max_concurrent=1, max_per_second=1.0, clock=clock)
        with limiter.slot(deadline=clock.monotonic() + 10):
            pass

        with (
            pytest.raises(DeadlineExceeded, match="rate cap"),
            limiter.slot(deadline=clock.monotonic() + 0.5),
        ):
            pass

        assert clock.monotonic() == 1000.0  # gave up without sleeping
        clock.advance(1.0)
        with limiter.slot(deadline=clock.monotonic() + 0.5):  # the refused call took no place
            pass


class TestConcurrency:
    def test_never_more_than_max_concurrent_in_flight(self, clock) -> None:
        limiter = RequestLimiter(max_concurrent=3, max_per_second=None, clock=clock)
        state = threading.Condition()
        in_flight = most = 0
        release = threading.Event()

        def worker() -> None:
            nonlocal in_flight, most
            with limiter.slot():
                with state:
                    in_flight += 1
                    most = max(most, in_flight)
                    state.notify_all()
                release.wait(timeout=10)
                with state:
                    in_flight -= 1

        workers = [threading.Thread(target=worker) for _ in range(8)]
        for thread in workers:
            thread.start()
        with state:
            assert state.wait_for(lambda: in_flight == 3, timeout=10)
            # the other five are blocked: give them a moment to (wrongly) get in
            assert not state.wait_for(lambda: in_flight > 3, timeout=0.2)
        release.set()
        for thread in workers:
            thread.join(timeout=10)

        assert most == 3
        assert in_flight == 0

    def test_slot_is_released_when_the_request_fails(self, clock) -> None:
        limiter = RequestLimiter(max_concurrent=1, max_per_second=None, clock=clock)

        with pytest.raises(RuntimeError), limiter.slot():
            raise RuntimeError("boom")

        acquired = threading.Event()

        def take_the_slot() -> None:
            with limiter.slot():
                acquired.set()

        thread = threading.Thread(target=take_the_slot)
        thread.start()
        thread.join(timeout=5)
        assert acquired.is_set()


@pytest.mark.parametrize(
    ("max_concurrent", "max_per_second"),
    [(0, None), (1, 0.0), (1, -1.0), (1, float("inf"))],
    ids=["no-slots", "zero-rate", "negative-rate", "infinite-rate"],
)
def test_rejects_caps_that_cannot_work(clock, max_concurrent: int, max_per_second: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        RequestLimiter(max_concurrent=max_concurrent, max_per_second=max_per_second, clock=clock)
