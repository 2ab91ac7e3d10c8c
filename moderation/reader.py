"""Stage 1, **read**: stream JSONL (or ``.jsonl.gz``) into :class:`Example` records.

Nothing is loaded whole: lines are read one at a time with a byte limit, so a file of
any size, or a single absurd line, keeps memory flat. Every non-blank line becomes an
example; a line that cannot be parsed is an example too, with a problem that sends it
to quarantine. Blank lines (only whitespace) are skipped and counted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from moderation._formats import json_type
from moderation.errors import InputError
from moderation.models import Example, Reason

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "ReadStats",
    "check_inputs",
    "examples_from_records",
    "hash_file",
    "parse_line",
    "read_examples",
]

DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024
"""Lines longer than this are quarantined unread (``line_too_large``). OpenAI's chat
fine-tuning examples are bounded by the context window (a few hundred KB of text);
inline base64 images are the only legitimate reason to come near it."""

_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n\x0b\x0c"


@dataclass(slots=True)
class ReadStats:
    """What the reader saw, per run: counts that the summary reports."""

    examples: int = 0
    blank_lines: int = 0
    bytes: int = 0


def check_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Fail early, before any output is written, on an input that cannot be read.

    Symlinks are followed on purpose (a dataset checked out with git-lfs or DVC is
    often a link); what they point to must be a regular file.
    """
    checked: list[Path] = []
    for raw in paths:
        path = Path(raw)
        try:
            info = path.stat()
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: not a regular file (a directory, FIFO or device)")
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: permission denied")
        checked.append(path)
    if not checked:
        raise InputError("no input files given")
    return checked


def hash_file(path: Path) -> str:
    """sha256 of a file's bytes (for the audit log's record of its inputs)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def read_examples(
    paths: Iterable[Path],
    *,
    stats: ReadStats,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[Example]:
    """Yield one :class:`Example` per non-blank line of each file, in order."""
    for path in paths:
        source = str(path)
        with path.open("rb", buffering=1 << 20) as raw_handle:
            handle: IO[bytes] = (
                gzip.GzipFile(fileobj=raw_handle, mode="rb")  # type: ignore[assignment]
                if path.suffix == ".gz"
                else raw_handle
            )
            try:
                yield from _read_lines(handle, source, max_line_bytes, stats)
            except (OSError, EOFError) as exc:
                raise InputError(f"{source}: cannot read: {exc}") from None


def _read_lines(
    handle: IO[bytes], source: str, max_line_bytes: int, stats: ReadStats
) -> Iterator[Example]:
    line_no = 0
    while True:
        chunk = handle.readline(max_line_bytes + 1)
        if not chunk:
            return
        line_no += 1
        if len(chunk) > max_line_bytes and not chunk.endswith(b"\n"):
            yield _oversized(handle, chunk, source, line_no, max_line_bytes, stats)
            continue
        raw = chunk[:-1] if chunk.endswith(b"\n") else chunk
        stats.bytes += len(chunk)
        body = raw[len(_BOM) :] if line_no == 1 and raw.startswith(_BOM) else raw
        if not body.strip(_WHITESPACE):
            stats.blank_lines += 1
            continue
        stats.examples += 1
        record, problem = parse_line(body)
        example = Example(
            source=source,
            line=line_no,
            raw=raw,
            hash=hashlib.sha256(raw).hexdigest(),
            record=record,
            size=len(raw),
        )
        if problem is not None:
            example.problems.append(problem)
        yield example


def _oversized(
    handle: IO[bytes],
    first: bytes,
    source: str,
    line_no: int,
    max_line_bytes: int,
    stats: ReadStats,
) -> Example:
    """Consume the rest of a line over the limit, hashing it without keeping it."""
    digest = hashlib.sha256()
    size = 0
    chunk = first
    while chunk:
        ends = chunk.endswith(b"\n")
        data = chunk[:-1] if ends else chunk
        digest.update(data)
        size += len(data)
        stats.bytes += len(chunk)
        if ends:
            break
        chunk = handle.readline(1 << 20)
    stats.examples += 1
    example = Example(source=source, line=line_no, raw=b"", hash=digest.hexdigest(), size=size)
    example.problems.append(
        Reason(
            stage="validate",
            code="line_too_large",
            detail={"bytes": size, "limit": max_line_bytes},
        )
    )
    return example


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_line(body: bytes) -> tuple[dict[str, Any] | None, Reason | None]:
    """Parse one line into a JSON object, or say (without quoting it) why not."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = _slow_parse(body)
        if isinstance(value, Reason):
            return None, value
    if not isinstance(value, dict):
        return None, Reason(
            stage="validate",
            code="not_an_object",
            detail={"type": json_type(value)},
        )
    return value, None


def _slow_parse(body: bytes) -> Any:
    """The standard library's parser: for integers past 64 bits (which orjson refuses)
    and for a precise error message on everything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Reason(
            stage="validate",
            code="invalid_utf8",
            detail={"offset": exc.start, "reason": exc.reason},
        )
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return Reason(stage="validate", code="invalid_json", detail={"error": "nested too deeply"})
    except ValueError as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        detail: dict[str, Any] = {"error": message}
        if isinstance(exc, json.JSONDecodeError):
            detail["column"] = exc.colno
        return Reason(stage="validate", code="invalid_json", detail=detail)


def examples_from_records(
    records: Iterable[Any], *, source: str = "<records>", stats: ReadStats
) -> Iterator[Example]:
    """Examples from in-memory records (dicts, or JSON ``str``/``bytes`` lines).

    A dict is serialised with orjson, so ``raw`` and ``hash`` are those of the line the
    record would have in a JSONL file written by orjson.
    """
    for line_no, record in enumerate(records, start=1):
        if isinstance(record, dict):
            raw = orjson.dumps(record)
        elif isinstance(record, bytes):
            raw = record.rstrip(b"\n")
        elif isinstance(record, str):
            raw = record.rstrip("\n").encode("utf-8", "surrogatepass")
        else:
            raise TypeError(f"record {line_no}: expected dict, str or bytes, got {type(record)}")
        stats.bytes += len(raw) + 1
        if not raw.strip(_WHITESPACE):
            stats.blank_lines += 1
            continue
        parsed, problem = parse_line(raw)
        example = Example(
            source=source,
            line=line_no,
            raw=raw,
            hash=hashlib.sha256(raw).hexdigest(),
            record=parsed,
            size=len(raw),
        )
        stats.examples += 1
        if problem is not None:
            example.problems.append(problem)
        yield example
