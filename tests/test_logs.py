"""``--log-level`` on every command, and what each level lets through, redacted."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import structlog
from datagen import chat, line, write_lines

from moderation.cli import main
from moderation.logs import configure_logging

KEY = "sk-canary-" + "Qm7Tz2Wv9Lk4Xr8Pd1Hs6Bn3Fj5Gc0Ya"


def _emit_everything() -> None:
    log = structlog.get_logger("moderation.test")
    log.debug("our_debug", api_key=KEY)
    log.info("our_info", url=f"http://user:{KEY}@127.0.0.1/v1")
    log.warning("our_warning", detail=f"Bearer {KEY}")
    sdk = logging.getLogger("openai._base_client")
    sdk.debug(
        "Request options: %s",
        {"headers": {"Authorization": f"Bearer {KEY}"}, "json_data": {"input": ["the text"]}},
    )
    logging.getLogger("httpx2").info("HTTP Request: POST %s", f"http://h/v1?api-key={KEY}")
    logging.getLogger("aiohttp.client").warning("connection to %s lost", f"http://u:{KEY}@h")


@pytest.mark.parametrize(
    ("level", "shown", "hidden"),
    [
        (
            "debug",
            {"our_debug", "our_info", "our_warning", "Request options", "HTTP Request"},
            set(),
        ),
        ("info", {"our_info", "our_warning", "HTTP Request"}, {"our_debug", "Request options"}),
        ("warning", {"our_warning", "connection to"}, {"our_info", "HTTP Request", "our_debug"}),
    ],
)
def test_each_level_shows_what_it_should_and_never_a_key(
    level: str, shown: set[str], hidden: set[str]
) -> None:
    stream = io.StringIO()
    configure_logging(level, stream=stream)
    _emit_everything()
    text = stream.getvalue()
    for item in shown:
        assert item in text, (item, text)
    for item in hidden:
        assert item not in text, (item, text)
    assert KEY not in text and "the text" not in text
    assert "[REDACTED]" in text


def test_openai_log_environment_variable_is_honoured_and_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_LOG", "debug")
    stream = io.StringIO()
    configure_logging("warning", stream=stream)
    _emit_everything()
    text = stream.getvalue()
    assert "Request options" in text and "our_info" not in text
    assert KEY not in text and "the text" not in text


def test_a_handler_someone_else_added_gets_redacted_records_too() -> None:
    stream = io.StringIO()
    foreign = logging.StreamHandler(stream)
    logging.getLogger().addHandler(foreign)
    configure_logging("info", stream=io.StringIO())
    logging.getLogger("openai").info("key %s", KEY)
    logging.getLogger("somewhere.else").warning("key %s", KEY)
    assert stream.getvalue().count("[REDACTED]") == 2 and KEY not in stream.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "debug", "validate", "{data}"],
        ["validate", "{data}", "--log-level", "debug"],
        ["--log-level", "debug", "run", "{data}", "--out", "{out}", "--policy", "offline"],
        ["run", "{data}", "--out", "{out}", "--policy", "offline", "--log-level", "debug"],
    ],
)
def test_every_command_takes_log_level_before_or_after_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    data = write_lines(tmp_path / "d.jsonl", iter([line(chat("hi", "hello"))]))
    args = [a.format(data=data, out=tmp_path / "out") for a in argv]
    assert main([*args, "--quiet"] if "run" in args else args) == 0
    err = capsys.readouterr().err
    # Our own debug event shows only at debug.
    assert "[debug" in err and "command" in err


def test_log_level_rejects_other_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--log-level", "trace", "validate", "x.jsonl"])
    assert exited.value.code == 2
    assert "--log-level" in capsys.readouterr().err


def test_default_level_shows_no_debug_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_lines(tmp_path / "d.jsonl", iter([line(chat("hi", "hello"))]))
    assert main(["validate", str(data)]) == 0
    assert "[debug" not in capsys.readouterr().err
