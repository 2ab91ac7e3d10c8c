"""The reader: streaming, line bookkeeping, and every way a line can be unreadable."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moderation.errors import InputError
from moderation.reader import ReadStats, check_inputs, examples_from_records, read_examples
from moderation.sinks import example_result


def _read(path: Path, **kwargs: int) -> tuple[list, ReadStats]:
    stats = ReadStats()
    return list(read_examples([path], stats=stats, **kwargs)), stats


def test_lines_keep_source_number_raw_bytes_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "a"}\n\n  \n{"text": "b"}\r\n{"text": "c"}')
    examples, stats = _read(path)
    assert [(e.line, e.raw) for e in examples] == [
        (1, b'{"text": "a"}'),
        (4, b'{"text": "b"}\r'),
        (5, b'{"text": "c"}'),
    ]
    assert all(e.source == str(path) for e in examples)
    assert examples[1].hash == hashlib.sha256(b'{"text": "b"}\r').hexdigest()
    assert examples[1].record == {"text": "b"}
    assert stats.examples == 3 and stats.blank_lines == 2


def test_gzip_input_reads_like_plain(tmp_path: Path) -> None:
    plain = b'{"text": "a"}\n{"text": "b"}\n'
    (tmp_path / "d.jsonl").write_bytes(plain)
    with gzip.open(tmp_path / "d.jsonl.gz", "wb") as handle:
        handle.write(plain)
    a, _ = _read(tmp_path / "d.jsonl")
    b, _ = _read(tmp_path / "d.jsonl.gz")
    assert [(e.line, e.raw, e.hash) for e in a] == [(e.line, e.raw, e.hash) for e in b]


@pytest.mark.parametrize(
    ("raw", "code", "detail_key"),
    [
        (b'{"text": "caf\xe9"}', "invalid_utf8", "offset"),
        (b'{"text": "unterminated', "invalid_json", "error"),
        (b'[{"role": "user"}]', "not_an_object", "type"),
        (b'"just a string"', "not_an_object", "type"),
        (b"NaN", "invalid_json", "error"),
        (b'{"a": NaN}', "invalid_json", "error"),
    ],
)
def test_unparseable_lines_become_examples_with_a_reason(
    tmp_path: Path, raw: bytes, code: str, detail_key: str
) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\n' + raw + b'\n{"text": "ok"}\n')
    examples, stats = _read(path)
    assert stats.examples == 3
    bad = examples[1]
    assert bad.record is None and bad.line == 2 and bad.raw == raw
    assert [p.code for p in bad.problems] == [code]
    assert detail_key in bad.problems[0].detail
    # The reason never quotes the line.
    assert b"caf" not in orjson.dumps(bad.problems[0].model_dump())


def test_big_integers_survive_into_output_records(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "x", "id": 123456789012345678901234567890}\n')
    (example,), _ = _read(path)
    assert example.problems == []
    example.decision = "flagged"
    assert example_result(example).example["id"] == 123456789012345678901234567890


def test_bom_on_first_line_is_tolerated_and_kept_in_raw(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a"}\n')
    (example,), _ = _read(path)
    assert example.record == {"text": "a"} and example.raw.startswith(b"\xef\xbb\xbf")


def test_oversized_line_is_quarantined_without_being_kept(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    big = b'{"text": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    path.write_bytes(b'{"text": "before"}\n' + big + b'\n{"text": "after"}\n')
    examples, _ = _read(path, max_line_bytes=4 * 1024 * 1024)
    assert [e.line for e in examples] == [1, 2, 3]
    huge = examples[1]
    assert huge.raw == b"" and huge.size == len(big)
    assert huge.hash == hashlib.sha256(big).hexdigest()
    assert huge.problems[0].code == "line_too_large"
    assert huge.problems[0].detail == {"bytes": len(big), "limit": 4 * 1024 * 1024}
    assert examples[2].record == {"text": "after"}


def test_check_inputs_rejects_missing_and_non_regular_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        check_inputs([tmp_path / "missing.jsonl"])
    with pytest.raises(InputError, match="not a regular file"):
        check_inputs([tmp_path])
    fifo = tmp_path / "pipe"
    import os

    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        check_inputs([fifo])


def test_records_are_examples_too() -> None:
    stats = ReadStats()
    examples = list(
        examples_from_records([{"text": "a"}, '{"text": "b"}', b"[1]", ""], stats=stats)
    )
    assert [e.record for e in examples] == [{"text": "a"}, {"text": "b"}, None]
    assert stats.examples == 3 and stats.blank_lines == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=30))
def test_arbitrary_bytes_never_crash_and_nothing_is_lost(tmp_path_factory, lines) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "d.jsonl"
    data = b"\n".join(lines)
    path.write_bytes(data)
    examples, stats = _read(path, max_line_bytes=1024)
    physical = data.split(b"\n") if data else []
    if physical and physical[-1] == b"":
        physical.pop()
    blank = [
        i
        for i, raw in enumerate(physical)
        if not (raw[3:] if i == 0 and raw.startswith(b"\xef\xbb\xbf") else raw).strip(
            b" \t\r\n\x0b\x0c"
        )
    ]
    assert stats.examples + stats.blank_lines == len(physical)
    assert stats.blank_lines == len(blank)
    assert [e.raw for e in examples] == [r for i, r in enumerate(physical) if i not in blank]
    for example in examples:
        assert (example.record is None) == bool(example.problems)


def test_a_file_that_changes_while_read_is_an_input_error(tmp_path: Path) -> None:
    """The run records each input's hash before reading it; bytes that differ when it
    is read (a file still being written) must not pass as the recorded ones."""
    import gzip as gzip_module

    from moderation.errors import InputError
    from moderation.reader import hash_file, path_text

    plain = tmp_path / "d.jsonl"
    plain.write_bytes(b'{"text": "a"}\n{"text": "b"}\n')
    packed = tmp_path / "d.jsonl.gz"
    packed.write_bytes(gzip_module.compress(plain.read_bytes()))
    for path in (plain, packed):
        expected = {path_text(path): hash_file(path)}
        read = list(read_examples([path], stats=ReadStats(), expected=expected))
        assert [e.line for e in read] == [1, 2]
        stale = {path_text(path): "sha256:" + "0" * 64}
        with pytest.raises(InputError, match="changed while it was being read"):
            list(read_examples([path], stats=ReadStats(), expected=stale))
