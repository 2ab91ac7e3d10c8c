"""The CI gate: limits, exit codes, report formats, and no request for what is cached."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from datagen import AWS_KEY, chat, line
from fake_openai import FakeOpenAI, marker
from stubs import KeywordModerator, ScriptedGrader

from moderation.cli import main
from moderation.errors import ConfigError
from moderation.gate_report import escape_data, escape_property, github_commands, step_summary
from moderation.gating import Limit, gate, gate_sync
from moderation.policy import Policy

REPO = Path(__file__).resolve().parent.parent
WORDS = ("Quetzalcoatl", "periwinkle")  # in every example's text: must never be reported


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    return path


def _clean(n: int) -> list[bytes]:
    return [line(chat(f"{WORDS[0]} question {i}?", f"A {WORDS[1]} answer {i}.")) for i in range(n)]


def _leaky(n: int) -> list[bytes]:
    return [line(chat(f"{WORDS[0]} config {i}?", f"{WORDS[1]} key {AWS_KEY}")) for i in range(n)]


# -- limits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("10", Limit(10)),
        (0, Limit(0)),
        (" 3 ", Limit(3)),
        ("2%", Limit(2, percent=True)),
        ("2.5%", Limit(2.5, percent=True)),
        ("100%", Limit(100, percent=True)),
    ],
)
def test_limits_parse(text: str | int, limit: Limit) -> None:
    assert Limit.parse(text) == limit


@pytest.mark.parametrize("text", ["-1", "1.5", "101%", "ten", "", "2 %%", "%"])
def test_bad_limits_are_configuration_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        Limit.parse(text)


def test_limits_compare_counts_and_shares_exactly() -> None:
    assert Limit.parse("0").allows(0, 100) and not Limit.parse("0").allows(1, 100)
    assert Limit.parse("2%").allows(2, 100) and not Limit.parse("2%").allows(3, 100)
    assert Limit.parse("2.5%").allows(5, 200) and not Limit.parse("2.5%").allows(6, 200)
    assert Limit.parse("10").allows(10, 11) and not Limit.parse("10").allows(11, 11)
    assert str(Limit.parse("2.50%")) == "2.5%" and str(Limit.parse("7")) == "7"
    # Shares that binary floating point cannot hold: exactly at the limit passes.
    assert Limit.parse("2.3%").allows(69, 3000) and not Limit.parse("2.3%").allows(70, 3000)
    assert Limit.parse("0.1%").allows(3, 3000) and Limit.parse("14.35%").allows(287, 2000)
    for tenths in range(1, 1000):
        limit = Limit.parse(f"{tenths / 10}%")
        assert limit.allows(tenths, 1000) and not limit.allows(tenths + 1, 1000)


# -- exit codes --------------------------------------------------------------------


def test_exit_codes_of_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "pass.jsonl", _clean(30))
    _write(tmp_path / "fail.jsonl", _clean(27) + _leaky(3))
    (tmp_path / "blank.jsonl").write_text("\n\n")
    (tmp_path / "broken.yaml").write_text("id: broken\nversion: 1\nmoderation: {provider: nope}\n")
    offline = ["--policy", "offline", "--cache", "c.sqlite"]
    cases = [
        (["gate", "pass.jsonl", *offline], 0, "passed"),
        (["gate", "fail.jsonl", *offline], 1, "flagged: 3 of 30 examples, limit 0"),
        (["gate", "fail.jsonl", *offline, "--max-flagged", "3"], 0, "passed"),
        (["gate", "fail.jsonl", *offline, "--max-flagged", "10%"], 0, "passed"),
        (["gate", "fail.jsonl", *offline, "--max-flagged", "9.9%"], 1, "limit 9.9%"),
        (["gate", "missing.jsonl", *offline], 2, "no such file"),
        # Nothing to check is not a pass: a wrong glob or an emptied file.
        (["gate", "blank.jsonl", *offline, "--max-flagged", "100%"], 1, "no examples"),
        (["gate", "pass.jsonl", "--policy", "broken.yaml"], 2, "moderation.provider"),
        (["gate", "pass.jsonl", "--policy", "default"], 2, "OPENAI_API_KEY"),
        # No policy named and no key: the gate does not fall back to offline.
        (["gate", "pass.jsonl"], 2, "OPENAI_API_KEY"),
    ]
    for argv, code, message in cases:
        assert main(argv) == code, argv
        captured = capsys.readouterr()
        assert message in captured.out + captured.err, argv
        for word in WORDS:
            assert word not in captured.out + captured.err
    assert not (tmp_path / "clean.jsonl").exists(), "the gate writes no outputs"


def test_a_bad_limit_flag_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["gate", str(tmp_path / "x.jsonl"), "--max-flagged", "lots"])
    assert exited.value.code == 2
    assert "give a count" in capsys.readouterr().err


# -- formats -----------------------------------------------------------------------

_COMMAND = re.compile(r"^::(?P<kind>[a-z]+)(?: (?P<props>[^:]*))?::(?P<message>.*)$")


def _unescape(value: str, *, prop: bool) -> str:
    if prop:
        value = value.replace("%3A", ":").replace("%2C", ",")
    return value.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def parse_workflow_command(text: str) -> tuple[str, dict[str, str], str]:
    """Parse a line the way the Actions runner does (properties split on ``,``, then
    the first ``=``), or fail."""
    match = _COMMAND.match(text)
    assert match is not None, f"not a workflow command: {text!r}"
    props: dict[str, str] = {}
    for item in filter(None, (match["props"] or "").split(",")):
        key, sep, value = item.partition("=")
        assert sep and key, f"bad property {item!r} in {text!r}"
        props[key] = _unescape(value, prop=True)
    return match["kind"], props, _unescape(match["message"], prop=False)


def test_escaping_round_trips_through_the_runners_parsing() -> None:
    nasty = "data/a,b:c%25 100%\r\nx.jsonl"
    text = "50% bad\n::x::"
    command = f"::error file={escape_property(nasty)},line=3::{escape_data(text)}"
    kind, props, message = parse_workflow_command(command)
    assert (kind, props, message) == ("error", {"file": nasty, "line": "3"}, text)
    assert "\n" not in command and "\r" not in command


def test_github_format_annotations_summary_and_no_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    name = "odd, name: 100%.jsonl"
    lines = _clean(40)
    bad = {5, 9, *range(20, 40)}
    for i in bad:
        lines[i] = _leaky(1)[0]
    lines[7] = b'{"messages": [{"role": "robot", "content": "Quetzalcoatl"}]}'
    _write(tmp_path / name, lines)
    summary_file = tmp_path / "step-summary.md"
    summary_file.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    argv = ["gate", name, "--policy", "offline", "--no-cache", "--format", "github"]
    assert main([*argv, "--max-quarantined", "1", "--show", "12"]) == 1
    out = capsys.readouterr().out.splitlines()
    parsed = [parse_workflow_command(x) for x in out]
    annotations = [p for p in parsed if "file" in p[1]]
    assert len(annotations) == 12
    assert [int(p[1]["line"]) for p in annotations[:4]] == [6, 8, 10, 21]
    for kind, props, message in annotations:
        assert props["file"] == name
        if int(props["line"]) == 8:
            assert (kind, props["title"]) == ("warning", "moderation: quarantine")
            assert message.startswith("validate.unrecognized_role")
        else:
            # Flagged is over its limit, so its findings are errors.
            assert (kind, props["title"]) == ("error", "moderation: flagged")
            assert "secret/aws_access_key 1 >= 0.5 at messages[2].content" in message
    notices = [p for p in parsed if "file" not in p[1]]
    assert notices[0][0] == "notice" and notices[0][2].startswith("11 more findings")
    assert notices[-1][0] == "error" and "flagged: 22 of 40 examples, limit 0" in notices[-1][2]
    report = summary_file.read_text()
    assert report.startswith("earlier step\n## moderation gate: **failed**")
    assert "| flagged | 22 | 55.0% | 0 **exceeded** |" in report
    assert "| quarantine | 1 | 2.5% | 1 ok |" in report
    assert report.count(f"| `{name}` |") == 23
    everything = "\n".join(out) + report
    for word in WORDS:
        assert word not in everything
    assert AWS_KEY not in everything


def test_github_format_reports_configuration_errors_as_annotations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gate", str(tmp_path / "none.jsonl"), "--format", "github"]) == 2
    kind, props, message = parse_workflow_command(capsys.readouterr().out.strip())
    assert (kind, props["title"]) == ("error", "moderation gate")
    assert message.endswith("none.jsonl: no such file")


def test_json_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "d.jsonl", _clean(10) + _leaky(2) + [b"{"])
    argv = ["gate", "d.jsonl", "--policy", "offline", "--no-cache", "--format", "json"]
    assert main([*argv, "--max-flagged", "20%", "--max-quarantined", "1"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["passed"] is True and report["failures"] == []
    assert report["counts"] == {"input": 13, "clean": 10, "flagged": 2, "quarantine": 1}
    assert report["limits"] == {"flagged": "20%", "quarantine": "1"}
    assert [(f["line"], f["decision"]) for f in report["findings"]] == [
        (11, "flagged"),
        (12, "flagged"),
        (13, "quarantine"),
    ]
    assert report["findings"][0]["reasons"] == [
        {
            "stage": "moderate",
            "code": "zero_tolerance",
            "category": "secret/aws_access_key",
            "score": 1.0,
            "threshold": 0.5,
            "path": "messages[2].content",
            "role": "assistant",
        }
    ]
    assert report["cache"] is None


# -- the cache: unchanged data costs nothing ---------------------------------------

OPENAI_POLICY = """\
id: gate-test
version: "1"
moderation:
  provider: openai
  thresholds: {"*": 0.5}
grader:
  provider: none
"""


async def test_unchanged_data_makes_no_request_and_an_edit_only_its_own(
    fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    policy = tmp_path / "policy.yaml"
    policy.write_text(OPENAI_POLICY)
    lines = _clean(300)
    data = _write(tmp_path / "d.jsonl", lines)
    cache = tmp_path / ".moderation-cache" / "cache.sqlite"
    first = await gate(data, policy=policy, cache=cache)
    assert first.passed and first.requests == fake.count() > 0
    assert sum(len(r.body["input"]) for r in fake.requests) == 900

    again = await gate(data, policy=policy, cache=cache)
    assert again.passed and again.requests == 0 and fake.count() == first.requests
    assert again.cache is not None and again.cache["moderate"]["hits"] == 300

    lines[41] = line(chat("Quetzalcoatl question", f"{marker('violence')} answer"))
    _write(data, lines)
    before = fake.count()
    edited = await gate(data, policy=policy, cache=cache)
    assert not edited.passed and edited.failures == ["flagged: 1 of 300 examples, limit 0"]
    assert [r.body["input"] for r in fake.requests[before:]] == [
        ["You are a helpful assistant.", "Quetzalcoatl question", "UNSAFE_VIOLENCE answer"]
    ]
    assert edited.findings[0].line == 42


def test_the_grader_is_not_asked_again_either(tmp_path: Path) -> None:
    policy = Policy.model_validate(
        {
            "id": "stub",
            "version": "1",
            "moderation": {"provider": "local", "thresholds": {"stub/*": 0.5}},
        }
    )
    data = _write(tmp_path / "d.jsonl", [line(chat(f"BAD q{i}", "ALLOW")) for i in range(20)])
    asked = []
    for _ in range(2):
        grader = ScriptedGrader()
        result = gate_sync(
            data,
            policy=policy,
            moderator=KeywordModerator(),
            grader=grader,
            cache=tmp_path / "c.sqlite",
        )
        assert result.passed and result.counts.clean == 20
        asked.append(grader.stats.requests)
    assert asked == [20, 0]


def test_records_and_the_finding_cap(tmp_path: Path) -> None:
    policy = Policy.model_validate(
        {"id": "s", "version": "1", "moderation": {"provider": "local", "thresholds": {}}}
    )
    records = [chat(f"q{i}", "FAIL") for i in range(30)]
    result = gate_sync(records=records, policy=policy, moderator=KeywordModerator(), keep=5)
    assert not result.passed
    assert (len(result.findings), result.findings_total) == (5, 30)
    assert {r["code"] for f in result.findings for r in f.reasons} == {"timeout"}
    commands = github_commands(result, show=3)
    assert len(commands) == 5 and "27 more findings" in commands[3]
    assert "| quarantine | 30 | 100.0% | 0 **exceeded** |" in step_summary(result)


def test_show_is_honoured_in_every_format_and_json_lists_what_it_keeps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write(tmp_path / "bad.jsonl", [b"{not json"] * 300)
    argv = ["gate", str(data), "--policy", "offline", "--no-cache"]
    assert main([*argv, "--format", "json"]) == 1
    report = orjson.loads(capsys.readouterr().out)
    assert (len(report["findings"]), report["findings_total"]) == (200, 300)
    assert report["exceeded"] == ["quarantine"]
    assert main([*argv, "--format", "json", "--show", "300"]) == 1
    assert len(orjson.loads(capsys.readouterr().out)["findings"]) == 300
    assert main([*argv, "--show", "250"]) == 1
    assert "first 250 of 300" in capsys.readouterr().out
    assert main([*argv, "--format", "github"]) == 1
    notice = next(c for c in capsys.readouterr().out.splitlines() if c.startswith("::notice"))
    assert "250 more findings" in notice and "--show 300" in notice


def test_the_library_gate_refuses_a_fallback_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a key, resolve_policy() may pick 'offline'; the gate does not take it."""
    from moderation.api import resolve_policy

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    data = _write(tmp_path / "ok.jsonl", _clean(3))
    choice = resolve_policy(None)
    assert choice.fallback
    with pytest.raises(ConfigError, match="does not fall back"):
        gate_sync(data, policy=choice)
