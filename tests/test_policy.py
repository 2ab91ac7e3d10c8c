"""Policies: the loader's errors name the file and field; hashes follow content."""

from __future__ import annotations

from pathlib import Path

import pytest

from moderation.errors import PolicyError
from moderation.policy import builtin_policies, load_policy

MINIMAL = """
id: mine
version: 2
moderation:
  provider: local
  thresholds: {"pii/*": 0.5, "pii/email": 0.9}
"""


def test_builtin_packs_load_by_name() -> None:
    assert "offline" in builtin_policies()
    policy = load_policy("offline")
    assert policy.id == "offline" and policy.moderation.provider == "local"
    assert not policy.needs_openai
    assert policy.hash.startswith("sha256:")


def test_unknown_builtin_name_lists_the_packs() -> None:
    with pytest.raises(PolicyError, match=r"no built-in policy named 'nope'.*offline"):
        load_policy("nope")


def test_thresholds_most_specific_pattern_wins(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(MINIMAL)
    spec = load_policy(path).moderation
    assert spec.threshold_for("pii/email") == 0.9
    assert spec.threshold_for("pii/phone") == 0.5
    assert spec.threshold_for("violence") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id: x\nversion: 1\n", "moderation: Field required"),
        (MINIMAL.replace("local", "magic"), "moderation.provider"),
        (MINIMAL.replace("0.9", "1.5"), "moderation.thresholds"),
        (MINIMAL + "surprise: 1\n", "surprise: Extra inputs are not permitted"),
        ("id: [unclosed\n", "not valid YAML"),
        ("- a list\n", "a policy is a YAML mapping"),
        (MINIMAL + "grader:\n  provider: openai\n", "grader.rules"),
        (MINIMAL + "grader:\n  sees: all\n", "grader.sees"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy file not found"):
        load_policy(tmp_path / "absent.yaml")


def test_hash_follows_content_not_formatting(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    a.write_text(MINIMAL)
    b.write_text("# a comment\n" + MINIMAL.replace("version: 2", "version:    2"))
    c.write_text(MINIMAL.replace("0.9", "0.8"))
    assert load_policy(a).hash == load_policy(b).hash
    assert load_policy(a).hash != load_policy(c).hash
