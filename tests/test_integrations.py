"""The pre-commit hooks and the GitHub Action run what they say, with our CLI's flags."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datagen import AWS_KEY, chat, line
from test_gate import parse_workflow_command

from moderation.cli import _parser, main

REPO = Path(__file__).resolve().parent.parent
HOOKS = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
ACTION = yaml.safe_load((REPO / "action.yml").read_text())


def _data(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.jsonl"
    good.write_bytes(b"".join(line(chat(f"q{i}", f"a{i}")) + b"\n" for i in range(5)))
    bad = folder / "bad.jsonl"
    bad.write_bytes(line(chat("q", "fine")) + b"\n" + line(chat("q", f"key {AWS_KEY}")) + b"\n")
    return good, bad


def test_hooks_are_the_offline_pack_the_format_check_and_the_networked_gate() -> None:
    entries = {hook["id"]: hook["entry"] for hook in HOOKS}
    assert entries == {
        "moderation-offline": "moderation gate --policy offline",
        "moderation-validate": "moderation validate",
        "moderation-gate": "moderation gate --policy default",
    }
    for hook in HOOKS:
        assert hook["language"] == "python" and hook["require_serial"] is True
        pattern = re.compile(hook["files"])
        assert pattern.search("data/train.jsonl") and pattern.search("x.jsonl.gz")
        assert not pattern.search("x.json") and not pattern.search("x.jsonl.bak")
        # pre-commit appends the staged files; the entry must parse with them.
        program, *argv = hook["entry"].split()
        assert program == "moderation"
        _parser().parse_args([*argv, "a.jsonl", "b.jsonl"])


@pytest.mark.parametrize(("hook", "good", "bad"), [("moderation-offline", 0, 1)])
def test_the_offline_hook_passes_clean_files_and_fails_leaky_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: str, good: int, bad: int
) -> None:
    monkeypatch.chdir(tmp_path)
    good_file, bad_file = _data(tmp_path / "data")
    entry = next(h["entry"] for h in HOOKS if h["id"] == hook).split()[1:]
    assert main([*entry, str(good_file)]) == good
    assert main([*entry, str(good_file), str(bad_file)]) == bad


def _gate_step() -> dict[str, object]:
    (step,) = [s for s in ACTION["runs"]["steps"] if s.get("id") == "gate"]
    return step


def test_the_action_is_composite_and_passes_inputs_through_the_environment() -> None:
    assert ACTION["runs"]["using"] == "composite"
    assert set(ACTION["inputs"]) == {
        "inputs",
        "policy",
        "max-flagged",
        "max-quarantined",
        "cache",
        "python-version",
    }
    step = _gate_step()
    assert "${{" not in str(step["run"]), "inputs must not be pasted into the script"
    cache_step = next(s for s in ACTION["runs"]["steps"] if "actions/cache" in s.get("uses", ""))
    assert cache_step["with"]["path"] == "${{ inputs.cache }}"
    # Saved even when the gate fails: those answers were paid for too.
    (save,) = [s for s in ACTION["runs"]["steps"] if s.get("uses") == "actions/cache/save@v4"]
    assert save["if"] == "always()" and save["with"]["path"] == "${{ inputs.cache }}"


@pytest.mark.parametrize(
    ("inputs", "limits", "status"),
    [
        ("data/good.jsonl", {}, 0),
        ("data/**/*.jsonl", {}, 1),
        ("data/**/*.jsonl", {"MAX_FLAGGED": "50%"}, 0),
        ("data/*.jsonl nowhere/*.jsonl", {}, 2),
    ],
)
def test_the_actions_gate_step(
    tmp_path: Path, inputs: str, limits: dict[str, str], status: int
) -> None:
    _data(tmp_path / "data" / "sub")
    _data(tmp_path / "data")
    output = tmp_path / "github-output"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "INPUTS": inputs,
        "POLICY": "offline",
        "MAX_FLAGGED": "",
        "MAX_QUARANTINED": "",
        "CACHE": ".moderation-cache/cache.sqlite",
        "GITHUB_OUTPUT": str(output),
        **limits,
    }
    proc = subprocess.run(
        ["bash", "-e", "-c", str(_gate_step()["run"])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == status, proc.stderr
    assert output.read_text() == f"passed={'true' if status == 0 else 'false'}\n"
    commands = [parse_workflow_command(x) for x in proc.stdout.splitlines()]
    if status == 1:
        files = sorted(p["file"] for _, p, _ in commands if "file" in p)
        assert files == ["data/bad.jsonl", "data/sub/bad.jsonl"]
    if status == 2:
        assert "nowhere/*.jsonl: no such file" in commands[0][2]
    assert (tmp_path / ".moderation-cache" / "cache.sqlite").exists() == (status != 2)
