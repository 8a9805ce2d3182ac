"""provenance.py: choosing the head fields of one run keeps the whole result envelope."""

from __future__ import annotations

from clipsieve.provenance import select
from clipsieve.types import ENVELOPE_FIELDS, ItemResult


def test_selecting_a_run_keeps_the_envelope_and_drops_other_runs_fields() -> None:
    item = ItemResult(path="a\udcff.jpg", sha256="aa", model="m", device="cpu",
                      precision="int8", encoder="onnx-int8")
    item.quality = {"score": 5.0}
    item.moderation = {"decision": "allow"}
    item.extra["provenance"] = {"quality": {"run": "r1"}, "moderation": {"run": "r0"}}
    d = item.to_dict()
    assert "path_bytes" in d  # a name that is not UTF-8
    got = select(d, run="r1")
    assert "quality" in got and "moderation" not in got
    kept = {k for k in d if k in ENVELOPE_FIELDS}
    assert kept >= {"path", "path_bytes", "encoder", "precision", "device"}
    assert {k: got[k] for k in kept} == {k: d[k] for k in kept}  # encoder was dropped before
