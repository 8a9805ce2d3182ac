"""The SQLite store: embeddings, per-item results and errors, text embeddings.

Files are named by their absolute path (:func:`path_key`); stored results carry that path.

Embeddings are keyed by (content sha256, resolved model id, preprocessing version, encoder), so
a renamed or copied file is never encoded twice and a change of checkpoint, preprocessing or
encoder (torch, onnx, onnx-int8) can never return a stale vector; each row records the precision
and device that computed it. The ``files`` table remembers each path's size, mtime and hash so
that a re-scan of unchanged files reads no bytes at all. Schema changes are ordered migrations
recorded in the ``migrations`` table. WAL mode lets readers (the report, the service) work while
a scan writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipsieve.errors import StoreError
from clipsieve.paths import clean_text, from_db, from_json, to_db, with_path
from clipsieve.types import ENVELOPE_FIELDS

#: The encoder of embeddings whose encoder is not named (the only one before migration 8).
DEFAULT_ENCODER = "torch"

#: Ordered schema migrations: (version, name, SQL). Never edit one that shipped; append.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial",
        """
        CREATE TABLE files (
            path TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            seen_at REAL NOT NULL
        );
        CREATE TABLE images (
            sha256 TEXT PRIMARY KEY,
            width INTEGER,
            height INTEGER,
            format TEXT,
            features TEXT,
            features_version TEXT
        );
        CREATE TABLE embeddings (
            sha256 TEXT NOT NULL,
            model TEXT NOT NULL,
            prep TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
            precision TEXT,
            created_at REAL NOT NULL,
            PRIMARY KEY (sha256, model, prep)
        );
        CREATE TABLE results (
            path TEXT NOT NULL,
            model TEXT NOT NULL,
            sha256 TEXT,
            status TEXT NOT NULL,
            error_code TEXT,
            error_message TEXT,
            result TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (path, model)
        );
        CREATE INDEX results_sha ON results(sha256);
        CREATE TABLE text_embeddings (
            model TEXT NOT NULL,
            text TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (model, text)
        );
        """,
    ),
    (
        2,
        "filter runs and file-action journal",
        # One row per `clipsieve filter` / `clipsieve undo` run, and one journal row per file
        # action, written before the action (state 'started') and after it ('done', 'failed'
        # or 'rolled_back'); see clipsieve.filtering.actions for the recovery rules.
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            action TEXT NOT NULL,
            status TEXT NOT NULL,
            args TEXT NOT NULL,
            undo_of TEXT,
            pid INTEGER,
            host TEXT,
            summary TEXT,
            started_at REAL NOT NULL,
            finished_at REAL
        );
        CREATE TABLE journal (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            action TEXT NOT NULL,
            decision TEXT,
            src TEXT NOT NULL,
            dest_root TEXT,
            rel TEXT,
            method TEXT,
            tmp TEXT,
            dest TEXT,
            sha256 TEXT,
            size INTEGER,
            state TEXT NOT NULL,
            error TEXT,
            undo_of INTEGER,
            started_at REAL NOT NULL,
            finished_at REAL
        );
        CREATE INDEX journal_run ON journal(run_id, id);
        CREATE INDEX journal_state ON journal(state);
        CREATE INDEX journal_undo ON journal(undo_of);
        """,
    ),
    (
        3,
        "embedding device",
        # which device computed each embedding (precision was recorded from the start)
        "ALTER TABLE embeddings ADD COLUMN device TEXT;",
    ),
    (
        4,
        "embeddings by model",
        # search and export read one (model, preprocessing) at a time, in sha256 order, and
        # the search index checks its freshness by (count, newest created_at): both from this
        # covering index, without reading the vectors
        "CREATE INDEX embeddings_model ON embeddings(model, prep, sha256, created_at);",
    ),
    (
        5,
        "video frames and samplings",
        # Frame embeddings of videos keyed by (video sha256, timestamp, model, preprocessing
        # version), with the frame's pixel statistics and decode metrics; and per sampling
        # (fps / keyframes / scenes / max frames) of a video, what the decode found (stream
        # info, frame times, packet bytes per second), so that re-scoring decodes nothing.
        """
        CREATE TABLE video_frames (
            sha256 TEXT NOT NULL,
            timestamp_ms INTEGER NOT NULL,
            model TEXT NOT NULL,
            prep TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
            features TEXT,
            precision TEXT,
            device TEXT,
            created_at REAL NOT NULL,
            PRIMARY KEY (sha256, model, prep, timestamp_ms)
        );
        CREATE TABLE video_samplings (
            sha256 TEXT NOT NULL,
            sampling TEXT NOT NULL,
            model TEXT NOT NULL,
            prep TEXT NOT NULL,
            info TEXT NOT NULL,
            timestamps TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (sha256, sampling, model, prep)
        );
        """,
    ),
    (
        6,
        "human review labels",
        # Decisions people made in the HTML report (`clipsieve review import`): one row per
        # imported mark; the latest row per file content (or path) is the human label.
        """
        CREATE TABLE human_labels (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            path TEXT NOT NULL,
            sha256 TEXT,
            decision TEXT NOT NULL,
            category TEXT,
            note TEXT,
            reviewer TEXT,
            reviewed_at REAL,
            model_decision TEXT,
            report_id TEXT,
            source TEXT,
            imported_at REAL NOT NULL
        );
        CREATE INDEX human_labels_path ON human_labels(path);
        CREATE INDEX human_labels_sha ON human_labels(sha256);
        """,
    ),
    (
        7,
        "service jobs",
        # jobs of the HTTP service (clipsieve.service.jobs): a video analysed in the background;
        # status queued -> running -> done | failed | cancelled; result and error as JSON/text
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            progress REAL NOT NULL DEFAULT 0,
            input_name TEXT,
            input_sha256 TEXT,
            input_size INTEGER,
            options TEXT,
            result TEXT,
            error_code TEXT,
            error_message TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL
        );
        CREATE INDEX jobs_status ON jobs(status);
        """,
    ),
    (
        8,
        "embeddings keyed by encoder",
        # Which encoder (torch, onnx, onnx-int8) computed each image and text embedding, as
        # part of the key: the same file under another encoder is another cache entry. Rows
        # from before are the torch encoder's (the only one there was).
        """
        CREATE TABLE embeddings_by_encoder (
            sha256 TEXT NOT NULL,
            model TEXT NOT NULL,
            prep TEXT NOT NULL,
            encoder TEXT NOT NULL DEFAULT 'torch',
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
            precision TEXT,
            device TEXT,
            created_at REAL NOT NULL,
            PRIMARY KEY (sha256, model, prep, encoder)
        );
        INSERT INTO embeddings_by_encoder(sha256, model, prep, encoder, dim, vector, precision,
                                          device, created_at)
            SELECT sha256, model, prep, 'torch', dim, vector, precision, device, created_at
            FROM embeddings;
        DROP TABLE embeddings;
        ALTER TABLE embeddings_by_encoder RENAME TO embeddings;
        CREATE INDEX embeddings_model ON embeddings(model, prep, encoder, sha256, created_at);
        CREATE TABLE text_embeddings_by_encoder (
            model TEXT NOT NULL,
            encoder TEXT NOT NULL DEFAULT 'torch',
            text TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (model, encoder, text)
        );
        INSERT INTO text_embeddings_by_encoder(model, encoder, text, vector)
            SELECT model, 'torch', text, vector FROM text_embeddings;
        DROP TABLE text_embeddings;
        ALTER TABLE text_embeddings_by_encoder RENAME TO text_embeddings;
        """,
    ),
    (
        9,
        "checkpoint fingerprints",
        # The fingerprint of the weights each local model id (a folder) had when its
        # embeddings were computed; see clipsieve.fingerprint and Store.check_checkpoint.
        """
        CREATE TABLE checkpoints (
            model TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            recorded_at REAL NOT NULL
        );
        """,
    ),
    (
        10,
        "video frames keyed by encoder",
        # Which encoder computed each frame embedding, as part of the key (as migration 8 did
        # for image and text embeddings): a video analysed with --encoder onnx-int8 is never
        # re-scored from torch frame embeddings, nor the other way round. Rows from before are
        # the torch encoder's. Samplings (what the decoder found) do not depend on the encoder.
        """
        CREATE TABLE video_frames_by_encoder (
            sha256 TEXT NOT NULL,
            timestamp_ms INTEGER NOT NULL,
            model TEXT NOT NULL,
            prep TEXT NOT NULL,
            encoder TEXT NOT NULL DEFAULT 'torch',
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
            features TEXT,
            precision TEXT,
            device TEXT,
            created_at REAL NOT NULL,
            PRIMARY KEY (sha256, model, prep, encoder, timestamp_ms)
        );
        INSERT INTO video_frames_by_encoder(sha256, timestamp_ms, model, prep, encoder, dim,
                                            vector, features, precision, device, created_at)
            SELECT sha256, timestamp_ms, model, prep, 'torch', dim, vector, features, precision,
                   device, created_at
            FROM video_frames;
        DROP TABLE video_frames;
        ALTER TABLE video_frames_by_encoder RENAME TO video_frames;
        """,
    ),
]


#: Result fields that describe the scan itself; every other field is a head's output.
BASE_FIELDS = ENVELOPE_FIELDS | {"embedding", "provenance"}


class Store:
    """One SQLite file. Thread-safe: one connection guarded by a lock.

    Args:
        path: the database file (created with its folder if missing), or ``":memory:"``.
        write: whether this store will be written. A store that cannot be written (a read-only
            file or folder) is then refused at once, before any work; with ``write=False`` it
            is opened read-only (``report``, ``export``).

    Raises:
        StoreError: the file cannot be opened or written, is not a clipsieve store, or has a
            schema version newer than this clipsieve knows.
    """

    def __init__(self, path: str | Path, *, write: bool = True) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        readonly = False
        try:
            if self.path != ":memory:":
                Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
                problem = _write_problem(self.path)
                if problem and write:
                    raise StoreError(
                        f"cannot write store {self.path}: {problem}. Fix: make it writable, or "
                        "pass another --store (or --no-store)"
                    )
                readonly = bool(problem)
            if readonly:
                uri = Path(self.path).expanduser().resolve().as_uri() + "?mode=ro"
                self._db = sqlite3.connect(
                    uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30
                )
            else:
                self._db = sqlite3.connect(
                    self.path, check_same_thread=False, isolation_level=None, timeout=30
                )
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._check_version()
            if not readonly:
                self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"cannot open store {self.path}: {exc.strerror or exc}") from None

    def _check_version(self) -> None:
        """Refuse a store written by a newer clipsieve (its schema may mean other things)."""
        db = self._db
        has = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='migrations'"
        ).fetchone()
        if not has:
            return
        newest = db.execute("SELECT MAX(version) FROM migrations").fetchone()[0] or 0
        known = MIGRATIONS[-1][0]
        if newest > known:
            raise StoreError(
                f"store {self.path} has schema version {newest}, newer than this clipsieve "
                f"knows ({known}); upgrade clipsieve, or pass another --store"
            )

    # -- schema -----------------------------------------------------------------------------
    def _migrate(self) -> None:
        db = self._db
        db.execute(
            "CREATE TABLE IF NOT EXISTS migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        done = {row[0] for row in db.execute("SELECT version FROM migrations")}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("SELECT 1 FROM migrations WHERE version=?", (version,)).fetchone():
                    db.execute("ROLLBACK")  # another process migrated meanwhile
                    continue
                for stmt in _split_sql(sql):
                    db.execute(stmt)
                db.execute(
                    "INSERT INTO migrations(version, name, applied_at) VALUES (?,?,?)",
                    (version, name, time.time()),
                )
                db.execute("COMMIT")
            except Exception:
                db.execute("ROLLBACK")
                raise

    def migrations(self) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._db.execute("SELECT version, name FROM migrations ORDER BY version"))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return all rows (for other modules' tables and queries)."""
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                raise StoreError(f"store {self.path}: {exc}") from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run one query and return its rows as ``{column: value}`` dicts (for other modules'
        tables, e.g. the filter journal)."""
        with self._lock:
            cur = self._db.execute(sql, params)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    # -- checkpoints ------------------------------------------------------------------------
    def check_checkpoint(self, model: str, fingerprint: str | None) -> bool:
        """Record ``model``'s weights fingerprint; on a change, drop what the old weights made.

        Image and text embeddings and video frames of ``model`` computed under another
        fingerprint are deleted (they would be stale vectors under the same model id); stored
        results stay, and their ``provenance`` names the fingerprint they were made with.
        Returns whether anything was dropped.
        """
        if fingerprint is None:
            return False
        with self.transaction() as db:
            row = db.execute(
                "SELECT fingerprint FROM checkpoints WHERE model=?", (model,)
            ).fetchone()
            if row is not None and row[0] == fingerprint:
                return False
            stale = row is not None
            if stale:
                for table in ("embeddings", "text_embeddings", "video_frames", "video_samplings"):
                    db.execute(f"DELETE FROM {table} WHERE model=?", (model,))
            db.execute(
                "INSERT OR REPLACE INTO checkpoints(model, fingerprint, recorded_at) "
                "VALUES (?,?,?)",
                (model, fingerprint, time.time()),
            )
        return stale

    def checkpoint_fingerprint(self, model: str) -> str | None:
        """The weights fingerprint recorded for ``model``, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT fingerprint FROM checkpoints WHERE model=?", (model,)
            ).fetchone()
        return row[0] if row else None

    # -- files ------------------------------------------------------------------------------
    def lookup_file(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The sha256 recorded for ``path`` if its size and mtime are unchanged."""
        with self._lock:
            row = self._db.execute(
                "SELECT sha256 FROM files WHERE path=? AND size=? AND mtime_ns=?",
                (to_db(path_key(path)), size, mtime_ns),
            ).fetchone()
        return row[0] if row else None

    # -- images and embeddings --------------------------------------------------------------
    def get_image(self, sha256: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT width, height, format, features, features_version FROM images "
                "WHERE sha256=?",
                (sha256,),
            ).fetchone()
        if not row:
            return None
        return {
            "width": row[0],
            "height": row[1],
            "format": row[2],
            "features": json.loads(row[3]) if row[3] else None,
            "features_version": row[4],
        }

    def get_embedding(
        self, sha256: str, model: str, prep: str, *, encoder: str = DEFAULT_ENCODER
    ) -> np.ndarray | None:
        row = self.get_embedding_row(sha256, model, prep, encoder=encoder)
        return row[0] if row else None

    def get_embedding_row(
        self, sha256: str, model: str, prep: str, *, encoder: str = DEFAULT_ENCODER
    ) -> tuple[np.ndarray, str | None, str | None] | None:
        """(vector, device, precision) of a stored embedding of ``encoder``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT dim, vector, device, precision FROM embeddings "
                "WHERE sha256=? AND model=? AND prep=? AND encoder=?",
                (sha256, model, prep, encoder),
            ).fetchone()
        return (_vec(row[1], row[0]), row[2], row[3]) if row else None

    def get_embeddings(
        self, shas: Iterable[str], model: str, prep: str | None, *,
        encoder: str = DEFAULT_ENCODER,
    ) -> dict[str, np.ndarray]:
        """Many embeddings of one encoder at once: {sha256: vector} for those present.

        With ``prep=None``, of any preprocessing version (the most recently stored wins).
        """
        out: dict[str, np.ndarray] = {}
        shas = list(dict.fromkeys(shas))
        with self._lock:
            for i in range(0, len(shas), 500):
                chunk = shas[i : i + 500]
                q = ",".join("?" * len(chunk))
                if prep is None:
                    rows = self._db.execute(
                        f"SELECT sha256, dim, vector FROM embeddings WHERE model=? "
                        f"AND encoder=? AND sha256 IN ({q}) ORDER BY created_at",
                        (model, encoder, *chunk),
                    )
                else:
                    rows = self._db.execute(
                        f"SELECT sha256, dim, vector FROM embeddings WHERE model=? AND prep=? "
                        f"AND encoder=? AND sha256 IN ({q})",
                        (model, prep, encoder, *chunk),
                    )
                for sha, dim, blob in rows:
                    out[sha] = _vec(blob, dim)
        return out

    def put_items(
        self,
        rows: Iterable[dict[str, Any]],
        *,
        model: str,
        prep: str,
        precision: str | None = None,
        device: str | None = None,
        encoder: str = DEFAULT_ENCODER,
    ) -> None:
        """Record decoded items in one transaction.

        Each row has ``path``, ``size``, ``mtime_ns``, ``sha256``, ``width``, ``height``,
        ``format``, ``features``, ``features_version`` and optionally ``embedding`` (computed
        by ``encoder`` on ``device`` in ``precision``).
        """
        now = time.time()
        with self.transaction() as db:
            for r in rows:
                if r.get("size") is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO files(path,size,mtime_ns,sha256,seen_at) "
                        "VALUES (?,?,?,?,?)",
                        (to_db(path_key(r["path"])), r["size"], r["mtime_ns"], r["sha256"], now),
                    )
                if r.get("width") is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO images(sha256,width,height,format,features,"
                        "features_version) VALUES (?,?,?,?,?,?)",
                        (
                            r["sha256"], r["width"], r["height"], r.get("format"),
                            _dumps(r["features"]) if r.get("features") is not None else None,
                            r.get("features_version"),
                        ),
                    )
                emb = r.get("embedding")
                if emb is not None:
                    emb = np.asarray(emb, dtype=np.float32)
                    db.execute(
                        "INSERT OR REPLACE INTO embeddings(sha256,model,prep,encoder,dim,"
                        "vector,precision,device,created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                        (r["sha256"], model, prep, encoder, emb.shape[0], emb.tobytes(),
                         precision, device, now),
                    )

    def iter_embeddings(
        self, model: str, prep: str, *, block: int = 8192, encoder: str = DEFAULT_ENCODER
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Every stored embedding of one (model, preprocessing, encoder), in blocks.

        Yields ``(shas, matrix)`` with at most ``block`` rows each, in table order (a
        sequential read of the file), so memory is one block whatever the store's size. Each
        block is its own query (keyset pagination on the rowid), so the store's lock is not
        held between blocks.
        """
        last = -1
        with self._lock:  # read the vectors through a memory map: about 2x faster than read()
            self._db.execute("PRAGMA mmap_size=1073741824")
        while True:
            with self._lock:
                # unary + keeps SQLite on the rowid range instead of the model index, which
                # would sort every matching row for each block
                rows = self._db.execute(
                    "SELECT rowid, sha256, dim, vector FROM embeddings WHERE rowid > ? "
                    "AND +model=? AND +prep=? AND +encoder=? ORDER BY rowid LIMIT ?",
                    (last, model, prep, encoder, int(block)),
                ).fetchall()
            if not rows:
                return
            dim = rows[0][2]
            if any(r[2] != dim or len(r[3]) != 4 * dim for r in rows):
                raise StoreError(f"stored embeddings of {model} have mixed or wrong sizes")
            mat = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.float32)
            yield [r[1] for r in rows], mat.reshape(len(rows), dim)
            last = rows[-1][0]

    def embedding_fingerprint(
        self, model: str, prep: str, *, encoder: str = DEFAULT_ENCODER
    ) -> tuple[int, float]:
        """(count, newest ``created_at``) of one (model, preprocessing, encoder)'s embeddings.

        Every write sets ``created_at`` to the current time, so any added or replaced
        embedding changes the fingerprint (the search index uses it to know it is fresh).
        """
        with self._lock:
            n, newest = self._db.execute(
                "SELECT COUNT(*), MAX(created_at) FROM embeddings WHERE model=? AND prep=? "
                "AND encoder=?",
                (model, prep, encoder),
            ).fetchone()
        return int(n), float(newest or 0.0)

    def embedding_kinds(self, encoder: str = DEFAULT_ENCODER) -> list[tuple[str, str, int]]:
        """(model, preprocessing version, count) of one encoder's stored embeddings."""
        with self._lock:
            return [
                (m, p, int(n))
                for m, p, n in self._db.execute(
                    "SELECT model, prep, COUNT(*) FROM embeddings WHERE encoder=? "
                    "GROUP BY model, prep ORDER BY model, prep",
                    (encoder,),
                )
            ]

    def results_for_shas(
        self, shas: Iterable[str], model: str
    ) -> dict[str, list[dict[str, Any]]]:
        """Stored results of one model by content hash: {sha256: [result, …]} (path order)."""
        out: dict[str, list[dict[str, Any]]] = {}
        uniq = list(dict.fromkeys(shas))
        with self._lock:
            for i in range(0, len(uniq), 500):
                chunk = uniq[i : i + 500]
                q = ",".join("?" * len(chunk))
                for sha, blob in self._db.execute(
                    f"SELECT sha256, result FROM results WHERE model=? AND status='ok' "
                    f"AND sha256 IN ({q}) ORDER BY path",
                    (model, *chunk),
                ):
                    out.setdefault(sha, []).append(json.loads(blob))
        return out

    def sha_for_path(self, path: str) -> str | None:
        """The content hash last recorded for a file (whatever its size and mtime now)."""
        with self._lock:
            row = self._db.execute(
                "SELECT sha256 FROM files WHERE path=?", (to_db(path_key(path)),)
            ).fetchone()
        return row[0] if row else None

    def record_file(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        """Remember a file's hash for its size and mtime (so it is not hashed again)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO files(path,size,mtime_ns,sha256,seen_at) VALUES (?,?,?,?,?)",
                (to_db(path_key(path)), size, mtime_ns, sha256, time.time()),
            )

    # -- videos -----------------------------------------------------------------------------
    def put_video_frames(
        self,
        sha256: str,
        rows: Iterable[tuple[int, np.ndarray, Any]],
        *,
        model: str,
        prep: str,
        precision: str | None = None,
        device: str | None = None,
        encoder: str = DEFAULT_ENCODER,
    ) -> None:
        """Store frame embeddings: ``(timestamp_ms, embedding, features)`` rows of one video,
        computed by ``encoder`` (part of the key, as for image embeddings)."""
        now = time.time()
        with self.transaction() as db:
            for t, emb, features in rows:
                emb = np.asarray(emb, dtype=np.float32)
                db.execute(
                    "INSERT OR REPLACE INTO video_frames(sha256,timestamp_ms,model,prep,encoder,"
                    "dim,vector,features,precision,device,created_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (sha256, int(t), model, prep, encoder, emb.shape[0], emb.tobytes(),
                     _dumps(features) if features is not None else None, precision, device,
                     now),
                )

    def get_video_frames(
        self, sha256: str, model: str, prep: str, *, encoder: str = DEFAULT_ENCODER
    ) -> dict[int, tuple[np.ndarray, Any, str | None, str | None]]:
        """``{timestamp_ms: (embedding, features, device, precision)}`` stored for a video by
        ``encoder``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT timestamp_ms, dim, vector, features, device, precision FROM video_frames "
                "WHERE sha256=? AND model=? AND prep=? AND encoder=? ORDER BY timestamp_ms",
                (sha256, model, prep, encoder),
            ).fetchall()
        return {
            t: (_vec(blob, dim), json.loads(feat) if feat else None, device, precision)
            for t, dim, blob, feat, device, precision in rows
        }

    def put_video_sampling(
        self, sha256: str, sampling: str, *, model: str, prep: str, info: dict[str, Any],
        timestamps: Sequence[int],
    ) -> None:
        """Record a complete sampling of a video: what was decoded and which frames were kept."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO video_samplings(sha256,sampling,model,prep,info,"
                "timestamps,created_at) VALUES (?,?,?,?,?,?,?)",
                (sha256, sampling, model, prep, _dumps(info),
                 json.dumps([int(t) for t in timestamps]), time.time()),
            )

    def get_video_sampling(
        self, sha256: str, sampling: str, model: str, prep: str
    ) -> tuple[dict[str, Any], list[int]] | None:
        """``(info, timestamps)`` of a recorded sampling, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT info, timestamps FROM video_samplings "
                "WHERE sha256=? AND sampling=? AND model=? AND prep=?",
                (sha256, sampling, model, prep),
            ).fetchone()
        return (json.loads(row[0]), json.loads(row[1])) if row else None

    # -- results ----------------------------------------------------------------------------
    def put_results(self, results: Iterable[dict[str, Any]], *, model: str) -> None:
        """Record per-item result dicts (the JSON schema of :class:`ItemResult`).

        Head fields (``moderation``, ``quality``, ``labels``…) that the stored result of the
        same file content has and the new one lacks are kept: ``clipsieve moderate`` then
        ``clipsieve quality`` leaves a result with both. A field computed again replaces the
        old one; each carries what it was based on (policy, version, model).
        """
        now = time.time()
        with self.transaction() as db:
            for d in results:
                key = path_key(from_json(d))
                d = with_path(d, key)
                if d.get("status") == "ok" and d.get("sha256"):
                    row = db.execute(
                        "SELECT result FROM results WHERE path=? AND model=? AND sha256=? "
                        "AND status='ok'",
                        (to_db(key), model, d["sha256"]),
                    ).fetchone()
                    if row:
                        old = json.loads(row[0])
                        kept = {k: v for k, v in old.items()
                                if k not in d and k not in BASE_FIELDS and k != "provenance"}
                        if kept:
                            d = {**d, **kept}
                            old_prov = old.get("provenance") or {}
                            prov = {k: v for k, v in old_prov.items() if k in kept}
                            prov.update(d.get("provenance") or {})
                            if prov:
                                d["provenance"] = prov
                err = d.get("error") or {}
                db.execute(
                    "INSERT OR REPLACE INTO results(path,model,sha256,status,error_code,"
                    "error_message,result,updated_at) VALUES (?,?,?,?,?,?,?,?)",
                    (
                        to_db(key), model, d.get("sha256"), d["status"], err.get("code"),
                        clean_text(str(err["message"])) if err.get("message") else None,
                        _dumps(d), now,
                    ),
                )

    def move_path(self, old: str, new: str) -> None:
        """Follow a file that was moved: its hash record and stored results take the new path."""
        old_k, new_k = path_key(old), path_key(new)
        with self.transaction() as db:
            db.execute(
                "UPDATE OR REPLACE files SET path=? WHERE path=?", (to_db(new_k), to_db(old_k))
            )
            rows = db.execute(
                "SELECT model, result FROM results WHERE path=?", (to_db(old_k),)
            ).fetchall()
            for model, blob in rows:
                d = with_path(json.loads(blob), new_k)
                db.execute(
                    "UPDATE OR REPLACE results SET path=?, result=? WHERE path=? AND model=?",
                    (to_db(new_k), _dumps(d), to_db(old_k), model),
                )

    def iter_results(self, model: str | None = None) -> Iterator[dict[str, Any]]:
        """Stored per-item results, sorted by path."""
        with self._lock:
            if model is None:
                rows = self._db.execute("SELECT result FROM results ORDER BY path").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT result FROM results WHERE model=? ORDER BY path", (model,)
                ).fetchall()
        for (blob,) in rows:
            yield json.loads(blob)

    def get_result(self, path: str, model: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT result FROM results WHERE path=? AND model=?",
                (to_db(path_key(path)), model),
            ).fetchone()
        return json.loads(row[0]) if row else None

    # -- text embeddings --------------------------------------------------------------------
    def get_text_embeddings(
        self, model: str, texts: Sequence[str], *, encoder: str = DEFAULT_ENCODER
    ) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        uniq = list(dict.fromkeys(texts))
        with self._lock:
            for i in range(0, len(uniq), 500):
                chunk = uniq[i : i + 500]
                q = ",".join("?" * len(chunk))
                for text, blob in self._db.execute(
                    f"SELECT text, vector FROM text_embeddings WHERE model=? AND encoder=? "
                    f"AND text IN ({q})",
                    (model, encoder, *chunk),
                ):
                    out[text] = np.frombuffer(blob, dtype=np.float32).copy()
        return out

    def put_text_embeddings(
        self, model: str, items: dict[str, np.ndarray], *, encoder: str = DEFAULT_ENCODER
    ) -> None:
        with self.transaction() as db:
            for text, vec in items.items():
                db.execute(
                    "INSERT OR REPLACE INTO text_embeddings(model,encoder,text,vector) "
                    "VALUES (?,?,?,?)",
                    (model, encoder, text, np.asarray(vec, dtype=np.float32).tobytes()),
                )

    # -- human review labels ----------------------------------------------------------------
    def put_human_labels(self, labels: Iterable[Mapping[str, Any]], *, source: str = "") -> int:
        """Record human decisions (dicts with ``path``, ``decision`` and optionally
        ``sha256``, ``category``, ``note``, ``reviewer``, ``reviewed_at`` (epoch seconds),
        ``model_decision``, ``report_id``). Returns how many were stored."""
        now = time.time()
        n = 0
        with self.transaction() as db:
            for lab in labels:
                db.execute(
                    "INSERT INTO human_labels(path,sha256,decision,category,note,reviewer,"
                    "reviewed_at,model_decision,report_id,source,imported_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        to_db(path_key(lab["path"])), lab.get("sha256") or None, lab["decision"],
                        lab.get("category") or None, lab.get("note") or None,
                        lab.get("reviewer") or None, lab.get("reviewed_at"),
                        lab.get("model_decision") or None, lab.get("report_id") or None,
                        source or None, now,
                    ),
                )
                n += 1
        return n

    def human_labels(self) -> list[dict[str, Any]]:
        """The latest human label per file (by content hash when known, else by path),
        oldest first; each a dict of the ``human_labels`` columns."""
        cols = (
            "path", "sha256", "decision", "category", "note", "reviewer", "reviewed_at",
            "model_decision", "report_id", "source", "imported_at",
        )
        with self._lock:
            rows = self._db.execute(
                f"SELECT {','.join(cols)} FROM human_labels ORDER BY reviewed_at, id"
            ).fetchall()
        latest: dict[str, dict[str, Any]] = {}
        for row in rows:
            d = dict(zip(cols, row))
            d["path"] = from_db(d["path"])
            latest.pop(d["path"], None)
            if d["sha256"]:
                latest.pop(d["sha256"], None)
            latest[d["sha256"] or d["path"]] = d
        return list(latest.values())

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                t: self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("files", "images", "embeddings", "results", "text_embeddings",
                          "video_frames", "video_samplings")
            }


class _Transaction:
    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        try:
            self.store._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # read-only, locked too long, disk I/O
            self.store._lock.release()
            raise StoreError(f"cannot write store {self.store.path}: {exc}") from None
        except BaseException:
            self.store._lock.release()
            raise
        return self.store._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.store._db.execute("ROLLBACK" if exc_type else "COMMIT")
        except sqlite3.OperationalError as err:  # a full disk at commit time
            if exc_type is None:
                raise StoreError(f"cannot write store {self.store.path}: {err}") from None
        finally:
            self.store._lock.release()
        if isinstance(exc, sqlite3.OperationalError):
            raise StoreError(f"cannot write store {self.store.path}: {exc}") from None


def _write_problem(path: str) -> str | None:
    """Why the store at ``path`` cannot be written (``None`` when it can, or may be created).

    SQLite in WAL mode also creates ``FILE-wal`` and ``FILE-shm`` beside the file, so the
    folder must be writable too unless they already exist.
    """
    p = os.path.expanduser(path)
    folder = os.path.dirname(os.path.abspath(p))
    if os.path.exists(p):
        if not os.access(p, os.W_OK):
            return "the file is read-only (permission denied)"
        side = [p + "-wal", p + "-shm"]
        if all(os.path.exists(s) for s in side):
            if not all(os.access(s, os.W_OK) for s in side):
                return "its -wal/-shm files are read-only (permission denied)"
            return None
    if not os.access(folder, os.W_OK | os.X_OK):
        return (f"the folder {folder} is read-only (permission denied); SQLite must create "
                "files beside the store")
    return None


def path_key(path: str | os.PathLike[str]) -> str:
    """How the store names a file: its absolute path, so that ``a.jpg`` typed in two
    folders are two files, and a file scanned from anywhere is found again. A URL input is
    kept as it is."""
    p = os.fspath(path)
    if p[:8].lower().startswith(("http://", "https://")):
        return p
    return os.path.abspath(p)


def _dumps(obj: Any) -> str:
    """Strict JSON (non-finite floats become null)."""
    from clipsieve.types import to_jsonable

    return json.dumps(to_jsonable(obj), allow_nan=False)


def _vec(blob: bytes, dim: int) -> np.ndarray:
    v = np.frombuffer(blob, dtype=np.float32)
    if v.shape[0] != dim:
        raise StoreError(f"stored embedding has {v.shape[0]} values, expected {dim}")
    return v.copy()


def _split_sql(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]
