"""End to end through the command line, offline, on generated and fixture datasets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from datagen import chat, line, write_lines, write_mixed

from moderation.cli import main

REPO = Path(__file__).resolve().parent.parent
OUTPUTS = {"clean.jsonl", "flagged.jsonl", "quarantine.jsonl", "audit.jsonl", "summary.json"}


def _records(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_quickstart_writes_the_five_outputs_and_warns_about_the_fallback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "moderation",
            "run",
            "fixtures/quickstart.jsonl",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    cache = {
        ".moderation-cache.sqlite",
        ".moderation-cache.sqlite-wal",
        ".moderation-cache.sqlite-shm",
    }
    assert {p.name for p in (tmp_path / "out").iterdir()} - cache == OUTPUTS
    assert (tmp_path / "out" / ".moderation-cache.sqlite").is_file()
    assert "OPENAI_API_KEY is not set" in proc.stderr
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["fallback"] and "offline" in summary["fallback"]
    assert summary["policy"]["id"] == "offline"
    counts = summary["counts"]
    assert counts["input"] == counts["clean"] + counts["flagged"] + counts["quarantine"] > 0


def test_mixed_10k_conservation_order_bytes_and_determinism(tmp_path: Path) -> None:
    items = write_mixed(tmp_path / "mixed.jsonl", 10_000, seed=3)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert (
            main(
                [
                    "run",
                    str(tmp_path / "mixed.jsonl"),
                    "--out",
                    str(out),
                    "--policy",
                    "offline",
                    "--quiet",
                ]
            )
            == 0
        )
        runs.append(
            {
                n: (out / n).read_bytes()
                for n in ("clean.jsonl", "flagged.jsonl", "quarantine.jsonl")
            }
        )
    assert runs[0] == runs[1], "two runs of the same input differ"

    out = tmp_path / "a"
    non_blank = [(i + 1, kind, raw) for i, (kind, raw) in enumerate(items) if kind != "blank"]
    clean = (out / "clean.jsonl").read_bytes().splitlines()
    flagged = _records(out / "flagged.jsonl")
    quarantine = _records(out / "quarantine.jsonl")
    # Conservation: every non-blank line in exactly one output.
    placed = [("clean", None)] * 0
    lines_by_decision = {
        "flagged": [r["line"] for r in flagged],
        "quarantine": [r["line"] for r in quarantine],
    }
    assert len(clean) + len(flagged) + len(quarantine) == len(non_blank)
    decided = set(lines_by_decision["flagged"]) | set(lines_by_decision["quarantine"])
    assert len(decided) == len(flagged) + len(quarantine)
    expected_clean = [raw for n, kind, raw in non_blank if n not in decided]
    # Clean lines: byte-identical to their input lines, in input order.
    assert clean == expected_clean
    del placed
    # Every line lands where the generator says the offline policy must put it.
    actual = {n: "flagged" for n in lines_by_decision["flagged"]}
    actual.update({n: "quarantine" for n in lines_by_decision["quarantine"]})
    wrong = [
        (n, kind, actual.get(n, "clean"))
        for n, kind, _ in non_blank
        if actual.get(n, "clean") != kind
    ]
    assert wrong == []
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["counts"] == {
        "input": len(non_blank),
        "clean": len(clean),
        "flagged": len(flagged),
        "quarantine": len(quarantine),
    }
    assert summary["blank_lines"] == len(items) - len(non_blank)
    for lines in lines_by_decision.values():
        assert lines == sorted(lines)


def test_hostile_lines_are_quarantined_with_reasons(tmp_path: Path) -> None:
    big = b'{"text": "' + b"y" * (5 * 1024 * 1024) + b'"}'
    source = write_lines(
        tmp_path / "hostile.jsonl",
        iter([b'{"text": "\xff\xfe bad bytes"}', b"[1, 2, 3]", big, line(chat("ok", "fine"))]),
    )
    assert (
        main(["run", str(source), "--out", str(tmp_path / "out"), "--policy", "offline", "--quiet"])
        == 0
    )
    quarantine = {r["line"]: r for r in _records(tmp_path / "out" / "quarantine.jsonl")}
    assert [r["code"] for r in quarantine[1]["reasons"]] == ["invalid_utf8"]
    assert quarantine[1]["example"].startswith('{"text": "\\xff\\xfe')
    assert [r["code"] for r in quarantine[2]["reasons"]] == ["not_an_object"]
    assert quarantine[2]["example"] == "[1, 2, 3]"
    assert [r["code"] for r in quarantine[3]["reasons"]] == ["line_too_large"]
    assert quarantine[3]["example"] is None
    assert (tmp_path / "out" / "clean.jsonl").read_bytes() == line(chat("ok", "fine")) + b"\n"
    # The audit log carries hashes and codes, never the text.
    audit = (tmp_path / "out" / "audit.jsonl").read_bytes()
    assert b"bad bytes" not in audit and b"fine" not in audit


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "missing.jsonl", "--out", "o"], "no such file"),
        (["run", "fixtures/chat.jsonl", "--out", "o", "--policy", "nope"], "no built-in policy"),
        (["run", "fixtures/chat.jsonl", "--out", "o", "--policy", "default"], "OPENAI_API_KEY"),
    ],
)
def test_usage_and_configuration_errors_exit_2_and_write_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(REPO)
    argv = [str(tmp_path / "o") if a == "o" else a for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_validate_reports_formats_problems_and_tokens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    assert (
        main(
            [
                "validate",
                "fixtures/chat.jsonl",
                "fixtures/dpo.jsonl",
                "fixtures/text.jsonl",
                "--format",
                "json",
            ]
        )
        == 0
    )
    report = orjson.loads(capsys.readouterr().out)
    assert report["files"]["fixtures/chat.jsonl"]["formats"] == {"chat": 4}
    assert report["files"]["fixtures/dpo.jsonl"]["formats"] == {"preference": 1}
    assert all(f["tokens"] > 0 for f in report["files"].values())
    assert report["token_method"]

    assert main(["validate", "fixtures/malformed.jsonl", "--format", "json"]) == 1
    report = orjson.loads(capsys.readouterr().out)
    info = report["files"]["fixtures/malformed.jsonl"]
    assert info["invalid"] == 6 and info["valid"] == 0
    assert {"invalid_json", "not_an_object", "invalid_utf8", "unrecognized_role"} <= set(
        info["problems"]
    )
    assert [p["line"] for p in report["problems_shown"]] == [1, 2, 3, 4, 5, 6]


def test_provider_failures_are_logged_to_stderr_not_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from moderation.providers.local import LocalModerator

    async def broken(self: LocalModerator, segments: object) -> list[object]:
        raise RuntimeError("classifier exploded")

    monkeypatch.setattr(LocalModerator, "moderate", broken)
    source = write_lines(tmp_path / "d.jsonl", iter([line(chat("a", "b"))]))
    assert main(["run", str(source), "--out", str(tmp_path / "out"), "--policy", "offline"]) == 0
    captured = capsys.readouterr()
    assert "moderator_failed" in captured.err and "moderator_failed" not in captured.out
    # Fail closed: the example is quarantined, not passed.
    (record,) = _records(tmp_path / "out" / "quarantine.jsonl")
    assert {r["code"] for r in record["reasons"]} == {"provider_exception"}
