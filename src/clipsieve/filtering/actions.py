"""Journalled file actions (copy, move, link), crash recovery and undo.

No file is ever lost or overwritten:

* Every action has a row in the store's ``journal`` table, committed **before** the file
  system is touched (state ``started``, with the source, the private temporary name and the
  method) and again **after** (``done``, ``failed`` or ``rolled_back``). During a run the
  store uses ``PRAGMA synchronous=FULL``, so each journal commit is on disk before the next
  step.
* Bytes first reach a private temporary name in the destination folder,
  ``.clipsieve-RUN-TOKEN.part``. A move within one file system is an atomic ``os.replace``
  of the source onto that name (method ``rename``); across file systems (or for ``copy``) the
  bytes are copied, ``fsync``-ed, re-read and checked against the source's sha256 (method
  ``copy``), and the source is unlinked only after the copy is published.
* Publishing never overwrites: the final name is written to the journal, then
  ``os.link(tmp, name)`` creates it only if it does not exist (``FileExistsError`` → the next
  collision-safe name, ``photo_1.jpg``, ``photo_2.jpg``…), then the temporary name is
  removed. On a file system without hard links the temporary file is renamed onto a name
  checked to be free.

**Recovery.** A run killed at any moment leaves at most one row per process in state
``started``. :func:`recover` (run at the start of every ``filter`` and ``undo``) completes or
rolls it back by looking at what exists — source *S*, temporary file *T*, journalled
destination *D* — and never deletes the last copy of anything:

=====================  =======================================================================
situation              what recovery does
=====================  =======================================================================
T and D same inode     the publish happened: remove T, then finish (below)
T, S, method copy      T is an unverified copy: delete it; the source is intact → rolled back
T, S, method rename    T is the original and S is a newcomer: publish T → done
T, no S                T is the only copy (the renamed original, or a verified copy): publish
                       it → done (a copy that fails its hash check is kept and reported)
no T, D exists         published: for a move whose source still exists (cross-device copy),
                       unlink S once D's bytes match S's → done
no T, no D, S          nothing happened → rolled back
no T, no D, no S       the file was removed by someone else → failed (reported)
=====================  =======================================================================

A run is one process holding an exclusive lock on ``STORE.lock`` (``flock``), so recovery
never races a live run. :func:`undo_run` moves a move run's files back to where they came
from (collision-safe too), or deletes a copy or link run's copies once their originals are
confirmed intact; it is itself a journalled run, so it can be interrupted and re-run.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import socket
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipsieve.errors import EXIT_FATAL, ClipsieveError
from clipsieve.paths import clean_text, from_db, to_db
from clipsieve.store import Store

#: File actions a filter run can take.
ACTIONS: tuple[str, ...] = ("copy", "move", "link", "none")

PART_PREFIX = ".clipsieve-"
PART_SUFFIX = ".part"
_CHUNK = 1 << 20
_NO_HARDLINK = {
    errno.EPERM,
    errno.EOPNOTSUPP,
    errno.ENOTSUP,
    errno.EMLINK,
    errno.ENOSYS,
    errno.EXDEV,
    errno.EACCES,
}

_WRITE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}

#: Audit event raised at each durable step of an action, with the step's name
#: (``journal_started``, ``copy_written``, ``tmp_ready``, ``dest_journaled``, ``linked``,
#: ``published``, ``source_removed``): :func:`sys.addaudithook` can trace a run, or stop it
#: between any two steps (the crash-recovery tests do).
AUDIT_EVENT = "clipsieve.filter.step"


def _checkpoint(name: str) -> None:
    sys.audit(AUDIT_EVENT, name)


class FilterError(ClipsieveError):
    """A filter or undo run cannot start: bad paths, unknown run, store locked."""

    exit_code = EXIT_FATAL
    code = "filter_error"


class _Fail(Exception):
    """A per-file failure with a message meant for the user."""


@dataclass
class ActionResult:
    """The outcome of one file action.

    Attributes:
        src: the source path (absolute).
        dest: where the file is now (absolute), or ``None``.
        state: ``done``, ``failed`` or ``rolled_back``.
        error: why it failed, or ``None``.
        journal_id: its row in the journal.
    """

    src: str
    dest: str | None
    state: str
    error: str | None = None
    journal_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.state == "done"


# -- the journal ------------------------------------------------------------------------------


class Journal:
    """Runs and journal rows in the store (tables of migration 2).

    Args:
        store: an open :class:`~clipsieve.store.Store`.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def durable(self) -> None:
        """Make every following commit reach the disk before returning."""
        self.store.execute("PRAGMA synchronous=FULL")

    def start_run(
        self, kind: str, action: str, args: Mapping[str, Any], undo_of: str | None = None
    ) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        self.store.execute(
            "INSERT INTO runs(id,kind,action,status,args,undo_of,pid,host,started_at) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (
                run_id,
                kind,
                action,
                "running",
                json.dumps(dict(args), default=str),
                undo_of,
                os.getpid(),
                socket.gethostname(),
                time.time(),
            ),
        )
        return run_id

    def finish_run(
        self, run_id: str, status: str, summary: Mapping[str, Any] | None = None
    ) -> None:
        self.store.execute(
            "UPDATE runs SET status=?, summary=?, finished_at=? WHERE id=?",
            (status, json.dumps(dict(summary or {})), time.time(), run_id),
        )

    def set_run_status(self, run_id: str, status: str) -> None:
        self.store.execute("UPDATE runs SET status=? WHERE id=?", (status, run_id))

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._dicts("SELECT * FROM runs WHERE id=?", (run_id,))
        return rows[0] if rows else None

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent runs, newest first, each with its per-state journal counts."""
        out = self._dicts("SELECT * FROM runs ORDER BY started_at DESC LIMIT ?", (limit,))
        for r in out:
            r["counts"] = dict(
                self.store.execute(
                    "SELECT state, COUNT(*) FROM journal WHERE run_id=? GROUP BY state", (r["id"],)
                )
            )
        return out

    def begin(
        self,
        run_id: str,
        action: str,
        src: str,
        *,
        decision: str | None = None,
        dest_root: str | None = None,
        rel: str | None = None,
        method: str | None = None,
        tmp: str | None = None,
        sha256: str | None = None,
        size: int | None = None,
        undo_of: int | None = None,
    ) -> int:
        with self.store.transaction() as db:
            cur = db.execute(
                "INSERT INTO journal(run_id,action,decision,src,dest_root,rel,method,tmp,sha256,"
                "size,state,undo_of,started_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    action,
                    decision,
                    _db(src),
                    _db(dest_root),
                    _db(rel),
                    method,
                    _db(tmp),
                    sha256,
                    size,
                    "started",
                    undo_of,
                    time.time(),
                ),
            )
            return int(cur.lastrowid or 0)

    def set_dest(self, jid: int, dest: str) -> None:
        self.store.execute("UPDATE journal SET dest=? WHERE id=?", (_db(dest), jid))

    def end(
        self, jid: int, state: str, *, dest: str | None = None, error: str | None = None
    ) -> None:
        self.store.execute(
            "UPDATE journal SET state=?, dest=COALESCE(?, dest), error=?, finished_at=? WHERE id=?",
            (state, _db(dest), clean_text(error) if error else error, time.time(), jid),
        )

    def rows(self, run_id: str) -> list[dict[str, Any]]:
        return self._dicts("SELECT * FROM journal WHERE run_id=? ORDER BY id", (run_id,))

    def open_rows(self) -> list[dict[str, Any]]:
        return self._dicts("SELECT * FROM journal WHERE state='started' ORDER BY id", ())

    def undone_ids(self, run_id: str) -> set[int]:
        """Journal ids of ``run_id`` that a finished undo already reversed."""
        return {
            r[0]
            for r in self.store.execute(
                "SELECT u.undo_of FROM journal u JOIN journal o ON o.id=u.undo_of "
                "WHERE o.run_id=? AND u.state='done'",
                (run_id,),
            )
        }

    def _dicts(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        return [
            {k: from_db(v) if k in _PATH_COLUMNS else v for k, v in row.items()}
            for row in self.store.query(sql, params)
        ]


#: Journal columns that hold paths (a name that is not UTF-8 is stored as a BLOB).
_PATH_COLUMNS = frozenset({"src", "dest_root", "rel", "tmp", "dest"})


def _db(path: str | None) -> str | bytes | None:
    return None if path is None else to_db(path)


# -- locking ----------------------------------------------------------------------------------


@contextlib.contextmanager
def run_lock(store: Store) -> Iterator[None]:
    """Hold the store's exclusive run lock (``STORE.lock``) for one filter or undo run.

    Raises:
        FilterError: another run holds it.
    """
    if store.path == ":memory:":
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process lock
        yield
        return
    with open(store.path + ".lock", "a+") as fh:  # the lock goes with the file
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FilterError(
                f"another clipsieve filter or undo is running on the store {store.path}; "
                "wait for it to finish"
            ) from None
        yield


# -- small file-system helpers -----------------------------------------------------------------


def sha256_file(path: str) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _same_inode(a: str, b: str) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _same_device(path: str, folder: str) -> bool:
    try:
        return os.lstat(path).st_dev == os.stat(folder).st_dev
    except OSError:
        return False


def collision_names(folder: str, name: str) -> Iterator[str]:
    """``folder/name``, then ``folder/stem_1.ext``, ``folder/stem_2.ext``…"""
    stem, ext = os.path.splitext(name)
    if stem == "" and ext:  # ".hidden"
        stem, ext = ext, ""
    yield os.path.join(folder, name)
    n = 1
    while True:
        yield os.path.join(folder, f"{stem}_{n}{ext}")
        n += 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _Fail):
        return str(exc)
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or type(exc).__name__}{where}"
    return f"{type(exc).__name__}: {exc}"


def _copy_verified(src: str, tmp: str, expected: str | None) -> str:
    """Copy ``src`` to the new file ``tmp`` (never an existing one), fsync, verify the bytes.

    Returns:
        The sha256 of the bytes copied.

    Raises:
        _Fail: the copy does not match what was read, or the source changed since it was
            scanned; ``tmp`` is removed.
    """
    h = hashlib.sha256()
    try:
        with open(src, "rb") as fi, open(tmp, "xb") as fo:
            while chunk := fi.read(_CHUNK):
                h.update(chunk)
                fo.write(chunk)
            fo.flush()
            os.fsync(fo.fileno())
            with contextlib.suppress(AttributeError, OSError):
                os.posix_fadvise(fo.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        with contextlib.suppress(OSError):
            st = os.stat(src)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
        digest = h.hexdigest()
        _checkpoint("copy_written")
        if sha256_file(tmp) != digest:
            raise _Fail("the copy's bytes differ from the source's (storage error?)")
        if expected and digest != expected:
            raise _Fail(
                "the file changed since it was scanned (sha256 differs); "
                "re-run to judge its new content"
            )
        return digest
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- actions ----------------------------------------------------------------------------------


class FileActions:
    """Perform journalled file actions for one run.

    Args:
        journal: the store's journal.
        run_id: the run the actions belong to.
        action: ``copy``, ``move`` or ``link`` (``delete`` for undo runs).
    """

    def __init__(self, journal: Journal, run_id: str, action: str) -> None:
        if action not in ("copy", "move", "link", "delete"):
            raise FilterError(f"unknown action {action!r}")
        self.journal = journal
        self.run_id = run_id
        self.action = action

    def apply(
        self,
        src: str,
        dest_root: str,
        rel: str,
        *,
        decision: str | None = None,
        sha256: str | None = None,
        undo_of: int | None = None,
    ) -> ActionResult:
        """Copy, move or link ``src`` to ``dest_root/rel`` (a collision-safe variant of it).

        Per-file problems (vanished source, read-only destination, changed content) come back
        as a ``failed`` result, with the source left where it was.
        """
        src = os.path.abspath(src)
        dest_root = os.path.abspath(dest_root)
        if self.action == "link":
            return self._link(src, dest_root, rel, decision, undo_of)
        return self._transfer(src, dest_root, rel, decision, sha256, undo_of)

    def _transfer(
        self,
        src: str,
        dest_root: str,
        rel: str,
        decision: str | None,
        sha256: str | None,
        undo_of: int | None,
    ) -> ActionResult:
        target_dir = os.path.join(dest_root, os.path.dirname(rel))
        name = os.path.basename(rel)
        tmp = os.path.join(
            target_dir, f"{PART_PREFIX}{self.run_id}-{secrets.token_hex(4)}{PART_SUFFIX}"
        )
        pre_error: str | None = None
        method = "copy"
        size = None
        try:
            st = os.lstat(src)
            size = st.st_size
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                pre_error = "not a regular file"
            else:
                os.makedirs(target_dir, exist_ok=True)
                if self.action == "move" and _same_device(src, target_dir):
                    method = "rename"
        except FileNotFoundError:
            pre_error = "the file vanished before it could be handled"
        except OSError as exc:
            pre_error = f"cannot prepare {target_dir}: {_describe(exc)}"
        jid = self.journal.begin(
            self.run_id,
            self.action,
            src,
            decision=decision,
            dest_root=dest_root,
            rel=rel,
            method=method,
            tmp=tmp,
            sha256=sha256,
            size=size,
            undo_of=undo_of,
        )
        if pre_error:
            self.journal.end(jid, "failed", error=pre_error)
            return ActionResult(src, None, "failed", pre_error, jid)
        _checkpoint("journal_started")
        stage = "start"
        dest: str | None = None
        try:
            if method == "rename":
                try:
                    os.replace(src, tmp)
                    stage = "renamed"
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    method = "copy"
                    self.journal.store.execute(
                        "UPDATE journal SET method='copy' WHERE id=?", (jid,)
                    )
            if method == "copy":
                _copy_verified(src, tmp, sha256)
                stage = "copied"
            _checkpoint("tmp_ready")
            dest = publish(self.journal, jid, tmp, target_dir, name)
            stage = "published"
            _checkpoint("published")
            if self.action == "move" and method == "copy":
                os.unlink(src)
                _fsync_dir(os.path.dirname(src))
                _checkpoint("source_removed")
            self.journal.end(jid, "done", dest=dest)
            return ActionResult(src, dest, "done", None, jid)
        except FileNotFoundError as exc:
            if stage == "start" and exc.filename in (src, None):
                msg = "the file vanished before it could be handled"
            else:
                msg = _describe(exc)
            return self._undo_partial(jid, src, tmp, dest, method, stage, msg)
        except OSError as exc:
            msg = _describe(exc)
            if exc.errno in _WRITE_ERRORS and stage == "start":
                msg = f"cannot write into {target_dir}: {exc.strerror}"
            return self._undo_partial(jid, src, tmp, dest, method, stage, msg)
        except Exception as exc:  # noqa: BLE001 - one file's failure never stops the run
            return self._undo_partial(jid, src, tmp, dest, method, stage, _describe(exc))

    def _undo_partial(
        self, jid: int, src: str, tmp: str, dest: str | None, method: str, stage: str, msg: str
    ) -> ActionResult:
        """After an error inside an action, put things back (or leave them for recovery)."""
        try:
            if stage == "renamed":  # tmp holds the original
                if not os.path.lexists(src):
                    os.replace(tmp, src)
                    self.journal.end(jid, "failed", error=f"{msg}; the file was left in place")
                    return ActionResult(src, src, "failed", msg, jid)
                raise _Fail("the source name was taken meanwhile")
            if stage == "published" and dest is not None:
                # a cross-device move whose source could not be removed: drop our copy
                if (
                    os.path.lexists(src)
                    and os.path.lexists(dest)
                    and sha256_file(src) == sha256_file(dest)
                ):
                    os.unlink(dest)
                    _fsync_dir(os.path.dirname(dest))
                    self.journal.end(
                        jid,
                        "failed",
                        error=f"cannot remove the source ({msg}); "
                        "the copy was removed and the file left in place",
                    )
                    return ActionResult(src, src, "failed", msg, jid)
                raise _Fail("cannot restore a consistent state")
            # nothing published; a copy in tmp (if any) was removed by _copy_verified
            with contextlib.suppress(FileNotFoundError):
                if method == "copy" and os.path.lexists(tmp):
                    os.unlink(tmp)
            self.journal.end(jid, "failed", error=msg)
            return ActionResult(src, src if os.path.lexists(src) else None, "failed", msg, jid)
        except Exception as exc2:  # noqa: BLE001 - recovery will look at it again
            note = f"{msg}; left for recovery ({_describe(exc2)})"
            self.journal.store.execute("UPDATE journal SET error=? WHERE id=?", (clean_text(note), jid))
            return ActionResult(src, None, "failed", note, jid)

    def _link(
        self, src: str, dest_root: str, rel: str, decision: str | None, undo_of: int | None
    ) -> ActionResult:
        target_dir = os.path.join(dest_root, os.path.dirname(rel))
        name = os.path.basename(rel)
        jid = self.journal.begin(
            self.run_id,
            "link",
            src,
            decision=decision,
            dest_root=dest_root,
            rel=rel,
            undo_of=undo_of,
        )
        try:
            if not os.path.exists(src):
                raise _Fail("the file vanished before it could be handled")
            os.makedirs(target_dir, exist_ok=True)
            hard = _same_device(src, target_dir)
            for cand in collision_names(target_dir, name):
                if os.path.lexists(cand):
                    continue
                self.journal.set_dest(jid, cand)
                try:
                    if hard:
                        try:
                            os.link(src, cand)
                        except OSError as exc:
                            if exc.errno == errno.EEXIST or exc.errno not in _NO_HARDLINK:
                                raise
                            os.symlink(src, cand)
                    else:
                        os.symlink(src, cand)
                except FileExistsError:
                    continue
                _fsync_dir(target_dir)
                self.journal.end(jid, "done", dest=cand)
                return ActionResult(src, cand, "done", None, jid)
            raise AssertionError("unreachable")  # pragma: no cover
        except Exception as exc:  # noqa: BLE001 - recorded as this file's failure
            msg = _describe(exc)
            self.journal.end(jid, "failed", error=msg)
            return ActionResult(src, None, "failed", msg, jid)

    def delete_copy(
        self, path: str, original: str, *, sha256: str | None, undo_of: int | None = None
    ) -> ActionResult:
        """Delete a copy or link ``path`` made by a run, only while ``original`` is intact."""
        jid = self.journal.begin(
            self.run_id, "delete", path, dest_root=None, rel=None, sha256=sha256, undo_of=undo_of
        )
        try:
            if not os.path.lexists(path):
                raise _Fail(f"{path} no longer exists")
            if os.path.islink(path):
                if os.readlink(path) != original:
                    raise _Fail(f"{path} is no longer the link this run made")
            elif not _same_inode(path, original):
                if not os.path.exists(original):
                    raise _Fail(f"the original {original} is gone; the copy is kept")
                if sha256_file(path) != sha256_file(original):
                    raise _Fail("the copy and the original differ; both are kept")
            os.unlink(path)
            _fsync_dir(os.path.dirname(path))
            self.journal.end(jid, "done")
            return ActionResult(path, None, "done", None, jid)
        except Exception as exc:  # noqa: BLE001 - recorded as this file's failure
            msg = _describe(exc)
            self.journal.end(jid, "failed", error=msg)
            return ActionResult(path, path, "failed", msg, jid)


def publish(journal: Journal, jid: int, tmp: str, folder: str, name: str) -> str:
    """Give ``tmp`` its final collision-safe name in ``folder``; never overwrites.

    Each candidate name is journalled before it is tried, so recovery knows where to look.
    """
    for cand in collision_names(folder, name):
        if os.path.lexists(cand):
            continue
        journal.set_dest(jid, cand)
        _checkpoint("dest_journaled")
        try:
            os.link(tmp, cand, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _NO_HARDLINK:
                raise
            if os.path.lexists(cand):  # no hard links here: rename onto a free name
                continue
            os.replace(tmp, cand)
            _fsync_dir(folder)
            return cand
        _checkpoint("linked")
        os.unlink(tmp)
        _fsync_dir(folder)
        return cand
    raise AssertionError("unreachable")  # pragma: no cover


# -- recovery ---------------------------------------------------------------------------------


def recover(store: Store) -> list[ActionResult]:
    """Complete or roll back every action left ``started`` by a run that was killed.

    Call it while holding :func:`run_lock`. Runs still marked ``running`` become
    ``interrupted``.

    Returns:
        One result per recovered action.
    """
    journal = Journal(store)
    out: list[ActionResult] = []
    for row in journal.open_rows():
        try:
            out.append(_recover_row(journal, row))
        except Exception as exc:  # noqa: BLE001 - leave it open, report it
            out.append(
                ActionResult(
                    row["src"], None, "failed", f"recovery failed: {_describe(exc)}", row["id"]
                )
            )
    store.execute(
        "UPDATE runs SET status='interrupted', finished_at=? WHERE status='running'", (time.time(),)
    )
    return out


def _recover_row(journal: Journal, row: dict[str, Any]) -> ActionResult:
    jid, action, src = row["id"], row["action"], row["src"]
    dest, tmp, method = row["dest"], row["tmp"], row["method"]

    def end(state: str, where: str | None, error: str | None = None) -> ActionResult:
        journal.end(jid, state, dest=where if state == "done" else None, error=error)
        return ActionResult(src, where, state, error, jid)

    if action == "delete":
        return end("done", None) if not os.path.lexists(src) else end("rolled_back", src)
    if action == "link":
        if (
            dest
            and os.path.lexists(dest)
            and (_same_inode(src, dest) or (os.path.islink(dest) and os.readlink(dest) == src))
        ):
            return end("done", dest)
        return end("rolled_back", src)

    s = os.path.lexists(src)
    t = bool(tmp) and os.path.lexists(tmp)
    d = bool(dest) and os.path.lexists(dest)
    folder = os.path.dirname(tmp) if tmp else os.path.join(row["dest_root"], row["rel"] or "")
    name = os.path.basename(row["rel"] or src)
    if t and d and _same_inode(tmp, dest):
        os.unlink(tmp)
        _fsync_dir(os.path.dirname(tmp))
        t = False
    if t:
        if s and method == "copy":
            os.unlink(tmp)
            _fsync_dir(os.path.dirname(tmp))
            return end("rolled_back", src, "interrupted; the partial copy was removed")
        if method == "copy" and row["sha256"] and sha256_file(tmp) != row["sha256"]:
            return end(
                "failed",
                tmp,
                f"the source vanished and the copy at {tmp} does not "
                "match its hash; kept for inspection",
            )
        where = publish(journal, jid, tmp, folder, name)
        return end("done", where)
    if d:
        assert dest is not None
        if action == "move" and s:
            if _same_inode(src, dest) or sha256_file(src) == sha256_file(dest):
                os.unlink(src)
                _fsync_dir(os.path.dirname(src))
                return end("done", dest)
            return end(
                "failed", dest, f"both {src} and {dest} exist with different bytes; both kept"
            )
        return end("done", dest)
    if s:
        return end("rolled_back", src)
    return end("failed", None, "neither the source nor a copy exists (removed by someone else?)")


# -- undo -------------------------------------------------------------------------------------


@dataclass
class UndoResult:
    """What :func:`undo_run` did.

    Attributes:
        run_id: the undo run's own id.
        undone: the run that was reversed.
        results: one per reversed action.
    """

    run_id: str
    undone: str
    results: list[ActionResult]

    @property
    def failed(self) -> list[ActionResult]:
        return [r for r in self.results if not r.ok]


def undo_run(store: Store, run_id: str) -> UndoResult:
    """Reverse a finished (or interrupted) filter run.

    A move run's files go back to their original paths (a collision-safe name next to it
    when that path is taken meanwhile); a copy or link run's copies are deleted when the
    original is still there with the same bytes. Emptied sub-folders that the run created
    under the destination folders are removed. Re-running an interrupted undo finishes it.

    Raises:
        FilterError: unknown run, or a run that cannot be undone.
    """
    journal = Journal(store)
    with run_lock(store):
        journal.durable()
        recover(store)
        run = journal.run(run_id)
        if run is None:
            known = ", ".join(r["id"] for r in journal.runs(5)) or "none"
            raise FilterError(f"no run {run_id!r} in the store {store.path} (recent: {known})")
        if run["kind"] != "filter":
            raise FilterError(f"run {run_id} is an undo run; it cannot be undone")
        if run["status"] == "undone":
            raise FilterError(f"run {run_id} was already undone")
        if run["action"] == "none":
            raise FilterError(f"run {run_id} took no file actions ({{action}} none)",
                              params=["action"])
        done_already = journal.undone_ids(run_id)
        rows = [
            r for r in journal.rows(run_id) if r["state"] == "done" and r["id"] not in done_already
        ]
        kind_action = "move" if run["action"] == "move" else "delete"
        undo_id = journal.start_run("undo", kind_action, {"undo": run_id}, undo_of=run_id)
        acts = FileActions(journal, undo_id, kind_action)
        results: list[ActionResult] = []
        for r in reversed(rows):
            dest = r["dest"]
            if kind_action == "move":
                if not dest or not os.path.lexists(dest):
                    jid = journal.begin(undo_id, "move", dest or "?", undo_of=r["id"])
                    msg = f"{dest} no longer exists; nothing to move back"
                    journal.end(jid, "failed", error=msg)
                    res = ActionResult(dest or "?", None, "failed", msg, jid)
                else:
                    res = acts.apply(
                        dest,
                        os.path.dirname(r["src"]),
                        os.path.basename(r["src"]),
                        decision="undo",
                        sha256=None,
                        undo_of=r["id"],
                    )
            else:
                res = acts.delete_copy(dest, r["src"], sha256=r["sha256"], undo_of=r["id"])
            if res.ok and kind_action == "move" and dest and res.dest:
                store.move_path(dest, res.dest)  # results follow the file back
            if res.ok and dest and r["dest_root"]:
                _prune_empty(os.path.dirname(dest), r["dest_root"])
            results.append(res)
        failed = sum(not x.ok for x in results)
        journal.finish_run(
            undo_id, "finished", {"reversed": len(results) - failed, "failed": failed}
        )
        journal.set_run_status(run_id, "undone" if failed == 0 else "partly_undone")
        return UndoResult(undo_id, run_id, results)


def _prune_empty(folder: str, root: str) -> None:
    """Remove empty folders from ``folder`` up to (not including) ``root``."""
    root = os.path.abspath(root)
    cur = os.path.abspath(folder)
    while cur != root and cur.startswith(root + os.sep):
        try:
            os.rmdir(cur)
        except OSError:
            return
        cur = os.path.dirname(cur)


def leftover_parts(folder: str | Path) -> list[str]:
    """Temporary ``.clipsieve-*.part`` files under ``folder`` (for checks and tests)."""
    out = []
    for dirpath, _dirs, files in os.walk(folder):
        out += [
            os.path.join(dirpath, f)
            for f in files
            if f.startswith(PART_PREFIX) and f.endswith(PART_SUFFIX)
        ]
    return sorted(out)
