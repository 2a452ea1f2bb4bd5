"""Work handed to a background thread, with a bound on how much of it may be in flight."""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class Background:
    """One worker thread; submit() first waits for the oldest job while `limit` jobs are in flight.

    The bound keeps memory in check: each job holds a category's score maps or a model's sums.
    Leaving the `with` block waits for every job; an error in a job is raised by submit(), wait_all()
    or the future, never lost.
    """

    def __init__(self, limit: int = 1):
        self.limit = limit
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._in_flight: deque[Future] = deque()

    def submit(self, job: Callable[..., Any], *args: Any) -> Future:
        while len(self._in_flight) >= self.limit:
            self._in_flight.popleft().result()
        future = self._pool.submit(job, *args)
        self._in_flight.append(future)
        return future

    def wait_all(self) -> None:
        while self._in_flight:
            self._in_flight.popleft().result()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.wait_all()
        finally:
            self._pool.shutdown(wait=True)
