"""Background work after a request was answered: a small thread pool that logs failures.

Nothing here is the only record of the work: the database holds every intent (a confirmed
grant, a reserved voucher row, a pending email), so work lost with a crashed process is
picked up by the reconciler.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import structlog

log = structlog.get_logger(__name__)


class Worker:
    """Runs jobs on a thread pool; a job's exception is logged with its traceback."""

    def __init__(self, *, max_workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="work")
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()

    def submit(self, name: str, job: Callable[[], object]) -> Future[None]:
        """Run `job` soon; `name` identifies it in the logs."""
        future = self._pool.submit(self._run, name, job)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    @property
    def backlog(self) -> int:
        """Jobs submitted and not finished yet."""
        with self._lock:
            return len(self._pending)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted so far (and those they submit) is done."""
        while True:
            with self._lock:
                pending = set(self._pending)
            if not pending:
                return True
            _done, not_done = wait(pending, timeout=timeout)
            if not_done:
                return False

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop taking jobs; with `wait`, let the running ones finish."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    @staticmethod
    def _run(name: str, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception:  # a failed job must not kill the worker thread
            log.exception("background job failed", job=name)
