"""Stage 1, **read**: stream JSONL (or ``.jsonl.gz``) into :class:`Example` records.

Nothing is loaded whole: lines are read one at a time with a byte limit, so a file of
any size, or a single absurd line, keeps memory flat. Every non-blank line becomes an
example; a line that cannot be parsed is an example too, with a problem that sends it
to quarantine. Blank lines (only whitespace) are skipped and counted.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from moderation._formats import json_type
from moderation.errors import InputError
from moderation.models import Example, Reason

__all__ = [
    "BOM",
    "DEFAULT_MAX_LINE_BYTES",
    "MAX_DEPTH",
    "ReadStats",
    "check_inputs",
    "example_hash",
    "examples_from_records",
    "hash_file",
    "input_links",
    "open_input",
    "parse_line",
    "path_text",
    "read_examples",
]

DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024
"""Lines longer than this are quarantined unread (``line_too_large``). OpenAI's chat
fine-tuning examples are bounded by the context window (a few hundred KB of text);
inline base64 images are the only legitimate reason to come near it."""

MAX_DEPTH = 512
"""Records nested deeper than this are quarantined (``invalid_json``, nested too
deeply). The two parsers behind :func:`parse_line` stop at different depths (orjson at
1024, the standard library where the stack ends), and an output record adds a level;
one bound below both keeps every record readable by every reader of the outputs."""

BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark: skipped at the start of a file (and of a record)."""
_TOO_DEEP = Reason(stage="validate", code="invalid_json", detail={"error": "nested too deeply"})
_WHITESPACE = b" \t\r\n\x0b\x0c"
# POSIX flags; where a platform lacks one, it is left out.
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


@dataclass(slots=True)
class ReadStats:
    """What the reader saw, per run: counts that the summary reports."""

    examples: int = 0
    blank_lines: int = 0
    bytes: int = 0


_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(path: Path, mode: int) -> InputError:
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
    # An input is read twice (hashed for the audit log, then screened), which a pipe or
    # a device cannot be.
    return InputError(f"{path}: is {kind}, not a regular file; give a .jsonl or .jsonl.gz file")


def example_hash(raw: bytes) -> str:
    """An example's content hash: sha256 of its line's bytes (without the newline), hex.
    The key of the cache and of every decision in the audit log."""
    return hashlib.sha256(raw).hexdigest()


def check_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Fail early, before any output is written, on an input that cannot be read.

    Only regular files are accepted: a directory, FIFO, device or socket is refused with
    a message naming what it is, without opening it (opening a FIFO blocks). Symbolic
    links are followed on purpose (a dataset checked out with git-lfs or DVC is often a
    link): what they point to must be a regular file, and the run records where each
    link led (:func:`input_links`). A broken link or a loop is an error.
    """
    checked: list[Path] = []
    for raw in paths:
        path = Path(raw)
        try:
            path.lstat()
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            info = path.stat()
        except FileNotFoundError:
            raise InputError(f"{path}: broken symbolic link (to {os.readlink(path)})") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot follow: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(path, info.st_mode)
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: permission denied")
        checked.append(path)
    if not checked:
        raise InputError("no input files given")
    return checked


def path_text(path: Path) -> str:
    """``path`` as the outputs and the audit log name it: valid UTF-8 whatever the file
    system holds (the bytes of a name in another encoding become ``\\xNN`` escapes)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return text


def input_links(paths: Iterable[Path]) -> dict[str, str]:
    """``{path: the file it resolves to}`` for the inputs that are symbolic links (or
    lie under one), for the audit log's record of what was really read."""
    links = {}
    for path in paths:
        resolved = os.path.realpath(path)
        if resolved != os.path.abspath(path):
            links[path_text(path)] = path_text(Path(resolved))
    return links


def open_input(path: Path) -> IO[bytes]:
    """Open an input for reading, refusing anything but a regular file.

    The file is opened non-blocking and checked on the open descriptor, so a path that
    became a FIFO after :func:`check_inputs` fails at once instead of hanging.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _O_NONBLOCK)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(path, info.st_mode)
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=1 << 20)
    except BaseException:
        os.close(fd)
        raise


def hash_file(path: Path) -> str:
    """sha256 of a file's bytes (for the audit log's record of its inputs)."""
    digest = hashlib.sha256()
    with open_input(path) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class _Lines(Protocol):
    """What the line reader needs of a file: ``readline``."""

    def readline(self, size: int = -1, /) -> bytes: ...


class _Hashing:
    """A binary reader that hashes every byte read through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self._handle.readline(size)
        self.digest.update(data)
        return data

    def seek(self, offset: int, whence: int = 0, /) -> int:
        # Read once, front to back: a seek would break the hash (gzip never needs one).
        raise io.UnsupportedOperation("an input is read once, front to back")


def read_examples(
    paths: Iterable[Path],
    *,
    stats: ReadStats,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    expected: Mapping[str, str] | None = None,
) -> Iterator[Example]:
    """Yield one :class:`Example` per non-blank line of each file, in order.

    ``expected`` maps a file (as :func:`path_text` names it) to the :func:`hash_file`
    taken before the run; a file whose bytes turn out to differ (it changed meanwhile)
    raises :class:`InputError` once read, so a run never records a hash of bytes it
    did not screen.
    """
    for path in paths:
        source = path_text(path)
        with open_input(path) as opened:
            hashing = _Hashing(opened)
            handle: _Lines = (
                gzip.GzipFile(fileobj=hashing, mode="rb") if path.suffix == ".gz" else hashing
            )
            try:
                yield from _read_lines(handle, source, max_line_bytes, stats)
                if expected is not None and source in expected:
                    # What gzip left unread (padding after the stream) counts too.
                    while hashing.read(1 << 20):
                        pass
                    if "sha256:" + hashing.digest.hexdigest() != expected[source]:
                        raise InputError(
                            f"{source}: changed while it was being read; run again on a"
                            " file that stays put"
                        )
            except gzip.BadGzipFile:
                # Its message quotes the file's first bytes.
                raise InputError(
                    f"{source}: cannot read: not a gzip file, or a damaged one"
                ) from None
            except (OSError, EOFError, zlib.error) as exc:
                raise InputError(f"{source}: cannot read: {exc}") from None


def _read_lines(
    handle: _Lines, source: str, max_line_bytes: int, stats: ReadStats
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
        body = raw[len(BOM) :] if line_no == 1 and raw.startswith(BOM) else raw
        if not body.strip(_WHITESPACE):
            stats.blank_lines += 1
            continue
        stats.examples += 1
        record, problem = parse_line(body)
        example = Example(
            source=source,
            line=line_no,
            raw=raw,
            hash=example_hash(raw),
            record=record,
            size=len(raw),
        )
        if problem is not None:
            example.problems.append(problem)
        yield example


def _oversized(
    handle: _Lines,
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


def _too_deep(body: bytes, value: Any, limit: int) -> bool:
    # Every level opens a bracket: counting them rules out nearly every line cheaply.
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


def parse_line(
    body: bytes, *, max_depth: int = MAX_DEPTH
) -> tuple[dict[str, Any] | None, Reason | None]:
    """Parse one line into a JSON object, or say (without quoting it) why not."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = _slow_parse(body)
        if isinstance(value, Reason):
            return None, value
    if _too_deep(body, value, max_depth):
        return None, _TOO_DEEP
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
        return _TOO_DEEP
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
            hash=example_hash(raw),
            record=parsed,
            size=len(raw),
        )
        stats.examples += 1
        if problem is not None:
            example.problems.append(problem)
        yield example
