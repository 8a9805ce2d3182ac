"""Moderation policies: versioned TOML files of categories, neutral classes and special care.

A policy file looks like this (every key is checked; unknown keys are errors)::

    name = "default"                 # required, non-empty string
    version = "1"                    # required, non-empty string (quote it: "1", not 1)
    description = "..."              # optional

    [categories.violence]            # one table per category; at least one category
    description = "..."              # optional
    group = "harm"                   # optional; special care can target a whole group
    review = 0.35                    # 0 < review <= block <= 1
    block = 0.65
    prompts = ["a photo of ...", ...]  # at least MIN_CATEGORY_PROMPTS distinct captions

    [categories.my_nsfw]             # a category scored by a linear probe (clipsieve train-probe)
    review = 0.5
    block = 0.8
    probe = "probes/nsfw.npz"        # relative to this file's folder, or absolute
    probe_class = "nsfw"             # the probe class whose probability is the score
    # prompts = [...]                # optional here (at least one); only quoted in reasons

    [neutral.food]                   # benign classes that compete in the softmax; at least one
    description = "..."              # optional
    prompts = ["a photo of ...", ...]  # at least one caption

    [special_care.minor]             # optional concepts that tighten other categories
    description = "..."              # optional
    class = "children"               # EITHER an existing neutral class ...
    # prompts = ["a photo of a child", ...]   # ... OR prompts of its own (exactly one of the two)
    trigger = 0.35                   # presence probability at or above which it applies
    targets = ["sexual"]             # category names and/or group names
    factor = 0.5                     # EITHER multiply the targets' thresholds by factor ...
    # delta = 0.1                    # ... OR subtract delta from them (exactly one of the two)

    [video]                          # optional: how frame scores become video segments
    end_factor = 0.8                 # a segment ends below end_factor × the review threshold
    min_duration_ms = 500            # shorter segments are dropped
    merge_gap_ms = 1500              # segments of one category this close are merged

Class names (categories, neutral classes, special-care concepts) and groups are lowercase
``snake_case`` identifiers. Categories, neutral classes and special-care concepts with prompts
of their own share one namespace, because they become rows of the same class bank; a group name
may not equal a category name, so that a special-care target is never ambiguous.

How a special-care concept's presence probability is computed is described in
:mod:`clipsieve.moderation.scoring`.

A **probe category** (``probe`` and ``probe_class``, both or neither) is scored by the probe's
probability for ``probe_class`` instead of the zero-shot softmax, and does not take part in that
softmax; its ``review``/``block`` thresholds and special care apply unchanged. The probe file
must exist and have that class when the policy is loaded; that it was trained on the scanning
model is checked when images are moderated (:class:`~clipsieve.errors.HeadError` otherwise).

Errors are :class:`~clipsieve.errors.PolicyError` with messages of the form
``FILE: KEY.PATH: reason``, e.g.
``default.toml: categories.violence.review: must be a number between 0 and 1, got "high"``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from clipsieve._compat import tomllib
from clipsieve.errors import HeadError, PolicyError, did_you_mean
from clipsieve.heads.probe import ProbeCache

__all__ = [
    "MIN_CATEGORY_PROMPTS",
    "POLICY_DIR",
    "Category",
    "NeutralClass",
    "Policy",
    "PolicyError",
    "SpecialCare",
    "VideoSettings",
    "find_policy_file",
    "list_policies",
    "list_user_policies",
    "load_policy",
    "parse_threshold_overrides",
    "policy_from_dict",
    "policy_text",
    "text_with_thresholds",
]

#: Directory of the policies shipped with clipsieve (``load_policy("default")``).
POLICY_DIR = Path(__file__).resolve().parent.parent / "data" / "policies"

#: Minimum number of prompts per category (prompt ensembling needs several phrasings).
MIN_CATEGORY_PROMPTS = 5

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_NAME_RULE = "must be lowercase letters, digits and underscores, starting with a letter"

_TOP_KEYS = (
    "name", "version", "description", "categories", "neutral", "special_care", "video",
)
_VIDEO_KEYS = ("end_factor", "min_duration_ms", "merge_gap_ms")
_CATEGORY_KEYS = ("description", "group", "review", "block", "prompts", "probe", "probe_class")
_NEUTRAL_KEYS = ("description", "prompts")
_SPECIAL_KEYS = ("description", "class", "prompts", "trigger", "targets", "factor", "delta")


#: The ``{threshold}`` marker of messages about a threshold override (the CLI: --threshold).
_THRESHOLD = {"threshold": "threshold"}


@dataclass(frozen=True)
class Category:
    """A moderated category.

    Attributes:
        name: identifier, e.g. ``"violence"``.
        prompts: captions describing the category, averaged into one class embedding.
        review: probability at or above which an item is sent to review.
        block: probability at or above which an item is blocked (``review <= block``).
        description: free text for humans.
        group: optional group name (e.g. ``"sexual"``) that special care can target.
        probe: absolute path of a linear probe's ``.npz`` whose probability for
            ``probe_class`` is the category's score (then it is left out of the zero-shot
            softmax, and ``prompts`` may be empty), or ``None``.
        probe_class: the probe class scored.
    """

    name: str
    prompts: tuple[str, ...]
    review: float
    block: float
    description: str = ""
    group: str | None = None
    probe: str | None = None
    probe_class: str | None = None


@dataclass(frozen=True)
class NeutralClass:
    """A benign class that competes with the categories in the softmax.

    Attributes:
        name: identifier, e.g. ``"food"``.
        prompts: captions describing the class.
        description: free text for humans.
    """

    name: str
    prompts: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class SpecialCare:
    """A concept whose presence tightens the thresholds of other categories.

    Exactly one of ``neutral_class`` and ``prompts`` is set, and exactly one of ``factor`` and
    ``delta``.

    Attributes:
        name: identifier, e.g. ``"minor"``.
        trigger: presence probability at or above which the concept applies.
        targets: category names and/or group names whose thresholds are tightened.
        neutral_class: the neutral class that represents the concept (TOML key ``class``).
        prompts: the concept's own captions, when it is not a neutral class.
        factor: multiply the targets' review and block thresholds by this (0 < factor < 1).
        delta: subtract this from the targets' review and block thresholds (0 < delta < 1).
        description: free text for humans.
    """

    name: str
    trigger: float
    targets: tuple[str, ...]
    neutral_class: str | None = None
    prompts: tuple[str, ...] = ()
    factor: float | None = None
    delta: float | None = None
    description: str = ""


@dataclass(frozen=True)
class VideoSettings:
    """How per-frame category scores become video segments (the ``[video]`` table).

    A segment of a category starts at the first sampled frame whose score reaches the
    category's review threshold (as applied to that frame, after special care) and ends at
    the first frame whose score falls below ``end_factor`` × that threshold (hysteresis), or at
    the end of the video. Segments of one category at most ``merge_gap_ms`` apart are merged;
    segments shorter than ``min_duration_ms`` are then dropped.

    Attributes:
        end_factor: 0 < end_factor <= 1 (1 = no hysteresis).
        min_duration_ms: shortest segment kept (at 1 frame per second a single flagged frame
            spans 1000 ms).
        merge_gap_ms: largest gap between two segments that are merged into one.
    """

    end_factor: float = 0.8
    min_duration_ms: int = 500
    merge_gap_ms: int = 1500


@dataclass(frozen=True)
class Policy:
    """A validated moderation policy.

    Build one with :func:`load_policy` or :func:`policy_from_dict`, which validate; the
    constructor does not.

    Attributes:
        name: policy name.
        version: policy version string.
        categories: categories by name, in file order.
        neutral: neutral classes by name, in file order.
        special_care: special-care concepts by name, in file order.
        video: segment settings for videos (the ``[video]`` table; defaults when absent).
        description: free text for humans.
        source: where the policy was read from (``"default.toml"`` for shipped policies, the
            path as given otherwise); used in error messages.
    """

    name: str
    version: str
    categories: dict[str, Category]
    neutral: dict[str, NeutralClass]
    special_care: dict[str, SpecialCare] = field(default_factory=dict)
    description: str = ""
    source: str = field(default="<memory>", compare=False)
    video: VideoSettings = field(default_factory=VideoSettings)
    overrides: tuple[tuple[str, float], ...] = ()
    #: probes of the probe categories, loaded once per file and model (this policy's own)
    _probe_cache: ProbeCache = field(
        default_factory=ProbeCache, init=False, repr=False, compare=False
    )

    def provenance(self) -> dict[str, Any]:
        """``{"name", "version"}`` and, when thresholds were overridden for this run
        (``--threshold``), ``"overrides": {"CATEGORY.LEVEL": value}``: what results record
        as their ``policy``."""
        info: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.overrides:
            info["overrides"] = dict(self.overrides)
        return info

    def with_overrides(self, specs: Iterable[str]) -> Policy:
        """Return a copy with ``--threshold CATEGORY.LEVEL=VALUE`` overrides applied.

        The overrides are validated like the file (a number between 0 and 1, review at most
        block, a known category) and recorded in :meth:`provenance`; name and version stay.

        Raises:
            PolicyError: ``--threshold SPEC: reason``.
        """
        specs = list(specs)
        if not specs:
            return self
        parsed = parse_threshold_overrides(specs)
        for spec, (cat, _level, _value) in zip(specs, parsed):
            if cat not in self.categories:
                raise PolicyError(
                    f"{{threshold}} {spec}: unknown category {json.dumps(cat)} of policy "
                    f"{json.dumps(self.name)}{did_you_mean(cat, self.categories)}",
                    params=_THRESHOLD,
                )
        data = self.to_dict()
        for cat, level, value in parsed:
            data["categories"][cat][level] = value
        new = policy_from_dict(data, source=" ".join(f"--threshold {x}" for x in specs))
        merged = dict(self.overrides)
        for cat, level, _value in parsed:
            merged[f"{cat}.{level}"] = getattr(new.categories[cat], level)
        return dataclasses.replace(
            new, source=self.source, overrides=tuple(merged.items())
        )

    def groups(self) -> dict[str, list[str]]:
        """Return the category names in each group, in file order."""
        groups: dict[str, list[str]] = {}
        for category in self.categories.values():
            if category.group is not None:
                groups.setdefault(category.group, []).append(category.name)
        return groups

    def targeted_categories(self, concept: str) -> list[str]:
        """Return the categories tightened by a special-care concept, in file order.

        Args:
            concept: name of a special-care concept of this policy.

        Returns:
            The categories named by the concept's targets directly or through their group.
        """
        targets = set(self.special_care[concept].targets)
        return [c.name for c in self.categories.values() if c.name in targets or c.group in targets]

    def prompt_classes(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """Return ``(name, kind, prompts)`` for every class that has prompts of its own.

        The order is categories (a probe category only if it has prompts), then neutral classes,
        then special-care concepts with their own prompts; ``kind`` is ``"category"``,
        ``"neutral"`` or ``"special_care"``. This is the row order of a
        :class:`~clipsieve.moderation.scoring.ClassBank`.
        """
        rows = [(c.name, "category", c.prompts) for c in self.categories.values() if c.prompts]
        rows += [(n.name, "neutral", n.prompts) for n in self.neutral.values()]
        rows += [
            (s.name, "special_care", s.prompts) for s in self.special_care.values() if s.prompts
        ]
        return rows

    def check_probes(self, model_id: str) -> None:
        """Check that every probe category's probe was trained on ``model_id``.

        Moderation checks this anyway, at the first batch; call it before a scan to fail before
        any image is decoded.

        Raises:
            HeadError: a probe file became unreadable or belongs to another model.
        """
        self.load_probes(model_id)

    def load_probes(self, model_id: str) -> dict[str, Any]:
        """Load the probe of every probe category, checked against ``model_id``.

        Returns:
            Category name → :class:`~clipsieve.heads.probe.Probe` (empty without probe
            categories).

        Raises:
            HeadError: a probe file is unreadable or belongs to another model.
        """
        return {
            c.name: self._probe_cache.load(c.probe, model_id)
            for c in self.categories.values()
            if c.probe is not None
        }

    def prompt_hash(self) -> str:
        """Return a SHA-256 hex digest of the class names, kinds and prompts.

        Thresholds, descriptions and special-care settings are not part of it: they do not
        change the class embeddings, so a recalibrated policy can reuse them.
        """
        payload = json.dumps(self.prompt_classes(), ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def with_thresholds(
        self,
        thresholds: Mapping[str, Mapping[str, float]],
        *,
        name: str | None = None,
        version: str | None = None,
    ) -> Policy:
        """Return a validated copy with some thresholds (and optionally name/version) changed.

        Args:
            thresholds: ``{category: {"review": r, "block": b}}``; either key may be omitted.
            name: new policy name, or ``None`` to keep it.
            version: new version, or ``None`` to keep it.

        Returns:
            The new policy.

        Raises:
            PolicyError: for an unknown category or threshold key, or if the result is invalid
                (e.g. review above block).
        """
        data = self.to_dict()
        if name is not None:
            data["name"] = name
        if version is not None:
            data["version"] = version
        for category, values in thresholds.items():
            if category not in self.categories:
                raise PolicyError(
                    f"{self.source}: categories.{category}: unknown category"
                    f"{did_you_mean(category, self.categories)}"
                )
            for key, value in values.items():
                if key not in ("review", "block"):
                    raise PolicyError(
                        f"{self.source}: categories.{category}.{key}: not a threshold"
                        f"{did_you_mean(key, ('review', 'block'))}"
                    )
                data["categories"][category][key] = value
        return policy_from_dict(data, source=self.source)

    def to_dict(self) -> dict[str, Any]:
        """Return the policy in the file schema, as plain Python values."""
        data: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.description:
            data["description"] = self.description
        data["categories"] = {}
        for c in self.categories.values():
            entry: dict[str, Any] = {}
            if c.description:
                entry["description"] = c.description
            if c.group is not None:
                entry["group"] = c.group
            entry.update(review=c.review, block=c.block)
            if c.probe is not None:
                entry.update(probe=c.probe, probe_class=c.probe_class)
            if c.prompts:
                entry["prompts"] = list(c.prompts)
            data["categories"][c.name] = entry
        data["neutral"] = {}
        for n in self.neutral.values():
            entry = {"description": n.description} if n.description else {}
            entry["prompts"] = list(n.prompts)
            data["neutral"][n.name] = entry
        if self.special_care:
            data["special_care"] = {}
            for s in self.special_care.values():
                entry = {"description": s.description} if s.description else {}
                if s.neutral_class is not None:
                    entry["class"] = s.neutral_class
                else:
                    entry["prompts"] = list(s.prompts)
                entry.update(trigger=s.trigger, targets=list(s.targets))
                if s.factor is not None:
                    entry["factor"] = s.factor
                else:
                    entry["delta"] = s.delta
                data["special_care"][s.name] = entry
        if self.video != VideoSettings():
            data["video"] = dict(self.video.__dict__)
        return data

    def to_toml(self) -> str:
        """Serialise the policy as TOML that :func:`load_policy` reads back to an equal policy."""
        data = self.to_dict()
        lines = [
            f"{key} = {_toml_value(data[key])}"
            for key in ("name", "version", "description")
            if key in data
        ]
        for section in ("categories", "neutral", "special_care"):
            for entry_name, entry in data.get(section, {}).items():
                lines += ["", f"[{section}.{entry_name}]"]
                lines += [f"{key} = {_toml_value(value)}" for key, value in entry.items()]
        if "video" in data:
            lines += ["", "[video]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in data["video"].items()]
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_toml` to ``path`` (UTF-8) and return the path."""
        path = Path(path)
        path.write_text(self.to_toml(), encoding="utf-8")
        return path


def list_policies() -> list[str]:
    """Return the names of the policies shipped with clipsieve, sorted."""
    return sorted(p.stem for p in POLICY_DIR.glob("*.toml"))


def list_user_policies() -> list[str]:
    """Return the names of the policies in the user's policy folder, sorted
    (:func:`clipsieve.settings.user_policy_dir`; ``clipsieve policy init`` writes there)."""
    from clipsieve.settings import user_policy_dir

    folder = user_policy_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def _is_name(text: str) -> bool:
    return not text.endswith(".toml") and "/" not in text and os.sep not in text


def find_policy_file(name_or_path: str | os.PathLike[str]) -> tuple[Path, str]:
    """``(path, source)`` of a policy: a user policy by name (they shadow shipped ones of the
    same name), a shipped one by name, or a file by path.

    Raises:
        PolicyError: an unknown name, with the known ones and a "did you mean".
    """
    from clipsieve.settings import user_policy_dir

    text_arg = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and _is_name(text_arg):
        user = user_policy_dir() / f"{text_arg}.toml"
        if user.is_file():
            return user, str(user)
        shipped = list_policies()
        if text_arg not in shipped:
            mine = list_user_policies()
            known = shipped + [m for m in mine if m not in shipped]
            raise PolicyError(
                f"unknown policy {json.dumps(text_arg)}{did_you_mean(text_arg, known)}"
                f" (shipped policies: {', '.join(shipped)}"
                + (f"; yours in {user_policy_dir()}: {', '.join(mine)}" if mine else "")
                + "; or give a path to a .toml file)"
            )
        return POLICY_DIR / f"{text_arg}.toml", f"{text_arg}.toml"
    return Path(text_arg), text_arg


def policy_text(name_or_path: str | os.PathLike[str]) -> str:
    """The policy file's text, comments included (``clipsieve policy show``)."""
    path, source = find_policy_file(name_or_path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"{source}: no such policy file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{source}: cannot read policy file: {exc}") from None


def parse_threshold_overrides(specs: Iterable[str]) -> list[tuple[str, str, Any]]:
    """Parse ``CATEGORY.review=0.3`` / ``CATEGORY.block=0.5`` into ``(category, level, value)``.

    A value that is not a number is passed on as text, so that validation reports it like a
    bad value in the file.

    Raises:
        PolicyError: a spec without ``=`` or with a level other than review or block.
    """
    out: list[tuple[str, str, Any]] = []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        cat, dot, level = key.strip().rpartition(".")
        if not sep or not dot or not cat:
            raise PolicyError(
                f"{{threshold}} {spec}: expected CATEGORY.review=VALUE or CATEGORY.block=VALUE",
                params=_THRESHOLD,
            )
        if level not in ("review", "block"):
            raise PolicyError(
                f"{{threshold}} {spec}: {json.dumps(level)} is not a threshold"
                f"{did_you_mean(level, ('review', 'block'))} (use review or block)",
                params=_THRESHOLD,
            )
        value: Any = raw.strip()
        try:
            value = float(value)
        except ValueError:
            pass
        out.append((cat, level, value))
    return out


_TABLE_RE = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
_ASSIGN_RE = re.compile(r"^(\s*)(\w+)(\s*=\s*)([^#\n]*?)(\s*(#.*)?)$")


def text_with_thresholds(
    text: str,
    thresholds: Mapping[str, Mapping[str, float]],
    *,
    version: str | None = None,
    name: str | None = None,
) -> str:
    """Change threshold values (and optionally name and version) in a policy file's text,
    keeping every comment and the layout.

    Only the ``review``/``block`` lines of ``[categories.NAME]`` tables and the top-level
    ``name``/``version`` lines are touched; values are written with at most 3 decimals.
    """
    out = []
    table: str | None = None
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        end = line[len(body) :]
        m = _TABLE_RE.match(body)
        if m:
            table = m.group(1).strip()
            out.append(line)
            continue
        a = _ASSIGN_RE.match(body)
        if a:
            key = a.group(2)
            new_value: str | None = None
            if table is None and key == "version" and version is not None:
                new_value = _toml_value(version)
            elif table is None and key == "name" and name is not None:
                new_value = _toml_value(name)
            elif table is not None and table.startswith("categories.") and key in (
                "review",
                "block",
            ):
                cat = table.split(".", 1)[1].strip().strip('"')
                level = thresholds.get(cat, {})
                if key in level:
                    new_value = _fmt_threshold(level[key])
            if new_value is not None:
                line = f"{a.group(1)}{key}{a.group(3)}{new_value}{a.group(5)}{end}"
        out.append(line)
    return "".join(out)


def _fmt_threshold(v: float) -> str:
    text = f"{round(float(v), 3):.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def load_policy(name_or_path: str | os.PathLike[str]) -> Policy:
    """Load and validate a policy by name (a user policy in
    :func:`clipsieve.settings.user_policy_dir`, else a shipped one), or a policy file by path.

    A string without a path separator that does not end in ``.toml`` is a name; anything else
    is a path. A user policy shadows a shipped policy of the same name.

    Args:
        name_or_path: e.g. ``"default"`` or ``"policies/strict.toml"``.

    Returns:
        The validated policy.

    Raises:
        PolicyError: unknown name (with a "did you mean"), missing or unreadable file, invalid
            TOML, or any validation failure (with the file, key path and reason).
    """
    path, source = find_policy_file(name_or_path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"{source}: no such policy file") from None
    except OSError as exc:
        raise PolicyError(f"{source}: cannot read policy file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{source}: not UTF-8 text: {exc.reason}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: invalid TOML: {exc}") from None
    return policy_from_dict(data, source=source, base_dir=path.parent)


def policy_from_dict(
    data: Mapping[str, Any],
    *,
    source: str = "<memory>",
    base_dir: str | os.PathLike[str] | None = None,
) -> Policy:
    """Validate a policy given as parsed TOML (nested dicts) and build a :class:`Policy`.

    Args:
        data: the parsed file.
        source: file name used as the prefix of error messages.
        base_dir: folder that relative ``probe`` paths are relative to (the policy file's
            folder; default the current directory).

    Returns:
        The validated policy.

    Raises:
        PolicyError: the first problem found, as ``SOURCE: KEY.PATH: reason``.
    """
    v = _Validator(source)
    v.keys(data, "", _TOP_KEYS)
    name = v.required_string(data, "name", "name")
    version = v.required_string(data, "version", "version")
    description = v.string(data, "description", "description") or ""

    categories: dict[str, Category] = {}
    for cname, entry in v.tables(data, "categories", "category").items():
        path = f"categories.{cname}"
        v.keys(entry, path, _CATEGORY_KEYS)
        probe = probe_class = None
        if "probe" in entry or "probe_class" in entry:
            probe, probe_class = v.probe(entry, path, base_dir)
            prompts = v.prompts(entry, path, 1) if "prompts" in entry else ()
        else:
            prompts = v.prompts(entry, path, MIN_CATEGORY_PROMPTS)
        review = v.probability(entry, f"{path}.review")
        block = v.probability(entry, f"{path}.block")
        if review > block:
            v.fail(f"{path}.review", f"must be at most block ({block}), got {review}")
        group = v.string(entry, "group", f"{path}.group")
        if group is not None:
            v.name_rule(group, f"{path}.group")
        categories[cname] = Category(
            name=cname,
            prompts=prompts,
            review=float(review),
            block=float(block),
            description=v.string(entry, "description", f"{path}.description") or "",
            group=group,
            probe=probe,
            probe_class=probe_class,
        )

    neutral: dict[str, NeutralClass] = {}
    for nname, entry in v.tables(data, "neutral", "neutral class").items():
        path = f"neutral.{nname}"
        v.keys(entry, path, _NEUTRAL_KEYS)
        if nname in categories:
            v.fail(path, f"name already used by category {json.dumps(nname)}")
        neutral[nname] = NeutralClass(
            name=nname,
            prompts=v.prompts(entry, path, 1),
            description=v.string(entry, "description", f"{path}.description") or "",
        )

    groups = {c.group for c in categories.values() if c.group is not None}
    for cname, category in categories.items():
        if category.group in categories:
            v.fail(
                f"categories.{cname}.group",
                f"{json.dumps(category.group)} is a category name; a group needs a name of its own",
            )
    special: dict[str, SpecialCare] = {}
    specials = v.tables(data, "special_care", "special-care concept", required=False)
    for sname, entry in specials.items():
        path = f"special_care.{sname}"
        v.keys(entry, path, _SPECIAL_KEYS)
        if ("class" in entry) == ("prompts" in entry):
            v.fail(path, "needs exactly one of class or prompts")
        neutral_class = None
        own_prompts: tuple[str, ...] = ()
        if "class" in entry:
            neutral_class = v.required_string(entry, "class", f"{path}.class")
            if neutral_class not in neutral:
                v.fail(
                    f"{path}.class",
                    f"unknown neutral class {json.dumps(neutral_class)}"
                    f"{did_you_mean(neutral_class, neutral)}",
                )
        else:
            if sname in categories or sname in neutral:
                kind = "category" if sname in categories else "neutral class"
                v.fail(path, f"name already used by {kind} {json.dumps(sname)}")
            own_prompts = v.prompts(entry, path, 1)
        trigger = v.probability(entry, f"{path}.trigger")
        targets = v.string_list(entry, "targets", f"{path}.targets")
        for i, target in enumerate(targets):
            if target not in categories and target not in groups:
                v.fail(
                    f"{path}.targets[{i}]",
                    f"unknown category or group {json.dumps(target)}"
                    f"{did_you_mean(target, [*categories, *sorted(groups)])}",
                )
        if ("factor" in entry) == ("delta" in entry):
            v.fail(path, "needs exactly one of factor or delta")
        factor = delta = None
        if "factor" in entry:
            factor = v.fraction(entry, f"{path}.factor")
        else:
            delta = v.fraction(entry, f"{path}.delta")
        special[sname] = SpecialCare(
            name=sname,
            trigger=float(trigger),
            targets=targets,
            neutral_class=neutral_class,
            prompts=own_prompts,
            factor=factor,
            delta=delta,
            description=v.string(entry, "description", f"{path}.description") or "",
        )

    video = VideoSettings()
    if "video" in data:
        table = data["video"]
        if not isinstance(table, dict):
            v.fail("video", f"must be a table, got {_describe(table)}")
        v.keys(table, "video", _VIDEO_KEYS)
        values: dict[str, Any] = {}
        if "end_factor" in table:
            value = table["end_factor"]
            ok = isinstance(value, (int, float)) and 0 < value <= 1
            values["end_factor"] = v._number("video.end_factor", value, ok, "in (0, 1]")
        for key in ("min_duration_ms", "merge_gap_ms"):
            if key in table:
                value = table[key]
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    v.fail(f"video.{key}",
                           f"must be a whole number of milliseconds >= 0, got {_describe(value)}")
                values[key] = int(value)
        video = VideoSettings(**values)

    return Policy(
        name=name,
        version=version,
        categories=categories,
        neutral=neutral,
        special_care=special,
        description=description,
        source=source,
        video=video,
    )


class _Validator:
    """Typed accessors that raise :class:`PolicyError` with ``SOURCE: KEY.PATH: reason``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, reason: str) -> NoReturn:
        raise PolicyError(f"{self.source}: {path}: {reason}")

    def keys(self, table: Mapping[str, Any], path: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        for key in table:
            if key not in allowed:
                hint = did_you_mean(key, allowed) or (
                    f" (expected one of: {', '.join(sorted(allowed))})"
                )
                self.fail(f"{path}.{key}" if path else key, f"unknown key{hint}")

    def name_rule(self, name: str, path: str) -> None:
        if not _NAME_RE.match(name):
            self.fail(path, f"{_NAME_RULE}, got {_describe(name)}")

    def _get(self, table: Mapping[str, Any], key: str, path: str, required: bool) -> Any:
        if key not in table:
            if required:
                self.fail(path, "required key is missing")
            return None
        return table[key]

    def string(self, table: Mapping[str, Any], key: str, path: str) -> str | None:
        value = self._get(table, key, path, False)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            self.fail(path, f"must be a non-empty string, got {_describe(value)}")
        return value

    def required_string(self, table: Mapping[str, Any], key: str, path: str) -> str:
        self._get(table, key, path, True)
        value = self.string(table, key, path)
        assert value is not None  # _get failed otherwise
        return value

    def string_list(self, table: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = self._get(table, key, path, True)
        if not isinstance(value, list) or not value:
            self.fail(path, f"must be a non-empty list of strings, got {_describe(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.fail(f"{path}[{i}]", f"must be a non-empty string, got {_describe(item)}")
        return tuple(value)

    def prompts(self, table: Mapping[str, Any], path: str, minimum: int) -> tuple[str, ...]:
        prompts = self.string_list(table, "prompts", f"{path}.prompts")
        if len(prompts) < minimum:
            self.fail(f"{path}.prompts", f"needs at least {minimum} prompts, got {len(prompts)}")
        seen: dict[str, int] = {}
        for i, prompt in enumerate(prompts):
            if prompt in seen:
                self.fail(f"{path}.prompts[{i}]", f"duplicate of prompts[{seen[prompt]}]")
            seen[prompt] = i
        return prompts

    def probe(
        self, entry: Mapping[str, Any], path: str, base_dir: str | os.PathLike[str] | None
    ) -> tuple[str, str]:
        """Validate ``probe`` + ``probe_class``; return the probe's absolute path and class."""
        from clipsieve.heads.probe import read_probe_classes

        if ("probe" in entry) != ("probe_class" in entry):
            self.fail(path, "needs both probe and probe_class (or neither)")
        given = self.required_string(entry, "probe", f"{path}.probe")
        wanted = self.required_string(entry, "probe_class", f"{path}.probe_class")
        file = Path(given).expanduser()
        if not file.is_absolute():
            file = Path(base_dir if base_dir is not None else os.getcwd()) / file
        file = file.resolve()
        if not file.is_file():
            self.fail(f"{path}.probe", f"no such probe file {json.dumps(str(file))}")
        try:
            classes = read_probe_classes(file)
        except HeadError as exc:
            self.fail(f"{path}.probe", str(exc))
        if wanted not in classes:
            self.fail(
                f"{path}.probe_class",
                f"the probe has no class {json.dumps(wanted)}{did_you_mean(wanted, classes)} "
                f"(classes: {', '.join(json.dumps(c) for c in classes)})",
            )
        return str(file), wanted

    def _number(self, path: str, value: Any, ok: bool, rule: str) -> float:
        number_like = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number_like or not ok:
            self.fail(path, f"must be a number {rule}, got {_describe(value)}")
        return float(value)

    def probability(self, table: Mapping[str, Any], path: str) -> float:
        value = self._get(table, path.rsplit(".", 1)[-1], path, True)
        ok = isinstance(value, (int, float)) and 0 < value <= 1
        return self._number(path, value, ok, "between 0 and 1")

    def fraction(self, table: Mapping[str, Any], path: str) -> float:
        value = table[path.rsplit(".", 1)[-1]]
        ok = isinstance(value, (int, float)) and 0 < value < 1
        return self._number(path, value, ok, "strictly between 0 and 1")

    def tables(
        self, data: Mapping[str, Any], section: str, what: str, *, required: bool = True
    ) -> dict[str, dict[str, Any]]:
        value = self._get(data, section, section, required)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(section, f"must be a table of {what} tables, got {_describe(value)}")
        if required and not value:
            self.fail(section, f"must define at least one {what}")
        for name, entry in value.items():
            self.name_rule(name, f"{section}.{name}")
            if not isinstance(entry, dict):
                self.fail(f"{section}.{name}", f"must be a table, got {_describe(entry)}")
        return value


def _describe(value: Any) -> str:
    """Describe a TOML value for an error message: strings quoted, containers by kind."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime.date, datetime.time)):
        return f"the date/time {value.isoformat()}"
    return type(value).__name__


def _toml_value(value: str | float | int | list[str]) -> str:
    """Format a string, number or list of strings as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes; TOML also forbids raw DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, float):
        return repr(value)
    return "[\n" + "".join(f"    {_toml_value(item)},\n" for item in value) + "]"
