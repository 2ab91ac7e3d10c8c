"""Nothing leaks: no key in any output, log line or cache; no example text outside the
two files that exist to hold examples (flagged.jsonl, quarantine.jsonl)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import pytest
from datagen import chat, line, write_lines
from fake_openai import FakeConfig, FakeOpenAI, marker
from leaks import assert_nowhere

from moderation.cli import main

REPO = Path(__file__).resolve().parent.parent
CANARY_KEY = "sk-canary-" + "pR4xW8qZ1mK7tB3nV6yH2cJ9sD5fL0gA"
CANARY_SENTENCE = "The heron counts seventeen lanterns beneath the quiet aqueduct"


async def _moderation(*argv: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run the command line in a child process (the fake server keeps serving here)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "moderation",
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


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
        code, out, err = await _moderation(
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
