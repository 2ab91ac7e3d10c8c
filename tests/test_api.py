"""The library's entry points, async and sync, over files and records; and the README's
example, run as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from datagen import chat, line
from stubs import KeywordModerator, ScriptedGrader

import moderation
from moderation.policy import Policy

REPO = Path(__file__).resolve().parent.parent
POLICY = Policy.model_validate(
    {
        "id": "stub",
        "version": "1",
        "moderation": {"provider": "local", "thresholds": {"stub/*": 0.5}},
    }
)
RECORDS = [
    chat("q0", "fine"),
    chat("q1", "BAD answer"),
    chat("BAD question", "ALLOW"),
    chat("BAD question", "VIOLATE"),
    chat("q4", "FAIL"),
    {"messages": 5},
]
EXPECTED = ["clean", "flagged", "clean", "flagged", "quarantine", "quarantine"]


def _providers() -> dict[str, object]:
    return {"policy": POLICY, "moderator": KeywordModerator(), "grader": ScriptedGrader()}


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"".join(line(r) + b"\n" for r in RECORDS))
    return path


async def test_async_entry_points_agree_on_files_and_records(tmp_path: Path) -> None:
    source = _file(tmp_path)
    for where in ({"inputs": source}, {"records": RECORDS}):
        name = "file" if "inputs" in where else "records"
        streamed = [r async for r in moderation.stream(**where, **_providers())]
        assert [r.decision for r in streamed] == EXPECTED, name
        assert [r.line for r in streamed] == [1, 2, 3, 4, 5, 6]
        summary = await moderation.screen(**where, out=tmp_path / name, **_providers())
        assert summary.counts.model_dump() == {
            "input": 6,
            "clean": 2,
            "flagged": 2,
            "quarantine": 2,
        }
        result = await moderation.gate(
            **where, max_flagged=2, max_quarantined="33.4%", **_providers()
        )
        assert result.passed and result.counts == summary.counts
        assert [f.line for f in result.findings] == [2, 4, 5, 6]
        strict = await moderation.gate(**where, max_quarantined="33.3%", **_providers())
        assert strict.failures == [
            "flagged: 2 of 6 examples, limit 0",
            "quarantine: 2 of 6 examples, limit 33.3%",
        ]
    assert (tmp_path / "file" / "clean.jsonl").read_bytes() == (
        tmp_path / "records" / "clean.jsonl"
    ).read_bytes()


def test_sync_entry_points_match_the_async_ones(tmp_path: Path) -> None:
    source = _file(tmp_path)
    summary = moderation.screen_sync(source, out=tmp_path / "out", **_providers())
    assert (summary.counts.clean, summary.counts.flagged, summary.counts.quarantine) == (2, 2, 2)
    result = moderation.gate_sync(records=RECORDS, max_flagged=2, **_providers())
    assert not result.passed and result.failures == ["quarantine: 2 of 6 examples, limit 0"]


def test_configuration_errors_are_raised_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(moderation.ConfigError, match="either input files or records"):
        moderation.gate_sync(_file(tmp_path), records=RECORDS, **_providers())
    with pytest.raises(moderation.ConfigError, match="give a count"):
        moderation.gate_sync(records=RECORDS, max_flagged="some", **_providers())
    with pytest.raises(moderation.ConfigError, match="OPENAI_API_KEY"):
        moderation.gate_sync(records=RECORDS)  # default policy, no key, no fallback


def _readme_library_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_readme_library_example_runs_and_prints_what_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _readme_library_example()
    (tmp_path / "fixtures").symlink_to(REPO / "fixtures")
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    promised = re.findall(r"^print\(.*?\)  # (.*)$", code, flags=re.M)
    assert len(promised) == 3
    assert printed.getvalue().splitlines() == promised
    assert (tmp_path / "screened" / "summary.json").is_file()
    assert (tmp_path / "screened" / ".moderation-cache.sqlite").is_file()


async def test_an_injected_grader_is_used_with_the_policys_own_moderator(tmp_path: Path) -> None:
    """Only the grader injected: the policy's moderator is built (and closed), the
    injected grader judges the escalations instead of none."""
    from datagen import OFFENSIVE

    grader = ScriptedGrader()
    records = [chat(f"{OFFENSIVE} ALLOW", "I won't repeat that."), chat(OFFENSIVE, "VIOLATE")]
    summary = await moderation.screen(
        records=records, out=tmp_path / "o", policy="offline", grader=grader
    )
    assert grader.stats.requests == 2
    assert summary.reasons.get("grade.not_configured") is None
    assert summary.providers["grader"]["name"] == "scripted"
    assert (summary.counts.clean, summary.counts.flagged) == (1, 1)


def test_an_offline_run_makes_no_api_requests(tmp_path: Path) -> None:
    summary = moderation.screen_sync(
        records=[chat(f"q{i}", "a") for i in range(130)], out=tmp_path / "o", policy="offline"
    )
    local = summary.providers["moderation"]
    assert (summary.requests, local["requests"], local["calls"]) == (0, 0, 3)  # 3 batches of 64
    assert summary.cost_usd == 0


def test_a_run_whose_input_changed_under_it_leaves_nothing_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hash in run_start must describe the bytes screened: when the file read is
    not the file hashed, the run stops with an input error and writes nothing final."""
    from moderation.errors import InputError

    monkeypatch.setattr("moderation.api.hash_file", lambda path: "sha256:" + "0" * 64)
    out = tmp_path / "o"
    with pytest.raises(InputError, match="changed while it was being read"):
        moderation.screen_sync(_file(tmp_path), out=out, **_providers())
    assert not [p.name for p in out.iterdir() if not p.name.startswith(".")]
