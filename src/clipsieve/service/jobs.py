"""Background jobs (videos) kept in the store's ``jobs`` table.

A job is ``queued`` when its upload is spooled to disk, ``running`` while a runner works on it,
then ``done`` (with its result), ``failed`` (with an error code and message) or ``cancelled``.
Jobs run one at a time on their own thread. The row is the truth: a finished job is still there
after a restart, and a job that was queued or running when the server stopped is marked
``failed`` with the code ``interrupted`` when the next server starts (or when this one stops
gracefully), never left "running" forever.

A runner is ``run(ctx) -> dict``: it reads ``ctx.path`` and ``ctx.options``, reports progress
with ``ctx.progress(fraction)`` (which raises :class:`JobCancelled` once the job is cancelled or
out of time), and returns the result object.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clipsieve.service.errors import ServiceError

__all__ = ["JobCancelled", "JobContext", "Jobs", "STATUSES"]

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})

_COLUMNS = ("id, kind, status, progress, input_name, input_sha256, input_size, options, result, "
            "error_code, error_message, created_at, started_at, finished_at")


class JobCancelled(Exception):
    """Raised by :meth:`JobContext.progress` when the job must stop."""

    def __init__(self, status: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class JobContext:
    """What a runner gets: the spooled input, the options, and a progress callback."""

    id: str
    path: str
    options: dict[str, Any]
    deadline: float
    _jobs: Jobs = field(repr=False)
    name: str = "upload"
    _last: float = field(default=0.0, repr=False)

    def progress(self, fraction: float) -> None:
        """Record progress (0..1, written at most every 0.2 s); stop if cancelled or late.

        Raises:
            JobCancelled: the job was cancelled, the server is stopping, or it ran out of time.
        """
        stop = self._jobs._stop_reason(self.id)
        if stop is not None:
            raise stop
        if time.monotonic() > self.deadline:
            raise JobCancelled("failed", "timeout", "the job ran past its time limit")
        now = time.monotonic()
        if now - self._last >= 0.2 or fraction >= 1.0:
            self._last = now
            self._jobs._set_progress(self.id, max(0.0, min(1.0, float(fraction))))

    @property
    def cancelled(self) -> bool:
        return self._jobs._stop_reason(self.id) is not None


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


class Jobs:
    """The job table, the spool folder and the job thread.

    Args:
        store: an opened :class:`clipsieve.store.Store` (migrated: it has ``jobs``).
        spool: folder for uploaded inputs while their job waits or runs.
        runners: job kind → runner.
        timeout_s: time limit of one job.
        on_finish: called with the final status of each job that ends.
    """

    def __init__(
        self,
        store: Any,
        spool: str | os.PathLike[str],
        runners: dict[str, Callable[[JobContext], dict[str, Any]]],
        *,
        timeout_s: float = 3600.0,
        on_finish: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.spool = Path(spool)
        self.runners = dict(runners)
        self.timeout_s = timeout_s
        self.on_finish = on_finish
        self._executor: ThreadPoolExecutor | None = None
        self._cancel: set[str] = set()
        self._stopping = False
        self._lock = threading.Lock()

    # -- life -------------------------------------------------------------------------------
    def recover(self) -> int:
        """Mark jobs left queued or running by a server that died as failed; returns how many."""
        n = self._fail_unfinished("the server stopped before the job finished")
        self.spool.mkdir(parents=True, exist_ok=True)
        for leftover in self.spool.glob("*.upload"):  # inputs of those jobs
            leftover.unlink(missing_ok=True)
        return n

    def start(self) -> None:
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs")

    def stop(self) -> None:
        """Stop: the running job stops at its next progress report; unfinished jobs fail."""
        self._stopping = True
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._fail_unfinished("the server stopped before the job finished")

    def _fail_unfinished(self, message: str) -> int:
        now = time.time()
        with self.store.transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET status='failed', error_code='interrupted', error_message=?, "
                "finished_at=? WHERE status IN ('queued', 'running')",
                (message, now),
            )
            return int(cur.rowcount or 0)

    # -- API --------------------------------------------------------------------------------
    def supports(self, kind: str) -> bool:
        return kind in self.runners

    def new_spool_path(self) -> Path:
        self.spool.mkdir(parents=True, exist_ok=True)
        return self.spool / f"{uuid.uuid4().hex}.upload"

    def submit(self, kind: str, path: Path, *, name: str, sha256: str, size: int,
               options: dict[str, Any]) -> dict[str, Any]:
        """Record a queued job for the spooled file ``path`` and queue it."""
        if self._executor is None or self._stopping:
            raise ServiceError(503, "unavailable", "the server is stopping",
                               {"Retry-After": "5"})
        job_id = uuid.uuid4().hex
        final = path.with_name(f"{job_id}.upload")
        os.replace(path, final)
        self.store.execute(
            "INSERT INTO jobs(id, kind, status, progress, input_name, input_sha256, input_size, "
            "options, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (job_id, kind, "queued", 0.0, name, sha256, size, json.dumps(options), time.time()),
        )
        self._executor.submit(self._run, job_id, kind, str(final), options, name)
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> dict[str, Any] | None:
        rows = self.store.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,))
        return self._row(rows[0]) if rows else None

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job.

        Raises:
            ServiceError: 404 no such job, 409 the job has already ended.
        """
        with self.store.transaction() as db:
            row = db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise ServiceError(404, "not_found", f"no job {job_id!r}")
            if row[0] in FINAL:
                raise ServiceError(409, "job_finished", f"job {job_id} has already ended ({row[0]})")
            db.execute(
                "UPDATE jobs SET status='cancelled', error_code='cancelled', "
                "error_message='cancelled by a DELETE request', finished_at=? WHERE id=?",
                (time.time(), job_id),
            )
        with self._lock:
            self._cancel.add(job_id)
        job = self.get(job_id)
        assert job is not None
        return job

    # -- the job thread ---------------------------------------------------------------------
    def _stop_reason(self, job_id: str) -> JobCancelled | None:
        with self._lock:
            if job_id in self._cancel:
                return JobCancelled("cancelled", "cancelled", "cancelled by a DELETE request")
        if self._stopping:
            return JobCancelled("failed", "interrupted",
                                "the server stopped before the job finished")
        return None

    def _set_progress(self, job_id: str, fraction: float) -> None:
        self.store.execute("UPDATE jobs SET progress=? WHERE id=? AND status='running'",
                           (fraction, job_id))

    def _run(self, job_id: str, kind: str, path: str, options: dict[str, Any],
             name: str = "upload") -> None:
        try:
            with self.store.transaction() as db:
                cur = db.execute(
                    "UPDATE jobs SET status='running', started_at=? WHERE id=? AND status='queued'",
                    (time.time(), job_id),
                )
                started = cur.rowcount == 1
            if not started:  # cancelled while queued
                return
            ctx = JobContext(job_id, path, options, time.monotonic() + self.timeout_s, self, name)
            status, result, code, message = "done", None, None, None
            try:
                ctx.progress(0.0)
                result = self.runners[kind](ctx)
            except JobCancelled as stop:
                status, code, message = stop.status, stop.code, stop.message
            except ServiceError as exc:
                status, code, message = "failed", exc.code, exc.message
            except Exception as exc:  # the job fails, the server goes on
                code = getattr(exc, "code", None) or "internal_error"
                status, message = "failed", f"{type(exc).__name__}: {exc}"
            self._finish(job_id, status, result, code, message)
        finally:
            Path(path).unlink(missing_ok=True)
            with self._lock:
                self._cancel.discard(job_id)

    def _finish(self, job_id: str, status: str, result: Any, code: str | None,
                message: str | None) -> None:
        from clipsieve.types import to_jsonable

        blob = json.dumps(to_jsonable(result), allow_nan=False) if result is not None else None
        with self.store.transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET status=?, progress=CASE WHEN ?='done' THEN 1.0 ELSE progress END,"
                " result=?, error_code=?, error_message=?, finished_at=? "
                "WHERE id=? AND status='running'",
                (status, status, blob, code, message, time.time(), job_id),
            )
            changed = cur.rowcount == 1
        if not changed:  # cancelled meanwhile: the cancellation stands
            status = "cancelled"
        if self.on_finish is not None:
            self.on_finish(status)

    @staticmethod
    def _row(row: tuple[Any, ...]) -> dict[str, Any]:
        (job_id, kind, status, progress, name, sha, size, options, result, code, message,
         created, started, finished) = row
        return {
            "id": job_id,
            "kind": kind,
            "status": status,
            "progress": round(float(progress), 4),
            "input": {"name": name, "sha256": sha, "size": size},
            "options": json.loads(options) if options else {},
            "created_at": _iso(created),
            "started_at": _iso(started),
            "finished_at": _iso(finished),
            "result": json.loads(result) if result else None,
            "error": {"code": code, "message": message} if code else None,
        }
