"""Where each stored head field came from (issue #9).

Every head field of a result (``moderation``, ``quality``, ``labels``, ``probe`` …) is recorded
with its provenance in the result's ``provenance`` object, ``{field: {...}}``:

* ``run``: the id of the scan that computed it (one per :meth:`Analyzer.scan` call);
* ``model`` and ``model_fingerprint``: the resolved model id and the fingerprint of its weights
  (:func:`clipsieve.fingerprint.checkpoint_fingerprint`);
* per head: ``policy`` and ``policy_version`` (moderation); ``version`` and ``head`` (the
  learned head's weights sha256, quality); ``labels`` (a hash of the label set with its
  prompts) and ``templates`` (labels); ``probe`` (the probe's sha256 or path).

The stored result keeps the fields of earlier commands (``moderate`` then ``quality``), each with
its own provenance, so a report can say when fields of one item come from different runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

from clipsieve.types import ENVELOPE_FIELDS


def new_run_id() -> str:
    """A short, sortable id for one scan: UTC time and 6 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def _short_hash(value: Any) -> str:
    data = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def head_provenance(head: Any, analyzer: Any, run: str) -> dict[str, Any]:
    """The provenance of the field ``head`` computes, in ``analyzer``, during scan ``run``."""
    out: dict[str, Any] = {
        "run": run,
        "model": getattr(analyzer, "model_id", None),
        "model_fingerprint": getattr(analyzer, "model_fingerprint", None),
    }
    policy = getattr(head, "policy", None)
    if policy is not None and hasattr(policy, "name"):
        out["policy"] = policy.name
        out["policy_version"] = str(getattr(policy, "version", ""))
    if getattr(head, "field", None) == "quality":
        # the version is each result's own (quality.version), filled in by the caller
        config = getattr(head, "config", None)
        out["version"] = getattr(config, "version", None)
        learned = getattr(head, "_learned", None)
        info = learned.describe() if learned is not None and hasattr(learned, "describe") else {}
        path = getattr(head, "head_path", None)
        out["head"] = info.get("weights_sha256") or (os.path.basename(path) if path else None)
    prompts = getattr(head, "prompts", None)
    if getattr(head, "field", None) == "labels" and isinstance(prompts, Mapping):
        out["labels"] = _short_hash({k: list(v) for k, v in prompts.items()})
        templates = getattr(head, "templates", None)
        out["templates"] = _short_hash(list(templates)) if templates else None
    if getattr(head, "field", None) == "probe":
        probe = getattr(head, "_probe", None)
        info = (getattr(probe, "info", None) or {}) if probe is not None else {}
        sha = info.get("weights_sha256")
        out["probe"] = sha or getattr(head, "_path", None)
    return out


def runs_of(result: Mapping[str, Any]) -> set[str]:
    """The distinct runs that computed the head fields of one stored result."""
    prov = result.get("provenance")
    if not isinstance(prov, Mapping):
        return set()
    return {str(p.get("run")) for k, p in prov.items()
            if isinstance(p, Mapping) and p.get("run") and k in result}


def is_mixed(result: Mapping[str, Any]) -> bool:
    """Whether the head fields of ``result`` come from more than one run."""
    return len(runs_of(result)) > 1


def describe(field: str, prov: Mapping[str, Any] | None, value: Any = None) -> str:
    """A short human label of one field's provenance, e.g. ``policy mine v3``."""
    if field == "moderation":
        pol = value.get("policy") if isinstance(value, Mapping) else None
        if isinstance(pol, Mapping) and pol.get("name"):
            return f"policy {pol.get('name')} v{pol.get('version')}"
    if not isinstance(prov, Mapping):
        return "unrecorded"
    if field == "quality":
        head = prov.get("head")
        return f"{prov.get('version')}" + (f", head {str(head)[:12]}" if head else "")
    if field == "labels":
        return f"label set {prov.get('labels')}"
    if field == "probe":
        return f"probe {str(prov.get('probe'))[:16]}"
    return f"run {prov.get('run')}"


def select(
    result: Mapping[str, Any], *, run: str | None = None, policy: str | None = None
) -> dict[str, Any]:
    """``result`` with only the head fields of one run (``run``) and/or moderation made under
    one policy (``policy``); fields without recorded provenance are dropped by ``run``.

    A video (``kind: "video"``) is analysed as one unit: its frames, segments, verdict and
    quality come from one run and are kept or dropped together, while what describes the
    file itself (duration, codec, frame rate, sampling, thumbnail…) is always kept, like an
    image's envelope; under ``policy`` its verdict and segments, and each frame's moderation,
    are kept only when the verdict was made under that policy.
    """
    out = dict(result)
    prov = out.get("provenance") if isinstance(out.get("provenance"), Mapping) else {}
    assert isinstance(prov, Mapping)
    if out.get("kind") == "video":
        _select_video(out, prov, run, policy)
    else:
        if run is not None:
            for field in list(out):
                if field in _BASE or field in ("provenance", "human", "filter"):
                    continue
                p = prov.get(field)
                if not isinstance(p, Mapping) or p.get("run") != run:
                    out.pop(field)
        if policy is not None and isinstance(out.get("moderation"), Mapping):
            pol = out["moderation"].get("policy")
            if not isinstance(pol, Mapping) or pol.get("name") != policy:
                out.pop("moderation")
        if isinstance(prov, Mapping) and prov:
            out["provenance"] = {k: v for k, v in prov.items() if k in out}
    return out


#: A video's fields that the heads made (from its frames); the others describe the file.
_VIDEO_HEAD_FIELDS = ("frames", "segments", "verdict", "quality")


def _select_video(out: dict[str, Any], prov: Mapping[str, Any], run: str | None,
                  policy: str | None) -> None:
    if run is not None:
        runs = {p.get("run") for p in prov.values() if isinstance(p, Mapping)}
        if run not in runs:
            for field in _VIDEO_HEAD_FIELDS:
                out.pop(field, None)
            out.pop("provenance", None)
    if policy is not None and any(f in out for f in ("verdict", "segments", "frames")):
        verdict = out.get("verdict")
        pol = verdict.get("policy") if isinstance(verdict, Mapping) else None
        if not isinstance(pol, Mapping) or pol.get("name") != policy:
            out.pop("verdict", None)
            out.pop("segments", None)
            if isinstance(out.get("frames"), list):
                out["frames"] = [{k: v for k, v in f.items() if k != "moderation"}
                                 if isinstance(f, Mapping) else f for f in out["frames"]]


def summary(results: list[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """``{field: {provenance label: items}}`` over the head fields of ``results``."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        prov = r.get("provenance") if isinstance(r.get("provenance"), Mapping) else {}
        assert isinstance(prov, Mapping)
        for field in ("moderation", "quality", "labels", "probe"):
            if field in r and r[field] is not None:
                label = describe(field, prov.get(field), r[field])
                counts = out.setdefault(field, {})
                counts[label] = counts.get(label, 0) + 1
    return out


#: Fields that are no head's output (the result envelope, and a video's ``kind``).
_BASE = ENVELOPE_FIELDS | {"embedding", "kind"}
