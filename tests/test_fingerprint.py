"""fingerprint.py: weights replaced in place under the same folder name are noticed (#9)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from clipsieve import Analyzer, Store
from clipsieve.fingerprint import EDGE_BYTES, checkpoint_fingerprint


def _weights(folder: Path) -> Path:
    return next(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))


def test_fingerprint_sees_size_mtime_and_both_ends_of_each_weight_file(tmp_path: Path) -> None:
    m = tmp_path / "m"
    m.mkdir()
    w = m / "model.safetensors"
    data = bytearray(os.urandom(3 * EDGE_BYTES))
    w.write_bytes(data)
    (m / "config.json").write_text("{}")
    base = checkpoint_fingerprint(str(m))
    assert base is not None and base.startswith("w-")
    assert checkpoint_fingerprint(str(m)) == base  # stable
    st = w.stat()

    def rewrite(new: bytes) -> str | None:
        w.write_bytes(new)
        os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime
        return checkpoint_fingerprint(str(m))

    last = bytearray(data)
    last[-1] ^= 1
    assert rewrite(bytes(last)) != base  # the last MiB is hashed
    first = bytearray(data)
    first[0] ^= 1
    assert rewrite(bytes(first)) != base  # the first MiB is hashed
    assert rewrite(bytes(data)) == base
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert checkpoint_fingerprint(str(m)) != base  # mtime counts
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))
    (m / "notes.txt").write_text("not weights")
    assert checkpoint_fingerprint(str(m)) == base
    (m / "config.json").write_text('{"projection_dim": 8}')
    assert checkpoint_fingerprint(str(m)) != base
    assert checkpoint_fingerprint("org/not-a-cached-model") is None


def test_weights_copied_into_the_model_folder_are_not_served_from_the_store(
    tiny_clip: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    from clipsieve.testing import build_random_clip

    model = tmp_path / "m"
    shutil.copytree(tiny_clip, model)
    db = tmp_path / "s.sqlite"
    an = Analyzer(model=str(model), store=db, pixel_features=False)
    first = {r.path: r for r in an.scan([photos["coffee"], photos["rocket"]])}
    fp1 = an.model_fingerprint
    an.close()
    other = build_random_clip(tmp_path / "other", "tiny", seed=7)
    shutil.copyfile(_weights(other), _weights(model))  # same name, other weights
    an = Analyzer(model=str(model), store=db, pixel_features=False)
    assert an.model_id == str(model.resolve()) and an.model_fingerprint != fp1
    again = {r.path: r for r in an.scan([photos["coffee"], photos["rocket"]])}
    for path, r in again.items():
        assert r.ok and not r.cached
        assert not np.allclose(r.embedding, first[path].embedding, atol=1e-3)
    assert an.store is not None
    assert an.store.checkpoint_fingerprint(an.model_id) == an.model_fingerprint
    an.close()
    # the same weights again: served from the store
    an = Analyzer(model=str(model), store=db, pixel_features=False)
    assert all(r.cached for r in an.scan([photos["coffee"], photos["rocket"]]))
    an.close()
    with Store(db) as s:
        assert s.check_checkpoint("x", None) is False
