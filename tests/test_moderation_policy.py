"""Policy files: loading, validation messages, round-trips and the shipped default policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from clipsieve.errors import ClipsieveError
from clipsieve.moderation import (
    PolicyError,
    list_policies,
    load_policy,
    policy_from_dict,
)
from clipsieve.moderation.policy import POLICY_DIR

VALID = """\
name = "test"
version = "1"
description = "a small policy for tests"

[categories.violence]
review = 0.3
block = 0.6
prompts = ["v0", "v1", "v2", "v3", "v4"]

[categories.nudity]
group = "sexual"
review = 0.4
block = 0.8
prompts = ["n0", "n1", "n2", "n3", "n4"]

[neutral.people]
prompts = ["p0", "p1"]

[neutral.children]
prompts = ["c0", "c1"]

[special_care.minor]
class = "children"
trigger = 0.5
targets = ["sexual"]
factor = 0.5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def mutate(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new, 1)


def test_valid_file_loads_with_all_fields(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, VALID))
    assert (policy.name, policy.version) == ("test", "1")
    assert policy.description == "a small policy for tests"
    assert list(policy.categories) == ["violence", "nudity"]
    violence, nudity = policy.categories.values()
    assert (violence.review, violence.block, violence.group) == (0.3, 0.6, None)
    assert violence.prompts == ("v0", "v1", "v2", "v3", "v4")
    assert (nudity.group, nudity.review, nudity.block) == ("sexual", 0.4, 0.8)
    assert list(policy.neutral) == ["people", "children"]
    minor = policy.special_care["minor"]
    assert (minor.neutral_class, minor.trigger, minor.targets) == ("children", 0.5, ("sexual",))
    assert (minor.factor, minor.delta, minor.prompts) == (0.5, None, ())
    assert policy.groups() == {"sexual": ["nudity"]}
    assert policy.targeted_categories("minor") == ["nudity"]
    assert policy.source == str(tmp_path / "policy.toml")


def test_path_may_be_given_as_str_or_path(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    assert load_policy(str(path)) == load_policy(path)


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        # wrong types and ranges
        ("review = 0.3", 'review = "high"',
         'categories.violence.review: must be a number between 0 and 1, got "high"'),
        ("review = 0.3", "review = true",
         "categories.violence.review: must be a number between 0 and 1, got true"),
        ("block = 0.6", "block = 1.5",
         "categories.violence.block: must be a number between 0 and 1, got 1.5"),
        ("review = 0.3", "review = 0",
         "categories.violence.review: must be a number between 0 and 1, got 0"),
        ('version = "1"', "version = 1", "version: must be a non-empty string, got 1"),
        ('name = "test"\n', "", "name: required key is missing"),
        ('group = "sexual"', "group = []",
         "categories.nudity.group: must be a non-empty string, got a list of 0 items"),
        # prompts
        ('prompts = ["v0", "v1", "v2", "v3", "v4"]\n', "",
         "categories.violence.prompts: required key is missing"),
        ('prompts = ["v0", "v1", "v2", "v3", "v4"]', 'prompts = ["v0", "v1", "v2"]',
         "categories.violence.prompts: needs at least 5 prompts, got 3"),
        ('prompts = ["v0", "v1", "v2", "v3", "v4"]', 'prompts = "v0"',
         'categories.violence.prompts: must be a non-empty list of strings, got "v0"'),
        ('prompts = ["v0", "v1", "v2", "v3", "v4"]', 'prompts = ["v0", 3, "v2", "v3", "v4"]',
         "categories.violence.prompts[1]: must be a non-empty string, got 3"),
        ('prompts = ["v0", "v1", "v2", "v3", "v4"]', 'prompts = ["v0", "v1", "v2", "v3", "v0"]',
         "categories.violence.prompts[4]: duplicate of prompts[0]"),
        ('prompts = ["p0", "p1"]', "prompts = []",
         "neutral.people.prompts: must be a non-empty list of strings, got a list of 0 items"),
        # thresholds
        ("review = 0.3", "review = 0.7",
         "categories.violence.review: must be at most block (0.6), got 0.7"),
        # unknown keys
        ("block = 0.6", "blok = 0.6",
         'categories.violence.blok: unknown key; did you mean "block"?'),
        ('version = "1"', 'version = "1"\ncolour = "red"',
         "colour: unknown key (expected one of: categories, description, name, neutral, "
         "special_care, version, video)"),
        ("[neutral.people]", "[neutrals.people]", 'neutrals: unknown key; did you mean "neutral"?'),
        # names
        ("[categories.violence]", "[categories.Violence]",
         'categories.Violence: must be lowercase letters, digits and underscores, '
         'starting with a letter, got "Violence"'),
        ("[neutral.people]", "[neutral.violence]",
         'neutral.violence: name already used by category "violence"'),
        ('group = "sexual"', 'group = "violence"',
         'categories.nudity.group: "violence" is a category name; a group needs a name of its own'),
        # special care
        ('class = "children"', 'class = "child"',
         'special_care.minor.class: unknown neutral class "child"; did you mean "children"?'),
        ('class = "children"', 'class = "children"\nprompts = ["a child"]',
         "special_care.minor: needs exactly one of class or prompts"),
        ('targets = ["sexual"]', 'targets = ["sexul"]',
         'special_care.minor.targets[0]: unknown category or group "sexul"; '
         'did you mean "sexual"?'),
        ("factor = 0.5", "factor = 0.5\ndelta = 0.1",
         "special_care.minor: needs exactly one of factor or delta"),
        ("factor = 0.5", "factor = 1.5",
         "special_care.minor.factor: must be a number strictly between 0 and 1, got 1.5"),
        ("trigger = 0.5", 'trigger = "often"',
         'special_care.minor.trigger: must be a number between 0 and 1, got "often"'),
        ("[special_care.minor]\nclass", "[special_care.people]\nprompts = [\"a child\"]\n#",
         'special_care.people: name already used by neutral class "people"'),
    ],
)
def test_malformed_file_names_file_key_path_and_reason(
    tmp_path: Path, old: str, new: str, error: str
) -> None:
    path = write(tmp_path, mutate(old, new))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}: {error}"


def test_sections_must_be_non_empty_tables() -> None:
    base = tomllib.loads(VALID)
    with pytest.raises(PolicyError, match=r"^x.toml: categories: must define at least one "
                       r"category$"):
        policy_from_dict({**base, "categories": {}}, source="x.toml")
    with pytest.raises(PolicyError, match=r"^x.toml: neutral: must be a table of neutral class "
                       r"tables, got a list of 1 item$"):
        policy_from_dict({**base, "neutral": ["people"]}, source="x.toml")
    with pytest.raises(PolicyError, match=r"^x.toml: neutral.people: must be a table, got 3$"):
        policy_from_dict({**base, "neutral": {"people": 3}}, source="x.toml")


def test_policy_error_is_a_clipsieve_error() -> None:
    assert issubclass(PolicyError, ClipsieveError)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "\nreview = = 1\n")
    with pytest.raises(PolicyError, match=rf"^{path}: invalid TOML: .*line \d+"):
        load_policy(path)
    missing = tmp_path / "nope.toml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    assert str(info.value) == f"{missing}: no such policy file"


def test_unknown_policy_name_suggests_a_shipped_one() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("defualt")
    shipped = ", ".join(list_policies())
    assert str(info.value) == (
        f'unknown policy "defualt"; did you mean "default"? '
        f"(shipped policies: {shipped}; or give a path to a .toml file)"
    )


def test_unknown_policy_name_without_close_match_lists_shipped() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("zzzzzz")
    assert str(info.value).startswith('unknown policy "zzzzzz" (shipped policies: default')


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    text = mutate('description = "a small policy for tests"',
                  'description = "quotes \\" backslash \\\\ tab \\t unicode é ✓ del \\u007f"')
    text += '\n[special_care.flame]\nprompts = ["a fire", "a burning car"]\ntrigger = 0.4\n' \
            'targets = ["violence", "sexual"]\ndelta = 0.05\ndescription = "fire"\n'
    original = load_policy(write(tmp_path, text))
    assert original.description == 'quotes " backslash \\ tab \t unicode é ✓ del \x7f'
    saved = original.save(tmp_path / "copy.toml")
    reloaded = load_policy(saved)
    assert reloaded == original
    assert reloaded.to_toml() == original.to_toml()
    assert reloaded.special_care["flame"].prompts == ("a fire", "a burning car")
    assert reloaded.special_care["flame"].delta == 0.05


def test_default_policy_round_trips(tmp_path: Path) -> None:
    default = load_policy("default")
    assert load_policy(default.save(tmp_path / "default-copy.toml")) == default


def test_with_thresholds_validates_and_keeps_prompts() -> None:
    policy = policy_from_dict(tomllib.loads(VALID), source="t.toml")
    changed = policy.with_thresholds({"violence": {"block": 0.9}}, version="2")
    violence = changed.categories["violence"]
    assert (violence.review, violence.block) == (0.3, 0.9)
    assert changed.version == "2" and changed.name == "test"
    assert policy.categories["violence"].block == 0.6
    assert changed.prompt_hash() == policy.prompt_hash()
    with pytest.raises(PolicyError) as info:
        policy.with_thresholds({"violence": {"review": 0.7}})
    assert str(info.value) == (
        "t.toml: categories.violence.review: must be at most block (0.6), got 0.7"
    )
    with pytest.raises(PolicyError) as info:
        policy.with_thresholds({"violense": {"review": 0.1}})
    assert str(info.value) == (
        't.toml: categories.violense: unknown category; did you mean "violence"?'
    )
    with pytest.raises(PolicyError) as info:
        policy.with_thresholds({"violence": {"reveiw": 0.1}})
    assert str(info.value) == (
        't.toml: categories.violence.reveiw: not a threshold; did you mean "review"?'
    )


def test_prompt_hash_follows_prompts_only() -> None:
    data = tomllib.loads(VALID)
    base = policy_from_dict(data).prompt_hash()
    data["categories"]["violence"]["review"] = 0.2
    data["version"] = "7"
    assert policy_from_dict(data).prompt_hash() == base
    data["categories"]["violence"]["prompts"][0] = "another prompt"
    assert policy_from_dict(data).prompt_hash() != base


REQUIRED_CATEGORIES = {
    "explicit_nudity", "suggestive", "violence", "gore", "weapons", "drugs", "alcohol_tobacco",
    "hate_symbols", "self_harm", "spam_scam",
}
REQUIRED_NEUTRAL = {
    "people", "children", "animals", "food", "landscape", "city", "documents_screenshots",
    "artwork", "sports", "medical",
}


def test_default_policy_contents() -> None:
    assert "default" in list_policies()
    policy = load_policy("default")
    assert (policy.name, policy.version) == ("default", "1")
    assert REQUIRED_CATEGORIES <= set(policy.categories)
    assert REQUIRED_NEUTRAL <= set(policy.neutral)
    assert all(len(c.prompts) >= 5 for c in policy.categories.values())
    assert all(len(n.prompts) >= 5 for n in policy.neutral.values())
    assert policy.targeted_categories("minor") == ["explicit_nudity", "suggestive"]
    assert policy.special_care["minor"].neutral_class == "children"
    all_prompts = [p for _, _, prompts in policy.prompt_classes() for p in prompts]
    assert len(all_prompts) == len(set(all_prompts))


def test_every_shipped_policy_is_valid_and_named_after_its_file() -> None:
    for path in sorted(POLICY_DIR.glob("*.toml")):
        assert load_policy(path.stem).name == path.stem


def test_video_table_is_optional_validated_and_round_trips(tmp_path: Path) -> None:
    from clipsieve.moderation.policy import VideoSettings

    assert load_policy(write(tmp_path, VALID)).video == VideoSettings()
    text = VALID + "\n[video]\nend_factor = 0.5\nmin_duration_ms = 2000\nmerge_gap_ms = 0\n"
    policy = load_policy(write(tmp_path, text))
    assert policy.video == VideoSettings(end_factor=0.5, min_duration_ms=2000, merge_gap_ms=0)
    again = tmp_path / "again.toml"
    policy.save(again)
    assert load_policy(again) == policy and "[video]" in again.read_text()
    assert "[video]" not in load_policy(write(tmp_path, VALID)).to_toml()
    for bad, message in [
        ("[video]\nend_factor = 0\n", "video.end_factor: must be a number in (0, 1], got 0"),
        ("[video]\nend_factor = 1.5\n", "video.end_factor"),
        ("[video]\nmin_duration_ms = -1\n", "video.min_duration_ms: must be a whole number"),
        ("[video]\nmerge_gap_ms = 1.5\n", "video.merge_gap_ms: must be a whole number"),
        ("[video]\nmerge_gap = 10\n", 'video.merge_gap: unknown key; did you mean "merge_gap_ms"?'),
    ]:
        with pytest.raises(PolicyError) as info:
            load_policy(write(tmp_path, VALID + "\n" + bad))
        assert message in str(info.value), str(info.value)
    with pytest.raises(PolicyError, match="video: must be a table"):
        policy_from_dict({**tomllib.loads(VALID), "video": 3}, source="p.toml")
