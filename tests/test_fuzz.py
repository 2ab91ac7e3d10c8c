"""Hostile input: a corpus of nasty files (tests/fuzz_corpus) and generated lines go
through the reader, the validator and whole runs. Nothing crashes, every non-blank line
lands in exactly one output, clean lines keep their bytes, the audit verifies."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stubs import KeywordModerator

from moderation import screen
from moderation.audit import decision_event
from moderation.errors import InputError
from moderation.policy import Policy
from moderation.reader import MAX_DEPTH, ReadStats, parse_line, read_examples
from moderation.sinks import example_result
from moderation.validate import validate, validate_record
from moderation.verify import verify_run

CORPUS = Path(__file__).parent / "fuzz_corpus"
FILES = sorted(CORPUS.glob("*.jsonl"))
MAX_LINE = 2048
POLICY = Policy.model_validate(
    {
        "id": "stub",
        "version": "1",
        "moderation": {"provider": "local", "thresholds": {"stub/*": 0.5}, "zero_tolerance": []},
    }
)
_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n\x0b\x0c"


def _physical_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _blank(index: int, raw: bytes) -> bool:
    body = raw[len(_BOM) :] if index == 0 and raw.startswith(_BOM) else raw
    return not body.strip(_WHITESPACE)


def _check_run(data: bytes, out: Path, source: Path) -> None:
    """Conservation, untouched clean bytes, parseable records, a verifiable audit."""
    lines = _physical_lines(data)
    expected = [(n, raw) for n, raw in enumerate(lines, start=1) if not _blank(n - 1, raw)]
    clean = _physical_lines((out / "clean.jsonl").read_bytes())
    records = []
    for name in ("flagged.jsonl", "quarantine.jsonl"):
        for raw in _physical_lines((out / name).read_bytes()):
            # An output record is one level deeper than the example it holds.
            record, problem = parse_line(raw, max_depth=MAX_DEPTH + 1)
            assert problem is None and record is not None, raw[:200]
            records.append(record)
    # Exactly one output per non-blank line.
    decided = {r["line"] for r in records}
    assert len(decided) == len(records)
    assert len(clean) + len(records) == len(expected)
    assert clean == [raw for n, raw in expected if n not in decided]
    for record in records:
        raw = dict(expected)[record["line"]]
        assert record["hash"] == hashlib.sha256(raw).hexdigest()
        assert record["source"] == str(source)
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["counts"]["input"] == len(expected)
    result = verify_run(out)
    assert result.ok, result.problems


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_corpus_file_reads_and_validates_without_crashing(path: Path) -> None:
    stats = ReadStats()
    examples = list(read_examples([path], stats=stats, max_line_bytes=MAX_LINE))
    lines = _physical_lines(path.read_bytes())
    assert stats.examples + stats.blank_lines == len(lines)
    for example in examples:
        validate(example)
        example.decision = "quarantine"
        # What the audit and the outputs will be asked to write, they can write.
        orjson.dumps(decision_event(example))
        assert example_result(example).line == example.line
        assert example.valid == (not example.problems and example.record is not None)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_corpus_file_goes_through_a_whole_run(path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    moderator = KeywordModerator()
    asyncio.run(screen(path, out=out, policy=POLICY, moderator=moderator, max_line_bytes=MAX_LINE))
    _check_run(path.read_bytes(), out, path)


def test_whole_corpus_through_the_offline_policy(tmp_path: Path) -> None:
    """The real local detectors and classifier on every hostile line at once."""
    merged = tmp_path / "corpus.jsonl"
    data = b"".join(p.read_bytes().rstrip(b"\n") + b"\n" for p in FILES if p.stat().st_size)
    merged.write_bytes(data)
    asyncio.run(screen(merged, out=tmp_path / "out", policy="offline", max_line_bytes=MAX_LINE))
    _check_run(data, tmp_path / "out", merged)


_HOSTILE_STRINGS = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["\ud800", "\udfff", "\x00", "\u2028", "\ufeff", "BAD", "FAIL", "\r", "a\nb", "é" * 5]
    ),
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _HOSTILE_STRINGS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.one_of(
                st.sampled_from(
                    ["messages", "role", "content", "text", "prompt", "weight", "type"]
                ),
                _HOSTILE_STRINGS,
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)
_ROLES = st.sampled_from(["system", "user", "assistant", "tool", "developer", "bot", "\ud800"])
_CHAT = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": _ROLES, "content": st.one_of(_HOSTILE_STRINGS, _JSON)},
                optional={"weight": _JSON, "name": _JSON, "tool_calls": _JSON},
            ),
            max_size=4,
        )
    },
    optional={"tools": _JSON},
)


def _encode(value: object) -> bytes:
    # The standard library writes what orjson refuses: lone surrogates, huge integers.
    import json

    return json.dumps(value).encode()


def _corpus_lines() -> list[bytes]:
    return [raw for p in FILES for raw in _physical_lines(p.read_bytes())]


_LINES = st.lists(
    st.one_of(
        st.binary(max_size=60),
        _JSON.map(_encode),
        _CHAT.map(_encode),
        st.sampled_from(_corpus_lines()),
        st.sampled_from([b"", b"  ", b"\r", b"\xef\xbb\xbf", b"\x1e{}"]),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(record=st.one_of(_JSON, _CHAT))
def test_validate_never_raises_and_its_details_can_always_be_written(record: object) -> None:
    fmt, found = validate_record(record)
    for reason in (*found.problems, *found.warnings):
        orjson.dumps(reason.model_dump(mode="json"))
    for segment in found.segments:
        segment.text.encode("utf-8")  # moderators only ever get valid Unicode
    assert fmt is None or isinstance(fmt, str)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=_LINES, gz=st.booleans(), final_newline=st.booleans(), offline=st.booleans())
def test_any_lines_through_a_whole_run(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[bytes],
    gz: bool,
    final_newline: bool,
    offline: bool,
) -> None:
    """Half the runs use the offline policy's real detectors and classifier."""
    root = tmp_path_factory.mktemp("fuzz")
    # Each generated item is one line: a newline inside it makes two (or more).
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    source = root / ("data.jsonl.gz" if gz else "data.jsonl")
    source.write_bytes(gzip.compress(data) if gz else data)
    out = root / "out"
    providers: dict[str, Any] = (
        {"policy": "offline"} if offline else {"policy": POLICY, "moderator": KeywordModerator()}
    )
    asyncio.run(screen(source, out=out, max_line_bytes=MAX_LINE, batch_size=4, **providers))
    _check_run(data, out, source)


def test_a_damaged_gzip_is_an_input_error_never_a_crash(tmp_path: Path) -> None:
    data = b"".join(b'{"text": "line %d, padded to compress"}\n' % i for i in range(500))
    packed = gzip.compress(data)
    rng = random.Random(7)
    path = tmp_path / "d.jsonl.gz"
    outcomes: set[str] = set()
    for _ in range(40):
        damaged = bytearray(packed)
        for _ in range(3):
            damaged[rng.randrange(10, len(damaged))] = rng.randrange(256)
        path.write_bytes(bytes(damaged))
        try:
            list(read_examples([path], stats=ReadStats()))
            outcomes.add("read")
        except InputError as exc:
            outcomes.add(str(exc).split(": ", 1)[1].split(":")[0])
    assert outcomes <= {"read", "cannot read"} and "cannot read" in outcomes
    path.write_bytes(b'{"text": "not compressed"}\n')
    with pytest.raises(InputError, match="not a gzip file") as caught:
        list(read_examples([path], stats=ReadStats()))
    assert "not compressed" not in str(caught.value) and '{"' not in str(caught.value)


def test_a_file_name_that_is_not_utf8_is_named_with_escapes(tmp_path: Path) -> None:
    name = os.fsdecode(b"data-\xff\xfe.jsonl")
    source = tmp_path / name
    source.write_bytes(b'{"text": "ok"}\n{broken\n')
    out = tmp_path / "out"
    asyncio.run(screen(source, out=out, policy=POLICY, moderator=KeywordModerator()))
    (record,) = [orjson.loads(x) for x in (out / "quarantine.jsonl").read_bytes().splitlines()]
    assert record["source"].endswith("data-\\xff\\xfe.jsonl")
    assert verify_run(out).ok


def test_records_orjson_cannot_write_are_kept_exactly_as_written(tmp_path: Path) -> None:
    lines = [
        b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", '
        b'"content": "a", "weight": 123456789012345678901234567890}]}',
        b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"text": 1e400}',
    ]
    source = tmp_path / "d.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    asyncio.run(screen(source, out=tmp_path / "out", policy=POLICY, moderator=KeywordModerator()))
    records = (tmp_path / "out" / "quarantine.jsonl").read_bytes().splitlines()
    assert len(records) == 3
    for raw, written in zip(lines, records, strict=True):
        assert written.endswith(b',"example":' + raw + b"}")


@pytest.mark.parametrize(
    ("depth", "code"),
    [
        (254, "message_not_object"),
        (255, "message_not_object"),
        (512, "message_not_object"),
        (513, "invalid_json"),
        (1024, "invalid_json"),
        (5000, "invalid_json"),
    ],
)
def test_nesting_is_bounded_the_same_way_by_both_parsers(
    tmp_path: Path, depth: int, code: str
) -> None:
    """orjson reads 1024 levels and writes 254; the standard library stops where the
    stack ends. Records deeper than MAX_DEPTH (512) are quarantined whichever parser
    read them, and every deeper record can still be written and verified."""
    source = tmp_path / "d.jsonl"
    body = b'{"messages":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    # orjson refuses 1e400 (it overflows a double): the standard library reads that line.
    source.write_bytes(body + b"\n" + body[:-1] + b',"n":1e400}\n')
    asyncio.run(screen(source, out=tmp_path / "out", policy=POLICY, moderator=KeywordModerator()))
    lines = (tmp_path / "out" / "quarantine.jsonl").read_bytes().splitlines()
    for raw in lines:
        record, _ = parse_line(raw, max_depth=MAX_DEPTH + 1)
        assert record is not None and record["reasons"][0]["code"] == code
    assert len(lines) == 2
    assert verify_run(tmp_path / "out").ok
