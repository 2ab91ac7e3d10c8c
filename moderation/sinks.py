"""Stage 6, **sinks**: the output directory, written so that nothing is half-written.

Every file is written under a temporary name (``.NAME.partial``) and renamed into place
only when the run completes, ``summary.json`` last: a directory holds a finished run
exactly when it holds ``summary.json``. A run starts by removing a previous run's
outputs, so one that is interrupted leaves only ``.partial`` files, which the next
run overwrites.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import IO, Any

import orjson

from moderation._paths import create_new, partial_name, prepare_output_dir
from moderation.models import Example, ExampleResult, SegmentError, SegmentReport
from moderation.reader import BOM, hash_file

__all__ = ["DATA_FILES", "OUTPUT_FILES", "OutputDir", "example_result"]

OUTPUT_FILES = ("clean.jsonl", "flagged.jsonl", "quarantine.jsonl", "audit.jsonl", "summary.json")
DATA_FILES = OUTPUT_FILES[:3]
_STREAMED = (*DATA_FILES, "audit.jsonl")
"""Written as the run goes; summary.json is written at the end."""
"""The files that hold examples (their hashes are recorded in run_end and the summary)."""

_JSON_OPTIONS = orjson.OPT_APPEND_NEWLINE
_BIG_INT = re.compile(rb"[0-9]{19}")
# Numbers a float cannot hold as written: a long run of digits (past 64 bits, past
# double precision) or a three-digit exponent (1e400 is read as inf, written as null).
_INEXACT_NUMBER = re.compile(rb"[0-9]{19}|[eE][+-]?[0-9]{3}")


def example_result(example: Example, *, include_example: bool = True) -> ExampleResult:
    """The public record of one decided example."""
    reports = []
    for segment, result in zip(example.moderated, example.moderation, strict=True):
        if isinstance(result, SegmentError):
            reports.append(
                SegmentReport(
                    path=segment.path, role=segment.role, kind=segment.kind, error=result.code
                )
            )
        else:
            reports.append(
                SegmentReport(
                    path=segment.path,
                    role=segment.role,
                    kind=segment.kind,
                    scores=result.scores,
                    flagged=result.flagged,
                )
            )
    payload: Any = None
    if include_example:
        if example.record is not None:
            payload = _exact_record(example)
        elif example.raw:
            payload = example.raw.decode("utf-8", "backslashreplace")
    assert example.decision is not None, "route() must run before a result is built"
    return ExampleResult(
        source=example.source,
        line=example.line,
        hash=example.hash,
        decision=example.decision,
        reasons=example.reasons,
        format=example.format,
        tokens=example.tokens,
        warnings=example.warnings,
        moderation=reports,
        verdict=example.verdict,
        example=payload,
    )


def _exact_record(example: Example) -> Any:
    """The record as written in the input. orjson reads integers past 64 bits as floats,
    so records that hold one are parsed again, exactly, by the standard library."""
    if _BIG_INT.search(example.raw) is None:
        return example.record
    return json.loads(example.raw.removeprefix(BOM))


def _as_written(example: Example) -> orjson.Fragment:
    """The record exactly as the input line has it: it parsed as this JSON object, so
    it is valid JSON."""
    return orjson.Fragment(example.raw.removeprefix(BOM).strip(b" \t\r\n"))


def _record_line(record: dict[str, Any], example: Example) -> bytes:
    """A flagged/quarantine.jsonl line, ``example`` set to the example's record.

    Some records orjson cannot write back as they were read: integers past 64 bits, lone
    surrogates (``"\\ud800"``: valid JSON, not valid Unicode) and nesting past 254 levels
    make it raise, which would stop the run; ``1e400`` would come out as ``null``. Those
    go in as written in the input.
    """
    if example.record is None:
        record["example"] = example.raw.decode("utf-8", "backslashreplace") if example.raw else None
        return orjson.dumps(record, option=_JSON_OPTIONS)
    inexact = _INEXACT_NUMBER.search(example.raw) is not None
    record["example"] = _as_written(example) if inexact else example.record
    try:
        return orjson.dumps(record, option=_JSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is one
        record["example"] = _as_written(example)
        return orjson.dumps(record, option=_JSON_OPTIONS)


class OutputDir:
    """The three JSONL outputs plus the audit log, as temporary files until commit."""

    def __init__(self, out: Path, *, inputs: list[Path] | None = None) -> None:
        self.out = out
        # Only these names, only under out, never over an input or through a link.
        prepare_output_dir(out, OUTPUT_FILES, inputs or ())
        # A finished-looking directory must not survive a run that does not finish: not
        # the summary, nor a previous run's data files beside this run's partial ones.
        for name in reversed(OUTPUT_FILES):
            (out / name).unlink(missing_ok=True)
        self._handles: dict[str, IO[bytes]] = {}
        for name in _STREAMED:
            self._handles[name] = create_new(self._partial(name))
        self._clean = self._handles["clean.jsonl"]
        self._flagged = self._handles["flagged.jsonl"]
        self._quarantine = self._handles["quarantine.jsonl"]

    def _partial(self, name: str) -> Path:
        return self.out / partial_name(name)

    @property
    def audit_handle(self) -> IO[bytes]:
        """Where the audit logger writes."""
        return self._handles["audit.jsonl"]

    def write(self, example: Example) -> None:
        """Write one decided example to its file."""
        if example.decision == "clean":
            self._clean.write(example.raw)
            self._clean.write(b"\n")
            return
        handle = self._flagged if example.decision == "flagged" else self._quarantine
        result = example_result(example, include_example=False)
        handle.write(_record_line(result.model_dump(mode="json", exclude_none=False), example))

    def digests(self) -> dict[str, str]:
        """Flush the three data files and return the sha256 of each (``sha256:<hex>``);
        nothing may be written to them afterwards."""
        digests = {}
        for name in DATA_FILES:
            self._handles[name].flush()
            digests[name] = hash_file(self._partial(name))
        return digests

    def commit(self, summary: dict[str, Any]) -> None:
        """Flush, fsync and rename everything into place, ``summary.json`` last."""
        for handle in self._handles.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        for name in _STREAMED:
            os.replace(self._partial(name), self.out / name)
        partial = self._partial("summary.json")
        with create_new(partial) as handle:
            handle.write(
                orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
            )
            # summary.json says "finished": after a crash it must not be there empty.
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.out / "summary.json")
        _sync_directory(self.out)

    def abort(self) -> None:
        """Close and remove the temporary files: leave nothing that looks finished."""
        for name, handle in self._handles.items():
            if not handle.closed:
                handle.close()
            self._partial(name).unlink(missing_ok=True)


def _sync_directory(path: Path) -> None:
    """Make the renames into ``path`` durable (where the platform can)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory; the files themselves are synced
    finally:
        os.close(fd)
