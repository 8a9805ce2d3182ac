"""No file is ever lost: `clipsieve filter --action move` killed at any moment, then re-run.

Two tests: a `clipsieve filter` subprocess killed with SIGKILL at seeded random moments many
times, and the same killed deterministically (``os._exit``) at every step inside an action,
on the same file system (atomic rename) and across file systems (copy, fsync, hash, unlink).
After each kill a second run completes the job; then every source file must be present
exactly once among source, accept, reject and review, with identical bytes, in the folder its
decision names, with no temporary file left and no journal row left open.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clipsieve.filtering import Journal, filter_collection
from clipsieve.filtering.actions import leftover_parts
from clipsieve.store import Store

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

MODEL = "test/no-model"
DECISIONS = ("allow", "allow", "allow", "review", "block")


class StoreOnly:
    """An analyzer stand-in: every file is in the store, so no scan may happen."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.model_id = MODEL

    def scan(self, paths: Any, **kw: Any) -> Any:
        raise AssertionError(f"unexpected scan of {list(paths)[:3]}")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_collection(
    root: Path, store: Store, n: int, rng: random.Random, big: int = 0
) -> dict[str, str]:
    """``n`` files of random bytes under ``root`` (3 sub-folders), recorded as scanned.

    Returns:
        {sha256: expected folder kind} with kind accept / review / reject.
    """
    expected: dict[str, str] = {}
    items, results = [], []
    for i in range(n):
        size = 3_000_000 if i < big else rng.randint(200, 40_000)
        data = rng.randbytes(size)
        path = root / f"d{i % 3}" / f"img{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        st = path.stat()
        h = digest(data)
        q = round(rng.uniform(0, 10), 2)
        mod = rng.choice(DECISIONS)
        expected[h] = (
            "reject" if mod == "block" or q < 5 else "review" if mod == "review" else "accept"
        )
        items.append(
            {
                "path": str(path),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "sha256": h,
                "width": 8,
                "height": 8,
                "format": "PNG",
                "features": None,
                "features_version": None,
            }
        )
        results.append(
            {
                "path": str(path),
                "status": "ok",
                "error": None,
                "sha256": h,
                "model": MODEL,
                "quality": {"score": q},
                "moderation": {"decision": mod},
            }
        )
    store.put_items(items, model=MODEL, prep="p")
    store.put_results(results, model=MODEL)
    return expected


def check_nothing_lost(dirs: dict[str, Path], expected: dict[str, str], store: Store) -> None:
    """Every original exactly once, bytes intact, in its decision's folder; nothing open."""
    found: dict[str, list[str]] = {}
    for kind, d in dirs.items():
        assert leftover_parts(d) == [], f"temporary files left in {d}"
        if d.exists():
            for p in d.rglob("*"):
                if p.is_file():
                    found.setdefault(digest(p.read_bytes()), []).append(kind)
    assert set(found) == set(expected), "a file was lost or a stranger appeared"
    dupes = {h: k for h, k in found.items() if len(k) != 1}
    assert dupes == {}, f"files present more than once: {dupes}"
    wrong = {h: (found[h][0], want) for h, want in expected.items() if found[h][0] != want}
    assert wrong == {}, f"files in the wrong folder: {wrong}"
    assert Journal(store).open_rows() == []


def folders(base: Path, other_fs: Path | None) -> dict[str, Path]:
    return {
        "source": base / "src",
        "accept": base / "accept",
        "reject": (other_fs or base) / "reject",  # across file systems when possible
        "review": base / "review",
    }


def complete(store: Store, dirs: dict[str, Path]) -> Any:
    return filter_collection(
        [dirs["source"]],
        analyzer=StoreOnly(store),
        accept=str(dirs["accept"]),
        reject=str(dirs["reject"]),
        review=str(dirs["review"]),
        action="move",
        min_quality=5,
    )


def cli_args(store: Store, dirs: dict[str, Path]) -> list[str]:
    return [
        "filter",
        str(dirs["source"]),
        "--accept",
        str(dirs["accept"]),
        "--reject",
        str(dirs["reject"]),
        "--review",
        str(dirs["review"]),
        "--action",
        "move",
        "--min-quality",
        "5",
        "--store",
        str(store.path),
        "--model",
        MODEL,
        "--quiet",
    ]


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path | None]:
    """A folder on another file system (/dev/shm) when there is one, removed afterwards."""
    shm = Path("/dev/shm")
    if not (
        shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev
    ):
        yield None
        return
    d = shm / f"clipsieve-crash-{os.getpid()}-{tmp_path.name}"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


_CLI = "from clipsieve.cli import main; main()"
_CRASH = """
import os, sys
import clipsieve.filtering.actions as actions
target, nth = sys.argv[1], int(sys.argv[2])
seen = [0]
def hook(event, args):
    if event == actions.AUDIT_EVENT and args[0] == target:
        seen[0] += 1
        if seen[0] == nth:
            os._exit(99)
sys.addaudithook(hook)
from clipsieve.cli import main
main(sys.argv[3:])
"""


def _last_journal_id(store: Store) -> int:
    return int(store.execute("SELECT COALESCE(MAX(id), 0) FROM journal")[0][0])


def _kill_while_acting(
    proc: subprocess.Popen[bytes], store: Store, after: int, delay: float
) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after it journals its first new action."""
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        if _last_journal_id(store) > after:
            break
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, other_fs: Path | None) -> None:
    rng = random.Random(20240517)
    store = Store(tmp_path / "store.sqlite")
    iterations, n = 12, 150
    # calibrate: how long do one uninterrupted run and its action phase take here?
    dirs = folders(tmp_path / "calibrate", other_fs and other_fs / "calibrate")
    expected = make_collection(dirs["source"], store, n, rng)
    t0 = time.time()
    p = subprocess.run(
        [sys.executable, "-c", _CLI, *cli_args(store, dirs)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    full = time.time() - t0
    assert p.returncode == 0, p.stderr
    first = store.execute("SELECT MIN(started_at) FROM journal")[0][0]
    acting = max(time.time() - first, 0.05)
    check_nothing_lost(dirs, expected, store)

    kills = mid_run = in_action = 0
    for k in range(iterations):
        base = tmp_path / f"run{k}"
        dirs = folders(base, other_fs and other_fs / f"run{k}")
        expected = make_collection(dirs["source"], store, n, rng, big=2 if k % 4 == 0 else 0)
        for _ in range(rng.choice((1, 2, 2, 3))):  # kill the re-runs (and their recovery) too
            before = _last_journal_id(store)
            proc = subprocess.Popen(
                [sys.executable, "-c", _CLI, *cli_args(store, dirs)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if rng.random() < 0.25:  # anywhere: start-up, recovery, deciding, acting
                time.sleep(rng.uniform(0.0, full))
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
            else:
                _kill_while_acting(proc, store, before, rng.uniform(0.0, 0.8 * acting))
            kills += 1
            left = sum(1 for p in dirs["source"].rglob("*") if p.is_file())
            mid_run += 0 < left < n
            in_action += bool(Journal(store).open_rows())
        complete(store, dirs)  # recovers the killed action, then finishes the job
        check_nothing_lost(dirs, expected, store)
    print(
        f"\n{kills} SIGKILLs in {iterations} collections of {n} files (an uninterrupted run "
        f"takes {full:.2f}s, {acting:.2f}s of it moving files): {mid_run} left a collection "
        f"half moved, {in_action} struck inside an action"
    )
    assert mid_run >= kills // 4, "the kills did not land while files were being moved"
    store.close()


CHECKPOINTS_RENAME = ("journal_started", "tmp_ready", "dest_journaled", "linked", "published")
CHECKPOINTS_COPY = (
    "journal_started",
    "copy_written",
    "tmp_ready",
    "dest_journaled",
    "linked",
    "published",
    "source_removed",
)


@pytest.mark.parametrize("cross_fs", [False, True], ids=["rename", "copy"])
def test_a_crash_at_every_step_of_an_action_is_recovered(
    tmp_path: Path, other_fs: Path | None, cross_fs: bool
) -> None:
    if cross_fs and other_fs is None:
        pytest.skip("no second file system (/dev/shm) here")
    rng = random.Random(7)
    store = Store(tmp_path / "store.sqlite")
    for point in CHECKPOINTS_COPY if cross_fs else CHECKPOINTS_RENAME:
        base = tmp_path / point
        root = (other_fs / point) if cross_fs and other_fs else base
        dirs = {
            "source": base / "src",
            "accept": root / "accept",
            "reject": root / "reject",
            "review": root / "review",
        }
        expected = make_collection(dirs["source"], store, 8, rng)
        # a stranger's file where the first accepted file would land: collisions on the way
        for kind in ("accept", "reject", "review"):
            (dirs[kind] / "d0").mkdir(parents=True, exist_ok=True)
            (dirs[kind] / "d0" / "img0000.png").write_bytes(b"not ours " + kind.encode())
        strangers = {digest(b"not ours " + k.encode()): k for k in ("accept", "reject", "review")}
        p = subprocess.run(
            [sys.executable, "-c", _CRASH, point, "3", *cli_args(store, dirs)],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 99, f"{point}: the crash did not happen: {p.stderr}"
        assert len(Journal(store).open_rows()) == 1, point
        run = complete(store, dirs)
        assert len(run.recovered) == 1 and run.recovered[0].state in ("done", "rolled_back")
        check_nothing_lost(dirs, {**expected, **strangers}, store)
        for kind in strangers.values():
            assert (dirs[kind] / "d0" / "img0000.png").read_bytes() == b"not ours " + kind.encode()
    store.close()
