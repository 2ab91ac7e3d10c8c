"""Nothing leaks: no key in any output, log line or cache; no example text outside the
two files that exist to hold examples (flagged.jsonl, quarantine.jsonl)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from child import run_cli
from datagen import AWS_KEY, OFFENSIVE, chat, line, write_lines
from fake_openai import FakeConfig, FakeOpenAI, marker
from leaks import assert_nowhere

from moderation import screen
from moderation.cli import main
from moderation.models import Segment, SegmentError, SegmentModeration
from moderation.policy import Policy
from moderation.providers import ProviderStats

REPO = Path(__file__).resolve().parent.parent
CANARY_KEY = "sk-canary-" + "pR4xW8qZ1mK7tB3nV6yH2cJ9sD5fL0gA"
CANARY_SENTENCE = "The heron counts seventeen lanterns beneath the quiet aqueduct"


def _isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The process environment without the developer's keys, with home and cache
    directories inside ``tmp_path`` so that any cache a run writes is searched too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"), **extra)
    return env


async def test_a_debug_run_with_a_canary_key_leaks_it_nowhere(tmp_path: Path) -> None:
    data = write_lines(
        tmp_path / "data.jsonl",
        iter(
            [
                line(chat("hello", "hi there")),
                line(chat("a question", f"{CANARY_SENTENCE} {marker('violence')}")),
                line(chat(f"{marker('harassment')} you", "I won't answer that.")),
                b"{not json",
            ]
        ),
    )
    async with FakeOpenAI(FakeConfig(api_key=CANARY_KEY)) as fake:
        fake.script("500")  # one retried failure, so error paths log too
        env = _isolated_env(tmp_path, OPENAI_API_KEY=CANARY_KEY, OPENAI_BASE_URL=fake.base_url)
        code, out, err = await run_cli(
            "--log-level",
            "debug",
            "run",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--policy",
            "default",
            cwd=tmp_path,
            env=env,
        )
    assert code == 0, err
    # The key was really used (the fake refuses any other) and debug really logged the SDK.
    assert fake.count(path="/v1/moderations", status=200) >= 1
    assert fake.count(path="/v1/chat/completions", status=200) == 1  # the escalated one
    assert fake.count(status=401) == 0
    assert "openai._base_client" in err and "[debug" in err
    assert_nowhere(CANARY_KEY, dirs=[tmp_path], texts={"stdout": out, "stderr": err})
    assert_nowhere(CANARY_KEY[len("sk-canary-") :], dirs=[tmp_path], texts={"stderr": err})
    # The example's text went to the fake, but not to the terminal, even at debug.
    assert CANARY_SENTENCE in orjson.dumps([r.body for r in fake.requests]).decode()
    assert_nowhere(
        CANARY_SENTENCE,
        dirs=[tmp_path],
        texts={"stdout": out, "stderr": err},
        allow=[data, tmp_path / "out" / "flagged.jsonl"],
    )
    flagged = (tmp_path / "out" / "flagged.jsonl").read_text()
    assert CANARY_SENTENCE in flagged


@pytest.mark.parametrize("level", ["warning", "debug"])
def test_an_unexpected_error_is_reported_without_its_message(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    level: str,
) -> None:
    """A bug's message can quote anything (a validation error quotes its input): the
    terminal gets the exception's type and where it was raised, never its message."""

    def explode(*args: object, **kwargs: object) -> None:
        raise ValueError(f"cannot handle {CANARY_SENTENCE!r} with key {CANARY_KEY}")

    monkeypatch.setattr("moderation.pipeline.route", explode)
    data = write_lines(tmp_path / "d.jsonl", iter([line(chat("hi", "hello"))]))
    argv = ["--log-level", level, "run", str(data), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*argv, "--policy", "offline"]) == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "ValueError" in err and "test_leaks.py" in err
    assert 'File "' in err if level == "debug" else "--log-level debug shows" in err
    assert_nowhere(CANARY_SENTENCE, dirs=[tmp_path / "o"], texts={"stderr": err})
    assert CANARY_KEY not in err


def test_a_provider_error_reaches_the_terminal_redacted_and_unstyled(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from moderation.errors import ProviderFatalError

    def refuse(*args: object, **kwargs: object) -> None:
        raise ProviderFatalError(f"openai: HTTP 401: [bold]Incorrect API key {CANARY_KEY}[/]")

    monkeypatch.setattr("moderation.cli.resolve_policy", refuse)
    data = write_lines(tmp_path / "d.jsonl", iter([line(chat("hi", "hello"))]))
    assert main(["run", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert CANARY_KEY not in err and "[REDACTED]" in err
    assert "[bold]Incorrect API key" in err  # printed as text, not interpreted as markup


def test_an_os_error_is_a_clear_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "o" / "clean.jsonl"))

    monkeypatch.setattr("moderation.api.OutputDir.commit", full)
    data = write_lines(tmp_path / "d.jsonl", iter([line(chat("hi", "hello"))]))
    argv = ["run", str(data), "--out", str(tmp_path / "o"), "--quiet", "--policy", "offline"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "clean.jsonl: No space left on device" in err and "Traceback" not in err


def _hostile_records(text: str) -> list[bytes]:
    """Lines that carry ``text`` in every place a record can hold it: content, key
    names, role and type values, tool names, broken JSON, broken UTF-8."""
    return [
        line(chat("hello", f"{text}. Also {AWS_KEY}")),  # flagged (a credential)
        line(chat("hello", f"{text}. {OFFENSIVE}")),  # flagged (offensive)
        line({"messages": [{"role": text, "content": "hi"}]}),
        line({"messages": [{"role": "user", "content": "q", text: 1}]}),
        line({text: "value", "other": 1}),
        line({"text": "fine", text: True}),  # clean, with a warning
        line(
            {
                "messages": [
                    {"role": "user", "content": [{"type": text, "text": "x"}]},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ),
        line(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": text,
                                "function": {"name": text, "arguments": "{}"},
                            }
                        ],
                    },
                ]
            }
        ),
        orjson.dumps(text),
        b'{"text": "' + text.encode() + b'", ',
        b'{"text": "' + text.encode() + b'\xff"}',
    ]


def test_example_text_stays_in_flagged_and_quarantine_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever a run leaves (a cache in the working directory or the home directory)
    # lands under tmp_path, where the search below looks.
    monkeypatch.chdir(tmp_path)
    for name, value in _isolated_env(tmp_path).items():
        if name in ("HOME", "XDG_CACHE_HOME"):
            monkeypatch.setenv(name, value)
    data = write_lines(tmp_path / "data.jsonl", iter(_hostile_records(CANARY_SENTENCE)))
    out = tmp_path / "out"
    assert main(["--log-level", "debug", "run", str(data), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["counts"]["flagged"] == 2 and summary["counts"]["clean"] == 1
    assert summary["counts"]["quarantine"] == len(_hostile_records("x")) - 3
    assert CANARY_SENTENCE in (out / "flagged.jsonl").read_text()
    # clean.jsonl holds the clean input lines, as they are: the user asked for those too.
    examples = [out / "flagged.jsonl", out / "quarantine.jsonl", out / "clean.jsonl"]
    assert_nowhere(
        CANARY_SENTENCE,
        dirs=[tmp_path],
        texts={"stdout": captured.out, "stderr": captured.err},
        allow=[data, *examples],
    )
    # validate's report names problems by code and path, not by what the line says.
    assert main(["validate", str(data), "--format", "json"]) == 1
    assert main(["validate", str(data)]) == 1
    captured = capsys.readouterr()
    assert_nowhere(CANARY_SENTENCE, texts={"stdout": captured.out, "stderr": captured.err})
    # Nor does the gate's, in any format, nor its GitHub step summary.
    step_summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    for fmt in ("text", "json", "github"):
        argv = ["--log-level", "debug", "gate", str(data), "--policy", "offline"]
        assert main([*argv, "--format", fmt, "--show", "100"]) == 1
        captured = capsys.readouterr()
        assert "flagged" in captured.out
        texts = {f"gate {fmt} stdout": captured.out, f"gate {fmt} stderr": captured.err}
        assert_nowhere(CANARY_SENTENCE, texts=texts)
    assert step_summary.stat().st_size > 0
    assert_nowhere(CANARY_SENTENCE, dirs=[tmp_path], allow=[data, *examples])


class _EchoingModerator:
    """Fails every segment with a message that quotes it, as some APIs' errors do."""

    name = "echo"
    model = "echo-1"

    def __init__(self) -> None:
        self.stats = ProviderStats()

    async def moderate(self, segments: Sequence[Segment]) -> list[SegmentModeration | SegmentError]:
        return [
            SegmentError(
                code="bad_request", message=f"cannot score {s.text!r}", provider="e", model="e"
            )
            for s in segments
        ]

    async def aclose(self) -> None:
        return None


async def test_provider_messages_quoting_the_example_stay_out_of_the_audit(
    tmp_path: Path,
) -> None:
    data = write_lines(tmp_path / "d.jsonl", iter([line(chat("hi", CANARY_SENTENCE))]))
    out = tmp_path / "out"
    policy = Policy.model_validate(
        {"id": "echo", "version": "1", "moderation": {"provider": "local"}}
    )
    summary = await screen(data, out=out, policy=policy, moderator=_EchoingModerator())
    assert summary.counts.quarantine == 1
    # A person reading quarantine.jsonl gets the provider's message; the audit does not.
    assert CANARY_SENTENCE in (out / "quarantine.jsonl").read_text()
    audit = [orjson.loads(x) for x in (out / "audit.jsonl").read_bytes().splitlines()]
    (decision,) = [e for e in audit if e["event"] == "decision"]
    assert {r["code"] for r in decision["reasons"]} == {"bad_request"}
    assert all("message" not in r["detail"] for r in decision["reasons"])
    assert_nowhere(CANARY_SENTENCE, dirs=[out], allow=[out / "quarantine.jsonl"])
