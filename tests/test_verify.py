"""The audit trail is tamper-evident: ``moderation audit verify`` passes an untouched
run and fails, saying what and where, one that was edited, cut, reordered or swapped."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from datagen import chat, line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stubs import KeywordModerator

from moderation import screen
from moderation.audit import GENESIS, line_hash
from moderation.cli import main
from moderation.errors import InputError
from moderation.policy import Policy
from moderation.verify import verify_run

POLICY = Policy.model_validate(
    {
        "id": "stub",
        "version": "1",
        "moderation": {"provider": "local", "thresholds": {"stub/*": 0.5}, "zero_tolerance": []},
    }
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run: 12 examples, each decision several times, a blank line."""
    root = tmp_path_factory.mktemp("run")
    lines = []
    for i in range(12):
        kind = i % 3
        if kind == 0:
            lines.append(line(chat(f"q{i}", f"a{i}")))
        elif kind == 1:
            lines.append(line(chat(f"q{i}", f"BAD {i}")))
        else:
            lines.append(b"{broken %d" % i)
    lines.insert(5, b"")
    source = root / "data.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = root / "out"
    asyncio.run(screen(source, out=out, policy=POLICY, moderator=KeywordModerator()))
    return out


@pytest.fixture
def copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "out"
    shutil.copytree(run, target)
    return target


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _messages(out: Path) -> list[str]:
    result = verify_run(out)
    assert not result.ok
    return [str(p) for p in result.problems]


def test_an_untouched_run_verifies(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = verify_run(run)
    assert result.ok, result.problems
    assert result.events == 14  # run_start, 12 decisions, run_end
    assert result.counts == {"input": 12, "clean": 4, "flagged": 4, "quarantine": 4}
    summary = orjson.loads((run / "summary.json").read_bytes())
    assert result.head == summary["audit"]["head"]
    assert main(["audit", "verify", str(run)]) == 0
    assert capsys.readouterr().out.startswith("OK: 14 events")


def test_every_event_links_to_the_one_before(run: Path) -> None:
    events = _lines(run / "audit.jsonl")
    prev = GENESIS
    for seq, raw in enumerate(events, start=1):
        event = orjson.loads(raw)
        assert (event["seq"], event["prev"]) == (seq, prev)
        prev = line_hash(raw.rstrip(b"\n"))
    start, end = orjson.loads(events[0]), orjson.loads(events[-1])
    assert start["event"] == "run_start" and start["policy"]["hash"] == POLICY.hash
    assert all(v.startswith("sha256:") for v in start["inputs"].values())
    assert end["event"] == "run_end" and end["counts"]["input"] == 12
    for name in ("clean.jsonl", "flagged.jsonl", "quarantine.jsonl"):
        digest = "sha256:" + hashlib.sha256((run / name).read_bytes()).hexdigest()
        assert end["outputs"][name] == digest


def _edit_decision(out: Path) -> None:
    events = _lines(out / "audit.jsonl")
    assert b'"decision":"flagged"' in events[2]
    events[2] = events[2].replace(b'"decision":"flagged"', b'"decision":"clean"')
    (out / "audit.jsonl").write_bytes(b"".join(events))


def _delete(out: Path) -> None:
    events = _lines(out / "audit.jsonl")
    del events[4]
    (out / "audit.jsonl").write_bytes(b"".join(events))


def _swap(out: Path) -> None:
    events = _lines(out / "audit.jsonl")
    events[4], events[5] = events[5], events[4]
    (out / "audit.jsonl").write_bytes(b"".join(events))


def _cut_last_lines(out: Path) -> None:
    (out / "audit.jsonl").write_bytes(b"".join(_lines(out / "audit.jsonl")[:-3]))


def _cut_mid_line(out: Path) -> None:
    data = (out / "audit.jsonl").read_bytes()
    (out / "audit.jsonl").write_bytes(data[: len(data) - 40])


def _edit_run_end(out: Path) -> None:
    events = _lines(out / "audit.jsonl")
    events[-1] = events[-1].replace(b'"flagged":4', b'"flagged":3')
    (out / "audit.jsonl").write_bytes(b"".join(events))


def _append(out: Path) -> None:
    with (out / "audit.jsonl").open("ab") as handle:
        handle.write(_lines(out / "audit.jsonl")[3])


def _edit_clean(out: Path) -> None:
    lines = _lines(out / "clean.jsonl")
    lines[1] = lines[1].replace(b"a3", b"a4")
    (out / "clean.jsonl").write_bytes(b"".join(lines))


def _drop_flagged(out: Path) -> None:
    (out / "flagged.jsonl").write_bytes(b"".join(_lines(out / "flagged.jsonl")[1:]))


def _edit_summary(out: Path) -> None:
    summary = orjson.loads((out / "summary.json").read_bytes())
    summary["counts"]["clean"] += 1
    (out / "summary.json").write_bytes(orjson.dumps(summary))


def _edit_summary_breakdown(out: Path) -> None:
    summary = orjson.loads((out / "summary.json").read_bytes())
    summary["reasons"] = {}
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))


def _rewrite_chain(out: Path) -> None:
    """Change a decision and recompute every link: only the recorded head catches it."""
    events = [orjson.loads(x) for x in _lines(out / "audit.jsonl")]
    events[2]["decision"] = "clean"
    prev, rendered = GENESIS, []
    for event in events:
        event["prev"] = prev
        raw = orjson.dumps(event)
        prev = line_hash(raw)
        rendered.append(raw + b"\n")
    (out / "audit.jsonl").write_bytes(b"".join(rendered))


def _link_audit(out: Path) -> None:
    (out / "elsewhere.jsonl").write_bytes((out / "audit.jsonl").read_bytes())
    (out / "audit.jsonl").unlink()
    (out / "audit.jsonl").symlink_to(out / "elsewhere.jsonl")


def _remove_quarantine(out: Path) -> None:
    (out / "quarantine.jsonl").unlink()


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_edit_decision, "audit.jsonl:4: prev does not match the hash of line 3: line 3 was"),
        (_delete, "audit.jsonl:5: event seq 5 is missing before this line: deleted"),
        (_swap, "audit.jsonl:6: seq 5 comes after seq 6: events were reordered"),
        (_cut_last_lines, "audit.jsonl:11: the log ends without run_end: it was cut off"),
        (_cut_mid_line, "incomplete last line (no newline): the log was cut off"),
        (_edit_run_end, "summary.json: audit.head is not the hash of audit.jsonl's last line"),
        (_append, "decision event after run_end: appended after the run finished"),
        (_edit_clean, "clean.jsonl: its sha256 is not the one run_end recorded"),
        (_drop_flagged, "flagged.jsonl:1: is not the example of its decision event"),
        (_edit_summary, "summary.json: counts disagree(s) with run_end's counts"),
        (_edit_summary_breakdown, "summary.json: its content is not what run_end recorded"),
        (_rewrite_chain, "summary.json: audit.head is not the hash of audit.jsonl's last line"),
        (_link_audit, "audit.jsonl: is a symbolic link"),
        (_remove_quarantine, "quarantine.jsonl: missing"),
    ],
)
def test_each_kind_of_tampering_is_reported_where_it_happened(
    copy: Path, tamper: Callable[[Path], None], expected: str
) -> None:
    tamper(copy)
    messages = _messages(copy)
    assert any(expected in m for m in messages), messages


def test_a_deletion_is_not_mistaken_for_a_reordering_and_vice_versa(copy: Path) -> None:
    _delete(copy)
    assert not any("reordered" in m for m in _messages(copy))


def test_a_swap_is_not_mistaken_for_a_deletion(copy: Path) -> None:
    _swap(copy)
    assert not any("missing" in m for m in _messages(copy))


def test_consecutive_deletions_are_one_report(copy: Path) -> None:
    events = _lines(copy / "audit.jsonl")
    del events[3:6]
    (copy / "audit.jsonl").write_bytes(b"".join(events))
    messages = _messages(copy)
    assert "audit.jsonl:4: events seq 4-6 are missing before this line: deleted" in messages
    assert sum("missing" in m for m in messages) == 1


def test_an_edit_is_reported_as_an_edit_not_a_deletion(copy: Path) -> None:
    _edit_decision(copy)
    messages = _messages(copy)
    assert not any("deleted before" in m or "reordered" in m for m in messages)
    assert any("run_end counts 4 flagged but the log holds 3" in m for m in messages)


def test_cli_exit_status_and_report(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _swap(copy)
    assert main(["audit", "verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"{copy / 'audit.jsonl'}:6: seq 5 comes after seq 6" in out
    assert out.splitlines()[-1].startswith("FAILED:")
    assert main(["audit", "verify", str(copy), "--format", "json"]) == 1
    report = orjson.loads(capsys.readouterr().out)
    assert report["ok"] is False and {"file", "line", "message"} <= set(report["problems"][0])


def test_not_a_run_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "clean.jsonl").write_bytes(b"")
    assert main(["audit", "verify", str(tmp_path)]) == 2
    assert "not the output directory of a run" in capsys.readouterr().err
    with pytest.raises(InputError):
        verify_run(tmp_path)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_change_to_any_byte_of_the_record_is_caught(
    run: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    out = tmp_path_factory.mktemp("mutant") / "out"
    shutil.copytree(run, out)
    name = data.draw(
        st.sampled_from(
            ["audit.jsonl", "clean.jsonl", "flagged.jsonl", "quarantine.jsonl", "summary.json"]
        )
    )
    content = bytearray((out / name).read_bytes())
    position = data.draw(st.integers(0, len(content) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != content[position]))
    content[position] = value
    (out / name).write_bytes(bytes(content))
    if name == "summary.json":
        # Whitespace and key order are not content: a change must change the JSON.
        try:
            changed = orjson.loads(bytes(content)) != orjson.loads((run / name).read_bytes())
        except orjson.JSONDecodeError:
            changed = True
        if not changed:
            return
    assert not verify_run(out).ok


@pytest.mark.parametrize("level", ["warning", "info", "debug"])
def test_a_run_through_the_command_line_verifies_at_every_log_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], level: str
) -> None:
    source = tmp_path / "d.jsonl"
    source.write_bytes(b"".join(line(chat(f"q{i}", f"a{i}")) + b"\n" for i in range(5)))
    out = tmp_path / "out"
    argv = ["run", str(source), "--out", str(out), "--policy", "offline", "--log-level", level]
    assert main(argv) == 0
    # The log level filters the terminal, never the audit trail.
    assert len((out / "audit.jsonl").read_bytes().splitlines()) == 7
    summary = orjson.loads((out / "summary.json").read_bytes())
    # The chain head is on the terminal too, for a copy kept outside the run directory.
    assert summary["audit"]["head"] in capsys.readouterr().out
    assert main(["audit", "verify", str(out), "--log-level", "debug"]) == 0
